"""Seeded, reproducible index splits and the seeds they are drawn from."""

from __future__ import annotations

import hashlib

import torch

from rlal.errors import DataError


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from ``parts``, stable across processes and Python versions (unlike ``hash``)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def seeded_generator(*parts: int | str) -> torch.Generator:
    """A CPU :class:`torch.Generator` seeded from ``parts`` (e.g. ``(seed, "train", epoch)``)."""
    return torch.Generator().manual_seed(derive_seed(*parts))


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
            f"data.reward_size ({reward_size}) must be smaller than the number of training images ({n_train})"
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
