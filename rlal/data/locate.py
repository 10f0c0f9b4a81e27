"""Where datasets are looked for and where decoded copies are cached."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "RLAL_DATA"
CACHE_ENV = "RLAL_CACHE"


def search_roots(data_dir: str | os.PathLike[str] | None) -> list[Path]:
    """The user-given roots in search order: ``data_dir`` (config or ``--data-dir``) alone when it is given,
    else ``$RLAL_DATA``. A directory the user names for this run is used or refused, never replaced by a
    copy found elsewhere (which could be another version of the data, or other data altogether)."""
    value = data_dir or os.environ.get(DATA_ENV)
    return [Path(value).expanduser()] if value else []


def cache_root(cache_dir: str | os.PathLike[str] | None) -> Path:
    """The cache directory: ``cache_dir`` if given, else ``$RLAL_CACHE``, else ``~/.cache/rlal``."""
    value = cache_dir or os.environ.get(CACHE_ENV)
    return Path(value).expanduser() if value else Path.home() / ".cache" / "rlal"


def unique(paths: list[Path]) -> list[Path]:
    """``paths`` without repeats (compared after resolving), first occurrence kept."""
    seen: set[Path] = set()
    out = []
    for path in paths:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            out.append(path)
    return out
