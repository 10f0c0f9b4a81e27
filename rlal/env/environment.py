"""The pruning environment: one episode walks the prunable layers input -> output, one action per layer.

At layer ``t`` the agent sees the state below and answers with an action ``a_t`` in [0, 1], which becomes
the layer's keep count (see :mod:`rlal.env.budget` for the two mappings, ``env.action_mode``: relative
actions put on the budget by one common scale after the last layer, or the paper's absolute actions with
the action wall). After the last layer the sub-network is priced and, when the environment has a scorer,
scored on the reward split (:mod:`rlal.env.reward`): the reward is its top-1 accuracy as a fraction in
[0, 1] (``env.reward: accuracy``) or that minus the uniform plan's accuracy on the same weights and
batches (``vs-uniform``, the default; the uniform plan is scored once per epoch in :meth:`set_epoch`).

State of layer ``t`` (``STATE_FEATURES``; every entry in [0, 1]; AMC's table, He et al. 2018, Sec. 3.2,
without the feature-map size, which the layer's MACs already carry):

==  =====================  ============================================================================
 #  feature                value
==  =====================  ============================================================================
 0  ``index``              t / (L - 1)  (0 when there is one layer)
 1  ``depthwise``          1 if a depthwise conv is coupled to the layer (MobileNetV2 expansion), else 0
 2  ``residual``           1 if the channels are tied by a residual addition (policy ``all``), else 0
 3  ``in_channels``        input channels of the layer's first conv / the largest over all layers
 4  ``out_channels``       the layer's channels / the largest over all layers
 5  ``kernel``             largest kernel side / the largest over all layers
 6  ``stride``             largest stride / the largest over all layers
 7  ``macs``               the layer's dense MACs / the largest over all layers
 8  ``removed``            MACs removed by the actions on layers 0..t-1 / dense MACs
 9  ``rest``               dense MACs of layers t+1..L-1 / dense MACs
10  ``prev_action``        the applied action of layer t-1 (1 at t = 0: the input is kept whole)
11  ``to_remove``          MACs that layers t..L-1 must still remove to meet the target / dense MACs
==  =====================  ============================================================================

Features 0-7 are static (computed once); 8-11 depend on the episode so far. The state speaks MACs even under
a latency budget (``env.target_latency``): with a latency budget alone ``to_remove`` is 0 throughout, and the
budget is met by the relative actions' common scale (or the wall), which price latency.

``removed`` and ``to_remove`` price the keep vector "layers before t as chosen, the rest dense" with the
exact cost model, so the effect of a layer's pruning on the input side of the next layer is counted. With
relative actions a layer's count "as chosen" is its preference before the common scale (the scale is known
only at the end).

Every finished episode is recorded in ``env.history`` as an :class:`~rlal.agent.Episode` (epoch, states,
applied actions, keep ratios, reward, MACs); :meth:`PruningEnv.history_records` gives plain JSON data.
Call :meth:`PruningEnv.set_epoch` after every training epoch, before that epoch's episodes: it rescores
channel importance on the new weights and checks the previous epoch's rewards (a NaN reward, or the same
reward for every episode of an epoch, is logged as a warning on the ``rlal.env`` logger).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
import torch

from rlal.agent.episode import Episode
from rlal.config import EnvConfig
from rlal.env.budget import Budget, make_budget
from rlal.errors import RlalError
from rlal.structure import Plan, Structure

log = logging.getLogger("rlal.env")

STATE_FEATURES: tuple[str, ...] = (
    "index", "depthwise", "residual", "in_channels", "out_channels", "kernel", "stride", "macs",
    "removed", "rest", "prev_action", "to_remove",
)  # fmt: skip
"""Names of the state entries, in order (the table in the module docstring)."""


class Scorer(Protocol):
    """What the environment asks for a reward: :class:`rlal.env.reward.SubnetScorer`, or a test's stand-in."""

    def set_epoch(self, epoch: int) -> None:
        """The weights changed (a training epoch ended): refresh anything derived from them."""
        ...

    def score(self, plan: Plan) -> float:
        """The reward of the sub-network ``plan`` describes."""
        ...


class PruningEnv:
    """The :class:`~rlal.agent.EpisodeEnv` of a model's prunable layers under a MACs budget.

    ``scorer`` None gives budget-only episodes (reward NaN, nothing evaluated): for tests and for
    measuring the wall. The budget is checked here, so an infeasible target fails before any training.
    """

    state_dim = len(STATE_FEATURES)

    def __init__(
        self, structure: Structure, cfg: EnvConfig, scorer: Scorer | None = None, budget: Budget | None = None
    ) -> None:
        cfg.validate()
        if structure.policy != cfg.policy:
            raise RlalError(
                f"env.policy is {cfg.policy!r} but the layers were found with policy {structure.policy!r}"
            )
        self.structure = structure
        self.cfg = cfg
        self.scorer = scorer
        self.budget = budget if budget is not None else make_budget(structure, cfg)
        self.uniform_plan, self.uniform_ratio = self.budget.uniform_plan()
        """The uniform baseline's plan: relative actions tilt away from it, ``vs-uniform`` rewards beat it."""
        self.uniform_reward = float("nan")
        """The uniform plan's accuracy on the current epoch's weights (``vs-uniform``; set in set_epoch)."""
        self.num_layers = len(structure)
        self.epoch = 0
        self.history: list[Episode] = []
        """Every finished episode, in order."""
        self._static = _static_features(structure)
        dense = self.budget.dense_macs
        layer_macs = np.array([layer.macs for layer in structure.layers], dtype=np.float64)
        self._rest = (layer_macs.sum() - np.cumsum(layer_macs)) / dense  # MACs of layers after t
        self._checked_epochs: set[int] = set()
        self._keep = structure.channels.copy()
        self._layer = self.num_layers  # no episode in progress
        self._states: list[np.ndarray] = []
        self._actions: list[float] = []
        self._preference = np.ones(self.num_layers)

    @property
    def relative(self) -> bool:
        """Whether actions are relative to the uniform allocation (``env.action_mode: relative``)."""
        return self.cfg.action_mode == "relative"

    # --- the episode --------------------------------------------------------------------------------

    def reset(self) -> np.ndarray:
        """Start an episode at layer 0 (every layer dense); return its state."""
        self._keep = self.structure.channels.copy()
        self._preference = np.ones(self.num_layers)
        self._layer = 0
        self._states, self._actions = [], []
        return self._observe()

    def step(self, action: float) -> tuple[np.ndarray | None, bool]:
        """Prune the current layer to the count ``action`` asks for, clipped by the wall; return (the next
        layer's state, False), or (None, True) after the last layer."""
        t = self._layer
        if not self._states or t >= self.num_layers:
            raise RuntimeError("step() outside an episode: call reset() first")
        if not math.isfinite(action):
            raise ValueError(f"action for layer {t} is {action}, not a number in [0, 1]")
        action = min(max(float(action), 0.0), 1.0)
        if self.relative:  # the preference; finish() scales every layer onto the budget at once
            self._preference[t] = self.uniform_ratio * self.cfg.action_range ** (2.0 * action - 1.0)
            ratio = min(max(self._preference[t], self.budget.min_keep_ratio), 1.0)
            self._keep[t] = self.budget.nearest_counts(np.full(self.num_layers, ratio))[t]
            self._actions.append(action)
        else:
            wanted = self.budget.count(t, action)
            count = self.budget.wall(self._keep, t, wanted)
            self._keep[t] = count
            # The record holds the action as applied (AMC): what the agent learns is what the network got.
            self._actions.append(action if count == wanted else self.budget.action_of(t, count))
        self._layer = t + 1
        if self._layer == self.num_layers:
            return None, True
        return self._observe(), False

    def finish(self) -> Episode:
        """After the last step: price (and score) the sub-network, record and return the episode."""
        if self._layer != self.num_layers or len(self._actions) != self.num_layers:
            raise RuntimeError("finish() before the episode is done")
        if self.relative:
            self._keep = self.budget.on_budget(self._preference)
        macs = int(self.budget.cost.macs(self._keep))
        if not self.budget.fits(self._keep):  # the wall and on_budget guarantee this never happens
            latency = self.budget.latency_of(self._keep)
            priced = f"{macs:,} MACs" + (f", {latency:.3f} ms" if latency is not None else "")
            raise RuntimeError(
                f"episode exceeds the budget ({self.budget.describe_targets()}): {priced} (a bug)")
        plan = self.plan_of(self._keep)
        reward = float("nan") if self.scorer is None else self.score(plan)
        episode = Episode(
            epoch=self.epoch,
            states=np.stack(self._states),
            actions=np.asarray(self._actions, dtype=np.float32),
            keep=(self._keep / self.structure.channels).astype(np.float32),
            reward=reward,
            macs=macs,
        )
        self.history.append(episode)
        self._states, self._actions = [], []  # a second finish() needs a new episode
        return episode

    @contextlib.contextmanager
    def off_the_record(self, scorer: Scorer | None = None) -> Iterator[None]:
        """Episodes finished inside the block are scored by ``scorer`` (None: not scored, reward NaN) and
        left out of :attr:`history`: a greedy plan, or acting ahead to learn which plans an epoch will ask
        about. The environment's own scorer and history are back in place on exit."""
        own, seen = self.scorer, len(self.history)
        self.scorer = scorer
        try:
            yield
        finally:
            self.scorer = own
            del self.history[seen:]

    def score(self, plan: Plan) -> float:
        """The reward of ``plan`` on the current weights (``env.reward``); NaN without a scorer."""
        if self.scorer is None:
            return float("nan")
        accuracy = float(self.scorer.score(plan))
        if self.cfg.reward == "vs-uniform":
            return accuracy - self.uniform_reward
        return accuracy

    def _observe(self) -> np.ndarray:
        """The state of the current layer (see the table in the module docstring); recorded too."""
        t = self._layer
        dense, target = self.budget.dense_macs, self.budget.target_macs
        macs = float(self.budget.cost.macs(self._keep))  # layers < t as chosen, the rest dense
        prev_action = self._actions[-1] if self._actions else 1.0
        dynamic = [(dense - macs) / dense, self._rest[t], prev_action, max(macs - target, 0.0) / dense]
        state = np.concatenate([self._static[t], np.asarray(dynamic)]).astype(np.float32)
        self._states.append(state)
        return state

    # --- epochs and records -------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """The weights have been trained to ``epoch``: check the previous epoch's rewards, then stamp later
        episodes with ``epoch`` and let the scorer rescore channel importance on the new weights."""
        if epoch != self.epoch and self.epoch not in self._checked_epochs:
            self.check_epoch_rewards(self.epoch)
        self.epoch = epoch
        if self.scorer is not None:
            self.scorer.set_epoch(epoch)
            if self.cfg.reward == "vs-uniform":
                self.uniform_reward = float(self.scorer.score(self.uniform_plan))

    def check_epoch_rewards(self, epoch: int) -> list[str]:
        """Warn (logger ``rlal.env``) when an episode of ``epoch`` has a NaN reward, or when every episode
        of ``epoch`` has the same reward though they cut two or more different plans: signs of a broken
        model or reward split, not of learning (episodes that all cut one plan, as ``agent.kind: uniform``'s
        do, score alike by design). Returns the warnings. Budget-only environments (no scorer) are not
        checked."""
        self._checked_epochs.add(epoch)
        if self.scorer is None:
            return []
        episodes = [e for e in self.history if e.epoch == epoch]
        rewards = np.array([e.reward for e in episodes], dtype=np.float64)
        warnings = []
        nan = int(np.isnan(rewards).sum())
        if nan:
            warnings.append(f"epoch {epoch}: {nan} of {len(rewards)} episode rewards are NaN")
        finite = rewards[~np.isnan(rewards)]
        plans = {self.plan_of(e).keep for e in episodes if not np.isnan(e.reward)}
        if len(plans) >= 2 and np.ptp(finite) == 0:
            warnings.append(
                f"epoch {epoch}: the reward is constant ({finite[0]:.4f}) across all {len(finite)} "
                f"episodes: the agent cannot tell sub-networks apart (diverged weights, or a reward "
                f"split too small to separate them?)"
            )
        for message in warnings:
            log.warning(message)
        return warnings

    def plan_of(self, keep: Episode | np.ndarray) -> Plan:
        """The plan of an episode (or of a vector of keep counts)."""
        channels = self.structure.channels
        counts = np.rint(keep.keep * channels) if isinstance(keep, Episode) else np.asarray(keep)
        return Plan.from_keep_counts(self.structure, counts.astype(np.int64).tolist())

    def state_dict(self) -> dict[str, Any]:
        """The episodes seen and the epoch stamp, as checkpointable tensors (the rest is rebuilt)."""
        return {
            "epoch": self.epoch,
            "uniform_reward": self.uniform_reward,
            "checked_epochs": sorted(self._checked_epochs),
            "history": [
                {
                    "epoch": e.epoch, "states": torch.from_numpy(e.states.copy()),
                    "actions": torch.from_numpy(e.actions.copy()), "keep": torch.from_numpy(e.keep.copy()),
                    "reward": e.reward, "macs": e.macs,
                }
                for e in self.history
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = state["epoch"]
        self.uniform_reward = state.get("uniform_reward", float("nan"))
        self._checked_epochs = set(state["checked_epochs"])
        self.history = [
            Episode(epoch=e["epoch"], states=e["states"].numpy(), actions=e["actions"].numpy(),
                    keep=e["keep"].numpy(), reward=e["reward"], macs=e["macs"])
            for e in state["history"]
        ]  # the scorer's channel scores are recomputed by the next set_epoch, on the weights of then

    def history_records(self) -> list[dict[str, Any]]:
        """``env.history`` as JSON-friendly dicts (see :func:`episode_record`)."""
        return [episode_record(e, self.structure, self.budget.dense_macs) for e in self.history]


def episode_record(episode: Episode, structure: Structure, dense_macs: int | None = None) -> dict[str, Any]:
    """An episode as plain data: ``{"epoch", "reward" (None for NaN), "macs", "macs_ratio", "keep"
    (layer name -> keep count)}``; ``macs_ratio`` is relative to ``dense_macs`` (default: the cost
    model's)."""
    dense = structure.cost.dense_macs if dense_macs is None else dense_macs
    counts = np.rint(episode.keep * structure.channels).astype(np.int64)
    reward = float(episode.reward)
    macs = None if episode.macs is None else int(episode.macs)
    return {
        "epoch": int(episode.epoch),
        "reward": None if math.isnan(reward) else reward,
        "macs": macs,
        "macs_ratio": None if macs is None else macs / dense,
        "keep": {name: int(k) for name, k in zip(structure.names, counts, strict=True)},
    }


def _static_features(structure: Structure) -> np.ndarray:
    """(L, 8) features 0-7 of the state table, each column scaled to [0, 1]."""
    layers = structure.layers
    last = max(len(layers) - 1, 1)
    columns = np.array(
        [
            [
                layer.index / last,
                float(layer.depthwise),
                float(layer.residual),
                layer.in_channels,
                layer.channels,
                max(layer.kernel_size),
                max(layer.stride),
                layer.macs,
            ]
            for layer in layers
        ],
        dtype=np.float64,
    )
    columns[:, 3:] /= np.maximum(columns[:, 3:].max(axis=0), 1.0)  # AMC: each feature over its max
    return columns
