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


@dataclass(frozen=True)
class PolicyEpisodes:
    """A run's exploration rewards (points against the uniform plan), split into random and policy ones."""

    random: tuple[float, ...]
    policy: tuple[float, ...]
    random_distance: float | None
    """Mean over the random episodes of their distance from the uniform plan: over the layers, the mean of
    ``|kept channels / uniform's − 1|``; None without the uniform plan (no rescored final choice)."""
    policy_distance: float | None
    greedy_vs_uniform: float | None
    """The greedy plan's paired difference with the uniform plan in the rescored final choice (points; 0
    where the greedy plan is the uniform plan, which the choice does not list twice); None without it."""

    @property
    def gain(self) -> float:
        """Mean policy reward minus mean random reward, in points."""
        return statistics.mean(self.policy) - statistics.mean(self.random)

    @property
    def gain_se(self) -> float | None:
        """Standard error of :attr:`gain` (two independent groups); None with fewer than 2 in a group."""
        if len(self.random) < 2 or len(self.policy) < 2:
            return None
        return math.sqrt(statistics.variance(self.random) / len(self.random)
                         + statistics.variance(self.policy) / len(self.policy))  # fmt: skip


def policy_episodes(
    config: dict[str, Any], run: dict[str, Any], metrics: Sequence[dict[str, Any]],
    episodes: Sequence[dict[str, Any]] | None,
) -> PolicyEpisodes:  # fmt: skip
    """The split of a finished joint run's episodes, from its ``config.yaml``, ``run.json``, ``metrics.jsonl``
    and ``episodes.json`` as plain data. Raises ``ValueError`` saying why where the run cannot tell: an
    agent without a learnt policy, rewards that are not relative to the uniform plan, no record of the
    warm-up, or no scored episode on one side."""
    agent, env = config.get("agent") or {}, config.get("env") or {}
    if agent.get("kind", "sac") != "sac":
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

    def rewards(group: Sequence[dict[str, Any]]) -> tuple[float, ...]:
        return tuple(100 * e["reward"] for e in group if _finite(e.get("reward")))

    def distance(group: Sequence[dict[str, Any]]) -> float | None:
        if not uniform or any(set(e.get("keep") or {}) != set(uniform) for e in group):
            return None
        return statistics.mean(
            statistics.mean(abs(e["keep"][name] / uniform[name] - 1) for name in uniform) for e in group
        )

    random, policy = episodes[:warmup], episodes[warmup:]
    if not rewards(random) or not rewards(policy):
        raise ValueError("no scored episode among the random or the policy ones")
    greedy = None if choice is None else float((by_source.get("greedy") or {}).get("diff_vs_uniform", 0.0))
    return PolicyEpisodes(rewards(random), rewards(policy), distance(random), distance(policy), greedy)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
