"""run_episode: the loop between an environment and an agent."""

from __future__ import annotations

import numpy as np
import pytest

from rlal.agent import AgentConfig, Episode, make_agent, run_episode


class CountingEnv:
    """Three layers; clips actions to at most 0.8 (a stand-in for the budget wall); reward = mean keep."""

    num_layers = 3
    state_dim = 2

    def __init__(self, never_done: bool = False) -> None:
        self.never_done = never_done
        self.applied: list[float] = []

    def reset(self) -> np.ndarray:
        self.applied = []
        return np.zeros(2, dtype=np.float32)

    def step(self, action: float) -> tuple[np.ndarray | None, bool]:
        self.applied.append(min(action, 0.8))
        if len(self.applied) == self.num_layers and not self.never_done:
            return None, True
        return np.array([len(self.applied), action], dtype=np.float32), False

    def finish(self) -> Episode:
        keep = np.array(self.applied, dtype=np.float32)
        return Episode(-1, np.zeros((3, 2), dtype=np.float32), keep, keep, float(keep.mean()), 123)


def test_run_episode_stamps_the_epoch_and_keeps_the_applied_actions():
    agent = make_agent(AgentConfig(kind="uniform", uniform_keep=0.9), state_dim=2, num_layers=3)
    episode = run_episode(CountingEnv(), agent, epoch=7)
    assert episode.epoch == 7 and episode.macs == 123
    assert episode.actions.tolist() == pytest.approx([0.8, 0.8, 0.8])  # clipped by the wall, as applied


def test_an_environment_that_never_finishes_is_an_error():
    agent = make_agent(AgentConfig(kind="random"), state_dim=2, num_layers=3)
    with pytest.raises(RuntimeError, match="not done after num_layers=3"):
        run_episode(CountingEnv(never_done=True), agent, epoch=0)
