"""How fast the environment can score candidate sub-networks and price plans; one JSON line per figure.

* ``score``: one sub-network of ResNet-56 (keep ratio 0.5 on every layer, masks on the dense weights) scored
  on 5,000 random 3x32x32 images in eval mode, batch 500: seconds for the whole pass (forward + accuracy
  against random labels), the minimum over interleaved repeats. The dense model and the physically cut
  model are timed the same way for comparison. On the CPU, and on the GPU when CUDA is available.
* ``cost``: seconds to price 10,000 random keep vectors of ResNet-56 with the analytic cost model.

    python bench/structure.py [--images 5000] [--batch 500] [--repeats 3]

Figures go to docs/benchmarks.md with the machine named. This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from rlal.machine import describe
from rlal.models import create_model
from rlal.structure import ChannelMasks, Plan, Structure, cut, find_layers


def emit(**record: object) -> None:
    print(json.dumps(record), flush=True)


def timed(
    runs: dict[str, Callable[[], None]], repeats: int, sync: Callable[[], None]
) -> dict[str, list[float]]:
    """Seconds of each run, ``repeats`` times, after one warm-up each. Runs are interleaved (round-robin)
    so that load from other processes on a shared machine hits every variant alike; report the minimum."""
    for run in runs.values():
        run()
        sync()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def score(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int) -> float:
    """Top-1 accuracy of ``model`` on ``images`` (what the environment's reward needs)."""
    correct = torch.zeros((), dtype=torch.int64, device=images.device)
    with torch.no_grad():
        for i in range(0, len(images), batch):
            logits = model(images[i : i + batch])
            correct += (logits.argmax(1) == labels[i : i + batch]).sum()
    return correct.item() / len(images)


def bench_scoring(
    structure: Structure, device: str, images: int, batch: int, repeats: int
) -> list[dict[str, object]]:
    """Time scoring the dense, the masked (keep 0.5) and the cut model on ``images`` random images; print
    one JSON line per variant and return them (``bench/gpu_evidence_steps.py`` keeps them)."""
    model = structure.model.to(device).eval()
    plan = Plan.from_keep_ratios(structure, 0.5)
    small = cut(structure, plan).to(device).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(images, *structure.input_shape, generator=g).to(device)
    y = torch.randint(0, 10, (images,), generator=g).to(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    masks = ChannelMasks(structure)
    masks.set_plan(plan)

    def masked() -> None:
        with masks:
            score(model, x, y, batch)

    runs = {
        "dense": lambda: score(model, x, y, batch),
        "masked": masked,
        "cut": lambda: score(small, x, y, batch),
    }
    records = []
    for variant, times in timed(runs, repeats, sync).items():
        record = dict(
            bench="score",
            model="resnet56",
            variant=variant,
            device=device,
            images=images,
            batch=batch,
            keep_ratio=1.0 if variant == "dense" else 0.5,
            seconds=round(min(times), 4),
            seconds_median=round(statistics.median(times), 4),
            seconds_all=[round(t, 4) for t in times],
            images_per_s=round(images / min(times), 1),
        )
        emit(**record)
        records.append(record)
    structure.model.to("cpu")
    return records


def bench_cost(structure: Structure, vectors: int, repeats: int) -> None:
    rng = np.random.default_rng(0)
    keep = rng.integers(1, structure.channels + 1, size=(vectors, len(structure)))
    cost = structure.cost  # built once; building is part of setting up a run, not of pricing
    times = timed({"cost": lambda: cost.evaluate(keep)}, repeats, lambda: None)["cost"]
    emit(
        bench="cost",
        model="resnet56",
        vectors=vectors,
        layers=len(structure),
        seconds=round(min(times), 5),
        seconds_all=[round(t, 5) for t in times],
        vectors_per_s=round(vectors / min(times)),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per figure (CPU); GPU uses 5")
    parser.add_argument("--vectors", type=int, default=10_000)
    args = parser.parse_args()

    emit(bench="machine", **describe())

    torch.manual_seed(0)
    structure = find_layers(create_model("resnet56").eval(), (3, 32, 32))
    bench_cost(structure, args.vectors, repeats=5)
    bench_scoring(structure, "cpu", args.images, args.batch, args.repeats)
    if torch.cuda.is_available():
        bench_scoring(structure, "cuda", args.images, args.batch, repeats=5)


if __name__ == "__main__":
    main()
