"""Did the agent's policy propose better plans than its random warm-up did? Read from finished joint runs.

The split and its reading are :mod:`rlal.report.policy`'s (each run's ``report.md`` states it too): the
first ``agent_warmup_episodes`` episodes of a run draw random actions, the rest come from the policy, and
with ``env.reward: vs-uniform`` every reward is the plan's accuracy minus the uniform plan's on the same
weights. This script pairs the runs: a policy that learnt something earns more than the random episodes
before it, run after run.

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
from typing import NoReturn

from rlal.report.policy import PolicyEpisodes, policy_episodes
from rlal.report.stats import summarize_paired


def _fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def read_run(run: Path) -> PolicyEpisodes:
    """The random/policy split of one finished joint run directory."""
    try:
        episodes = json.loads((run / "episodes.json").read_text())
        info = json.loads((run / "run.json").read_text())
        metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line]
    except (OSError, ValueError) as err:
        _fail(f"{run}: not a finished joint run ({err})")
    try:
        split = policy_episodes(info.get("config") or {}, info, metrics, episodes)
    except ValueError as err:
        _fail(f"{run}: {err}")
    if split.greedy_vs_uniform is None:
        _fail(f"{run}: no rescored final choice in metrics.jsonl")
    return split


def _distance(value: float | None) -> str:
    return "missing" if value is None else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished joint run directories")
    args = parser.parse_args()
    policy_gain, greedy_gain = [], []
    for run in args.runs:
        split = read_run(run)
        assert split.greedy_vs_uniform is not None
        policy_gain.append(split.gain)
        greedy_gain.append(split.greedy_vs_uniform)
        random, policy = sum(split.random) / len(split.random), sum(split.policy) / len(split.policy)
        print(
            f"{run}: random {random:+.2f} ({len(split.random)} episodes, distance "
            f"{_distance(split.random_distance)}), policy {policy:+.2f} ({len(split.policy)}, distance "
            f"{_distance(split.policy_distance)}), policy - random {split.gain:+.2f}; "
            f"greedy - uniform {split.greedy_vs_uniform:+.2f}"
        )
    for name, diffs in (("policy - random episodes", policy_gain), ("greedy - uniform", greedy_gain)):
        s = summarize_paired(diffs)
        spread = "" if s.std is None else f" ± {s.std:.2f}, SE {s.se:.2f}, 95% interval {s.interval_text()}"
        print(f"{name} over {s.n} runs: {s.mean:+.2f}{spread} points")


if __name__ == "__main__":
    main()
