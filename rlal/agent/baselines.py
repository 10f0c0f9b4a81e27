"""Agents without learning, for the ablations: ``random`` and ``uniform``.

They implement the same API as :class:`rlal.agent.sac.SACAgent` (``observe`` / ``update`` do no
gradient work) so the joint loop needs no special case. Neither uses the epoch context.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from rlal.agent.config import AgentConfig
from rlal.agent.episode import Episode


class RandomAgent:
    """A keep ratio drawn uniformly from [0, 1] for every layer of every episode.

    There is no policy to be greedy about, so ``deterministic`` is ignored: evaluation draws too.
    """

    uses_context = False

    def __init__(self, cfg: AgentConfig) -> None:
        self.generator = torch.Generator().manual_seed(cfg.seed)

    def start_episode(self) -> None:
        pass

    def act(self, state: np.ndarray, z: Tensor | None, deterministic: bool = False) -> float:
        return float(torch.rand((), generator=self.generator))

    def observe(self, episode: Episode) -> None:
        pass

    def update(self, context: Any = None, n_updates: int | None = None) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "random", "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


class UniformAgent:
    """The same keep ratio for every layer of an episode (uniform pruning; the environment's budget wall
    then adjusts the layers so the budget is met).

    With ``cfg.uniform_keep`` set, that ratio always. Otherwise a one-scalar search: each exploration
    episode draws its ratio uniformly from [0, 1]; the deterministic action is the ratio of the best
    episode observed in the latest epoch (the latest only, because the rewards drift with the weights).
    ``observe`` pairs episodes with the ratios drawn, in order, so every exploration episode must be
    observed, as the joint loop does (greedy episodes draw nothing and need not be).
    """

    uses_context = False

    def __init__(self, cfg: AgentConfig) -> None:
        self.fixed = cfg.uniform_keep
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.drawn: list[float] = []
        """Ratios of exploration episodes run but not yet observed (the last one may be under way)."""
        self.drawing = False
        """Whether the episode under way has drawn its ratio."""
        self.best: tuple[int, float, float] | None = None
        """(epoch, reward, ratio) of the best episode of the latest observed epoch."""

    def start_episode(self) -> None:
        self.drawing = False

    def act(self, state: np.ndarray, z: Tensor | None, deterministic: bool = False) -> float:
        if self.fixed is not None:
            return self.fixed
        if deterministic:
            return self.best[2] if self.best is not None else 0.5
        if not self.drawing:  # drawn lazily: greedy episodes leave the random stream alone
            self.drawn.append(float(torch.rand((), generator=self.generator)))
            self.drawing = True
        return self.drawn[-1]

    def observe(self, episode: Episode) -> None:
        if self.fixed is not None:
            return
        if not self.drawn:
            raise ValueError("observe() got an episode this uniform agent did not explore")
        ratio = self.drawn.pop(0)
        newer_epoch = self.best is None or episode.epoch > self.best[0]
        better = self.best is not None and episode.epoch == self.best[0] and episode.reward > self.best[1]
        if newer_epoch or better:
            self.best = (episode.epoch, episode.reward, ratio)

    def update(self, context: Any = None, n_updates: int | None = None) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "uniform", "generator": self.generator.get_state(), "drawn": list(self.drawn),
                "drawing": self.drawing, "best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.drawn = list(state["drawn"])
        self.drawing = state["drawing"]
        self.best = state["best"]
