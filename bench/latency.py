"""Dense vs pruned inference latency of a zoo model cut with a uniform keep ratio; one JSON line per figure.

Latency does not depend on the weights' values, so no training is needed: the dense model is cut to
``--keep`` of every prunable layer's channels, keep counts rounded to multiples of each ``--round-to``
(1 = no rounding; 8 suits vectorised CPU kernels and tensor cores), and both models are timed by
:func:`rlal.export.compare_latency` in PyTorch eager on the CPU, in ONNX Runtime on the CPU (``--onnx``)
and on CUDA when a GPU is visible. A figure is the median of ``--runs`` single timed calls after
``--warmup`` untimed ones, in ms per batch (see ``rlal/export.py``). For a trained run's own pruned model
use ``rlal bench latency RUN_DIR``.

    python bench/latency.py --model resnet20 --input 1,28,28 --keep 0.7 --round-to 1,8 --onnx --threads 1

Figures go to docs/benchmarks.md with the machine named. This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json

import torch

from rlal.env import Budget
from rlal.export import available_backends, compare_latency, environment
from rlal.models import count_macs_params, create_model
from rlal.structure import Plan, cut, find_layers


def emit(**record: object) -> None:
    print(json.dumps(record), flush=True)


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--input", type=ints, default=[1, 28, 28], help="C,H,W (default 1,28,28)")
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--keep", type=float, default=0.7, help="keep ratio of every layer (default 0.7)")
    parser.add_argument("--target-macs", type=float,
                        help="instead of --keep: the uniform plan of this MACs target (the budget's, as the "
                             "uniform baseline builds it, env.min_keep_ratio 0.2)")
    parser.add_argument("--round-to", type=ints, default=[1, 8], help="keep-count roundings to compare")
    parser.add_argument("--policy", choices=["internal", "all"], default="internal")
    parser.add_argument("--batch", type=ints, default=[1, 64])
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's default)")
    parser.add_argument("--onnx", action="store_true", help="also time ONNX Runtime on the CPU")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    shape = tuple(args.input)
    backends = [b for b in available_backends() if args.onnx or b != "onnxruntime-cpu"]
    emit(bench="machine", **environment(), backends=backends)

    dense = create_model(args.model, num_classes=args.num_classes, in_channels=shape[0], input_size=shape[1])
    dense.eval()
    dense_macs, _ = count_macs_params(dense, shape)
    structure = find_layers(dense, shape, policy=args.policy)
    for round_to in args.round_to:
        if args.target_macs is not None:
            plan, keep = Budget(structure, args.target_macs, 0.2, round_to).uniform_plan()
        else:
            plan, keep = Plan.from_keep_ratios(structure, args.keep, round_to=round_to), args.keep
        pruned = cut(structure, plan).eval()
        macs, _ = count_macs_params(pruned, shape)
        rows = compare_latency(dense, pruned, shape, batches=args.batch, backends=backends,
                               warmup=args.warmup, runs=args.runs)
        ideal = dense_macs / macs
        for row in rows:
            emit(bench="latency", model=args.model, input_shape=list(shape), keep=round(keep, 4),
                 policy=args.policy, round_to=round_to, keep_counts=sorted(set(plan.to_dict().values())),
                 macs_ratio=round(macs / dense_macs, 4), backend=row["backend"], batch=row["batch"],
                 threads=row["threads"], dense_ms=round(row["dense"]["median_ms"], 3),
                 pruned_ms=round(row["pruned"]["median_ms"], 3), speedup=round(row["speedup"], 3),
                 ideal_speedup=round(ideal, 3), of_ideal=round(row["speedup"] / ideal, 3))


if __name__ == "__main__":
    main()
