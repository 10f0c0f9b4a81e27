"""Soak benchmark: does a long joint run keep its memory flat? JSON lines.

Runs the joint loop (``rlal.train.joint.fit_joint``) on a tiny setting for many search epochs with many
episodes each: ResNet-20 on 128 Fashion-MNIST images, ``--search-epochs`` search epochs of ``--episodes``
episodes, a checkpoint every epoch. The resident memory (VmRSS) is read as each search epoch's metrics record
is written, and a sampler thread keeps its peak (read every ``--every`` seconds). What grows by design
is small: the environment's episode history (one keep vector and reward per episode) and the context
model's fit over it. What must not grow: the replay buffer (capped, preallocated), tensors kept in lists,
autograd graphs kept alive.

    python bench/soak.py [--search-epochs 300] [--episodes 16] [--data-dir DIR] [--out DIR]

Prints one record per search epoch (epoch, seconds, rss_mb) and a summary: the resident memory after the
first 10% of the search epochs, at the end, and the growth per 100 search epochs in between (a least-squares
slope). This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from rlal.config import load_config
from rlal.errors import RlalError
from rlal.machine import describe
from rlal.train.joint import fit_joint

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion-mnist"


def rss_mb() -> float:
    """Resident memory of this process in MiB (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RlalError("no VmRSS in /proc/self/status (this benchmark needs Linux)")


class Sampler(threading.Thread):
    """Samples resident memory every ``every`` seconds and keeps the peak (between the per-epoch rows)."""

    def __init__(self, every: float) -> None:
        super().__init__(daemon=True)
        self.every, self.peak = every, rss_mb()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.every):
            self.peak = max(self.peak, rss_mb())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--search-epochs", type=int, default=300)
    parser.add_argument("--episodes", type=int, default=16, help="episodes per search epoch")
    parser.add_argument("--data-dir", type=Path, default=SHARED_DATA if SHARED_DATA.exists() else None)
    parser.add_argument("--out", type=Path, help="run directory (default: a temporary one)")
    parser.add_argument("--every", type=float, default=0.5, help="seconds between memory samples")
    args = parser.parse_args()
    if args.search_epochs < 10 or args.episodes < 1:
        print("error: --search-epochs must be >= 10 and --episodes >= 1", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    overrides = [
        "method=rlal", "model.name=resnet20", "data.dataset=fashion-mnist", "data.train_subset=128",
        "data.reward_size=128", "data.test_subset=100", "data.batch_size=64", "data.augment=false",
        "data.eval_batch_size=100", f"train.epochs={args.search_epochs + 4}", "train.device=cpu",
        "train.threads=1", "train.progress=false", "train.eval_every=0", "search.warmup_epochs=1",
        f"search.search_epochs={args.search_epochs}", f"search.episodes_per_epoch={args.episodes}",
        "search.final_window=2", "search.final_bn_sets=1", "search.align_epochs=1", "env.target_macs=0.5",
        "env.reward_batches=1", "env.bn_recalibration_batches=1", "agent.updates_per_epoch=20",
        "agent.context.updates_per_epoch=20", f"agent.context.max_epochs={args.search_epochs}",
    ]
    if args.data_dir is not None:
        overrides.append(f"data.data_dir={args.data_dir}")
    config = load_config(None, overrides)

    sampler = Sampler(args.every)
    rows: list[dict[str, float]] = []
    start = time.perf_counter()

    import rlal.report.metrics as metrics_module

    write = metrics_module.MetricsWriter.write

    def write_and_sample(self: metrics_module.MetricsWriter, record: dict) -> None:  # one row per epoch
        write(self, record)
        if record.get("phase") == "search":
            row = {"epoch": record["epoch"], "seconds": round(time.perf_counter() - start, 1),
                   "rss_mb": round(rss_mb(), 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)

    metrics_module.MetricsWriter.write = write_and_sample  # type: ignore[method-assign]
    sampler.start()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            fit_joint(config, args.out or Path(tmp) / "soak", overwrite=True)
        except RlalError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    sampler.done.set()

    epochs = np.array([r["epoch"] for r in rows], dtype=float)
    rss = np.array([r["rss_mb"] for r in rows])
    tail = epochs >= epochs[0] + 0.1 * len(rows)  # after the first 10% (allocator and caches warm up)
    slope = float(np.polyfit(epochs[tail], rss[tail], 1)[0]) * 100
    print(json.dumps({
        "summary": "resident memory", "search_epochs": args.search_epochs,
        "episodes_per_epoch": args.episodes,
        "rss_mb_after_10pct": float(rss[tail][0]), "rss_mb_end": float(rss[-1]), "rss_mb_peak": sampler.peak,
        "growth_mb_per_100_epochs": round(slope, 2), "seconds": round(time.perf_counter() - start, 1),
        **describe(),
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
