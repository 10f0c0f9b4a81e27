"""The pruning environment: state features, the action wall that enforces the MACs budget, the reward.

    structure = find_layers(model, (3, 32, 32), policy=cfg.env.policy)
    env = make_env(structure, cfg.env, data, runtime)   # raises RlalError now if the target is infeasible
    for epoch in search_epochs:
        train_one_epoch(...)
        env.set_epoch(epoch)                              # importance rescored on the new weights
        episodes = [run_episode(env, agent, epoch, z) for _ in range(P)]

Modules: :mod:`rlal.env.environment` (the episode, the state table, the history), :mod:`rlal.env.budget`
(action -> keep count, target, action wall), :mod:`rlal.env.reward` (masked sub-network accuracy on the
reward split, BN recalibration).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlal.config import EnvConfig
from rlal.data import Data
from rlal.env.budget import (
    Budget,
    allowed_counts,
    latency_backend,
    latency_check,
    make_budget,
    resolve_target,
)
from rlal.env.environment import STATE_FEATURES, PruningEnv, Scorer, episode_record
from rlal.env.reward import SubnetScorer, first_batches, preserved_modes, recalibrated_bn
from rlal.structure import Structure
from rlal.train.runtime import Runtime


def shared_latency_table(
    structure: Structure, cfg: EnvConfig, runtime: Runtime, own: Path | None = None
) -> dict[str, Any] | None:
    """The latency table of a run with a latency budget (None without one): rank 0 reads it from ``own`` (a
    resumed run's file) or the cache, or times it, and every rank of a ``torchrun`` job receives that same
    table, so every rank prices plans with the same numbers."""
    if not cfg.latency_budget:
        return None

    def table() -> dict[str, Any]:
        stored = own if own is not None and own.exists() else None
        latency = make_budget(structure, cfg, device=str(runtime.device), stored=stored).latency
        assert latency is not None
        return latency.to_json()

    return runtime.dist.on_main(table)


def make_env(
    structure: Structure, cfg: EnvConfig, data: Data, runtime: Runtime, *, seed: int = 0,
    latency_table: Path | dict[str, Any] | None = None,
) -> PruningEnv:
    """The environment of a run: rewards on ``data.reward`` (never the test set), BN recalibration (if
    configured) on ``data.train``, a latency budget (if configured) timed on the run's device or read from
    ``latency_table`` (a table file or table: a resumed run's own, or rank 0's under ``torchrun``). Raises
    :class:`~rlal.errors.RlalError` for an infeasible target, an empty reward split or a criterion the model
    cannot support, before any training."""
    cfg.validate()
    budget = make_budget(structure, cfg, device=str(runtime.device), stored=latency_table)
    scorer = SubnetScorer.from_config(structure, cfg, data.reward, runtime, train=data.train, seed=seed)
    return PruningEnv(structure, cfg, scorer, budget)


__all__ = [
    "STATE_FEATURES",
    "Budget",
    "PruningEnv",
    "Scorer",
    "SubnetScorer",
    "allowed_counts",
    "episode_record",
    "first_batches",
    "latency_backend",
    "latency_check",
    "make_budget",
    "make_env",
    "preserved_modes",
    "recalibrated_bn",
    "resolve_target",
    "shared_latency_table",
]
