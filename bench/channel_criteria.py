"""How well each channel criterion picks the channels a layer keeps, on a trained dense model. JSON lines.

For the uniform plan and a few random plans on the budget (relative actions), every criterion
(``env.criterion``: l2, l1, bn_scale, random) selects each layer's channels on the same trained weights; the
masked sub-network is scored on the whole reward split with its BN statistics re-estimated on training
batches, as the joint method's final choice scores plans. If a criterion ranked channels no better than
chance it would score like ``random``.

    python bench/channel_criteria.py RUN_DIR [--plans 4] [--bn-batches 2] [--threads 1]

RUN_DIR is a finished dense run (``rlal train --method dense``), e.g. one of ``rlal bench quality``'s.
This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from rlal.checkpoint import load_weights
from rlal.env import PruningEnv
from rlal.machine import describe
from rlal.rundir import load_run_config
from rlal.structure import channel_importance, find_layers
from rlal.train.choice import score_plans
from rlal.train.dense import input_shape, setup

CRITERIA = ("l2", "l1", "bn_scale", "random")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished dense run directory")
    parser.add_argument("--plans", type=int, default=4, help="random plans besides the uniform one")
    parser.add_argument("--bn-batches", type=int, default=2, help="training batches for the BN re-estimate")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    config = load_run_config(args.run)
    runtime, data, model = setup(config)
    load_weights(model, args.run / "model.safetensors")
    structure = find_layers(model, input_shape(data), policy=config.env.policy)
    env = PruningEnv(structure, config.env)  # budget only: plans on the run's MACs target
    rng = np.random.default_rng(0)
    plans = [env.uniform_plan]
    for _ in range(args.plans):
        env.reset()
        for _ in range(env.num_layers):
            env.step(float(rng.random()))
        plans.append(env.plan_of(env.finish()))

    machine = {**describe(), "run": str(args.run)}
    means = {}
    for criterion in CRITERIA:
        scores = channel_importance(structure, criterion, seed=config.seed)
        correct = score_plans(structure, plans, data.reward, data.train, runtime, criterion=criterion,
                              scores=scores, bn_batches=args.bn_batches, bn_sets=1)
        accs = 100 * correct.mean(axis=(1, 2))
        means[criterion] = float(accs.mean())
        for i, acc in enumerate(accs):
            print(json.dumps({"criterion": criterion, "plan": "uniform" if i == 0 else f"random-{i}",
                              "reward_split_acc": round(float(acc), 2), **machine}), flush=True)
    print(json.dumps({"summary": "mean over plans", **{k: round(v, 2) for k, v in means.items()}, **machine}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
