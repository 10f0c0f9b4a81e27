"""One pruning episode: the environment and agent protocols, the episode record, and the loop between them.

An episode walks the prunable layers input -> output; at each layer the agent emits one action in [0, 1],
the layer's keep ratio. The environment may clip it (AMC's "action wall", which keeps the budget
reachable); the record holds the actions *as applied*, which is what the agent learns from (as in AMC).
The reward arrives once, at the end: the accuracy of the resulting sub-network.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np
from torch import Tensor

if TYPE_CHECKING:
    from rlal.agent.context import EpochContext


class Episode(NamedTuple):
    """What one episode did and earned."""

    epoch: int
    """Training epoch whose weights the episode was scored on (indexes the epoch context z)."""
    states: np.ndarray
    """(L, state_dim) float32: the state seen at each layer."""
    actions: np.ndarray
    """(L,) float32: the actions as applied by the environment (after any clipping), in [0, 1]."""
    keep: np.ndarray
    """(L,) float32: the keep ratio of each layer (the architecture the context decoder reads)."""
    reward: float
    macs: float | int | None = None
    """Cost of the sub-network, when the environment prices it."""


class EpisodeEnv(Protocol):
    """What the agent drives: the pruning environment, or :class:`rlal.agent.synthetic.SyntheticEnv`."""

    num_layers: int
    state_dim: int

    def reset(self) -> np.ndarray:
        """Start an episode; return the state of layer 0."""
        ...

    def step(self, action: float) -> tuple[np.ndarray | None, bool]:
        """Apply ``action`` (in [0, 1]) to the current layer; return (next state or None when done, done)."""
        ...

    def finish(self) -> Episode:
        """After ``done``: the episode record, reward and applied actions included."""
        ...


class Agent(Protocol):
    """What :func:`run_episode` and the joint loop need from an agent (SAC and the baselines alike)."""

    uses_context: bool
    """True when the agent conditions on the epoch context z (``act`` then needs ``z``)."""

    def start_episode(self) -> None:
        """Called before the first ``act`` of every episode."""
        ...

    def act(self, state: np.ndarray, z: Tensor | None, deterministic: bool = False) -> float:
        """The keep ratio, in [0, 1], for the layer that ``state`` describes."""
        ...

    def observe(self, episode: Episode) -> None:
        """Learn from a finished (exploration) episode: push its transitions into the replay buffer."""
        ...

    def update(self, context: EpochContext | None, n_updates: int | None = None) -> dict[str, float]:
        """Gradient steps on the replay buffer (``cfg.updates_per_epoch`` by default); ``context`` supplies
        z to the agent that uses it. Returns the mean losses, alpha and entropy ({} when nothing learned)."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def run_episode(
    env: EpisodeEnv, agent: Agent, epoch: int, z: Tensor | None = None, *, deterministic: bool = False
) -> Episode:
    """Let ``agent`` prune every layer of ``env`` once, conditioned on the context ``z`` of ``epoch``.

    The environment need not know the epoch (its reward depends on the current weights, not on an
    index); the record is stamped with ``epoch`` here so the replay buffer and the context model can key
    it. ``deterministic`` asks the agent for its greedy action (evaluation; such episodes are usually not
    passed to ``observe``).
    """
    agent.start_episode()
    state = env.reset()
    for _ in range(env.num_layers):
        action = agent.act(state, z, deterministic)
        next_state, done = env.step(action)
        if done:
            return env.finish()._replace(epoch=epoch)
        assert next_state is not None, "an environment that is not done must return the next state"
        state = next_state
    raise RuntimeError(f"the environment was not done after num_layers={env.num_layers} steps")
