"""The reward: top-1 accuracy, as a fraction in [0, 1], of a plan's sub-network on the reward split.

The sub-network is the dense training model under :class:`~rlal.structure.ChannelMasks` (each layer keeps
its top-k channels by the importance criterion), which computes what :func:`rlal.structure.cut` would
build, so the agent is scored on the network it would get. Importance is scored once per epoch
(:meth:`SubnetScorer.set_epoch`): the weights change between epochs, not between the episodes of one.
So a plan scored twice in one epoch (the uniform plan, which every epoch scores as the ``vs-uniform``
baseline, or a plan an episode repeats) is answered from the epoch's record of plans already scored:
scoring draws no random numbers, so skipping a repeat changes nothing but the time.

Every episode is scored on the same images, never the test set: with ``reward_batches`` set, the first
``reward_batches`` batches of the reward split (a fair sample of every class: the split is held out in a
fixed shuffled order, see :func:`rlal.data.reward_split`); with None, the whole split.

Optionally the sub-network's BatchNorm statistics are first re-estimated on ``bn_recalibration_batches``
training batches (:func:`recalibrated_bn`): pruning shifts the statistics of the channels that stay, and
without recalibration a good sub-network can look bad. The training loader gives the same batches for every
episode of an epoch (its order depends only on the seed and the epoch). The training model comes out of
scoring exactly as it went in: parameters, BN running statistics, and the train/eval flag of every module.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterable, Iterator

import torch
from torch import nn

from rlal.config import EnvConfig
from rlal.data import Loader
from rlal.errors import RlalError
from rlal.structure import ChannelMasks, Criterion, Plan, Structure, channel_importance
from rlal.train.epoch import evaluate
from rlal.train.runtime import Runtime

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


class SubnetScorer:
    """Scores plans of one structure: masked sub-network, optional BN recalibration, accuracy on the reward
    split. ``train`` is needed only when ``bn_recalibration_batches > 0``."""

    def __init__(
        self,
        structure: Structure,
        reward: Loader,
        runtime: Runtime,
        *,
        criterion: Criterion = "l2",
        reward_batches: int | None = None,
        train: Loader | None = None,
        bn_recalibration_batches: int = 0,
        seed: int = 0,
    ) -> None:
        if reward.num_samples == 0 or len(reward) == 0:
            raise RlalError(
                "the reward split is empty: the agent has nothing to score sub-networks on "
                "(set data.reward_size > 0)"
            )
        if bn_recalibration_batches > 0 and (train is None or len(train) == 0):
            raise RlalError("env.bn_recalibration_batches > 0 needs training batches to recalibrate on")
        self.structure = structure
        self.reward = reward
        self.train = train
        self.runtime = runtime
        self.criterion: Criterion = criterion
        self.reward_batches = reward_batches
        self.batches: Batches = first_batches(reward, reward_batches)
        """What every sub-network is scored on: the whole reward split, or its first batches."""
        self.bn_recalibration_batches = bn_recalibration_batches
        self.seed = seed
        self.masks = ChannelMasks(structure)
        self.epoch = 0
        self.scored: dict[tuple[int, ...], float] = {}
        """This epoch's plans already scored (keep counts -> accuracy); emptied by :meth:`set_epoch`."""
        # Scored now, so a criterion the model cannot support ("bn_scale" without BN) fails before training.
        self.scores = channel_importance(structure, criterion, seed=seed)

    @classmethod
    def from_config(
        cls, structure: Structure, cfg: EnvConfig, reward: Loader, runtime: Runtime, *,
        train: Loader | None = None, seed: int = 0,
    ) -> SubnetScorer:  # fmt: skip
        """The scorer ``cfg`` describes (criterion, reward batches, BN recalibration)."""
        return cls(
            structure, reward, runtime, criterion=cfg.criterion, reward_batches=cfg.reward_batches,
            train=train, bn_recalibration_batches=cfg.bn_recalibration_batches, seed=seed,
        )  # fmt: skip

    def set_epoch(self, epoch: int) -> None:
        """Rescore channel importance on the current weights (once per epoch, after they changed)."""
        self.epoch = epoch
        self.scores = channel_importance(self.structure, self.criterion, seed=self.seed)
        self.scored.clear()

    def score(self, plan: Plan) -> float:
        """Top-1 accuracy in [0, 1] of ``plan``'s sub-network on the reward batches (NaN if none); a plan
        already scored since the last :meth:`set_epoch` is not evaluated again."""
        if plan.keep in self.scored:
            return self.scored[plan.keep]
        model = self.structure.model
        with (
            preserved_modes(model),
            self.masks.applied(plan, self.criterion, scores=self.scores),
            self._recalibrated(model),
        ):
            stats = evaluate(model, self.batches, self.runtime)
        self.scored[plan.keep] = stats.acc / 100.0
        return self.scored[plan.keep]

    def _recalibrated(self, model: nn.Module) -> contextlib.AbstractContextManager:
        if self.bn_recalibration_batches == 0 or self.train is None:
            return contextlib.nullcontext()
        return recalibrated_bn(model, first_batches(self.train, self.bn_recalibration_batches), self.runtime)


@contextlib.contextmanager
def recalibrated_bn(model: nn.Module, batches: Batches, runtime: Runtime) -> Iterator[nn.Module]:
    """Inside the block, ``model`` is in eval mode and every BatchNorm holds statistics re-estimated on
    ``batches`` (a plain average over them; forward passes only, in eval mode apart from the BNs); on exit
    the previous running statistics, momenta and train/eval flags are put back in place."""
    norms = [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        and m.track_running_stats
        and m.running_mean is not None
    ]
    saved = [
        (m.running_mean.clone(), m.running_var.clone(), _clone(m.num_batches_tracked), m.momentum)
        for m in norms
    ]
    with preserved_modes(model):
        try:
            model.eval()
            for m in norms:
                m.reset_running_stats()
                m.momentum = None  # None: a cumulative average, so every batch counts the same
                m.train()
            seen = 0
            with torch.no_grad(), runtime.autocast():
                for x, _ in batches:
                    model(x)
                    seen += 1
            if seen == 0:
                raise RlalError("no training batch to recalibrate the BN statistics on")
            model.eval()  # a forward inside the block must use, not update, the new statistics
            yield model
        finally:
            with torch.no_grad():
                for m, (mean, var, tracked, momentum) in zip(norms, saved, strict=True):
                    m.running_mean.copy_(mean)
                    m.running_var.copy_(var)
                    if tracked is not None:
                        m.num_batches_tracked.copy_(tracked)
                    m.momentum = momentum


@contextlib.contextmanager
def preserved_modes(model: nn.Module) -> Iterator[nn.Module]:
    """Restore the train/eval flag of every module on exit (``evaluate`` restores only a uniform mode)."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def first_batches(loader: Loader, n: int | None) -> Batches:
    """The first ``n`` batches of ``loader`` (all when ``n`` is None), as a re-iterable."""
    if n is None:
        return loader
    return _FirstBatches(loader, n)


class _FirstBatches:
    def __init__(self, loader: Loader, n: int) -> None:
        self.loader, self.n = loader, n

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return itertools.islice(iter(self.loader), self.n)


def _clone(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.clone()
