"""Did the agent's policy propose better plans than its random warm-up did? Read from finished joint runs.

The first ``agent_warmup_episodes`` episodes of a run (``run.json``) draw their actions at random; the rest
come from the policy, after its first updates. With ``env.reward: vs-uniform`` every reward is the
sub-network's accuracy minus the uniform plan's on the same weights and BN batches, so rewards of different
epochs share a footing: the drift of the weights' own accuracy is removed, and what is left is how far each
plan is from the weights' best allocation (which training toward an aligned plan can move too). A policy
that learnt something earns more than the random episodes before it, paired over the runs.

    python bench/policy_episodes.py RUN_DIR [RUN_DIR ...]

Prints, per run: the mean reward of the random and of the policy episodes (points); their mean distance
from the uniform plan (over the layers, the mean of |kept channels / uniform's − 1|); and the greedy plan
(the policy's mean action, a candidate of the rescored final choice; 0 where it is the uniform plan) minus
uniform on the full reward split. Then the paired summaries over the runs (mean ± std, SE, 95% interval,
Student's t). A benchmark script, not a test.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from rlal.report.stats import summarize_paired


def _fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def read_run(run: Path) -> tuple[list[dict[str, Any]], int, dict[str, Any]]:
    """(episodes in the order they ran, random warm-up episodes, the final-choice record) of a joint run."""
    try:
        episodes = json.loads((run / "episodes.json").read_text())
        info = json.loads((run / "run.json").read_text())
        metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line]
    except (OSError, ValueError) as err:
        _fail(f"{run}: not a finished joint run ({err})")
    kind = info["config"]["agent"].get("kind")
    if kind != "sac":
        _fail(f"{run}: the agent has no learnt policy (agent.kind {kind!r})")
    reward = info["config"]["env"].get("reward")
    if reward != "vs-uniform":
        _fail(f"{run}: rewards are not relative to the uniform plan (env.reward {reward!r})")
    # The search epochs' own episodes: runs before 3bc2eee also recorded the final choice's greedy plan.
    searched = sum(len(m["episode_rewards"]) for m in metrics if m.get("phase") == "search")
    if searched > len(episodes):
        _fail(f"{run}: episodes.json holds fewer episodes than metrics.jsonl's search epochs")
    episodes = episodes[:searched]
    choice = [m for m in metrics if m.get("phase") == "final-choice"]
    if len(choice) != 1 or choice[0].get("rule") != "rescored":
        _fail(f"{run}: no rescored final choice in metrics.jsonl")
    warmup = int(info["agent_warmup_episodes"])
    if not 0 < warmup < len(episodes):
        _fail(
            f"{run}: {warmup} warm-up episodes of {len(episodes)}: no random or no policy episodes to compare"
        )
    return episodes, warmup, choice[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished joint run directories")
    args = parser.parse_args()
    policy_gain, greedy_gain = [], []
    for run in args.runs:
        episodes, warmup, choice = read_run(run)
        by_source = {c["source"]: c for c in choice["candidates"]}
        uniform = by_source["uniform"]["plan"]
        rewards = np.array([e["reward"] for e in episodes]) * 100
        ratios = np.array([[e["keep"][layer] / uniform[layer] for layer in uniform] for e in episodes])
        distance = np.abs(ratios - 1).mean(axis=1)  # relative to uniform's width of each layer
        random, policy = rewards[:warmup].mean(), rewards[warmup:].mean()
        policy_gain.append(policy - random)
        # the choice lists the greedy plan only where it differs from the uniform plan
        greedy = by_source["greedy"]["diff_vs_uniform"] if "greedy" in by_source else 0.0
        greedy_gain.append(greedy)
        print(
            f"{run}: random {random:+.2f} ({warmup} episodes, distance {distance[:warmup].mean():.2f}), "
            f"policy {policy:+.2f} ({len(episodes) - warmup}, distance {distance[warmup:].mean():.2f}), "
            f"policy - random {policy - random:+.2f}; greedy - uniform {greedy:+.2f}"
        )
    for name, diffs in (("policy - random episodes", policy_gain), ("greedy - uniform", greedy_gain)):
        s = summarize_paired(diffs)
        spread = "" if s.std is None else f" ± {s.std:.2f}, SE {s.se:.2f}, 95% interval {s.interval_text()}"
        print(f"{name} over {s.n} runs: {s.mean:+.2f}{spread} points")


if __name__ == "__main__":
    main()
