"""Seeded, reproducible index splits and the seeds they are drawn from."""

from __future__ import annotations

import hashlib
import logging

import torch

from rlal.errors import DataError

log = logging.getLogger(__name__)


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from ``parts``, stable across processes and Python versions (unlike ``hash``)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def seeded_generator(*parts: int | str) -> torch.Generator:
    """A CPU :class:`torch.Generator` seeded from ``parts`` (e.g. ``(seed, "train", epoch)``)."""
    return torch.Generator().manual_seed(derive_seed(*parts))


REWARD_FRACTION = 0.1
"""Share of the training images held out for rewards when ``data.reward_size`` is not set."""
REWARD_FLOOR = 500
"""At least this many (but never more than a fifth of the training images) when not set."""
REWARD_CAP = 5000
"""At most this many when not set: 5,000 of the 50,000-60,000 images of CIFAR-10 and Fashion-MNIST."""


def auto_reward_size(n_train: int) -> int:
    """The reward split's size when ``data.reward_size`` is not set: 10% of ``n_train``, at least
    ``min(500, n_train // 5)`` and at most 5,000, and at least one image when there are two or more.

    CIFAR-10 (50,000) and Fashion-MNIST (60,000) get exactly 5,000, the fixed size rlal used before,
    so runs of the shipped configs hold out the same images as they always did.
    """
    size = min(REWARD_CAP, max(round(REWARD_FRACTION * n_train), min(REWARD_FLOOR, n_train // 5)))
    return max(size, 1) if n_train >= 2 else 0


def resolve_reward_size(n_train: int, reward_size: int | None, needed: bool = True) -> int:
    """The number of training images to hold out: ``reward_size`` as set, or :func:`auto_reward_size`.

    A set size that leaves no training image is an error only where the split is ``needed`` (the joint
    method); elsewhere (dense training, the baselines, ``rlal data``) the split only keeps the training
    images the same as the method's, so it is dropped with a warning instead.
    """
    if reward_size is None:
        return auto_reward_size(n_train)
    if reward_size >= n_train > 0 and not needed:
        log.warning(
            "data.reward_size (%d) is not smaller than the number of training images (%d); this run does "
            "not use the reward split, so it trains on all of them", reward_size, n_train,
        )
        return 0
    return reward_size


def reward_split(n_train: int, reward_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``range(n_train)`` into ``(train_idx, reward_idx)``, ``reward_size`` indices held out.

    Disjoint int64 tensors, together all of ``range(n_train)``, depending only on the arguments.
    ``train_idx`` is sorted; ``reward_idx`` is in a fixed shuffled order, so that the first batches of the
    reward split are a fair sample of every class even when the files are stored class by class (the
    CIFAR-10 image tree): the pruning agent may score sub-networks on only the first few reward batches.
    Raises :class:`DataError` naming ``data.reward_size`` when it leaves no training image.
    """
    if reward_size < 0:
        raise DataError(f"data.reward_size must be >= 0, got {reward_size}")
    if reward_size >= n_train:
        raise DataError(
            f"data.reward_size ({reward_size}) must be smaller than the number of training images "
            f"({n_train}); leave it unset to size it from the data"
        )
    perm = torch.randperm(n_train, generator=seeded_generator(seed, "reward"))
    return perm[reward_size:].sort().values, perm[:reward_size]


def seeded_subset(indices: torch.Tensor, size: int | None, seed: int | str, purpose: str) -> torch.Tensor:
    """A sorted sample of ``size`` of ``indices`` drawn with ``(seed, purpose)``; all of them if ``size`` is
    None or not smaller."""
    if size is None or size >= len(indices):
        return indices
    pick = torch.randperm(len(indices), generator=seeded_generator(seed, purpose))[:size]
    return indices[pick].sort().values
