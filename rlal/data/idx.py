"""Reader and writer for the IDX format of (Fashion-)MNIST, gzip-compressed or not.

Layout: two zero bytes, a data-type code, the number of dimensions, one big-endian uint32 per
dimension, then the values in C order, big-endian.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from rlal.errors import DataError

_GZIP_MAGIC = b"\x1f\x8b"
DTYPE_CODES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw, told apart by content) into a native-endian array.

    Raises :class:`DataError` naming the file for unreadable or corrupt gzip data, a wrong magic
    number, an unknown data-type code, or a payload whose length does not match the header.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number 0x{raw[:4].hex() or 'empty'})")
    code, ndim = raw[2], raw[3]
    if code not in DTYPE_CODES:
        valid = ", ".join(f"0x{c:02x}" for c in DTYPE_CODES)
        raise DataError(f"{path}: unknown IDX data type code 0x{code:02x} (valid: {valid})")
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes, {ndim} dimensions need {header})")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = DTYPE_CODES[code]
    expected = math.prod(dims) * dtype.itemsize
    payload = len(raw) - header
    if payload != expected:
        what = "truncated" if payload < expected else "too long"
        raise DataError(
            f"{path}: IDX payload {what}: header dims {'x'.join(map(str, dims))} need {expected} bytes, "
            f"file holds {payload}"
        )
    array = np.frombuffer(raw, dtype=dtype, count=math.prod(dims), offset=header).reshape(dims)
    # A native-endian, writable copy (frombuffer over bytes is read-only and torch warns about that).
    return array.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file, gzip-compressed when ``path`` ends in ``.gz``; returns the path."""
    path = Path(path)
    array = np.asarray(array)
    native = array.dtype.newbyteorder("=")
    code = next((c for c, dt in DTYPE_CODES.items() if dt.newbyteorder("=") == native), None)
    if code is None or array.ndim == 0:
        raise ValueError(f"cannot write a {array.dtype} array of {array.ndim} dimensions as IDX")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + np.ascontiguousarray(array, dtype=DTYPE_CODES[code]).tobytes()
    path.write_bytes(gzip.compress(data, mtime=0) if path.name.endswith(".gz") else data)
    return path


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError; EOFError = cut short
        raise DataError(f"{path}: corrupt gzip data ({exc or type(exc).__name__})") from None
