"""A user's own images, already in memory, as the :class:`~rlal.data.Data` a run needs."""

from __future__ import annotations

import torch

from rlal.config import DataConfig
from rlal.data.arrays import ArrayDataset
from rlal.data.augment import CropFlip
from rlal.data.build import Data, in_memory_data
from rlal.data.specs import IN_MEMORY, DatasetSpec
from rlal.errors import DataError


def data_from_tensors(
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    cfg: DataConfig | None = None,
    classes: tuple[str, ...] | None = None,
    augment: CropFlip | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    channels_last: bool = False,
) -> Data:
    """Train and test images as uint8 ``N,C,H,W`` tensors (square images) with integer labels, split and
    batched as :func:`~rlal.data.build_data` does for the shipped datasets: ``cfg.reward_size`` training
    images are held out for the agent's rewards, ``cfg.train_subset`` / ``cfg.test_subset`` and the batch
    sizes apply. Normalisation uses the training images' own per-channel mean and std. ``augment`` (e.g.
    ``CropFlip(pad=4, flip=True)``) is off unless given: only the user knows what suits their images."""
    cfg = cfg or DataConfig()
    (train_x, train_y), (test_x, test_y) = (_checked(*train, "train"), _checked(*test, "test"))
    if train_x.shape[1:] != test_x.shape[1:]:
        shapes = list(train_x.shape[1:]), list(test_x.shape[1:])
        raise DataError(f"train images are {shapes[0]} but test images {shapes[1]}")
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    classes = tuple(classes) if classes is not None else tuple(str(k) for k in range(num_classes))
    if len(classes) < num_classes:
        raise DataError(f"labels go up to {num_classes - 1} but only {len(classes)} class names were given")
    pixels = train_x.float().div_(255).transpose(0, 1).flatten(1)  # C, N*H*W
    spec = DatasetSpec(
        name=IN_MEMORY, num_classes=len(classes), in_channels=int(train_x.shape[1]),
        input_size=int(train_x.shape[2]), mean=tuple(pixels.mean(1).tolist()),
        std=tuple(pixels.std(1).clamp_min(1e-3).tolist()),
    )
    train_set = ArrayDataset(train_x, train_y, classes)
    test_set = ArrayDataset(test_x, test_y, classes)
    return in_memory_data(spec, train_set, test_set, "tensors in memory", cfg, torch.device(device), seed,
                          augment, channels_last)


def _checked(images: torch.Tensor, labels: torch.Tensor, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = torch.as_tensor(images), torch.as_tensor(labels)
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[2] != images.shape[3]:
        raise DataError(
            f"{split} images must be a uint8 N,C,H,W tensor of square images, got {images.dtype} "
            f"{list(images.shape)}"
        )
    if labels.dim() != 1 or len(labels) != len(images) or labels.is_floating_point():
        shape = list(labels.shape)
        raise DataError(f"{split} labels must be one integer per image ({len(images)}), got {shape}")
    if len(labels) and labels.min() < 0:
        raise DataError(f"{split} labels must be >= 0")
    return images.contiguous(), labels.to(torch.int64)
