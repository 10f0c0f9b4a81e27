"""CIFAR-10 in its three common layouts, decoded once and cached as uint8 arrays.

Layouts: the official python pickle batches (``cifar-10-batches-py/``), an image-folder tree
(``train/<class>/*.png|jpg`` and ``test/<class>/...``) and a tarball of that tree
(``cifar10-jpg.tar.gz``), read in place with :mod:`tarfile`.
"""

from __future__ import annotations

import pickle
import re
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np

from rlal.config import DataConfig
from rlal.data.arrays import ArrayDataset
from rlal.data.cache import load_entry, save_entry, source_key
from rlal.data.decode import ImageSource, decode_images
from rlal.data.locate import cache_root, search_roots, unique
from rlal.data.tree import check_same_classes, scan_split, tar_member_place
from rlal.errors import DataError

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
PICKLE_DIR = "cifar-10-batches-py"
TARBALL = "cifar10-jpg.tar.gz"
SIZE = 32
_ARRAYS = ("train_images", "train_labels", "test_images", "test_labels")


@dataclass(frozen=True)
class CifarSource:
    """A CIFAR-10 copy that was found: its layout and path."""

    kind: Literal["pickle", "folder", "tarball"]
    path: Path

    def describe(self) -> str:
        what = {"pickle": "python batches", "folder": "image folder", "tarball": "image-folder tarball"}
        return f"{self.path} (CIFAR-10 {what[self.kind]})"


def find_cifar10(data_dir: str | None) -> tuple[CifarSource | None, list[str]]:
    """Look in ``data_dir`` then ``$RLAL_DATA``; return ``(source or None, the folders searched)``.

    In each folder D (and ``D/cifar10``) the first match wins: ``D/cifar-10-batches-py/``, D being
    that batches folder, ``D/train`` + ``D/test``, ``D/cifar10-jpg.tar.gz``; D may also be a tarball.
    """
    searched = []
    for root in search_roots(data_dir):
        for base in unique([root, root / "cifar10"]):
            searched.append(str(base))
            source = _source_in(base)
            if source is not None:
                return source, searched
    return None, searched


def load_cifar10(cfg: DataConfig) -> tuple[ArrayDataset, ArrayDataset, str]:
    """Find and read CIFAR-10; return ``(train, test, source)``. Never downloads.

    Image trees and tarballs are decoded once; the arrays are then cached under
    ``<cache>/cifar10/`` keyed by the source's path, size and mtime.
    """
    source, searched = find_cifar10(cfg.data_dir)
    if source is None:
        for base in map(Path, searched):
            halves = [split for split in ("train", "test") if (base / split).is_dir()]
            if halves:  # half an image-folder tree: say which half is missing rather than "not found"
                missing = "test" if halves == ["train"] else "train"
                raise DataError(
                    f"CIFAR-10 not found: {base} has {halves[0]}/ but no {missing}/ (an image-folder copy "
                    f"needs train/<class>/<image> and test/<class>/<image>)"
                )
        where = "; ".join(searched) or "nothing: no --data-dir given and $RLAL_DATA unset"
        raise DataError(
            f"CIFAR-10 not found (searched: {where}); "
            f"it is not downloaded automatically: pass --data-dir DIR (or set $RLAL_DATA) where DIR holds "
            f"{PICKLE_DIR}/, train/ and test/ class folders, or {TARBALL}"
        )
    if source.kind == "pickle":
        train, test = read_cifar_pickles(source.path)
        return train, test, source.describe()
    cache = cache_root(cfg.cache_dir) / "cifar10"
    if source.kind == "folder":
        scans = _scan_tree(source.path)
        files = [source.path / split / f for split, (_, names, _) in scans.items() for f in names]
        entry = cache / f"folder-{source_key(source.path, files)}"
        decode = partial(_decode_tree, source.path, scans)
    else:
        entry = cache / f"tarball-{source_key(source.path)}"
        decode = partial(read_image_tarball, source.path)
    cached = _load_cached(entry)
    if cached is None:
        train, test = decode()
        arrays = {
            "train_images": train.images.numpy(), "train_labels": train.labels.numpy(),
            "test_images": test.images.numpy(), "test_labels": test.labels.numpy(),
        }
        save_entry(entry, arrays, {"classes": list(train.classes), "source": str(source.path.resolve())})
        return train, test, source.describe()
    train, test = cached
    return train, test, f"{source.describe()}, decoded copy cached in {entry}"


def read_cifar_pickles(folder: str | Path) -> tuple[ArrayDataset, ArrayDataset]:
    """Read the official python batches in ``folder``: ``data_batch_*``, ``test_batch``, ``batches.meta``.

    Classes come from ``batches.meta`` and are sorted by name (labels remapped if needed).
    Raises :class:`DataError` naming the file that is missing, corrupt or not a CIFAR-10 batch.
    """
    folder = Path(folder)
    numbered = [
        (int(m.group(1)), p) for p in folder.iterdir() if (m := re.fullmatch(r"data_batch_(\d+)", p.name))
    ] if folder.is_dir() else []
    expected = "the CIFAR-10 python batches data_batch_1..5, test_batch, batches.meta"
    for name in ("test_batch", "batches.meta"):
        if not (folder / name).is_file():
            raise DataError(f"{folder}: no {name} (expected {expected})")
    if not numbered:
        raise DataError(f"{folder}: no data_batch_1 (expected {expected})")
    meta_path = folder / "batches.meta"
    meta = _unpickle(meta_path)
    try:
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta[b"label_names"]]
    except (KeyError, TypeError, UnicodeDecodeError):
        raise DataError(f"{meta_path}: not a CIFAR-10 meta file (no b'label_names' list)") from None
    train_parts = [_read_batch(path, len(names)) for _, path in sorted(numbered)]
    test_images, test_labels = _read_batch(folder / "test_batch", len(names))
    train_images = np.concatenate([images for images, _ in train_parts])
    train_labels = np.concatenate([labels for _, labels in train_parts])
    # Sorted class names, like the folder layouts; the official meta is already sorted.
    order = sorted(range(len(names)), key=names.__getitem__)
    remap = np.empty(len(names), dtype=np.int64)
    remap[order] = np.arange(len(names))
    classes = tuple(names[i] for i in order)
    return (
        ArrayDataset.from_numpy(train_images, remap[train_labels], classes),
        ArrayDataset.from_numpy(test_images, remap[test_labels], classes),
    )


def read_image_tree(root: str | Path, size: int = SIZE) -> tuple[ArrayDataset, ArrayDataset]:
    """Decode ``root/train/<class>/*`` and ``root/test/<class>/*`` (``size`` x ``size`` RGB), uncached."""
    root = Path(root)
    return _decode_tree(root, _scan_tree(root), size)


def read_image_tarball(path: str | Path, size: int = SIZE) -> tuple[ArrayDataset, ArrayDataset]:
    """Decode a tarball of ``[top/]train|test/<class>/<image>`` members in place, without caching.

    Members are decoded while the archive is read; images are then ordered by class and file name,
    as for the folder tree. Raises :class:`DataError` naming the archive (and the member) when it is
    corrupt, lacks a split, or holds a bad image.
    """
    path = Path(path)
    places: list[tuple[str, str, str]] = []  # (split, class, file name) of each decoded member

    def members() -> Iterator[ImageSource]:
        try:
            with tarfile.open(path, "r:*") as tar:
                for member in tar:
                    place = tar_member_place(member.name) if member.isfile() else None
                    handle = tar.extractfile(member) if place is not None else None
                    if place is None or handle is None:
                        continue
                    data = handle.read()
                    places.append((*place, PurePosixPath(member.name).name))
                    yield f"{path} member {member.name}", data
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: corrupt or unreadable tar archive ({exc})") from None

    images = decode_images(members(), size, desc=f"decoding {path.name}")
    out = []
    for split in ("train", "test"):
        index = sorted((i for i, p in enumerate(places) if p[0] == split), key=lambda i: places[i][1:])
        if not index:
            raise DataError(f"{path}: no {split}/<class>/<image> members")
        classes = tuple(sorted({places[i][1] for i in index}))
        label_of = {name: k for k, name in enumerate(classes)}
        labels = np.array([label_of[places[i][1]] for i in index], dtype=np.int64)
        out.append(ArrayDataset.from_numpy(images[index], labels, classes))
    check_same_classes(path, out[0].classes, out[1].classes)
    return out[0], out[1]


def _source_in(base: Path) -> CifarSource | None:
    if base.is_file():
        return CifarSource("tarball", base) if base.name.endswith((".tar.gz", ".tgz", ".tar")) else None
    if (base / PICKLE_DIR).is_dir():
        return CifarSource("pickle", base / PICKLE_DIR)
    if (base / "data_batch_1").is_file() or (base / "batches.meta").is_file():
        return CifarSource("pickle", base)
    if (base / "train").is_dir() and (base / "test").is_dir():
        return CifarSource("folder", base)
    if (base / TARBALL).is_file():
        return CifarSource("tarball", base / TARBALL)
    return None


def _scan_tree(root: Path) -> dict[str, tuple[tuple[str, ...], list[str], np.ndarray]]:
    scans = {split: scan_split(root / split) for split in ("train", "test")}
    check_same_classes(root, scans["train"][0], scans["test"][0])
    return scans


def _decode_tree(
    root: Path, scans: dict[str, tuple[tuple[str, ...], list[str], np.ndarray]], size: int = SIZE
) -> tuple[ArrayDataset, ArrayDataset]:
    out = []
    for split, (classes, files, labels) in scans.items():
        sources: list[ImageSource] = [(str(root / split / f), root / split / f) for f in files]
        images = decode_images(sources, size, desc=f"decoding {root.name}/{split}", total=len(sources))
        out.append(ArrayDataset.from_numpy(images, labels, classes))
    return out[0], out[1]


def _load_cached(entry: Path) -> tuple[ArrayDataset, ArrayDataset] | None:
    loaded = load_entry(entry, _ARRAYS)
    if loaded is None:
        return None
    arrays, meta = loaded
    classes = tuple(meta.get("classes", ()))
    datasets = []
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        ok = images.dtype == np.uint8 and images.ndim == 4 and images.shape[1:] == (3, SIZE, SIZE)
        if not ok or labels.dtype != np.int64 or labels.shape != images.shape[:1] or not classes:
            return None  # damaged or foreign entry: decode again
        datasets.append(ArrayDataset.from_numpy(images, labels, classes))
    return datasets[0], datasets[1]


class _BatchUnpickler(pickle.Unpickler):
    """Resolves only the globals a CIFAR batch holds (numpy arrays), so a tampered file cannot run code."""

    _ALLOWED = frozenset({
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    })

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module.startswith("numpy.core."):  # numpy 1.x pickles; numpy 2 moved the module
            module = "numpy._core." + module.removeprefix("numpy.core.")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    try:
        with path.open("rb") as f:
            obj = _BatchUnpickler(f, encoding="bytes").load()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # a damaged pickle can fail in almost any way; all mean the same here
        raise DataError(f"{path}: corrupt or truncated pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: not a CIFAR-10 pickle (holds a {type(obj).__name__}, not a dict)")
    return obj


def _read_batch(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(path)
    if b"data" not in batch or b"labels" not in batch:
        raise DataError(f"{path}: not a CIFAR-10 batch (no b'data' and b'labels' keys)")
    data = np.asarray(batch[b"data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * SIZE * SIZE:
        raise DataError(f"{path}: b'data' must be uint8 N x {3 * SIZE * SIZE}, got {data.dtype} {data.shape}")
    try:
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (TypeError, ValueError):
        raise DataError(f"{path}: b'labels' is not a list of integers") from None
    if labels.shape != (len(data),):
        raise DataError(f"{path}: {labels.size} labels for {len(data)} images")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{path}: label out of range 0..{num_classes - 1}")
    return data.reshape(-1, 3, SIZE, SIZE), labels
