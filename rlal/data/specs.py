"""What each dataset looks like to a model, and the iteration protocol every loader follows."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from rlal.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DatasetSpec:
    """Shape and normalisation of a dataset's inputs as the model sees them."""

    name: str
    """``fashion-mnist``, ``cifar10`` or ``imagefolder``."""
    num_classes: int
    in_channels: int
    input_size: int
    """Side of the square image the model sees: 28, 32 or 224."""
    mean: tuple[float, ...]
    std: tuple[float, ...]


DATASETS: dict[str, DatasetSpec] = {
    "fashion-mnist": DatasetSpec("fashion-mnist", 10, 1, 28, (0.2860,), (0.3530,)),
    "cifar10": DatasetSpec("cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    # num_classes is nominal (ImageNet); build_data replaces it with the number of class folders found.
    "imagefolder": DatasetSpec("imagefolder", 1000, 3, 224, IMAGENET_MEAN, IMAGENET_STD),
}


IN_MEMORY = "tensors"
"""``data.dataset`` of a Python API run whose images were given as tensors (see
:func:`~rlal.data.data_from_tensors`): recorded, but not a dataset that can be read again."""


def dataset_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` registered as ``name``; :class:`DataError` listing the valid names if none."""
    if name == IN_MEMORY:
        raise DataError(
            f"data.dataset {IN_MEMORY!r} records images given to the Python API as tensors: they cannot be "
            f"read again; name a dataset on disk ({', '.join(sorted(DATASETS))})"
        )
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r} (valid: {', '.join(sorted(DATASETS))})") from None


@runtime_checkable
class Loader(Protocol):
    """What training code iterates: batches already on the device, normalised, ready for the model."""

    num_samples: int
    """Images per pass (before any incomplete last batch is dropped)."""

    def __len__(self) -> int:
        """Batches per pass."""
        ...

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(images, labels)``: normalised float32 ``N,C,H,W`` images, int64 labels, on the device."""
        ...

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch; shuffling and augmentation depend only on ``(seed, epoch)``."""
        ...
