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

from rlal.config import EnvConfig
from rlal.data import Data
from rlal.env.budget import Budget, allowed_counts, resolve_target
from rlal.env.environment import STATE_FEATURES, PruningEnv, Scorer, episode_record
from rlal.env.reward import SubnetScorer, first_batches, preserved_modes, recalibrated_bn
from rlal.structure import Structure
from rlal.train.runtime import Runtime


def make_env(
    structure: Structure, cfg: EnvConfig, data: Data, runtime: Runtime, *, seed: int = 0
) -> PruningEnv:
    """The environment of a run: rewards on ``data.reward`` (never the test set), BN recalibration (if
    configured) on ``data.train``. Raises :class:`~rlal.errors.RlalError` for an infeasible target, an empty
    reward split or a criterion the model cannot support, before any training."""
    cfg.validate()
    scorer = SubnetScorer.from_config(structure, cfg, data.reward, runtime, train=data.train, seed=seed)
    return PruningEnv(structure, cfg, scorer)


__all__ = [
    "STATE_FEATURES",
    "Budget",
    "PruningEnv",
    "Scorer",
    "SubnetScorer",
    "allowed_counts",
    "episode_record",
    "first_batches",
    "make_env",
    "preserved_modes",
    "recalibrated_bn",
    "resolve_target",
]
