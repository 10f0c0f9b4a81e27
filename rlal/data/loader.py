"""The in-memory loader: uint8 images kept on the device, batched, augmented and normalised there."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch

from rlal.data.augment import CropFlip, crop_flip, draw_crop_flip, normalize, normalizer
from rlal.data.splits import seeded_generator


def epoch_images(samples: int, batch_size: int) -> int:
    """Images a training epoch over ``samples`` steps on: the training loaders drop the last incomplete
    batch, unless there is no full one (the epoch would train nothing). Training compute is counted with it
    (:mod:`rlal.train.compute`)."""
    return samples if samples < batch_size else samples // batch_size * batch_size


class DeviceLoader:
    """Iterate ``(images, labels)`` batches from uint8 ``N,C,H,W`` images already on the target device.

    Each batch is gathered by index, augmented as a batch (``augment``), converted to float32 and
    normalised with ``mean``/``std``: no worker processes and no host-to-device copies per step.
    The order and the augmentation depend only on ``(seed, epoch)``; iterating twice in the same
    epoch gives the same batches, so a run resumed at an epoch sees what it would have seen.

    ``indices`` selects a subset (e.g. the training split) without copying the images, so several
    loaders can share one device copy. With ``drop_last`` the last incomplete batch is dropped,
    but only when there is at least one full batch (BatchNorm cannot train on a batch of one, and an
    epoch with no batch at all would train nothing).

    :meth:`shard` gives one rank's part of every epoch for data-parallel training.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        batch_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        indices: torch.Tensor | None = None,
        shuffle: bool = False,
        drop_last: bool = False,
        augment: CropFlip | None = None,
        seed: int = 0,
        channels_last: bool = False,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 N,C,H,W, got {images.dtype} {tuple(images.shape)}")
        if labels.device != images.device or labels.shape != images.shape[:1]:
            raise ValueError("labels must be a vector of one label per image on the images' device")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.images = images
        self.labels = labels
        self.device = images.device
        # None = all images in order: batches are then slices, not gathers.
        self._indices = None if indices is None else indices.to(self.device, torch.int64)
        self.num_samples = len(images) if indices is None else len(indices)
        self._total = self.num_samples  # the whole epoch's images, before any shard
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last and self.num_samples >= batch_size  # the rule of epoch_images
        self.augment = augment
        self.seed = seed
        self.channels_last = channels_last
        self.epoch = 0
        self.rank, self.world_size = 0, 1
        self._scale, self._bias = normalizer(mean, std, self.device)

    def shard(self, rank: int, world_size: int) -> DeviceLoader:
        """This loader's share for ``rank`` of ``world_size`` data-parallel ranks (sharing the images): each
        epoch's order is the one a single loader would take, cut to a multiple of ``world_size`` and dealt
        out rank by rank (``order[rank::world_size]``, as DistributedSampler does), so the ranks see
        disjoint, equally many images and take the same number of steps. Every image gets its own
        augmentation numbers."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        part = copy.copy(self)
        part.rank, part.world_size = rank, world_size
        part.num_samples = self.num_samples // world_size
        part.drop_last = self.drop_last and part.num_samples >= self.batch_size
        return part

    def __len__(self) -> int:
        full, rest = divmod(self.num_samples, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next iteration produces."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = seeded_generator(self.seed, self.epoch)
        order = self._indices
        total = self.num_samples * self.world_size  # a shard's epoch is dealt from the whole one
        if self.shuffle:
            perm = torch.randperm(self._total, generator=generator).to(self.device, non_blocking=True)
            order = perm if order is None else order[perm]
        if self.world_size > 1:
            if order is None:
                order = torch.arange(self._total, device=self.device)
            order = order[:total][self.rank :: self.world_size]
        bs = self.batch_size
        sizes = [min(bs, self.num_samples - k * bs) for k in range(len(self))]
        draws = None
        if self.augment is not None and sizes and self.world_size > 1:
            # Numbers for every image of the whole epoch, each rank taking its images' columns: ranks would
            # otherwise crop their different images alike.
            draws = draw_crop_flip(total, self.augment, generator)[:, self.rank :: self.world_size]
            draws = draws[:, : sum(sizes)].to(self.device)
        elif self.augment is not None and sizes:
            # The whole epoch's crop and flip numbers in one host-to-device copy, drawn in the order a
            # per-batch draw would take them (same numbers): a copy from pageable host memory every step
            # may make the host wait for the GPU's queue (CUDA's cudaMemcpyAsync notes), and it costs a
            # copy call per step besides.
            draws = torch.cat([draw_crop_flip(n, self.augment, generator) for n in sizes], dim=1)
            draws = draws.to(self.device)
        for k, n in enumerate(sizes):
            if order is None:
                images, labels = self.images[k * bs : k * bs + n], self.labels[k * bs : k * bs + n]
            else:
                batch = order[k * bs : k * bs + n]
                images, labels = self.images[batch], self.labels[batch]
            if draws is not None:
                assert self.augment is not None
                images = crop_flip(images, self.augment, draws[:, k * bs : k * bs + n])
            yield normalize(images, self._scale, self._bias, self.channels_last), labels
