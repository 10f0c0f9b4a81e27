"""A pruning problem with a known, drifting reward: for testing and benchmarking agents in seconds.

The reward of a keep vector k at epoch t is ``1 - scale * mean_l (k_l - k*_l(t))**2`` (plus optional
noise), so the optimum reward is 1. The optimum drifts periodically with the epoch, each layer with its
own phase::

    k*_l(t) = base_l + amplitude * sin(2 pi t / period + phase_spread * 2 pi l / L)

which stands in for the real method's non-stationarity (the weights, hence the reward of a sub-network,
change every epoch). The state at layer l is ``[l / L, previous action, base_l, is last layer]``: it
reveals the static part of the optimum but nothing about the epoch, so only an agent that knows *when*
it is (the epoch context z) can follow the drift; an agent without it sees a mixture of epochs and
settles near their average.

:func:`run_epoch` is the agent half of one joint-loop epoch on it (episodes, context fit, agent update,
greedy evaluation, regret); :func:`train_synthetic` runs it for a number of epochs from a fresh agent.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from rlal.agent.build import make_agent, make_context
from rlal.agent.config import AgentConfig
from rlal.agent.context import EpochContext
from rlal.agent.episode import Agent, Episode, run_episode


class SyntheticEnv:
    """L layers, keep ratio = action clipped to [min_keep, 1]; reward peaks at the drifting optimum k*(t).

    ``scale`` sets how steeply the reward falls off (a uniform random keep vector scores about 0.5);
    ``noise`` is the std of Gaussian noise added to each episode's reward (drawn from ``seed``);
    ``phase_spread`` 0 makes every layer drift in step (an easier problem: one scalar to track).
    """

    state_dim = 4

    def __init__(
        self,
        num_layers: int = 8,
        period: float = 6.0,
        amplitude: float = 0.25,
        scale: float = 4.0,
        noise: float = 0.02,
        min_keep: float = 0.05,
        phase_spread: float = 1.0,
        seed: int = 0,
    ) -> None:
        self.num_layers = num_layers
        self.period = period
        self.amplitude = amplitude
        self.scale = scale
        self.noise = noise
        self.min_keep = min_keep
        layers = np.arange(num_layers)
        self.base = (0.55 + 0.15 * np.sin(1.7 * layers)).astype(np.float32)
        """Static part of the optimum per layer (a feature of the state, like a layer's sensitivity)."""
        self.phase = phase_spread * 2 * math.pi * layers / num_layers
        self.epoch = 0
        self.rng = np.random.default_rng(seed)
        self._states: list[np.ndarray] = []
        self._actions: list[float] = []

    def set_epoch(self, epoch: int) -> None:
        """The weights moved on: later episodes are scored against the optimum of ``epoch``."""
        self.epoch = epoch

    def optimum(self, epoch: int) -> np.ndarray:
        """(L,) the keep vector with reward 1 at ``epoch``."""
        k = self.base + self.amplitude * np.sin(2 * math.pi * epoch / self.period + self.phase)
        return np.clip(k, self.min_keep, 1.0)

    def reward_of(self, keep: np.ndarray, epoch: int) -> float:
        """Noise-free reward of the keep vector ``keep`` at ``epoch``."""
        return float(1.0 - self.scale * np.mean((np.asarray(keep) - self.optimum(epoch)) ** 2))

    def reset(self) -> np.ndarray:
        self._states, self._actions = [], []
        return self._state(0, prev_action=1.0)

    def step(self, action: float) -> tuple[np.ndarray | None, bool]:
        layer = len(self._actions)
        self._actions.append(float(np.clip(action, self.min_keep, 1.0)))
        if layer == self.num_layers - 1:
            return None, True
        return self._state(layer + 1, prev_action=self._actions[-1]), False

    def finish(self) -> Episode:
        keep = np.asarray(self._actions, dtype=np.float32)
        reward = self.reward_of(keep, self.epoch)
        if self.noise > 0:
            reward += float(self.rng.normal(0.0, self.noise))
        return Episode(self.epoch, np.stack(self._states), keep.copy(), keep, reward, None)

    def _state(self, layer: int, prev_action: float) -> np.ndarray:
        last = float(layer == self.num_layers - 1)
        state = np.array([layer / self.num_layers, prev_action, self.base[layer], last], dtype=np.float32)
        self._states.append(state)
        return state


class EpochResult(NamedTuple):
    """What one epoch of :func:`run_epoch` did."""

    regret: float
    """Optimum reward minus the noise-free reward of the greedy episode run after the epoch's learning."""
    mean_reward: float
    """Mean reward of the epoch's exploration episodes."""
    context_mse: float
    """The context model's training MSE (NaN for agents without one)."""
    agent_stats: dict[str, float]
    """What ``agent.update`` returned (losses, alpha, entropy)."""
    episodes: list[Episode]
    """The epoch's exploration episodes."""
    forecast_regret: float = math.nan
    """With ``forecast``: the regret of the greedy episode on the context the agent acts on, before the
    epoch's learning (what the joint loop's episodes face: their plans are chosen before it is scored)."""


def run_epoch(
    env: SyntheticEnv,
    agent: Agent,
    context: EpochContext | None,
    history: list[Episode],
    epoch: int,
    episodes_per_epoch: int,
    forecast: bool = False,
) -> EpochResult:
    """The agent half of one joint-loop epoch: explore, fit the context on ``history`` (extended here with
    the new episodes), update the agent, then score its greedy episode against the optimum; with
    ``forecast``, its greedy episode is scored before the exploration too (it draws the reward noise of one
    episode, so the exploration's rewards differ from a run without it)."""
    env.set_epoch(epoch)
    z = context.prior(epoch) if context is not None else None
    before = math.nan
    if forecast:
        before = _regret(env, run_episode(env, agent, epoch, z, deterministic=True), epoch)
    episodes = [run_episode(env, agent, epoch, z) for _ in range(episodes_per_epoch)]
    for episode in episodes:
        agent.observe(episode)
    history.extend(episodes)
    context_mse = context.fit(history) if context is not None else math.nan
    agent_stats = agent.update(context)
    z = context.prior(epoch) if context is not None else None  # the refitted model's prior
    regret = _regret(env, run_episode(env, agent, epoch, z, deterministic=True), epoch)
    mean_reward = float(np.mean([e.reward for e in episodes]))
    return EpochResult(regret, mean_reward, context_mse, agent_stats, episodes, before)


def _regret(env: SyntheticEnv, greedy: Episode, epoch: int) -> float:
    """The optimum's reward minus the noise-free reward of ``greedy``'s keep vector, at ``epoch``."""
    return env.reward_of(env.optimum(epoch), epoch) - env.reward_of(greedy.keep, epoch)


class SyntheticRun(NamedTuple):
    """Per-epoch figures of :func:`train_synthetic`."""

    regret: np.ndarray
    """(epochs,) the :attr:`EpochResult.regret` of every epoch."""
    mean_reward: np.ndarray
    context_mse: np.ndarray
    episodes: list[Episode]
    """Every exploration episode, in order."""


def train_synthetic(
    cfg: AgentConfig, env: SyntheticEnv, epochs: int, episodes_per_epoch: int
) -> SyntheticRun:
    """A fresh agent (and context model) of ``cfg`` trained on ``env`` for ``epochs`` epochs."""
    agent = make_agent(cfg, env.state_dim, env.num_layers)
    context = make_context(cfg, env.num_layers)
    history: list[Episode] = []
    results = [run_epoch(env, agent, context, history, epoch, episodes_per_epoch) for epoch in range(epochs)]
    return SyntheticRun(
        np.array([r.regret for r in results]),
        np.array([r.mean_reward for r in results]),
        np.array([r.context_mse for r in results]),
        history,
    )
