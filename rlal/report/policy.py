"""Did the agent's policy learn? Its exploration episodes against its random warm-up's, from a run's files.

A joint run's first ``agent_warmup_episodes`` episodes (``run.json``) draw random actions; the rest come from
the policy, after its first updates. With ``env.reward: vs-uniform`` each reward is the plan's accuracy minus
the uniform plan's on the same weights and batches, so the two groups share a footing even across epochs
(training toward the aligned plan between them can still move it). A policy that learnt an allocation earns
more than its random episodes did; its greedy plan (the mean action, a candidate of the rescored final
choice) is the allocation it rates best, scored against the uniform plan on the whole reward split.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rlal.config import LEARNING_KINDS

Deviations = tuple[tuple[float, ...], ...]
"""Per episode, per layer: kept channels / the uniform plan's − 1."""


@dataclass(frozen=True)
class Group:
    """The scored episodes of one kind (random or policy), in the order they ran."""

    rewards: tuple[float, ...]
    """Points against the uniform plan."""
    deviations: Deviations | None
    """Each episode's plan relative to the uniform plan; None without the uniform plan (no rescored final
    choice) or where an episode's layers are not the plan's."""

    @property
    def mean(self) -> float:
        return statistics.mean(self.rewards)

    @property
    def distance(self) -> float | None:
        """Mean over the episodes of their distance from the uniform plan: the mean of |deviation| over the
        layers."""
        if self.deviations is None:
            return None
        return statistics.mean(statistics.mean(map(abs, row)) for row in self.deviations)


@dataclass(frozen=True)
class PolicyEpisodes:
    """A run's exploration episodes, split into the random warm-up's and the policy's."""

    random: Group
    policy: Group
    greedy_vs_uniform: float | None
    """The greedy plan's paired difference with the uniform plan in the rescored final choice (points; 0
    where the greedy plan is the uniform plan, which the choice does not list twice); None without it."""
    greedy_distance: float | None = None
    """The greedy plan's distance from the uniform plan, as :attr:`Group.distance`; None without it."""

    @property
    def gain(self) -> float:
        """Mean policy reward minus mean random reward, in points."""
        return self.policy.mean - self.random.mean

    @property
    def gain_se(self) -> float | None:
        """Standard error of :attr:`gain` (two independent groups); None with fewer than 2 in a group."""
        r, p = self.random.rewards, self.policy.rewards
        if len(r) < 2 or len(p) < 2:
            return None
        return math.sqrt(statistics.variance(r) / len(r) + statistics.variance(p) / len(p))


def policy_episodes(
    config: dict[str, Any], run: dict[str, Any], metrics: Sequence[dict[str, Any]],
    episodes: Sequence[dict[str, Any]] | None,
) -> PolicyEpisodes:  # fmt: skip
    """The split of a finished joint run's episodes, from its ``config.yaml``, ``run.json``, ``metrics.jsonl``
    and ``episodes.json`` as plain data. Raises ``ValueError`` saying why where the run cannot tell: an
    agent without a learnt policy, rewards that are not relative to the uniform plan, no record of the
    warm-up, or no scored episode on one side."""
    agent, env = config.get("agent") or {}, config.get("env") or {}
    if agent.get("kind", "sac") not in LEARNING_KINDS:
        raise ValueError(f"the agent has no learnt policy (agent.kind {agent.get('kind')!r})")
    if env.get("reward", "vs-uniform") != "vs-uniform":
        raise ValueError(f"rewards are not relative to the uniform plan (env.reward {env.get('reward')!r})")
    warmup = run.get("agent_warmup_episodes")
    if episodes is None or not isinstance(warmup, int):
        raise ValueError("episodes.json or run.json's agent_warmup_episodes is missing")
    # The search epochs' own episodes: runs before the greedy plan went off the record appended it.
    searched = sum(len(m.get("episode_rewards") or []) for m in metrics if m.get("phase") == "search")
    episodes = episodes[: min(searched, len(episodes))]
    if not 0 < warmup < len(episodes):
        raise ValueError(f"{warmup} warm-up episodes of {len(episodes)}: no random or no policy episodes")
    rescored = [m for m in metrics if m.get("phase") == "final-choice" and m.get("rule") == "rescored"]
    choice = rescored[0] if rescored else None
    by_source = {c.get("source"): c for c in (choice or {}).get("candidates") or []}
    uniform = (by_source.get("uniform") or {}).get("plan")

    def deviation(keep: dict[str, int] | None) -> tuple[float, ...] | None:
        if not uniform or not keep or set(keep) != set(uniform):
            return None
        return tuple(keep[name] / uniform[name] - 1 for name in uniform)

    def group(part: Sequence[dict[str, Any]]) -> Group:
        scored = [e for e in part if _finite(e.get("reward"))]
        rows = [deviation(e.get("keep")) for e in scored]
        known = [row for row in rows if row is not None]
        deviations = tuple(known) if len(known) == len(rows) else None
        return Group(tuple(100 * e["reward"] for e in scored), deviations)

    random, policy = group(episodes[:warmup]), group(episodes[warmup:])
    if not random.rewards or not policy.rewards:
        raise ValueError("no scored episode among the random or the policy ones")
    greedy, greedy_distance = None, None
    if choice is not None:
        listed = by_source.get("greedy") or {"diff_vs_uniform": 0.0, "plan": uniform}
        greedy = float(listed["diff_vs_uniform"])
        row = deviation(listed.get("plan"))
        greedy_distance = None if row is None else statistics.mean(map(abs, row))
    return PolicyEpisodes(random, policy, greedy, greedy_distance)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
