"""Image-folder datasets of any size (the ImageNet layout), decoded lazily by DataLoader workers."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from rlal.data.augment import normalize, normalizer
from rlal.data.locate import search_roots, unique
from rlal.data.splits import seeded_generator
from rlal.data.transforms import EvalTransform
from rlal.data.tree import check_same_classes, scan_split
from rlal.errors import DataError

Transform = Callable[[Image.Image, torch.Generator], torch.Tensor]
"""PIL image and a generator for its random choices -> uint8 ``3,S,S`` tensor."""
EVAL_SPLITS = ("val", "valid", "validation", "test")
"""Accepted names of the evaluation split next to ``train/``, in the order they are looked for."""
SIZE_SAMPLE = 2000
""":func:`common_size` reads every image header up to this many images, else an even sample of them."""


class ImageFolderDataset(Dataset):
    """Images listed as ``root/<file>`` with integer labels, opened and transformed on access.

    An item is ``(uint8 3,S,S tensor, label)``. Indexing with ``(index, seed)`` makes the random
    transform a function of ``seed`` (what :class:`EpochSampler` yields, so augmentation does not
    depend on which worker decodes the image); a plain ``index`` draws the seed from torch's RNG.
    File names are kept in one numpy byte array rather than a list of Python strings, so forked
    workers do not copy the list page by page as reference counts change.
    """

    def __init__(
        self,
        root: str | Path,
        files: Sequence[str],
        labels: Sequence[int] | np.ndarray,
        classes: Sequence[str],
        transform: Transform | None = None,
    ) -> None:
        if len(files) != len(labels):
            raise ValueError(f"{len(files)} files but {len(labels)} labels")
        self.root = Path(root)
        self.classes = tuple(classes)
        self.transform: Transform = transform if transform is not None else EvalTransform()
        self._files = np.array([os.fsencode(f) for f in files], dtype=bytes)
        self._labels = np.asarray(labels, dtype=np.int64)

    @classmethod
    def from_folder(cls, split_dir: str | Path, transform: Transform | None = None) -> ImageFolderDataset:
        """All images of ``split_dir/<class>/<image>``, classes sorted by folder name."""
        split_dir = Path(split_dir)
        classes, files, labels = scan_split(split_dir)
        return cls(split_dir, files, labels, classes, transform)

    def subset(
        self, indices: Sequence[int] | torch.Tensor, transform: Transform | None = None
    ) -> ImageFolderDataset:
        """The images at ``indices`` (same root and classes), with ``transform`` or this one's."""
        index = np.asarray(indices, dtype=np.int64)
        out = ImageFolderDataset(self.root, [], [], self.classes, transform or self.transform)
        out._files, out._labels = self._files[index], self._labels[index]
        return out

    @property
    def labels(self) -> np.ndarray:
        return self._labels

    def path(self, index: int) -> Path:
        """The file of item ``index``."""
        return self.root / os.fsdecode(self._files[index])

    def __len__(self) -> int:
        return len(self._labels)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        if isinstance(key, tuple):
            index, seed = key
        else:
            index, seed = key, int(torch.randint(0, 2**62, (1,)))
        path = self.path(index)
        generator = torch.Generator().manual_seed(seed)
        try:
            with Image.open(path) as img:
                image = self.transform(img, generator)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise DataError(f"{path}: cannot decode image ({exc})") from None
        return image, int(self._labels[index])


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, augmentation seed)``; order and seeds depend only on ``(seed, epoch)``."""

    def __init__(
        self, num_samples: int, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1
    ) -> None:
        self.num_samples = num_samples // world_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.rank, self.world_size = rank, world_size
        self._total = num_samples

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = seeded_generator(self.seed, self.epoch)
        n = self._total
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        seeds = torch.randint(0, 2**62, (n,), generator=generator)
        if self.world_size > 1:  # this rank's deal of the whole epoch, as DistributedSampler's
            part = slice(self.rank, self.num_samples * self.world_size, self.world_size)
            order, seeds = order[part], seeds[part]
        return zip(order.tolist(), seeds.tolist(), strict=True)


class ImageFolderLoader:
    """The :class:`~rlal.data.Loader` protocol over a multi-worker :class:`~torch.utils.data.DataLoader`.

    Workers decode and transform to uint8; batches travel pinned (on CUDA) and are moved to the
    device without blocking, then converted and normalised there. Workers persist across epochs;
    :meth:`set_epoch` reseeds the order and the augmentation. ``drop_last`` follows the rule of
    :class:`~rlal.data.DeviceLoader`: only when there is at least one full batch.
    """

    def __init__(
        self,
        dataset: ImageFolderDataset,
        *,
        batch_size: int,
        device: torch.device,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        shuffle: bool = False,
        drop_last: bool = False,
        workers: int = 0,
        seed: int = 0,
        channels_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.dataset = dataset
        self.num_samples = len(dataset) // world_size
        self.device = device
        self.channels_last = channels_last
        self._options = {"batch_size": batch_size, "device": device, "mean": mean, "std": std,
                         "shuffle": shuffle, "drop_last": drop_last, "workers": workers, "seed": seed,
                         "channels_last": channels_last}
        self._sampler = EpochSampler(len(dataset), shuffle, seed, rank, world_size)
        workers = workers if len(dataset) else 0  # no processes for an empty split
        self._loader = DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=self._sampler,
            drop_last=drop_last and self.num_samples >= batch_size,
            num_workers=workers,
            pin_memory=device.type == "cuda",
            persistent_workers=workers > 0,
            generator=seeded_generator(seed, "workers"),
        )
        self._scale, self._bias = normalizer(mean, std, device)

    def __len__(self) -> int:
        return len(self._loader)

    def shard(self, rank: int, world_size: int) -> ImageFolderLoader:
        """A loader of the same images and options that yields ``rank``'s share of every epoch (of
        ``world_size`` data-parallel ranks): the epoch's order cut to a multiple of ``world_size`` and dealt
        out rank by rank, as DistributedSampler does; each image keeps its augmentation seed."""
        return ImageFolderLoader(self.dataset, **self._options, rank=rank, world_size=world_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next iteration produces."""
        self._sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        try:
            for images, labels in self._loader:
                images = images.to(self.device, non_blocking=True)
                labels = labels.to(self.device, non_blocking=True)
                yield normalize(images, self._scale, self._bias, self.channels_last), labels
        except DataError as exc:
            raise DataError(_one_line(str(exc))) from None


def find_image_folder(data_dir: str | None) -> tuple[Path | None, str, list[str]]:
    """Find ``D/train`` with ``D/val`` (or ``valid``, ``validation``, ``test``: the first found, see
    :data:`EVAL_SPLITS`) in ``data_dir``, ``$RLAL_DATA`` or their ``imagenet/``.

    Returns ``(D or None, the evaluation split's folder name, the folders searched)``.
    """
    searched = []
    for root in unique([d for r in search_roots(data_dir) for d in (r, r / "imagenet")]):
        searched.append(str(root))
        if (root / "train").is_dir():
            for split in EVAL_SPLITS:
                if (root / split).is_dir():
                    return root, split, searched
    return None, "", searched


def load_image_folder(data_dir: str | None) -> tuple[ImageFolderDataset, ImageFolderDataset, str]:
    """Scan the train and evaluation folders; return ``(train, test, source)`` with the eval transform.

    Raises :class:`DataError` listing the folders searched when none matches, or naming the folder
    when the two splits' classes differ.
    """
    root, split, searched = find_image_folder(data_dir)
    eval_names = _eval_split_names()
    for base in map(Path, searched if root is None else []):
        halves = [name for name in ("train", *EVAL_SPLITS) if (base / name).is_dir()]
        if halves:  # half a dataset: say which half is missing rather than "not found"
            missing = eval_names if halves == ["train"] else "train/"
            raise DataError(
                f"image-folder dataset not found: {base} has {halves[0]}/ but no {missing} (it needs "
                f"train/<class>/<image> and an evaluation split named {eval_names})"
            )
    if root is None:
        where = "; ".join(searched) or "nothing: no --data-dir given and $RLAL_DATA unset"
        raise DataError(
            f"image-folder dataset not found (searched: {where}): pass --data-dir DIR "
            f"(or set $RLAL_DATA) where DIR holds train/<class>/<image> and an evaluation split "
            f"<split>/<class>/<image> named {eval_names}"
        )
    train = ImageFolderDataset.from_folder(root / "train")
    test = ImageFolderDataset.from_folder(root / split)
    check_same_classes(root, train.classes, test.classes, ("train", split))
    return train, test, f"{root} (image folder, train/ and {split}/)"


def common_size(datasets: Sequence[ImageFolderDataset], limit: int = SIZE_SAMPLE) -> int | None:
    """The images' side (the shorter one, if they are not square) when all of them have one size, read from
    their file headers (no pixel is decoded): every image up to ``limit`` of them, else ``limit`` evenly
    spaced ones (the files are sorted by class, so every class is looked at). None when sizes differ; a
    file that cannot be opened is left for the loader to report."""
    paths = [d.path(i) for d in datasets for i in range(len(d))]
    if len(paths) > limit:
        paths = [paths[round(k * (len(paths) - 1) / (limit - 1))] for k in range(limit)]
    sizes = set()
    for path in paths:
        try:
            with Image.open(path) as img:
                sizes.add(img.size)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            continue
        if len(sizes) > 1:
            return None
    if len(sizes) != 1:
        return None
    (width, height), = sizes
    return min(width, height)


def _eval_split_names() -> str:
    """``val/, valid/, validation/ or test/``."""
    names = [f"{name}/" for name in EVAL_SPLITS]
    return f"{', '.join(names[:-1])} or {names[-1]}"


def _one_line(message: str) -> str:
    # DataLoader re-raises a worker's exception with the worker's traceback in the message; keep
    # only our own one-line message, which is the traceback's last line.
    if "\n" not in message:
        return message
    last = message.strip().splitlines()[-1]
    return last.split("DataError: ", 1)[-1]
