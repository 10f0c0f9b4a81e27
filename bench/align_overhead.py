"""What the alignment regulariser adds to a training step: none, the steered subgradient, the steered proximal
step (``search.align.step``), one JSON line per form and one with the ratios.

T2's network (ResNet-56 at 1x28x28, 10 classes) with the uniform plan at ``--target`` MACs (``env.policy``
``--policy``), SGD with momentum, batch ``--batch``, on random images (a step's cost does not depend on
the pixels). The three forms are interleaved in rounds of ``--steps`` steps, each form on its own copy of
the model, so drift of a shared machine hits them alike; per form the median time per step over the rounds.

    python bench/align_overhead.py [--threads 1] [--rounds 5] [--steps 20] [--target 0.3] [--policy internal]

Figures go to docs/benchmarks.md with the machine named. This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

from step_setup import SHAPE, t2_steps

from rlal.config import EnvConfig, OptimConfig
from rlal.env.budget import make_budget
from rlal.machine import describe
from rlal.structure import find_layers
from rlal.train.align import AlignmentRegularizer
from rlal.train.epoch import train_one_epoch
from rlal.train.optim import build_optimizer

FORMS = ("none", "subgradient", "proximal")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="training steps per form per round")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--target", type=float, default=0.3, help="MACs target of the uniform plan")
    parser.add_argument("--policy", default="internal", help="env.policy")
    args = parser.parse_args()

    runtime, dense, batches = t2_steps(args.threads, args.batch, args.steps)
    structure = find_layers(dense, SHAPE, policy=args.policy)
    plan, _ = make_budget(structure, EnvConfig(target_macs=args.target, policy=args.policy)).uniform_plan()
    optim_cfg = OptimConfig()

    runs = {}
    for form in FORMS:
        model = copy.deepcopy(dense)
        align = None
        if form != "none":
            # the regulariser reads parameters by name, so the structure of the original model serves a copy
            align = AlignmentRegularizer(structure, lam=1e-3, proximal=form == "proximal",
                                         momentum=optim_cfg.momentum)
            align.set_plan(plan)
            align.steer(model, 0.03, args.rounds * args.steps, lr=optim_cfg.lr)
        runs[form] = (model, build_optimizer(model, optim_cfg), align)

    def round_of(form: str) -> float:
        model, optimizer, align = runs[form]
        start = time.perf_counter()
        train_one_epoch(model, batches, optimizer, None, runtime, regularizer=align)
        return (time.perf_counter() - start) / args.steps

    for form in FORMS:  # warm-up round, not timed
        round_of(form)
    times: dict[str, list[float]] = {form: [] for form in FORMS}
    for _ in range(args.rounds):
        for form in FORMS:
            times[form].append(round_of(form))

    machine = describe()
    median = {form: statistics.median(t) for form, t in times.items()}
    for form in FORMS:
        print(json.dumps({"bench": "align_overhead", "form": form, "model": "resnet56", "batch": args.batch,
                          "target_macs": args.target, "policy": args.policy, "removed_channels":
                          sum(layer.channels for layer in structure.layers) - sum(plan.keep),
                          "ms_per_step": round(1000 * median[form], 2),
                          "ms_per_step_rounds": [round(1000 * t, 2) for t in times[form]], **machine}))
    ratio = {f"{a}_vs_{b}": round(median[a] / median[b], 3)
             for a, b in (("subgradient", "none"), ("proximal", "none"), ("proximal", "subgradient"))}
    print(json.dumps({"bench": "align_overhead", **ratio}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
