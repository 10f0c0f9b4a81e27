"""bench/policy_episodes.py: the policy's episodes against the random warm-up's, read from joint runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from rlal.agent import AgentConfig, Episode, make_agent
from rlal.checkpoint import save_checkpoint

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "policy_episodes.py"
UNIFORM = {"a": 8, "b": 16}


def joint_run(path: Path, rewards: list[float], *, warmup: int, greedy: float | None,
              reward: str = "vs-uniform", recorded_greedy: bool = False,
              keeps: list[dict[str, int]] | None = None, agent: str = "kind: sac") -> Path:  # fmt: skip
    """A run directory holding what the script reads: two search epochs of ``len(rewards) // 2`` episodes,
    the first ``warmup`` random; every episode keeps layer ``a`` at 16 (twice uniform's width) and ``b`` at
    16 (uniform's); ``greedy`` None: the greedy plan was the uniform plan and is not listed."""
    path.mkdir(parents=True)
    half = len(rewards) // 2
    keeps = keeps or [{"a": 16, "b": 16}] * len(rewards)
    pairs = enumerate(zip(rewards, keeps, strict=True))
    episodes = [{"epoch": i // half, "reward": r, "keep": k} for i, (r, k) in pairs]
    if recorded_greedy:  # what runs before 3bc2eee wrote after the search's episodes
        episodes.append({"epoch": 1, "reward": 0.5, "keep": {"a": 8, "b": 8}})
    (path / "episodes.json").write_text(json.dumps(episodes))
    (path / "run.json").write_text(json.dumps({"agent_warmup_episodes": warmup}))
    candidates = [{"source": "uniform", "diff_vs_uniform": 0.0, "plan": UNIFORM}]
    if greedy is not None:
        candidates.append({"source": "greedy", "diff_vs_uniform": greedy, "plan": {"a": 8, "b": 8}})
    metrics = [
        {"phase": "search", "epoch": 2, "episode_rewards": rewards[:half]},
        {"phase": "search", "epoch": 3, "episode_rewards": rewards[half:]},
        {"phase": "final-choice", "epoch": 3, "rule": "rescored", "candidates": candidates},
    ]
    (path / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    (path / "result.json").write_text(json.dumps({"method": "rlal"}))
    (path / "config.yaml").write_text(f"env:\n  reward: {reward}\nagent:\n  {agent}\n")
    return path


def policy_episodes(*args: Path | str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          check=False)  # fmt: skip


def test_pairs_the_policy_episodes_with_the_random_ones_of_each_run(tmp_path: Path) -> None:
    one = joint_run(tmp_path / "one", [-0.02, -0.04, 0.01, 0.03], warmup=2, greedy=-1.5, recorded_greedy=True)
    two = joint_run(tmp_path / "two", [0.00, 0.02, 0.00, 0.00], warmup=2, greedy=None)
    out = policy_episodes(one, two)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    # the recorded greedy episode of the older run is not a policy episode; distance: layer a at 2x uniform
    assert lines[0] == (
        f"{one}: random -3.00 (2 episodes, distance 0.50), policy +2.00 (2, distance 0.50), "
        "policy - random +5.00; greedy - uniform -1.50 (distance 0.25)"
    )
    assert lines[1].endswith("policy - random -1.00; greedy - uniform +0.00 (distance 0.00)")
    assert lines[2].startswith("policy - random episodes over 2 runs: +2.00 ± 4.24, SE 3.00, ")
    assert lines[3].startswith("greedy - uniform over 2 runs: -0.75 ± 1.06, SE 0.75, ")


def test_refuses_rewards_that_are_not_relative_to_the_uniform_plan(tmp_path: Path) -> None:
    run = joint_run(tmp_path / "raw", [0.8, 0.7, 0.9, 0.8], warmup=2, greedy=None, reward="accuracy")
    out = policy_episodes(run)
    assert out.returncode == 2
    expected = f"error: {run}: rewards are not relative to the uniform plan (env.reward 'accuracy')"
    assert out.stderr == expected + "\n"


def test_refuses_a_run_whose_episodes_are_all_random(tmp_path: Path) -> None:
    run = joint_run(tmp_path / "all-random", [0.0, 0.01, 0.02, 0.0], warmup=4, greedy=None)
    out = policy_episodes(run)
    assert out.returncode == 2
    assert "4 warm-up episodes of 4: no random or no policy episodes" in out.stderr


def test_a_reward_linear_in_the_plan_is_found_learnable_from_the_random_episodes(tmp_path: Path) -> None:
    # reward = 0.02 * (a / 8 - 1) - 0.01 * (b / 16 - 1) in both epochs: a ridge fit of the random ones
    # predicts the policy ones exactly; closeness to uniform ranks them otherwise (wider a scores higher)
    keeps = [{"a": a, "b": b} for a, b in [(8, 16), (12, 8), (16, 12), (4, 20), (10, 14), (6, 10)] * 2]
    rewards = [0.02 * (k["a"] / 8 - 1) - 0.01 * (k["b"] / 16 - 1) for k in keeps]
    policy_keeps = [{"a": a, "b": b} for a, b in [(9, 15), (14, 10), (5, 18), (11, 16), (7, 12), (13, 13)]]
    keeps[6:] = policy_keeps
    rewards[6:] = [0.02 * (k["a"] / 8 - 1) - 0.01 * (k["b"] / 16 - 1) for k in policy_keeps]
    run = joint_run(tmp_path / "linear", rewards, warmup=6, greedy=0.5, keeps=keeps)
    closeness = [-(abs(k["a"] / 8 - 1) + abs(k["b"] / 16 - 1)) / 2 for k in policy_keeps]
    r = np.corrcoef(closeness, rewards[6:])[0, 1]
    out = policy_episodes(run, "--ridge", "0.0001")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].endswith(f"; ridge r +1.00, closeness r {r:+.2f}")
    summary = "ridge fit of the random episodes, correlation with the policy episodes' rewards over 1 runs"
    assert f"{summary}: +1.00" in out.stdout


def test_the_critic_of_a_run_without_a_checkpoint_is_said_to_be_missing(tmp_path: Path) -> None:
    run = joint_run(tmp_path / "no-checkpoint", [-0.02, -0.04, 0.01, 0.03], warmup=2, greedy=None)
    out = policy_episodes(run, "--critic")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].endswith("; critic: no checkpoint")


def test_the_critic_of_a_checkpoint_is_read_as_its_alpha_q_range_and_policy_spread(tmp_path: Path) -> None:
    # An agent whose critics are Q = 0.5 * action (range 0.48 over [0.02, 0.98]) and whose actor's
    # log-std is the soft clamp's middle (-1.5: std 0.22) whatever the state; alpha as configured.
    settings = "kind: sac-no-dynamics\n  hidden_sizes: [4, 4]\n  init_alpha: 0.25"
    run = joint_run(tmp_path / "checkpointed", [-0.02, -0.04, 0.01, 0.03], warmup=2, greedy=None,
                    agent=settings)  # fmt: skip
    agent = make_agent(AgentConfig(kind="sac-no-dynamics", hidden_sizes=[4, 4], init_alpha=0.25), 3, 2)
    rng = np.random.default_rng(0)
    for epoch in (0, 1):
        states = rng.random((2, 3), dtype=np.float32)
        actions = rng.random(2, dtype=np.float32)
        agent.observe(Episode(epoch, states, actions, actions, 0.01))
    with torch.no_grad():
        for q in (agent.qf1, agent.qf2):
            first, second, last = (m for m in q.net if isinstance(m, torch.nn.Linear))
            for layer in (first, second, last):
                layer.weight.zero_()
                layer.bias.zero_()
            first.weight[0, -1] = 1.0  # the action is the critic's last input
            second.weight[0, 0] = 1.0
            last.weight[0, 0] = 0.5
        agent.actor.fc_logstd.weight.zero_()
        agent.actor.fc_logstd.bias.zero_()
    save_checkpoint(run, 4, torch.nn.Linear(1, 1), {"agent": agent.state_dict(), "context": None})
    out = policy_episodes(run, "--critic")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].endswith("; critic: alpha 0.250, Q range 0.4800, policy std 0.22")
