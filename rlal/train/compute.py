"""Training compute: the multiply-accumulates a run's training steps spend, so that methods can be compared at
the same training cost and not only at the same epochs (issue 10).

A training step costs about three forward passes (the forward, and a backward that is about twice it), on
whichever network is training then: the joint method trains the dense network until its cut and the small
one after it; the three-stage baselines train the dense one, then fine-tune the small one. So

    compute = 3 x images per epoch x (epochs on the dense network x dense MACs + epochs on the small one x
              small MACs)

It is counted from the run's schedule (epochs, images per epoch after ``drop_last``, the share of them that
the joint method's epochs before its cut take, the two networks' MACs),
so it is the same on every machine, where wall-clock is not. The joint method's scoring of sub-networks
(forward passes of the masked dense network) is not in it: a run counts those passes as it makes them
(:class:`ForwardImages`, ``search_forward_images`` in its ``result.json``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

from torch import nn

from rlal.config import RunConfig
from rlal.data.loader import epoch_images

STEP_FORWARDS = 3
"""A training step in forward passes: the forward and a backward of about twice its MACs."""


def images_per_epoch(config: RunConfig, split_images: int | None = None) -> int | None:
    """Images one training epoch steps on (the training loader drops its last incomplete batch), of
    ``data.train_subset`` or else of ``split_images`` (the training split's size, as a run's
    ``result.json`` records it); None when neither is known."""
    n = config.data.train_subset or split_images
    return None if n is None else epoch_images(n, config.data.batch_size)


def dense_and_small_epochs(config: RunConfig, epochs: int) -> tuple[int, int] | None:
    """``(epochs training the dense network, epochs training the small one)`` of a run of ``config`` that
    recorded ``epochs`` in all; None for a schedule this does not model (sub-network training beside the
    dense one: ``search.subnet_weight > 0``)."""
    method = config.method
    if method == "dense":
        return epochs, 0
    if method == "uniform":
        return 0, epochs
    if method == "rlal":  # each epoch before the cut may take a share of its steps: see dense_share
        if config.search.subnet_weight > 0:
            return None
        return config.search.cut_epoch, epochs - config.search.cut_epoch
    # magnitude, depgraph: the recorded epochs are pre-training (or the dense run's) + fine-tuning
    for pretrain in range(1, epochs):
        _, finetune = config.baseline.resolved_epochs(config.train.epochs, dense_epochs=pretrain)
        if pretrain + finetune == epochs:
            return pretrain, finetune
    return None


def dense_share(config: RunConfig, images: int | None = None) -> float:
    """The share of an epoch's images that each epoch on the dense network trains on: all of them, except
    in the joint method's epochs before the cut (``search.dense_steps`` of an epoch's steps, counted from
    ``images``, the images of an epoch; without them, ``search.dense_epoch_fraction`` itself)."""
    if config.method != "rlal":
        return 1.0
    if images is None:
        return config.search.dense_epoch_fraction
    steps = max(1, images // config.data.batch_size)  # an epoch of whole batches, or of one partial one
    return config.search.dense_steps(steps) / steps


def training_macs(
    config: RunConfig, epochs: int, dense_macs: int, macs: int, split_images: int | None = None
) -> float | None:
    """Training compute of a run of ``config`` (see the module docstring), in MACs; None when it cannot be
    counted from the schedule (see :func:`images_per_epoch` and :func:`dense_and_small_epochs`)."""
    images = images_per_epoch(config, split_images)
    split = dense_and_small_epochs(config, epochs)
    if images is None or split is None:
        return None
    dense_epochs, small_epochs = split
    dense_images = images * dense_share(config, images)
    return float(STEP_FORWARDS * (dense_epochs * dense_images * dense_macs + small_epochs * images * macs))


def matched_epochs(config: RunConfig, epochs: int, dense_macs: int, macs: int) -> int | None:
    """The epochs in which a network of ``macs``, on the same data, spends the training compute of a run of
    ``config`` that recorded ``epochs`` (the nearest whole number, at least 1): the epoch budget that puts a
    from-scratch run at that run's training cost. The images per epoch are the same on both sides, so the
    whole training split needs no count (a shorter dense phase is taken at its nominal share). None where
    :func:`dense_and_small_epochs` is."""
    split = dense_and_small_epochs(config, epochs)
    if split is None:
        return None
    dense_epochs, small_epochs = split
    dense = dense_epochs * dense_share(config) * dense_macs
    return max(1, math.floor((dense + small_epochs * macs) / macs + 0.5))


class ForwardImages:
    """Counts the images that a model's forward passes see inside :meth:`counting` blocks: the joint method
    counts its scoring of sub-networks (the masked dense network on the reward split, and the training
    batches its BN statistics are re-estimated on) so that a run records what its search cost."""

    def __init__(self, images: int = 0) -> None:
        self.images = images

    @contextlib.contextmanager
    def counting(self, model: nn.Module) -> Iterator[None]:
        handle = model.register_forward_pre_hook(self._count)
        try:
            yield
        finally:
            handle.remove()

    def _count(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self.images += int(args[0].shape[0])
