"""What recording the gradient's norm adds to a training step: the time of one ``get_total_norm`` over the
model's gradients against the time of a whole training step (which now includes it), one JSON line.

T2's network (ResNet-56 at 1x28x28, 10 classes), SGD with momentum, batch ``--batch``, on random images (a
step's cost does not depend on the pixels). Rounds alternate ``--steps`` training steps with ``--steps``
norm computations on the gradients those steps left, so drift of a shared machine hits both alike; the
median per round of each.

    python bench/grad_norm_overhead.py [--threads 1] [--rounds 5] [--steps 20] [--batch 128]

Figures go to docs/benchmarks.md with the machine named. This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from step_setup import t2_steps
from torch import nn

from rlal.config import OptimConfig
from rlal.machine import describe
from rlal.train.epoch import train_one_epoch
from rlal.train.optim import build_optimizer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()

    runtime, model, batches = t2_steps(args.threads, args.batch, args.steps)
    optimizer = build_optimizer(model, OptimConfig())

    def steps() -> float:
        start = time.perf_counter()
        train_one_epoch(model, batches, optimizer, None, runtime)
        return (time.perf_counter() - start) / args.steps

    def norms() -> float:
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        start = time.perf_counter()
        for _ in range(args.steps):
            nn.utils.get_total_norm(grads)
        return (time.perf_counter() - start) / args.steps

    steps(), norms()  # warm-up round, not timed
    step_t, norm_t = [], []
    for _ in range(args.rounds):
        step_t.append(steps())
        norm_t.append(norms())
    step_ms, norm_ms = 1000 * statistics.median(step_t), 1000 * statistics.median(norm_t)
    print(json.dumps({"bench": "grad_norm_overhead", "model": "resnet56", "batch": args.batch,
                      "params": sum(p.numel() for p in model.parameters()),
                      "ms_per_step": round(step_ms, 2), "ms_per_norm": round(norm_ms, 3),
                      "norm_share_of_step": round(norm_ms / step_ms, 5), **describe()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
