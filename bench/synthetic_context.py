"""How well the agent acts on the synthetic drifting problem (``rlal.agent.synthetic``). JSON lines.

Per agent kind and seed, over the last 6 of 24 epochs (16 episodes each, the settings of
``tests/test_agent_synthetic.py``):

- ``forecast``: regret of the greedy episode on the context the agent acts on, before the epoch's rewards
  are learnt: what the joint loop's episodes face (its plans are chosen before that epoch is scored);
- ``hindsight``: regret of the greedy episode after the epoch's context fit and agent update (what
  ``train_synthetic`` reports, and what the joint loop's final choice is closer to);
- ``explore_reward``: the mean reward of the epoch's exploration episodes.

    python bench/synthetic_context.py --seeds 3,4,5 [--kinds sac,sac-no-dynamics] [--gamma 0] \
        [--reward-scale std] [--agent init_alpha=0.5 ...]

Each epoch is :func:`rlal.agent.run_epoch` with ``forecast=True``. Seconds per seed on one thread. To
compare two versions of the code, run the bench of each version with it on ``PYTHONPATH`` and pair the
seeds. This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from rlal.agent import AgentConfig, ContextConfig, Episode, SyntheticEnv, make_agent, make_context, run_epoch


def agent_config(kind: str, seed: int, gamma: float, reward_scale: str = "none",
                 changes: dict[str, float] | None = None) -> AgentConfig:  # fmt: skip
    changes = dict(changes or {})
    if reward_scale != "none":  # older code has no such field
        changes["reward_scale"] = reward_scale
    return AgentConfig(kind=kind, seed=seed, hidden_sizes=[64, 64], updates_per_epoch=64, warmup_episodes=16,
                       gamma=gamma, context=ContextConfig(embed_dim=8, updates_per_epoch=30, max_epochs=32),
                       **changes)  # fmt: skip


def measure(
    kind: str, seed: int, gamma: float, epochs: int = 24, per_epoch: int = 16, reward_scale: str = "none",
    changes: dict[str, float] | None = None,
) -> dict[str, float]:  # fmt: skip
    env, cfg = SyntheticEnv(seed=seed), agent_config(kind, seed, gamma, reward_scale, changes)
    agent, context = make_agent(cfg, env.state_dim, env.num_layers), make_context(cfg, env.num_layers)
    history: list[Episode] = []
    results = [run_epoch(env, agent, context, history, t, per_epoch, forecast=True) for t in range(epochs)]
    last = results[-6:]
    return {"forecast": float(np.mean([r.forecast_regret for r in last])),
            "hindsight": float(np.mean([r.regret for r in last])),
            "explore_reward": float(np.mean([r.mean_reward for r in last]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="3,4,5")
    parser.add_argument("--kinds", default="sac")
    parser.add_argument("--gamma", type=float, default=0.0)
    parser.add_argument("--reward-scale", default="none", help="agent.reward_scale (code before it: none)")
    parser.add_argument("--agent", action="append", default=[], metavar="FIELD=NUMBER",
                        help="a numeric AgentConfig field, e.g. init_alpha=0.5 (repeatable)")
    args = parser.parse_args()
    changes = {}
    for item in args.agent:
        field, _, value = item.partition("=")
        default = getattr(AgentConfig(), field, None)
        if not isinstance(default, int | float) or isinstance(default, bool):
            parser.error(f"--agent {item}: {field!r} is not a numeric AgentConfig field")
        try:
            changes[field] = type(default)(value)
        except ValueError:
            parser.error(f"--agent {item}: {value!r} is not a {type(default).__name__}")
    torch.set_num_threads(1)
    for kind in args.kinds.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            measured = measure(kind, seed, args.gamma, reward_scale=args.reward_scale, changes=changes)
            print(json.dumps({"kind": kind, "gamma": args.gamma, "reward_scale": args.reward_scale,
                              **changes, "seed": seed, **measured}), flush=True)


if __name__ == "__main__":
    main()
