"""How well the latency table predicts a plan's latency: random plans, predicted vs measured; JSON lines.

For each backend the table is built (or read from the cache) as a run with a latency budget builds it
(:func:`rlal.env.make_budget`), then ``--plans`` random plans are drawn (every layer's keep count uniform
over its allowed counts), cut, and timed against the dense model in alternating turns of 10 calls
(:func:`rlal.export.compare_latency`). The error of a plan is its predicted latency ratio (table's plan /
table's dense) over its measured ratio (pruned / dense, timed together), minus 1: a ratio, so that the
machine's drift between building the table and timing the plan cancels.

    python bench/latency_predictor.py --model resnet20 --input 1,28,28 --round-to 8 --plans 50 --threads 1

Figures go to docs/benchmarks.md with the machine named. This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import tempfile

import numpy as np
import torch

from rlal.env import allowed_counts
from rlal.export import available_backends, compare_latency, environment
from rlal.models import count_macs_params, create_model
from rlal.structure import Plan, cut, find_layers
from rlal.structure.latency import LatencyModel


def emit(**record: object) -> None:
    print(json.dumps(record), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--input", default="1,28,28", help="C,H,W (default 1,28,28)")
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--policy", choices=["internal", "all"], default="internal")
    parser.add_argument("--round-to", type=int, default=8)
    parser.add_argument("--min-keep-ratio", type=float, default=0.2)
    parser.add_argument("--backends", default="torch-cpu,onnxruntime-cpu")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--plans", type=int, default=50)
    parser.add_argument("--runs", type=int, default=20, help="timed calls per model and plan")
    parser.add_argument("--table-runs", type=int, default=15, help="timed calls per unit in the table")
    parser.add_argument("--cache", help="latency table cache directory (default: a fresh temporary one)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shape = tuple(int(v) for v in args.input.split(","))
    backends = [b for b in args.backends.split(",") if b in available_backends()]
    emit(bench="machine", **environment(), backends=backends)

    dense = create_model(args.model, num_classes=args.num_classes, in_channels=shape[0], input_size=shape[1])
    dense.eval()
    structure = find_layers(dense, shape, policy=args.policy)
    dense_macs, _ = count_macs_params(dense, shape)
    with tempfile.TemporaryDirectory(prefix="rlal-latency-cache-") as tmp:
        for backend in backends:
            allowed = [allowed_counts(layer.channels, args.min_keep_ratio, args.round_to)
                       for layer in structure.layers]
            table = LatencyModel.build(structure, allowed, backend=backend, batch=args.batch,
                                       threads=args.threads, runs=args.table_runs,
                                       cache_dir=args.cache or tmp)
            emit(bench="table", backend=backend, units=len(table.unit_ms), dense_ms=round(table.dense_ms, 3),
                 min_ms=round(table.min_ms, 3), rest_ms=round(table.rest_ms, 3), scale=round(table.scale, 4))
            rng = np.random.default_rng(args.seed)
            errors = []
            for i in range(args.plans):
                keep = [int(rng.choice(counts)) for counts in allowed]
                plan = Plan.from_keep_counts(structure, keep)
                predicted = table.of(plan) / table.dense_ms
                row = compare_latency(dense, cut(structure, plan).eval(), shape, batches=[args.batch],
                                      backends=[backend], warmup=3, runs=args.runs)[0]
                measured = row["pruned"]["median_ms"] / row["dense"]["median_ms"]
                errors.append(predicted / measured - 1)
                macs_ratio = structure.cost.of(plan)[0] / dense_macs
                emit(bench="plan", backend=backend, plan=i, macs_ratio=round(macs_ratio, 4),
                     predicted_ratio=round(predicted, 4), measured_ratio=round(measured, 4),
                     error=round(errors[-1], 4))
            absolute = np.abs(errors)
            emit(bench="summary", model=args.model, policy=args.policy, round_to=args.round_to,
                 backend=backend, batch=args.batch, threads=args.threads, plans=args.plans,
                 median_abs_error=round(float(np.median(absolute)), 4),
                 p90_abs_error=round(float(np.percentile(absolute, 90)), 4),
                 mean_error=round(float(np.mean(errors)), 4))


if __name__ == "__main__":
    main()
