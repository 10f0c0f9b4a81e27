"""Sub-network training (``search.subnet_weight`` > 0; beyond the paper): each training step of the warm-up
and search epochs also trains one on-budget sub-network, drawn at random around the uniform allocation, on
the same batch.

Why: at aggressive budgets every masked sub-network of the dense weights scores near chance on the reward
split (8-15% at 10% MACs on MobileNetV2, about 10% at 6% on ResNet-56; ``docs/benchmarks.md``), so the
agent's reward and the final choice have nothing to rank. Weight-sharing NAS meets the same problem by
training sub-networks inside the supernet (the sandwich rule of slimmable networks); here one sub-network
per step, drawn as a relative-action episode draws its plan (a preference within ``env.action_range`` of
the uniform ratio per layer, scaled onto the budget), keeps the region the agent searches working.

Written here, not taken from a library: it is the method's training step, on the project's own masks.
The dense loss is unchanged. The sub-network's forward runs in train mode (its BN layers normalise with
the sub-network's batch statistics, as its cut model would) but leaves the BN running statistics to the
dense passes. Channels are chosen by ``env.criterion`` on the weights at the start of the epoch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rlal.env import PruningEnv
from rlal.structure import ChannelMasks, Plan, channel_importance
from rlal.structure.importance import Criterion


class SubnetTraining:
    """The extra loss of one randomly drawn on-budget sub-network per step (``extra_loss`` of
    :func:`rlal.train.epoch.train_one_epoch`). Call :meth:`start_epoch` before each epoch: it rescores the
    channels on the current weights and seeds the epoch's draws from ``(seed, epoch)``, so a resumed run
    draws the same plans."""

    def __init__(self, env: PruningEnv, weight: float, criterion: Criterion, seed: int) -> None:
        self.env = env
        self.weight = float(weight)
        self.criterion = criterion
        self.seed = int(seed)
        self.masks = ChannelMasks(env.structure)
        self._scores: dict[str, torch.Tensor] | None = None
        self._rng = np.random.default_rng([self.seed, 0])

    def start_epoch(self, epoch: int) -> None:
        """Score the channels on the weights as they are now and seed this epoch's draws."""
        self._scores = channel_importance(self.env.structure, self.criterion, seed=self.seed)
        self._rng = np.random.default_rng([self.seed, epoch])

    def sample(self) -> Plan:
        """An on-budget plan: per layer a preference ``uniform_ratio * action_range ** u``, ``u`` uniform in
        [-1, 1], scaled onto the budget as a relative-action episode's is."""
        env = self.env
        u = self._rng.uniform(-1.0, 1.0, size=env.num_layers)
        preference = env.uniform_ratio * env.cfg.action_range**u
        return env.plan_of(env.budget.on_budget(preference))

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, label_smoothing: float
    ) -> torch.Tensor:
        """The weighted cross-entropy of a freshly drawn sub-network on the batch ``(x, y)``."""
        if self._scores is None:
            raise RuntimeError("SubnetTraining.start_epoch() was not called before training (a bug)")
        self.masks.set_plan(self.sample(), self.criterion, scores=self._scores, seed=self.seed)
        with self.masks, frozen_bn_statistics(model):
            logits = model(x)
        return self.weight * F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)


@contextmanager
def frozen_bn_statistics(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, BatchNorm layers in train mode still normalise with the batch's statistics but do
    not update their running statistics (momentum 0); everything is put back after."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None)
             for m in norms]
    try:
        for m in norms:
            m.momentum = 0.0
        yield model
    finally:
        for m, (momentum, tracked) in zip(norms, saved, strict=True):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)
