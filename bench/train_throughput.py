"""Dense training and evaluation throughput (images/s), one JSON line per configuration.

CPU: ResNet-20 on Fashion-MNIST, timed over a fixed number of batches after a warm-up; ``--cpu-models`` and
``--cpu-formats`` add other models and memory formats, run in turn ``--repeats`` times (interleaved, so drift
of a shared machine hits every case alike).
GPU (when CUDA is present): ResNet-56 on CIFAR-10, whole epochs with the in-memory device data path,
bf16 autocast and channels-last, with and without ``torch.compile``.

    python bench/train_throughput.py [--data-dir DIR] [--cpu-batches 40] [--gpu-epochs 3]
        [--cpu-models resnet20,resnet56,mobilenetv2-cifar] [--cpu-formats contiguous,channels-last]
        [--cpu-threads 1] [--repeats 3]

Figures go to docs/benchmarks.md with the machine named. This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import torch

from rlal.config import DataConfig, OptimConfig, TrainConfig
from rlal.data import build_data
from rlal.errors import RlalError
from rlal.machine import describe
from rlal.models import create_model
from rlal.train.epoch import evaluate, train_one_epoch
from rlal.train.optim import build_optimizer, build_scheduler
from rlal.train.runtime import resolve_runtime, seed_everything

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


class FirstBatches:
    """The first ``n`` batches of a loader, as a loader."""

    def __init__(self, loader, n: int) -> None:
        self.loader, self.n = loader, min(n, len(loader))

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return itertools.islice(iter(self.loader), self.n)


def bench(
    *, model_name: str, data_cfg: DataConfig, train_cfg: TrainConfig, timed_batches: int | None,
    epochs: int, warmup_batches: int,
) -> dict[str, object]:
    """Train ``epochs`` timed passes (after a warm-up) and one eval pass; return throughput figures."""
    runtime = resolve_runtime(train_cfg)
    seed_everything(0)
    data = build_data(data_cfg, runtime.device, seed=0, channels_last=runtime.channels_last)
    spec = data.spec
    fmt = torch.channels_last if runtime.channels_last else torch.contiguous_format
    model = create_model(model_name, num_classes=spec.num_classes, in_channels=spec.in_channels,
                         input_size=spec.input_size).to(runtime.device, memory_format=fmt)
    step_model = torch.compile(model) if train_cfg.compile else model
    optim_cfg = OptimConfig()
    optimizer = build_optimizer(model, optim_cfg)
    train = data.train if timed_batches is None else FirstBatches(data.train, timed_batches)
    scheduler = build_scheduler(optimizer, optim_cfg, [len(train)] * (epochs + 1))

    # Warm-up: kernels selected, compile done, caches filled; not timed.
    train_one_epoch(step_model, FirstBatches(data.train, warmup_batches), optimizer, None, runtime)
    evaluate(step_model, FirstBatches(data.test, 2), runtime)

    seconds = images = 0.0
    for epoch in range(1, epochs + 1):
        data.train.set_epoch(epoch)
        stats = train_one_epoch(step_model, train, optimizer, scheduler, runtime)
        seconds += stats.seconds
        images += stats.images
    test = evaluate(step_model, data.test, runtime)
    return {
        "bench": "train_throughput",
        "model": model_name,
        "dataset": spec.name,
        "device": runtime.describe(),
        "compile": train_cfg.compile,
        "batch_size": data_cfg.batch_size,
        "train_images": int(images),
        "train_images_per_s": round(images / seconds, 1),
        "epoch_seconds": round(seconds / epochs, 3) if timed_batches is None else None,
        "full_epoch_images": data.train.num_samples,
        "eval_images_per_s": round(test.images / test.seconds, 1),
        **describe(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="dataset directory (default: ../shared/data when present)")
    parser.add_argument("--cpu-batches", type=int, default=40, help="timed CPU training batches")
    parser.add_argument("--gpu-epochs", type=int, default=3, help="timed GPU epochs")
    parser.add_argument("--skip-cpu", action="store_true")
    parser.add_argument("--cpu-models", default="resnet20", help="comma-separated zoo models (CPU)")
    parser.add_argument("--cpu-formats", default="contiguous",
                        help="comma-separated memory formats: contiguous, channels-last (CPU)")
    parser.add_argument("--cpu-threads", type=int, default=None, help="torch threads (CPU; default: all)")
    parser.add_argument("--repeats", type=int, default=1, help="CPU: run every case this many times, in turn")
    args = parser.parse_args()
    data_dir = args.data_dir or (str(SHARED_DATA) if SHARED_DATA.is_dir() else None)
    formats = {"contiguous": "off", "channels-last": "on"}
    cpu_formats = args.cpu_formats.split(",")
    if any(f not in formats for f in cpu_formats):
        print(f"error: --cpu-formats takes {', '.join(formats)}, got {args.cpu_formats!r}", file=sys.stderr)
        return 2
    runs = []
    if not args.skip_cpu:
        for _ in range(args.repeats):
            for model_name in args.cpu_models.split(","):
                for fmt in cpu_formats:
                    runs.append(dict(
                        model_name=model_name,
                        data_cfg=DataConfig(dataset="fashion-mnist", data_dir=data_dir, batch_size=128),
                        train_cfg=TrainConfig(device="cpu", progress=False, threads=args.cpu_threads,
                                              channels_last=formats[fmt]),
                        timed_batches=args.cpu_batches, epochs=1, warmup_batches=3,
                    ))
    if torch.cuda.is_available():
        for compiled in (False, True):
            runs.append(dict(
                model_name="resnet56",
                data_cfg=DataConfig(
                    dataset="cifar10", data_dir=data_dir, batch_size=512, eval_batch_size=1024
                ),
                train_cfg=TrainConfig(device="cuda", compile=compiled, progress=False),
                timed_batches=None, epochs=args.gpu_epochs, warmup_batches=20,
            ))
    try:
        for run in runs:
            print(json.dumps(bench(**run)), flush=True)
    except RlalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
