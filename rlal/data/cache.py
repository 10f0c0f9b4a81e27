"""A cache of decoded uint8 arrays as ``.npy`` files, keyed by where the source is and its size and mtime.

Each entry is one directory, written under a temporary name and renamed into place, so a reader sees
either a complete entry or none; a damaged entry is treated as a miss and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

CACHE_FORMAT = 1
"""Bump when the decoding changes, so old entries stop matching."""


def source_key(root: Path, files: Iterable[Path] = ()) -> str:
    """A key for ``root`` (file or folder) from its absolute path, size and mtime and those of ``files``."""
    digest = hashlib.blake2b(digest_size=10)
    digest.update(f"format={CACHE_FORMAT}\n".encode())
    for path in (root, *files):
        st = path.stat()
        digest.update(f"{path.resolve()}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def load_entry(entry: Path, names: Iterable[str]) -> tuple[dict[str, np.ndarray], dict] | None:
    """The arrays ``names`` and the metadata stored in ``entry``, or None when absent or unreadable."""
    try:
        meta = json.loads((entry / "meta.json").read_text())
        arrays = {name: np.load(entry / f"{name}.npy", allow_pickle=False) for name in names}
    except (OSError, ValueError):
        return None
    return arrays, meta


def save_entry(entry: Path, arrays: dict[str, np.ndarray], meta: dict) -> bool:
    """Write ``arrays`` and ``meta`` as the cache entry ``entry`` atomically; warn, return False on failure.

    A cache that cannot be written (read-only home, full disk) slows the next start but is no error.
    """
    tmp: Path | None = None
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", suffix=".tmp", dir=entry.parent))
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", array, allow_pickle=False)
        (tmp / "meta.json").write_text(json.dumps(meta))
        if entry.exists():  # a damaged entry (a valid one would have been loaded instead)
            shutil.rmtree(entry)
        os.replace(tmp, entry)
        return True
    except OSError as exc:
        if entry.is_dir() and (entry / "meta.json").is_file():
            return True  # another process finished the same entry first
        warnings.warn(f"could not write the data cache {entry}: {exc}", stacklevel=2)
        return False
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
