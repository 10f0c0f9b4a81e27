"""An in-memory labelled image set: what the small-dataset readers return."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class ArrayDataset:
    """Images as one uint8 ``N,C,H,W`` tensor with int64 labels ``N`` and the class names they index."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        # Internal invariants (the readers validate user files before building one of these).
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            shape = tuple(self.images.shape)
            raise ValueError(f"images must be a uint8 N,C,H,W tensor, got {self.images.dtype} {shape}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            n, shape = self.images.shape[0], tuple(self.labels.shape)
            raise ValueError(f"labels must be int64 of shape ({n},), got {self.labels.dtype} {shape}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @classmethod
    def from_numpy(cls, images: np.ndarray, labels: np.ndarray, classes: tuple[str, ...]) -> ArrayDataset:
        """Wrap uint8 ``N,C,H,W`` images and integer labels without copying when already contiguous."""
        return cls(
            torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8)),
            torch.from_numpy(np.asarray(labels, dtype=np.int64)),
            tuple(classes),
        )
