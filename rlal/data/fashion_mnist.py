"""Fashion-MNIST from its original IDX files: search the usual places, else download and verify."""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from rlal.config import DataConfig
from rlal.data.arrays import ArrayDataset
from rlal.data.idx import read_idx
from rlal.data.locate import cache_root, search_roots, unique
from rlal.errors import DataError

CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
"""The four files, by role; each may be stored as ``<name>.gz`` or uncompressed ``<name>``."""
OFFICIAL_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
OFFICIAL_SHA256 = {
    "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` package installs the files."""
URL_ENV = "RLAL_FASHION_MNIST_URL"
"""Overrides :data:`OFFICIAL_URL` (a mirror); the files must still match :data:`OFFICIAL_SHA256`."""
SUBDIR = "fashion-mnist"


def find_fashion_mnist(data_dir: str | None, cache: Path) -> tuple[dict[str, Path] | None, list[str]]:
    """Look for the four files; return ``(files by role or None, what was searched)``.

    A given ``data_dir`` is the only place searched (a directory the user names is used or refused, never
    replaced by another copy); without it the order is ``$RLAL_DATA``, :data:`SYSTEM_DIR`, then the
    download cache. In each directory D the files may lie in D itself or in ``D/fashion-mnist/``.
    """
    roots = search_roots(data_dir) if data_dir else [*search_roots(None), SYSTEM_DIR]
    dirs = [d for root in roots for d in (root, root / SUBDIR)]
    if not data_dir:
        dirs.append(cache / SUBDIR)
    searched = []
    for folder in unique(dirs):
        files = _files_in(folder)
        found = sum(path is not None for path in files.values())
        if found == len(FILES):
            return {role: path for role, path in files.items() if path is not None}, searched
        missing = [FILES[role] for role, path in files.items() if path is None]
        if found:
            searched.append(f"{folder} (incomplete: no {', '.join(missing)})")
        elif data_dir:  # say why the named directory does not do
            searched.append(f"{folder} ({'no Fashion-MNIST files' if folder.is_dir() else 'does not exist'})")
        else:
            searched.append(str(folder))
    return None, searched


def download_fashion_mnist(
    dest_dir: str | os.PathLike[str],
    base_url: str = OFFICIAL_URL,
    checksums: Mapping[str, str] = OFFICIAL_SHA256,
    timeout: float = 60.0,
) -> Path:
    """Download the files named in ``checksums`` from ``base_url`` into ``dest_dir``; return ``dest_dir``.

    Each file is streamed into a temporary file beside its target, its sha256 checked, then renamed
    into place, so an interrupted or corrupt download leaves no file behind. Files already present
    with the right checksum are kept. A network failure or a checksum mismatch raises
    :class:`DataError` naming the URL.
    """
    dest = Path(dest_dir)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the download directory {dest}: {exc.strerror or exc}") from None
    base = base_url if base_url.endswith("/") else base_url + "/"
    for name, sha256 in checksums.items():
        target = dest / name
        if target.is_file() and _sha256(target) == sha256:
            continue
        _fetch(base + name, target, sha256, timeout)
    return dest


def load_fashion_mnist(cfg: DataConfig) -> tuple[ArrayDataset, ArrayDataset, str]:
    """Find (or download, if ``cfg.download``) and read Fashion-MNIST; return ``(train, test, source)``."""
    cache = cache_root(cfg.cache_dir)
    files, searched = find_fashion_mnist(cfg.data_dir, cache)
    source = None if files is None else str(files["train_images"].parent)
    if files is None and cfg.data_dir:
        raise DataError(
            f"Fashion-MNIST not found in the data directory given, {cfg.data_dir} (searched: "
            f"{'; '.join(searched)}); a directory named with --data-dir (data.data_dir) is used or refused, "
            f"never replaced by another copy: put {', '.join(n + '.gz' for n in FILES.values())} there, or "
            f"leave --data-dir out to use $RLAL_DATA, the system copy or the download"
        )
    if files is None:
        how = (
            "install it with `apt-get install dataset-fashion-mnist`, or pass --data-dir DIR "
            f"(or set $RLAL_DATA) with {', '.join(n + '.gz' for n in FILES.values())}"
        )
        where = "; ".join(searched)
        if not cfg.download:
            raise DataError(f"Fashion-MNIST not found (searched: {where}; download is off): {how}")
        base_url = os.environ.get(URL_ENV) or OFFICIAL_URL
        try:
            dest = download_fashion_mnist(cache / SUBDIR, base_url, OFFICIAL_SHA256)
        except DataError as exc:
            raise DataError(f"Fashion-MNIST not found (searched: {where}) and {exc}: {how}") from None
        files = {role: path for role, path in _files_in(dest).items() if path is not None}
        if len(files) != len(FILES):  # checksums were overridden to a subset of the files
            raise DataError(f"download into {dest} did not produce all of {', '.join(FILES.values())}")
        source = f"{dest} (downloaded from {base_url})"
    train = _read_split(files["train_images"], files["train_labels"])
    test = _read_split(files["test_images"], files["test_labels"])
    return train, test, source


def _files_in(folder: Path) -> dict[str, Path | None]:
    out: dict[str, Path | None] = {}
    for role, name in FILES.items():
        out[role] = next((p for p in (folder / f"{name}.gz", folder / name) if p.is_file()), None)
    return out


def _read_split(images_path: Path, labels_path: Path) -> ArrayDataset:
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{images_path}: expected uint8 images Nx28x28, got {images.dtype} {images.shape}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(f"{labels_path}: expected a uint8 label vector, got {labels.dtype} {labels.shape}")
    if len(labels) != len(images):
        raise DataError(f"{labels_path}: {len(labels)} labels for {len(images)} images in {images_path.name}")
    if len(labels) and int(labels.max()) >= len(CLASSES):
        raise DataError(f"{labels_path}: label {int(labels.max())} out of range 0..{len(CLASSES) - 1}")
    return ArrayDataset.from_numpy(images[:, None], labels, CLASSES)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch(url: str, target: Path, sha256: str, timeout: float) -> None:
    """Stream ``url`` into ``target`` via a temporary file, verifying ``sha256`` before the rename."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                for block in iter(lambda: response.read(1 << 20), b""):
                    digest.update(block)
                    out.write(block)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:  # incl. timeouts
            if isinstance(exc, urllib.error.HTTPError):
                reason = f"HTTP {exc.code} {exc.reason}"
            else:
                reason = getattr(exc, "reason", None) or exc
            raise DataError(f"download of {url} failed: {reason}") from None
        if digest.hexdigest() != sha256:
            raise DataError(
                f"download of {url} failed: sha256 mismatch (got {digest.hexdigest()}, expected {sha256})"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
