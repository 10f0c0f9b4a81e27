"""How well the agent acts on the synthetic drifting problem (``rlal.agent.synthetic``). JSON lines.

Per agent kind and seed, over the last 6 of 24 epochs (16 episodes each, the settings of
``tests/test_agent_synthetic.py``):

- ``forecast``: regret of the greedy episode on the context the agent acts on, before the epoch's rewards
  are learnt: what the joint loop's episodes face (its plans are chosen before that epoch is scored);
- ``hindsight``: regret of the greedy episode after the epoch's context fit and agent update (what
  ``train_synthetic`` reports, and what the joint loop's final choice is closer to);
- ``explore_reward``: the mean reward of the epoch's exploration episodes.

    python bench/synthetic_context.py --seeds 3,4,5 [--kinds sac,sac-no-dynamics] [--gamma 0] \
        [--reward-scale std]

Seconds per seed on one thread. To compare two versions of the code, run it with each on
``PYTHONPATH`` and pair the seeds. This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from rlal.agent import (
    AgentConfig,
    ContextConfig,
    EpochContext,
    SyntheticEnv,
    make_agent,
    make_context,
    run_episode,
)


def agent_config(kind: str, seed: int, gamma: float, reward_scale: str = "none",
                 init_alpha: float | None = None) -> AgentConfig:  # fmt: skip
    changes = {} if reward_scale == "none" else {"reward_scale": reward_scale}  # older code: no such field
    if init_alpha is not None:
        changes["init_alpha"] = init_alpha
    return AgentConfig(kind=kind, seed=seed, hidden_sizes=[64, 64], updates_per_epoch=64, warmup_episodes=16,
                       gamma=gamma, context=ContextConfig(embed_dim=8, updates_per_epoch=30, max_epochs=32),
                       **changes)  # fmt: skip


def agent_context(context: EpochContext | None, t: int) -> torch.Tensor | None:
    """The context the agent acts on and learns from in epoch t; code before 2026-12-05 has no prior, and
    its agent read ``z`` (the prior while e_t is blank, refitted afterwards)."""
    if context is None:
        return None
    return context.prior(t) if hasattr(context, "prior") else context.z(t)


def measure(
    kind: str, seed: int, gamma: float, epochs: int = 24, per_epoch: int = 16, reward_scale: str = "none",
    init_alpha: float | None = None,
) -> dict[str, float]:  # fmt: skip
    env, cfg = SyntheticEnv(seed=seed), agent_config(kind, seed, gamma, reward_scale, init_alpha)
    agent, context = make_agent(cfg, env.state_dim, env.num_layers), make_context(cfg, env.num_layers)
    forecast, hindsight, explore, history = [], [], [], []
    for t in range(epochs):
        env.set_epoch(t)
        z = agent_context(context, t)
        forecast.append(1 - env.reward_of(run_episode(env, agent, t, z, deterministic=True).keep, t))
        episodes = [run_episode(env, agent, t, z) for _ in range(per_epoch)]
        for episode in episodes:
            agent.observe(episode)
        history.extend(episodes)
        if context is not None:
            context.fit(history)
        agent.update(context)
        z = agent_context(context, t)
        hindsight.append(1 - env.reward_of(run_episode(env, agent, t, z, deterministic=True).keep, t))
        explore.append(float(np.mean([e.reward for e in episodes])))
    last = slice(-6, None)
    return {"forecast": float(np.mean(forecast[last])), "hindsight": float(np.mean(hindsight[last])),
            "explore_reward": float(np.mean(explore[last]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="3,4,5")
    parser.add_argument("--kinds", default="sac")
    parser.add_argument("--gamma", type=float, default=0.0)
    parser.add_argument("--reward-scale", default="none", help="agent.reward_scale (code before it: none)")
    parser.add_argument("--init-alpha", type=float, default=None, help="agent.init_alpha (default: 0.1)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for kind in args.kinds.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            measured = measure(kind, seed, args.gamma, reward_scale=args.reward_scale,
                               init_alpha=args.init_alpha)  # fmt: skip
            print(json.dumps({"kind": kind, "gamma": args.gamma, "reward_scale": args.reward_scale,
                              "init_alpha": args.init_alpha, "seed": seed, **measured}), flush=True)


if __name__ == "__main__":
    main()
