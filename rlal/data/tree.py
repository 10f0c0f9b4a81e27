"""Image-folder trees (``<split>/<class>/<image>``) on disk or inside a tar archive: classes and files."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np

from rlal.errors import DataError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"})


def is_image_name(name: str) -> bool:
    """Whether ``name`` has an image extension (case-insensitive; hidden files excluded)."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def scan_split(split_dir: Path) -> tuple[tuple[str, ...], list[str], np.ndarray]:
    """Scan ``split_dir/<class>/<image>``: return ``(classes, files, labels)``.

    Classes are the sub-folder names sorted; ``files`` are ``<class>/<image>`` paths relative to
    ``split_dir``, sorted by class then name, so the order never depends on the file system.
    Raises :class:`DataError` naming the folder when it has no class folders or no images.
    """
    try:
        with os.scandir(split_dir) as it:
            classes = tuple(sorted(e.name for e in it if e.is_dir() and not e.name.startswith(".")))
    except OSError as exc:
        raise DataError(f"cannot read the image folder {split_dir}: {exc.strerror or exc}") from None
    if not classes:
        raise DataError(f"{split_dir}: no class folders (expected {split_dir}/<class>/<image>)")
    files: list[str] = []
    counts = []
    for name in classes:
        with os.scandir(split_dir / name) as it:
            images = sorted(e.name for e in it if is_image_name(e.name) and e.is_file())
        files += [f"{name}/{image}" for image in images]
        counts.append(len(images))
    if not files:
        exts = "/".join(sorted(IMAGE_EXTENSIONS))
        raise DataError(f"{split_dir}: no images ({exts}) in its {len(classes)} class folders")
    labels = np.repeat(np.arange(len(classes), dtype=np.int64), counts)
    return classes, files, labels


def check_same_classes(
    folder: Path | str,
    first: Sequence[str],
    second: Sequence[str],
    names: tuple[str, str] = ("train", "test"),
) -> None:
    """Raise :class:`DataError` naming ``folder`` when the two splits' class sets differ."""
    if tuple(first) == tuple(second):
        return
    only_first = ", ".join(sorted(set(first) - set(second))) or "-"
    only_second = ", ".join(sorted(set(second) - set(first))) or "-"
    raise DataError(
        f"{folder}: {names[0]} and {names[1]} class folders differ "
        f"(only in {names[0]}: {only_first}; only in {names[1]}: {only_second})"
    )


def tar_member_place(name: str, splits: Sequence[str] = ("train", "test")) -> tuple[str, str] | None:
    """``(split, class)`` of a tar member ``[top/]<split>/<class>/<image>``, or None for anything else."""
    parts = [p for p in PurePosixPath(name).parts if p not in (".", "")]
    if len(parts) not in (3, 4) or not is_image_name(parts[-1]):
        return None
    split, label = parts[-3], parts[-2]
    return (split, label) if split in splits and not label.startswith(".") else None
