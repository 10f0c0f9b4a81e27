"""Decode many small encoded images (JPEG, PNG, ...) into one uint8 array, in parallel, in order."""

from __future__ import annotations

import io
import itertools
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from rlal.errors import DataError

CHUNK = 2048
"""Images per task; more than one chunk of input starts a process pool."""

ImageSource = tuple[str, bytes | Path]
"""``(name for messages, encoded bytes or a file path)``."""
_Result = tuple[np.ndarray | None, str | None]


def decode_images(
    items: Iterable[ImageSource], size: int, desc: str | None = None, total: int | None = None
) -> np.ndarray:
    """Decode ``items`` to RGB and stack them as uint8 ``N,3,size,size``, keeping the input order.

    ``items`` may be a lazy iterator (e.g. members read from a tar archive): it is consumed in
    chunks while earlier chunks decode. More than one chunk is decoded by a process pool (``fork``
    start method, where available). ``desc`` shows a progress bar on stderr when it is a terminal.
    Raises :class:`DataError` naming the first image that cannot be decoded or is not
    ``size`` x ``size``.
    """
    blocks = []
    with tqdm(total=total, desc=desc, unit="img", disable=None if desc else True, leave=False) as bar:
        for block, error in _map(partial(_decode_chunk, size=size), _chunked(items, CHUNK)):
            if error is not None:
                raise DataError(error)
            assert block is not None
            blocks.append(block)
            bar.update(len(block))
    out = np.concatenate(blocks) if blocks else np.empty((0, size, size, 3), dtype=np.uint8)
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
"""PIL modes of 16-bit grayscale images (PNG, TIFF): ``convert("RGB")`` clips them to white, so they are
scaled to 8 bits first."""


def to_rgb(img: Image.Image) -> Image.Image:
    """``img`` as an 8-bit RGB image. 16-bit grayscale is scaled to 8 bits (0-65535 onto 0-255, rounded),
    not clipped; 32-bit integer or float pixels (modes ``I`` and ``F``), whose range no file states, raise
    ``ValueError`` (the callers name the file)."""
    if img.mode == "RGB":
        return img
    if img.mode in SIXTEEN_BIT_MODES:
        wide = np.asarray(img).astype(np.uint32)  # any byte order, as native integers
        return Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8), mode="L").convert("RGB")
    if img.mode in ("I", "F"):
        kind = "32-bit integer" if img.mode == "I" else "floating-point"
        raise ValueError(f"{kind} pixels (PIL mode {img.mode}) are not supported: save it as 8-bit")
    return img.convert("RGB")


def worker_count() -> int:
    """CPU cores this process may use (at most 8: decoding is soon limited by memory traffic)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


def _chunked(items: Iterable[ImageSource], n: int) -> Iterator[list[ImageSource]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, n)):
        yield chunk


def _map(
    fn: Callable[[list[ImageSource]], _Result], chunks: Iterator[list[ImageSource]]
) -> Iterator[_Result]:
    first = next(chunks, None)
    second = next(chunks, None)
    pending = [c for c in (first, second) if c is not None]
    workers = worker_count()
    # fork only: a spawned worker would re-import torch (seconds) before decoding anything.
    if second is None or workers < 2 or "fork" not in multiprocessing.get_all_start_methods():
        yield from map(fn, itertools.chain(pending, chunks))
        return
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        # imap keeps the order (deterministic output) and pulls further chunks from ``chunks`` in a
        # thread of this process, so reading the input overlaps decoding.
        yield from pool.imap(fn, itertools.chain(pending, chunks))


def _decode_chunk(chunk: list[ImageSource], size: int) -> _Result:
    # Errors travel back as text: cheaper and safer to send across processes than exceptions.
    out = np.empty((len(chunk), size, size, 3), dtype=np.uint8)
    for i, (name, source) in enumerate(chunk):
        try:
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
                img.load()
                rgb = to_rgb(img)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            return None, f"{name}: cannot decode image ({exc})"
        if rgb.size != (size, size):
            return None, f"{name}: image is {rgb.width}x{rgb.height}, expected {size}x{size}"
        out[i] = np.asarray(rgb)
    return out, None
