"""Data-parallel scaling of the joint method on the CPU (gloo): 1 process vs ``torchrun`` with N processes.

For each process count it runs the same short joint run (ResNet-20 on Fashion-MNIST: warm-up, search, align
+ cut, fine-tune) and reports, per phase, the training throughput of the whole job (images/s, every rank's
images over the slowest rank's seconds) and the seconds per search epoch spent on the agent's episodes
(acting and scoring, :func:`rlal.train.joint.run_agent_episodes`), which the ranks split between them.

    python bench/ddp_scaling.py [--data-dir DIR] [--procs 1,2] [--threads 1] [--train-subset 6000]

Each process runs ``--threads`` torch threads. One JSON line per process count, then a table. Figures go to
docs/benchmarks.md with the machine named. This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def overrides(args: argparse.Namespace) -> list[str]:
    """The run every process count repeats (per-rank batch ``--batch``: N ranks step N times the images)."""
    return [
        "method=rlal", "model.name=resnet20", "data.dataset=fashion-mnist", f"data.data_dir={args.data_dir}",
        "data.download=false", f"data.train_subset={args.train_subset}", "data.reward_size=1000",
        f"data.batch_size={args.batch}", "data.eval_batch_size=250", "data.test_subset=1000",
        "train.epochs=6", "train.device=cpu", "train.progress=false", f"train.threads={args.threads}",
        "search.warmup_epochs=1", "search.search_epochs=2", "search.align_epochs=1",
        f"search.episodes_per_epoch={args.episodes}", "search.final_window=2", "env.reward_batches=2",
        "agent.warmup_episodes=4", "agent.updates_per_epoch=20", "agent.context.updates_per_epoch=20",
    ]


def worker(args: argparse.Namespace) -> None:
    """One process of the job: the joint run with the agent's episodes timed; rank 0 writes the figures."""
    import rlal.train.joint as joint
    from rlal.config import load_config
    from rlal.report.metrics import read_metrics

    seconds: list[float] = []
    real = joint.run_agent_episodes

    def timed(*a, **k):
        start = time.perf_counter()
        try:
            return real(*a, **k)
        finally:
            seconds.append(time.perf_counter() - start)

    joint.run_agent_episodes = timed
    out = Path(args.out)
    joint.fit_joint(load_config(None, overrides(args)), out, overwrite=True)
    if os.environ.get("RANK", "0") != "0":
        return
    records = [r for r in read_metrics(out / "metrics.jsonl") if "train_images_per_s" in r]
    by_phase: dict[str, list[float]] = {}
    for r in records:
        by_phase.setdefault(r["phase"], []).append(r["train_images_per_s"])
    figures = {
        "procs": int(os.environ.get("WORLD_SIZE", "1")),
        "threads_per_proc": args.threads,
        "images_per_s": {phase: round(statistics.mean(v), 1) for phase, v in by_phase.items()},
        "agent_seconds_per_search_epoch": round(statistics.mean(seconds), 2),
        "episodes_per_epoch": args.episodes,
        "epoch_seconds": {r["phase"]: round(r["train_seconds"], 2) for r in records},
    }
    (out / "ddp_scaling.json").write_text(json.dumps(figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(SHARED_DATA / "fashion-mnist"))
    parser.add_argument("--procs", default="1,2", help="comma-separated process counts")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--train-subset", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=128, help="per-rank batch size")
    parser.add_argument("--episodes", type=int, default=8, help="agent episodes per search epoch")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    rows = []
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    passed = ["--data-dir", args.data_dir, "--threads", str(args.threads), "--train-subset",
              str(args.train_subset), "--batch", str(args.batch), "--episodes", str(args.episodes)]
    for procs in [int(p) for p in args.procs.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "run"
            script = [__file__, "--worker", "--out", str(out), *passed]
            command = ([sys.executable, *script] if procs == 1 else
                       [sys.executable, "-m", "torch.distributed.run", "--standalone",
                        f"--nproc_per_node={procs}", *script])
            subprocess.run(command, env=env, check=True)
            figures = json.loads((out / "ddp_scaling.json").read_text())
        print(json.dumps(figures), flush=True)
        rows.append(figures)
    print("\n| processes | warm-up img/s | search img/s | fine-tune img/s | agent s / search epoch |")
    print("| --- | --- | --- | --- | --- |")
    for f in rows:
        ips = f["images_per_s"]
        print(f"| {f['procs']} | {ips.get('warm-up')} | {ips.get('search')} | {ips.get('fine-tune')} | "
              f"{f['agent_seconds_per_search_epoch']} |")


if __name__ == "__main__":
    main()
