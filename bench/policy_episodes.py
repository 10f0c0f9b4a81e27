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
uniform on the full reward split, with its distance from uniform. Then the paired summaries over the runs
(mean ± std, SE, 95% interval, Student's t).

Whether there was anything to learn: a ridge regression of the random episodes' rewards on their plans
(each layer's kept channels relative to the uniform plan's, ``--ridge`` the penalty, the intercept free)
predicts the policy episodes' rewards, a later epoch's, and the correlation of prediction and reward is
printed per run and summarised over the runs, beside the correlation of the reward with the plan's
closeness to uniform (minus its distance).

With ``--critic``, the agent of each run's last checkpoint is read too: its entropy temperature alpha, the
range of its critics' soft Q value (the smaller of the two) over 25 actions in [0.02, 0.98], averaged over
the states in its replay buffer (each on the prior of its epoch), and the spread of its policy (the mean
standard deviation before the squash). A policy moves only where the Q range is not small against alpha.
A benchmark script, not a test.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch

from rlal.agent import make_agent, make_context
from rlal.checkpoint import load_checkpoint
from rlal.config import load_config
from rlal.errors import RlalError
from rlal.report.markdown import RunFiles, read_run
from rlal.report.policy import PolicyEpisodes, policy_episodes
from rlal.report.stats import summarize_paired


def _fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def read_split(run: Path) -> tuple[RunFiles, PolicyEpisodes]:
    """A finished joint run directory's files (as the report reads them) and its random/policy split."""
    try:
        files = read_run(run)
        split = policy_episodes(files.config, files.run, files.metrics, files.episodes)
    except (RlalError, ValueError) as err:
        _fail(f"{run}: {err}")
    if split.greedy_vs_uniform is None:
        _fail(f"{run}: no rescored final choice in metrics.jsonl")
    return files, split


def ridge_correlation(split: PolicyEpisodes, penalty: float) -> tuple[float, float] | None:
    """(correlation of the ridge fit of the random episodes with the policy episodes' rewards, correlation of
    the policy episodes' rewards with minus their distance from uniform); None without the plans."""
    random, policy = split.random.deviations, split.policy.deviations
    if random is None or policy is None or len(split.policy.rewards) < 3:
        return None
    x = np.c_[np.array(random), np.ones(len(random))]
    ridge = penalty * np.eye(x.shape[1])
    ridge[-1, -1] = 0.0  # the intercept is not shrunk
    w = np.linalg.solve(x.T @ x + ridge, x.T @ np.array(split.random.rewards))
    later = np.array(policy)
    predicted = np.c_[later, np.ones(len(later))] @ w
    actual = np.array(split.policy.rewards)
    closeness = -np.abs(later).mean(axis=1)
    return float(np.corrcoef(predicted, actual)[0, 1]), float(np.corrcoef(closeness, actual)[0, 1])


def critic(files: RunFiles) -> str:
    """alpha, the mean range of Q over the actions, and the policy's spread, of the run's last checkpoint."""
    checkpoint = load_checkpoint(files.run_dir)
    if checkpoint is None or checkpoint.state.get("agent") is None:
        return "; critic: no checkpoint"
    config = load_config(files.run_dir / "config.yaml", [])
    assert files.episodes  # read_split found scored episodes
    num_layers = len(files.episodes[0]["keep"])
    saved = checkpoint.state["agent"]
    states, epochs = saved["replay"]["states"], saved["replay"]["epochs"]
    agent = make_agent(config.agent, states.shape[1], num_layers)
    agent.load_state_dict(saved)
    context = make_context(config.agent, num_layers)
    if context is not None:
        context.load_state_dict(checkpoint.state["context"])
    obs = agent._obs(states, agent._z_table(context)[epochs])  # each state on its epoch's prior, as in SAC
    with torch.no_grad():
        q = torch.stack([torch.min(agent.qf1(obs, a.expand(len(obs))), agent.qf2(obs, a.expand(len(obs))))
                         for a in torch.linspace(0.02, 0.98, 25)], dim=1)  # fmt: skip
        _, log_std = agent.actor(obs)
    q_range = float((q.max(dim=1).values - q.min(dim=1).values).mean())
    spread = float(log_std.exp().mean())
    return f"; critic: alpha {agent.alpha:.3f}, Q range {q_range:.4f}, policy std {spread:.2f}"


def _distance(value: float | None) -> str:
    return "missing" if value is None else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished joint run directories")
    parser.add_argument("--ridge", type=float, default=1.0, help="the ridge penalty (default 1)")
    parser.add_argument("--critic", action="store_true", help="also read the agent of the last checkpoint")
    args = parser.parse_args()
    policy_gain, greedy_gain, fitted, closeness = [], [], [], []
    for run in args.runs:
        files, split = read_split(run)
        assert split.greedy_vs_uniform is not None
        policy_gain.append(split.gain)
        greedy_gain.append(split.greedy_vs_uniform)
        correlations = ridge_correlation(split, args.ridge)
        learnable = ""
        if correlations is not None:
            fitted.append(correlations[0])
            closeness.append(correlations[1])
            learnable = f"; ridge r {correlations[0]:+.2f}, closeness r {correlations[1]:+.2f}"
        if args.critic:
            learnable += critic(files)
        print(
            f"{run}: random {split.random.mean:+.2f} ({len(split.random.rewards)} episodes, distance "
            f"{_distance(split.random.distance)}), policy {split.policy.mean:+.2f} "
            f"({len(split.policy.rewards)}, distance {_distance(split.policy.distance)}), policy - random "
            f"{split.gain:+.2f}; greedy - uniform {split.greedy_vs_uniform:+.2f} (distance "
            f"{_distance(split.greedy_distance)}){learnable}"
        )
    for name, diffs, unit in (
        ("policy - random episodes", policy_gain, " points"),
        ("greedy - uniform", greedy_gain, " points"),
        ("ridge fit of the random episodes, correlation with the policy episodes' rewards", fitted, ""),
        ("closeness to uniform, correlation with the policy episodes' rewards", closeness, ""),
    ):
        if not diffs:
            continue
        s = summarize_paired(diffs)
        spread = "" if s.std is None else f" ± {s.std:.2f}, SE {s.se:.2f}, 95% interval {s.interval_text()}"
        print(f"{name} over {s.n} runs: {s.mean:+.2f}{spread}{unit}")


if __name__ == "__main__":
    main()
