"""The GPU evidence run (issue 11): every GPU figure of docs/benchmarks.md from one command, in <= 9 minutes.

    python bench/gpu_evidence.py --out OUT --data-dir DIR [--budget 540] [--steps throughput,agent,...]
    python bench/gpu_evidence.py --smoke --out OUT        # every step on the CPU, tiny data, about a minute

On one H100/H200 (docs/gpu.md says how to call it through the device tool), in this order:

1. ``throughput``: dense training images/s of ResNet-56 and MobileNetV2-cifar on CIFAR-10 (bf16 autocast,
   channels-last, the in-memory uint8 data path on the GPU), eager and ``torch.compile``d, CUDA-event timed
   after a warm-up; then a probe of 6 and 3 concurrent training processes (aggregate images/s).
2. ``agent``: the agent's seconds per epoch (P episodes' rewards, the context fit, the SAC updates) against
   one training epoch (``bench/agent_overhead.py``), on the quality track's settings.
3. ``quality``: dense, uniform, rlal (and depgraph when it fits) with seeds 0 and 1 on the track
   ``bench-gpu-cifar10-resnet56`` (ResNet-56, CIFAR-10, 50% MACs), several runs at a time through
   ``rlal bench quality``; the number of epochs is cut to what the probe says will fit (the table states
   it), then the table ``cifar10-resnet56`` is written. ``--seeds``, ``--methods`` and
   ``--quality-epochs`` add runs to it at the same schedule; ``--name T --set KEY=VALUE`` make a table ``T``
   of runs under other settings (``bench/gpu_evidence_merge.py`` joins calls of one table).
4. ``latency``: the dense model against step 3's pruned models, batch 1, 64 and 256, eager and compiled.

Every step has a share of ``--budget`` (seconds); a step or case that cannot fit is skipped and says so.
Everything goes to ``--out``, flushed as it comes, so a run cut short still returns what it finished:

- ``evidence.jsonl``: one JSON object per figure (and per skipped case, timeout or error);
- ``evidence.md``: the same as tables, rewritten after every step;
- ``results.tar.gz``: ``docs/results/cifar10-resnet56.*`` and the runs' records (unpack at the repo root);
- ``evidence.log``: the output of every process.

``--smoke`` runs the same steps on the CPU (tiny generated CIFAR-shaped JPEGs, a few batches, ResNet-20 for
the quality runs, ``torch.compile`` with the ``eager`` backend); ``tests/test_gpu_evidence.py`` runs it.
Bad arguments get a one-line ``error:`` and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
STEPS_SCRIPT = Path(__file__).resolve().parent / "gpu_evidence_steps.py"
TRACK = REPO / "rlal" / "configs" / "bench-gpu-cifar10-resnet56.yaml"
TABLE = "cifar10-resnet56"
STEPS = ("throughput", "agent", "quality", "latency")
QUALITY_METHODS = ("dense", "uniform", "rlal", "depgraph", "uniform-matched")
EPOCH_IMAGES = 45_000
"""CIFAR-10's training images after the 5,000-image reward split: the epoch the figures are given for."""

RUN_STARTUP_S = 15.0
"""Seconds a quality run spends outside its training epochs when 6 start together on one GPU: Python and
torch import, the cached data read and copied, cuDNN's first kernels, the final test pass, the report.
Measured on the H200 (2026-12-04, docs/results/gpu-evidence-2026-12-04/call*.jsonl): dense and uniform runs
spent 11-23 s outside their epochs (``process_s`` minus the run's own ``seconds``, plus its
``outside_epochs_s``); the first guess, 35 s, predicted 225 s for 8 runs that took 195 s."""
RUN_OVERHEAD = 1.3
"""Factor on the training epochs' time for what else an rlal run does in its epochs: the agent's episodes,
the context fit, the SAC updates, the final choice's rescoring, the steered alignment's per-step norms."""
UNSIZED_EPOCHS = 15
"""Epochs of the quality runs when no probe measured the concurrent training speed."""


@dataclass(frozen=True)
class Case:
    """One training-throughput configuration."""

    model: str
    batch: int
    compile: bool


@dataclass(frozen=True)
class Probe:
    """``world`` eager training processes at once on the device, their timed parts together."""

    world: int


@dataclass(frozen=True)
class Settings:
    """Everything that differs between the GPU run and the CPU smoke run."""

    smoke: bool
    device: str
    budget_s: float
    """The whole run, from start to the last file written."""
    step_s: dict[str, float]
    """Most seconds for prepare, throughput, agent and latency; quality gets what they leave."""
    reserve_s: float
    """Kept free at the end for the table, the tarball and the markdown."""
    estimate_s: dict[str, float]
    """Least seconds a throughput case (``eager``, ``compiled``), a probe or a depgraph run starts with."""
    throughput: tuple[Case | Probe, ...]
    """Step 1 in order of importance: what the time cannot fit is left out from the end."""
    timed_epochs: int | None
    timed_batches: int | None
    warmup_batches: int
    compile_backend: str
    eval_batch: int
    reward_size: int
    probe_batches: int
    agent_epochs: int
    agent_train_batches: int | None
    score: tuple[int, int, int]
    """Scoring a masked sub-network (``bench/structure.py``): images, batch, repeats."""
    track_overrides: tuple[str, ...]
    table: str
    """The quality table's name: its runs' folder, its file in docs/results/, its tarball's paths."""
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    depgraph_seeds: int
    """depgraph runs on the dense runs of this many of the seeds (the first ones)."""
    concurrency: int
    """Most quality runs at a time (the probe may choose fewer)."""
    quality_epochs: int | None
    """Fixed epochs for the quality runs; None: sized from the probe."""
    min_epochs: int
    threads: int
    latency_batches: tuple[int, ...]
    latency_compiled: tuple[int, ...]
    """Batches timed compiled too, in order of importance (each costs a compile of two models)."""
    latency_warmup: int
    latency_runs: int


def gpu_settings(data_dir: str, budget_s: float) -> Settings:
    """The evidence run on one H100/H200."""
    r56, mbv2 = "resnet56", "mobilenetv2-cifar"
    return Settings(
        smoke=False, device="cuda", budget_s=budget_s,
        step_s={"prepare": 90, "throughput": 170, "agent": 60, "latency": 70}, reserve_s=20,
        estimate_s={"eager": 25, "compiled": 80, "probe": 30, "depgraph": 40},
        # ResNet-56 first (the goal's figure), the probe that sizes step 3, then MobileNetV2.
        throughput=(Case(r56, 512, False), Case(r56, 512, True), Probe(6), Case(mbv2, 512, False), Probe(3),
                    Case(mbv2, 512, True)),
        timed_epochs=2, timed_batches=None, warmup_batches=30, compile_backend="inductor",
        eval_batch=1000, reward_size=5000, probe_batches=60,
        agent_epochs=2, agent_train_batches=None, score=(5000, 500, 5),
        track_overrides=(f"data.data_dir={data_dir}", "train.threads=2"), table=TABLE,
        methods=("dense", "uniform", "rlal", "depgraph"), seeds=(0, 1), depgraph_seeds=2, concurrency=6,
        quality_epochs=None, min_epochs=8, threads=2,
        latency_batches=(1, 64, 256), latency_compiled=(64, 256, 1), latency_warmup=20, latency_runs=100,
    )  # fmt: skip


SMOKE_OVERRIDES = (
    "model.name=resnet20", "train.device=cpu", "train.threads=1", "train.epochs=4",
    "data.batch_size=50", "data.eval_batch_size=30", "data.reward_size=50",
    "search.warmup_epochs=1", "search.search_epochs=1", "search.align_epochs=1",
    "search.episodes_per_epoch=2",
    "search.final_window=1", "search.final_candidates=2", "search.final_bn_sets=1",
    "env.reward_batches=1", "env.bn_recalibration_batches=1",
    "agent.warmup_episodes=2", "agent.updates_per_epoch=5", "agent.batch_size=8",
    "agent.context.updates_per_epoch=5", "baseline.finetune_epochs=1",
)
"""The quality track cut down to seconds on one CPU core: ResNet-20, 100 training images, 4 epochs."""


def smoke_settings(data_dir: str, budget_s: float) -> Settings:
    """Every step on the CPU on tiny data: what CI runs so that the GPU run cannot rot."""
    return Settings(
        smoke=True, device="cpu", budget_s=budget_s,
        step_s={"prepare": 60, "throughput": 180, "agent": 90, "latency": 90}, reserve_s=20,
        estimate_s={"eager": 5, "compiled": 5, "probe": 5, "depgraph": 5},
        # Each code path once: eager and compiled, a case and a probe.
        throughput=(Case("resnet56", 25, False), Case("mobilenetv2-cifar", 25, True), Probe(2)),
        timed_epochs=None, timed_batches=2, warmup_batches=1, compile_backend="eager",
        eval_batch=30, reward_size=50, probe_batches=2,
        agent_epochs=1, agent_train_batches=2, score=(60, 30, 1),
        track_overrides=(f"data.data_dir={data_dir}", *SMOKE_OVERRIDES), table=TABLE,
        methods=("dense", "uniform", "rlal", "depgraph"), seeds=(0, 1), depgraph_seeds=1, concurrency=2,
        quality_epochs=None, min_epochs=4, threads=1,  # sized as on the GPU: the 4 epochs fit
        latency_batches=(1, 8), latency_compiled=(8, 1), latency_warmup=1, latency_runs=5,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------ evidence
class Evidence:
    """The output folder: ``evidence.jsonl`` (the record of truth, appended by this process and by the
    step processes alike, one ``write`` per line), ``evidence.md`` and ``evidence.log``."""

    def __init__(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.out = out
        self.jsonl = out / "evidence.jsonl"
        self.jsonl.write_text("")
        self.log_path = out / "evidence.log"
        self.log_file = self.log_path.open("a", buffering=1)

    def add(self, record: dict[str, Any]) -> None:
        with self.jsonl.open("a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def records(self) -> list[dict[str, Any]]:
        records = []
        for line in self.jsonl.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):  # a line cut by a kill: skip it
                records.append(json.loads(line))
        return records

    def log(self, text: str) -> None:
        line = f"[gpu-evidence {time.strftime('%H:%M:%S')}] {text}"
        print(line, flush=True)
        self.log_file.write(line + "\n")

    def write_markdown(self) -> None:
        path = self.out / "evidence.md"
        tmp = path.with_suffix(".md.tmp")
        tmp.write_text(render_markdown(self.records()))
        os.replace(tmp, path)


class Clock:
    """Seconds left of the whole run and of the step under way."""

    def __init__(self, budget_s: float) -> None:
        self.start = time.monotonic()
        self.end = self.start + budget_s

    def now(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.end - time.monotonic()


# ----------------------------------------------------------------------------------- step processes
class Steps:
    """Starts the measuring processes (``gpu_evidence_steps.py``), each in a process group of its own so
    that a timeout stops it with everything it started."""

    def __init__(self, ev: Evidence, settings: Settings, work: Path) -> None:
        self.ev, self.settings, self.work = ev, settings, work
        self.running: list[subprocess.Popen] = []
        self.env = dict(os.environ)
        path = [str(REPO), *filter(None, self.env.get("PYTHONPATH", "").split(os.pathsep))]
        self.env |= {
            "PYTHONPATH": os.pathsep.join(dict.fromkeys(path)), "PYTHONUNBUFFERED": "1",
            "RLAL_CACHE": str(work / "cache"), "OMP_NUM_THREADS": str(settings.threads),
            "TORCHINDUCTOR_CACHE_DIR": str(work / "inductor"),
        }  # fmt: skip

    def start(self, args: Sequence[str]) -> subprocess.Popen:
        proc = subprocess.Popen(
            list(args), cwd=REPO, env=self.env, stdin=subprocess.DEVNULL, stdout=self.ev.log_file,
            stderr=subprocess.STDOUT, process_group=0,
        )
        self.running.append(proc)
        return proc

    def start_step(self, step: str, spec: dict[str, Any]) -> subprocess.Popen:
        spec = {"device": self.settings.device, "threads": self.settings.threads, **spec}
        return self.start([sys.executable, str(STEPS_SCRIPT), step, json.dumps(spec), str(self.ev.jsonl)])

    def run_step(self, step: str, spec: dict[str, Any], timeout: float) -> bool:
        """Run one step process to its end or ``timeout``; True when it exited cleanly."""
        label = spec.get("label", step)
        proc = self.start_step(step, spec)
        return self.wait(proc, label, timeout)

    def wait(self, proc: subprocess.Popen, label: str, timeout: float) -> bool:
        try:
            proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            self.stop(proc)
            self.ev.add({"step": label, "kind": "timeout", "after_s": round(timeout, 1)})
            return False
        finally:
            if proc in self.running and proc.poll() is not None:
                self.running.remove(proc)
        if proc.returncode != 0:
            self.ev.add({"step": label, "kind": "exit", "status": proc.returncode})
        return proc.returncode == 0

    def stop(self, *procs: subprocess.Popen) -> None:
        """SIGTERM to each one's process group (rlal runs then abandon their epoch and exit), SIGKILL to
        those still there 10 s later: at most 10 s however many are stopped."""
        alive = [p for p in procs if p.poll() is None]
        for proc in alive:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in alive:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for proc in procs:
            if proc in self.running:
                self.running.remove(proc)

    def stop_all(self) -> None:
        self.stop(*self.running)


# ------------------------------------------------------------------------------------------ the steps
def data_spec(settings: Settings, data_dir: str) -> dict[str, Any]:
    return {"data_dir": data_dir, "eval_batch": settings.eval_batch, "reward_size": settings.reward_size}


def run_prepare(steps: Steps, settings: Settings, clock: Clock, data_dir: str) -> dict[str, Any] | None:
    """The machine's description and the dataset decoded into the cache; None if that failed."""
    timeout = min(settings.step_s["prepare"], clock.left())
    ok = steps.run_step("prepare", data_spec(settings, data_dir), timeout)
    records = steps.ev.records()
    env = next((r for r in records if r.get("step") == "prepare" and r.get("kind") == "env"), None)
    has_data = any(r.get("step") == "prepare" and r.get("kind") == "data" for r in records)
    return env if ok and has_data else None


def run_throughput(steps: Steps, settings: Settings, clock: Clock, data_dir: str, track: Any) -> None:
    """Each case in its own process (a compile that hangs is killed alone), and the concurrency probes, in
    the settings' order while the step's time lasts."""
    ev = steps.ev
    end = time.monotonic() + min(settings.step_s["throughput"], clock.left())
    common = {**data_spec(settings, data_dir), "warmup_batches": settings.warmup_batches,
              "timed_epochs": settings.timed_epochs, "timed_batches": settings.timed_batches,
              "compile_backend": settings.compile_backend, "label": "throughput"}  # fmt: skip
    for item in settings.throughput:
        left = end - time.monotonic()
        kind = "probe" if isinstance(item, Probe) else "compiled" if item.compile else "eager"
        need = settings.estimate_s[kind]
        if left < need:
            ev.add({"step": "throughput", "kind": "skipped", **asdict(item),
                    "why": f"{left:.0f} s left of the step, this needs about {need:.0f} s"})
        elif isinstance(item, Case):
            ev.log(f"throughput: {item.model} batch {item.batch} {'compiled' if item.compile else 'eager'}")
            steps.run_step("throughput", {**common, **asdict(item)}, left)
        else:
            ev.log(f"throughput: probe, {item.world} training processes at once")
            # The quality runs' model and batch: the probe sizes step 3.
            spec = {**common, **asdict(Case(track.model.name, track.data.batch_size, False)),
                    "timed_epochs": None, "timed_batches": settings.probe_batches, "world": item.world,
                    "barrier": str(steps.work / f"barrier-{item.world}"),
                    "barrier_timeout_s": max(5.0, left - 5)}
            procs = [steps.start_step("throughput", {**spec, "rank": rank}) for rank in range(item.world)]
            for proc in procs:
                steps.wait(proc, "throughput", end - time.monotonic())
        ev.write_markdown()


def run_agent(steps: Steps, settings: Settings, clock: Clock, overrides: Sequence[str]) -> None:
    timeout = min(settings.step_s["agent"], clock.left())
    steps.ev.log("agent: overhead per epoch")
    images, batch, repeats = settings.score
    spec = {"config": str(TRACK), "overrides": list(overrides), "epochs": settings.agent_epochs,
            "train_batches": settings.agent_train_batches, "score_images": images, "score_batch": batch,
            "score_repeats": repeats, "label": "agent"}
    steps.run_step("agent", spec, timeout)
    steps.ev.write_markdown()


def concurrent_speed(records: list[dict[str, Any]], model: str, batch: int) -> dict[int, float]:
    """Aggregate training images/s of ``model`` at ``batch`` by the number of processes sharing the device,
    from the probes (and the single eager throughput figure)."""
    speed: dict[int, float] = {}
    by_world: dict[int, list[float]] = {}
    for r in records:
        if r.get("step") != "throughput" or r.get("model") != model or r.get("batch") != batch:
            continue
        if r.get("kind") == "figure" and not r.get("compile"):
            speed[1] = float(r["images_per_s"])
        elif r.get("kind") == "probe":
            by_world.setdefault(int(r["world"]), []).append(float(r["images_per_s"]))
    for world, rates in by_world.items():
        if len(rates) == world:  # every process of the probe reported
            speed[world] = sum(rates)
    return speed


def plan_quality(
    available_s: float, speed: dict[int, float], runs: int, most: int, config_epochs: int, min_epochs: int,
    epoch_images: int = EPOCH_IMAGES,
) -> tuple[int, float | None, int, float | None]:
    """``(runs at a time, images/s each, epochs, predicted seconds)`` for ``runs`` quality runs: of the
    measured numbers of processes (at most ``most``; ``speed`` maps them to aggregate images/s), the one that
    fits the most epochs in ``available_s`` (:func:`size_epochs`; ties: the shorter prediction). With only the
    single-process speed measured, ``most`` at a time sharing it (no gain from sharing assumed); with
    nothing measured, ``most`` at a time and :data:`UNSIZED_EPOCHS`."""
    measured = {k: v for k, v in speed.items() if 1 < k <= most}
    if not measured and 1 in speed:
        measured = {most: speed[1]}
    if not measured:
        return most, None, *size_epochs(available_s, None, runs, most, config_epochs, min_epochs)
    options = []
    for k, aggregate in measured.items():
        epochs, predicted = size_epochs(available_s, aggregate / k, runs, k, config_epochs, min_epochs,
                                        epoch_images)
        options.append((epochs, -(predicted or 0.0), k, aggregate / k, predicted))
    epochs, _, k, per_run, predicted = max(options)
    return k, per_run, epochs, predicted


def size_epochs(
    available_s: float, per_run_images_per_s: float | None, runs: int, concurrency: int, config_epochs: int,
    min_epochs: int, epoch_images: int = EPOCH_IMAGES,
) -> tuple[int, float | None]:
    """The most epochs (at most the config's, at least ``min_epochs``) of ``epoch_images`` training images
    whose predicted time for ``runs`` runs, ``concurrency`` at a time, fits ``available_s``; and that
    prediction. Unmeasured speed: a fixed :data:`UNSIZED_EPOCHS`."""
    if per_run_images_per_s is None or per_run_images_per_s <= 0:
        return min(config_epochs, max(min_epochs, UNSIZED_EPOCHS)), None
    waves = math.ceil(runs / concurrency)

    def predicted(epochs: int) -> float:
        return waves * (RUN_STARTUP_S + epochs * epoch_images / per_run_images_per_s * RUN_OVERHEAD)

    epochs = config_epochs
    while epochs > min_epochs and predicted(epochs) > available_s:
        epochs -= 1
    return epochs, predicted(epochs)


def schedule_overrides(track: Any, epochs: int) -> list[str]:
    """``--set`` items that shorten the track to ``epochs``, scaling the rlal schedule (warm-up, search,
    the agent's random episodes, the final window) and the depgraph fine-tuning with it; [] at the
    config's own length."""
    base = track.train.epochs
    if epochs == base:
        return []
    s, f = track.search, epochs / base
    warmup = max(1, round(s.warmup_epochs * f))
    search = max(2, round(s.search_epochs * f))
    while warmup + search + s.align_epochs >= epochs and search > 1:
        search -= 1
    while warmup + search + s.align_epochs >= epochs and warmup > 0:
        warmup -= 1
    random_epochs = track.agent.warmup_episodes / s.episodes_per_epoch * search / s.search_epochs
    items = [
        f"train.epochs={epochs}", f"search.warmup_epochs={warmup}", f"search.search_epochs={search}",
        f"search.final_window={min(s.final_window, search)}",
        f"agent.warmup_episodes={max(1, round(random_epochs)) * s.episodes_per_epoch}",
    ]
    if track.baseline.finetune_epochs:
        items.append(f"baseline.finetune_epochs={max(1, round(track.baseline.finetune_epochs * f))}")
    return items


def run_quality(steps: Steps, settings: Settings, clock: Clock, track: Any, overrides: list[str],
                latency_s: float, gpu: str) -> None:
    """Dense, uniform and rlal runs (then depgraph on each finished dense run, if it fits) through
    ``rlal bench quality``, several at a time; then the table."""
    from rlal.config import load_config

    ev = steps.ev
    end = time.monotonic() + clock.left() - settings.reserve_s - latency_s
    table_s = 30.0 if not settings.smoke else 20.0
    # Longest first (rlal, then dense, whose end starts depgraph): when fewer than all run at once, the
    # last wave is then the shortest.
    first = {"rlal": 0, "dense": 1, "uniform-matched": 1}  # uniform-matched: more epochs than uniform
    order = sorted((m for m in settings.methods if m != "depgraph"), key=lambda m: first.get(m, 2))
    main = [(m, s) for m in order for s in settings.seeds]
    records = ev.records()
    if settings.quality_epochs is not None:
        epochs, predicted = settings.quality_epochs, None
        concurrency, per_run = settings.concurrency, None
        speed: dict[int, float] = {}
    else:
        speed = concurrent_speed(records, track.model.name, track.data.batch_size)
        available = end - time.monotonic() - table_s
        data = next(r for r in records if r.get("step") == "prepare" and r.get("kind") == "data")
        epoch_images = min(data["train_images"], track.data.train_subset or data["train_images"])
        concurrency, per_run, epochs, predicted = plan_quality(
            available, speed, len(main), min(settings.concurrency, len(main)), track.train.epochs,
            settings.min_epochs, epoch_images)
    run_overrides = [*overrides, *schedule_overrides(track, epochs)]
    finetune = load_config(TRACK, run_overrides).baseline.resolved_epochs(epochs)[1]  # depgraph's
    ev.add({"step": "quality", "kind": "plan", "epochs": epochs, "config_epochs": track.train.epochs,
            "concurrency": concurrency, "speed_by_processes": {str(k): v for k, v in speed.items()},
            "per_run_images_per_s": per_run, "predicted_s": predicted and round(predicted),
            "available_s": round(end - time.monotonic()), "overrides": run_overrides,
            "table": settings.table})  # fmt: skip
    ev.log(f"quality: {len(main)} runs of {epochs} epochs, {concurrency} at a time "
           f"(predicted {predicted and round(predicted)} s of {end - time.monotonic():.0f} s)")
    runs_dir, scratch = steps.work / "runs", steps.work / "scratch"
    queue = list(main)
    running: dict[tuple[str, int], subprocess.Popen] = {}
    launched: dict[tuple[str, int], float] = {}
    deadline = end - table_s
    step_start = time.monotonic()

    def launch(method: str, seed: int) -> None:
        args = [sys.executable, "-m", "rlal", "bench", "quality", "--config", str(TRACK),
                "--name", settings.table, "--methods", method, "--seeds", str(seed),
                "--runs-dir", str(runs_dir), "--results-dir", str(scratch / f"{method}-{seed}")]
        for item in run_overrides:
            args += ["--set", item]
        running[(method, seed)] = steps.start(args)
        launched[(method, seed)] = time.monotonic()

    try:
        while (queue or running) and time.monotonic() < deadline:
            while queue and len(running) < concurrency:
                launch(*queue.pop(0))
            time.sleep(0.5)
            for key, proc in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[key]
                steps.running.remove(proc)
                record = run_record(runs_dir / settings.table, *key, proc.returncode)
                record["process_s"] = round(time.monotonic() - launched[key], 1)  # calibrates RUN_STARTUP_S
                ev.add(record)
                ev.log(f"quality: {key[0]} seed {key[1]} {record['status']}")
                if (key[0] == "dense" and "depgraph" in settings.methods and record["status"] == "done"
                        and key[1] in settings.seeds[: settings.depgraph_seeds]):
                    queue_depgraph(ev, settings, queue, key[1], record, finetune, deadline)
                ev.write_markdown()
    finally:
        steps.stop(*running.values())
        for key in running:
            ev.add({**run_record(runs_dir / settings.table, *key, None), "status": "timed out"})
        for method, seed in queue:
            ev.add({"step": "quality", "kind": "run", "method": method, "seed": seed, "status": "not started",
                    "why": "no time left in the step"})
        ev.add({"step": "quality", "kind": "elapsed", "runs_s": round(time.monotonic() - step_start, 1),
                "predicted_s": predicted and round(predicted)})
    note = (f"Run by `bench/gpu_evidence.py` on {gpu}: up to {concurrency} runs at a time on the one device, "
            f"{epochs} epochs (the config's {track.train.epochs}"
            + (", shortened to fit the time" if epochs != track.train.epochs else "") + "); --set "
            + " ".join(f"`{o}`" for o in run_overrides) + ".")
    if any((runs_dir / settings.table).glob("*/seed-*/result.json")):
        steps.run_step("table", {"config": str(TRACK), "overrides": run_overrides, "name": settings.table,
                                 "runs_dir": str(runs_dir), "results_dir": str(steps.work / "results"),
                                 "note": note, "label": "quality"},
                       max(5.0, clock.left() - latency_s - 5))
    else:
        ev.add({"step": "quality", "kind": "skipped", "why": "no run finished: no table"})
    write_tarball(steps.work, steps.ev.out / "results.tar.gz", settings.table)
    ev.write_markdown()


def queue_depgraph(ev: Evidence, settings: Settings, queue: list[tuple[str, int]], seed: int,
                   dense: dict[str, Any], finetune: int, deadline: float) -> None:
    """Queue depgraph on the finished dense run of ``seed`` if its ``finetune`` epochs (timed as the dense
    run's epochs) fit before ``deadline``."""
    epoch_s = dense.get("epoch_s") or 0.0
    need = max(settings.estimate_s["depgraph"], RUN_STARTUP_S + finetune * epoch_s * RUN_OVERHEAD)
    left = deadline - time.monotonic()
    if need <= left:
        queue.append(("depgraph", seed))
    else:
        ev.add({"step": "quality", "kind": "run", "method": "depgraph", "seed": seed, "status": "skipped",
                "why": f"about {need:.0f} s needed, {left:.0f} s left"})


def run_record(table_dir: Path, method: str, seed: int, status: int | None) -> dict[str, Any]:
    """One quality run (in ``table_dir/<method>/seed-<seed>``) as the evidence states it: its result.json's
    figures and its mean epoch time."""
    run_dir = table_dir / method / f"seed-{seed}"
    record: dict[str, Any] = {"step": "quality", "kind": "run", "method": method, "seed": seed,
                              "run_dir": str(run_dir)}
    result_path = run_dir / "result.json"
    if status == 0 and result_path.is_file():
        result = json.loads(result_path.read_text())
        keys = ("test_acc", "macs", "dense_macs", "macs_ratio", "params", "epochs", "seconds", "device")
        record |= {"status": "done", **{k: result[k] for k in keys if k in result}}
    else:
        record["status"] = "failed" if status is not None else "timed out"
        record["exit_status"] = status
    epochs = []
    with contextlib.suppress(OSError):
        for line in (run_dir / "metrics.jsonl").read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                row = json.loads(line)
                if "train_seconds" in row:
                    epochs.append(row)
    if epochs:
        if "seconds" in record:  # the run's own time outside its training epochs (data, agent, cut, report)
            record["outside_epochs_s"] = round(record["seconds"] - sum(e["train_seconds"] for e in epochs), 1)
        record["epochs_done"] = len(epochs)
        record["epoch_s"] = round(sum(e["train_seconds"] for e in epochs) / len(epochs), 3)
        record["train_images_per_s"] = round(sum(e["train_images"] for e in epochs)
                                             / sum(e["train_seconds"] for e in epochs), 1)
    return record


def write_tarball(work: Path, path: Path, table: str) -> None:
    """The table (as ``docs/results/...``) and each run's small records (as
    ``runs/gpu-evidence/<table>/...``); no checkpoints or weights."""
    keep = {"result.json", "metrics.jsonl", "run.json", "config.yaml", "widths.csv", "episodes.json",
            "report.md", "spec.json"}
    tmp = path.with_suffix(".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        results = work / "results"
        if results.is_dir():
            for file in sorted(results.rglob("*")):
                if file.is_file():
                    tar.add(file, arcname=f"docs/results/{file.relative_to(results)}")
        runs = work / "runs" / table
        if runs.is_dir():
            for file in sorted(runs.rglob("*")):
                if file.is_file() and file.name in keep:
                    tar.add(file, arcname=f"runs/gpu-evidence/{table}/{file.relative_to(runs)}")
    os.replace(tmp, path)


def run_latency(steps: Steps, settings: Settings, clock: Clock, track: Any) -> None:
    timeout = min(settings.step_s["latency"], clock.left() - settings.reserve_s / 2)
    runs = steps.work / "runs" / settings.table
    pruned = {f"{m}-s0": str(runs / m / "seed-0") for m in ("rlal", "uniform", "depgraph")}
    steps.ev.log("latency: dense vs pruned")
    steps.run_step("latency", {
        "model": track.model.name, "pruned": pruned, "target_macs": track.env.target_macs,
        "batches": list(settings.latency_batches), "compiled_batches": list(settings.latency_compiled),
        "warmup": settings.latency_warmup,
        "runs": settings.latency_runs, "compile_backend": settings.compile_backend,
        "deadline": time.time() + timeout - 5, "label": "latency",
    }, timeout)  # fmt: skip
    steps.ev.write_markdown()


# ------------------------------------------------------------------------------------------ markdown
def render_markdown(records: list[dict[str, Any]]) -> str:
    """``evidence.md``: every figure of the records as tables, with the section of docs/benchmarks.md (or
    docs/results/) it belongs in; steps or cases that did not run are listed with why."""
    by = {step: [r for r in records if r.get("step") == step] for step in ("run", "prepare", *STEPS)}
    env = next((r for r in by["prepare"] if r.get("kind") == "env"), {})
    start = next((r for r in by["run"] if r.get("kind") == "start"), {})
    lines = ["# GPU evidence (`bench/gpu_evidence.py`)", ""]
    mode = "smoke run on the CPU (tiny data: not figures for docs/benchmarks.md)" if start.get("smoke") else \
        "GPU run"
    lines += [f"- Mode: {mode}; started {start.get('time', 'missing')}; budget {start.get('budget_s')} s; "
              f"steps {', '.join(start.get('steps', []))}."]
    if env:
        lines.append(f"- Machine: {env.get('cuda') or 'no GPU'} ({env.get('gpu_memory_gib', '-')} GiB, "
                     f"{env.get('gpu_sms', '-')} SMs), {env.get('cpu')} × {env.get('cpu_count')}; Python "
                     f"{env.get('python')}, torch {env.get('torch')} (CUDA {env.get('cuda_version', '-')}, "
                     f"cuDNN {env.get('cudnn', '-')}), torch-pruning {env.get('torch_pruning')}.")
    data = next((r for r in by["prepare"] if r.get("kind") == "data"), None)
    if data:
        lines.append(f"- Data: {data['source']}; {data['train_images']:,} train, {data['reward_images']:,} "
                     f"reward, {data['test_images']:,} test images (read in {data['seconds']} s).")
    end = next((r for r in by["run"] if r.get("kind") == "end"), None)
    lines.append(f"- Finished in {end['seconds']} s." if end else "- Not finished (cut short or running).")
    lines += _problems(records)

    lines += ["", "## 1. Training throughput → docs/benchmarks.md, *Dense training throughput* (GPU row)", "",
              "| model | batch | compile | images/s | s per 45,000-image epoch | epoch (s, measured) | "
              "warm-up incl. compile (s) | eval images/s | graph breaks | peak memory (GiB) |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in by["throughput"]:
        if r.get("kind") == "figure":
            lines.append(f"| {r['model']} | {r['batch']} | {_compiled(r)} | "
                         f"{r['images_per_s']:,.0f} | {r['s_per_45000']} | {_or(r.get('epoch_s'))} | "
                         f"{r['warmup_s']} | {_or(r.get('eval_images_per_s'), ',.0f')} | "
                         f"{_or(r.get('graph_breaks'))} | {_or(r.get('max_memory_gib'))} |")
    probes: dict[tuple[str, int, int], list[float]] = {}
    for r in by["throughput"]:
        if r.get("kind") == "probe":
            probes.setdefault((r["model"], r["batch"], r["world"]), []).append(r["images_per_s"])
    if probes:
        lines += ["", "Concurrency probe (eager training processes sharing the device, timed together):", "",
                  "| model | batch | processes | reported | images/s each (mean) | aggregate images/s |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for (model, batch, world), rates in sorted(probes.items()):
            lines.append(f"| {model} | {batch} | {world} | {len(rates)} | {sum(rates) / len(rates):,.0f} | "
                         f"{sum(rates):,.0f} |")

    lines += ["", "## 2. Agent overhead per epoch → docs/benchmarks.md, *Agent overhead per epoch* (GPU row)",
              ""]
    for r in by["agent"]:
        if r.get("kind") == "summary":
            train = r.get("train_epoch_s", r.get("train_epoch_s_extrapolated"))
            lines += ["| model | batch | P | reward images per episode | agent epoch (s) | "
                      "training epoch (s) | agent / training |", "|" + " --- |" * 7,
                      f"| {r['model']} | {r.get('batch')} | {r['episodes']} | {r['reward_images']} | "
                      f"{r['agent_epoch_s_mean']} | {train}"
                      f"{' (extrapolated)' if 'train_epoch_s_extrapolated' in r else ''} | "
                      f"{r['agent_over_train']:.1%} |", ""]
    epochs = [r for r in by["agent"] if r.get("kind") == "epoch"]
    if epochs:
        lines += ["| agent epoch | total (s) | reward evaluation (s) | context fit (s) | SAC updates (s) |",
                  "| --- | --- | --- | --- | --- |"]
        lines += [f"| {r['epoch']} | {r['agent_epoch_s']} | {r['of_which_reward_s']} | "
                  f"{_or(r.get('context_fit_s'))} | {r['sac_update_s']} |" for r in epochs]
    scores = [r for r in by["agent"] if r.get("kind") == "score"]
    if scores:
        lines += ["", "Scoring ResNet-56 sub-networks (`bench/structure.py`, fp32, eval, random images) → "
                  "docs/benchmarks.md, *Structure* (GPU row):", "",
                  "| variant | keep ratio | images | batch | seconds (min) | images/s |", "|" + " --- |" * 6]
        lines += [f"| {r['variant']} | {r['keep_ratio']} | {r['images']} | {r['batch']} | {r['seconds']} | "
                  f"{r['images_per_s']:,.0f} |" for r in scores]

    plan = next((r for r in by["quality"] if r.get("kind") == "plan"), None)
    table_name = (plan or {}).get("table", TABLE)
    lines += ["", f"## 3. Quality → docs/results/{table_name}.md (from results.tar.gz) and "
              "docs/benchmarks.md", ""]
    if plan:
        elapsed = next((r for r in by["quality"] if r.get("kind") == "elapsed"), {})
        lines.append(f"{plan['epochs']} epochs (config {plan['config_epochs']}), up to {plan['concurrency']} "
                     f"runs at a time; predicted {_or(plan.get('predicted_s'))} s of "
                     f"{plan['available_s']} s available; the runs took {_or(elapsed.get('runs_s'))} s.")
    runs = [r for r in by["quality"] if r.get("kind") == "run"]
    if runs:
        lines += ["", "| method | seed | status | test acc. (%) | MACs ratio | epochs | wall-clock (s) | "
                  "process (s) | outside epochs (s) | mean epoch (s) | train images/s |", "|" + " --- |" * 11]
        for r in runs:
            ratio = r.get("macs_ratio")
            if ratio is None and r.get("macs"):  # dense runs record no ratio: theirs is 1
                ratio = r["macs"] / r["dense_macs"] if r.get("dense_macs") else 1.0
            lines.append(f"| {r['method']} | {r['seed']} | {r['status']} | {_or(r.get('test_acc'), '.2f')} | "
                         f"{_or(ratio, '.3f')} | {_or(r.get('epochs'))} | {_or(r.get('seconds'), '.0f')} | "
                         f"{_or(r.get('process_s'))} | {_or(r.get('outside_epochs_s'))} | "
                         f"{_or(r.get('epoch_s'))} | {_or(r.get('train_images_per_s'), ',.0f')} |")
    table = next((r for r in by["quality"] if r.get("kind") == "table"), None)
    if table and Path(table["path"]).is_file():
        text = Path(table["path"]).read_text()
        lines += ["", "The harness's table, as written to results.tar.gz:", "", *text.splitlines()[2:]]

    lines += ["", "## 4. Latency → docs/benchmarks.md, *Inference latency, dense vs pruned* (GPU row)", ""]
    for r in by["latency"]:
        if r.get("kind") == "model":
            lines.append(f"- `{r['name']}`: {r['source']}")
    figures = [r for r in by["latency"] if r.get("kind") == "figure"]
    if figures:
        lines += ["", "| mode | batch | model | median ms (p10-p90) | speed-up | MACs-ideal | of ideal |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {r['mode']} | {r['batch']} | {r['model']} | {r['median_ms']:.3f} ({r['p10_ms']:.3f}-"
                  f"{r['p90_ms']:.3f}) | {r['speedup']:.2f}× | {r['ideal_speedup']:.2f}× | "
                  f"{r['of_ideal']:.0%} |" for r in figures]
    return "\n".join(lines) + "\n"


def _problems(records: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in records:
        kind = r.get("kind")
        if kind in ("skipped", "timeout", "error", "exit") or r.get("status") in ("failed", "timed out",
                                                                                  "not started", "skipped"):
            what = {k: v for k, v in r.items() if k not in ("step", "kind")}
            out.append(f"- **{r.get('step')}: {kind if kind != 'run' else r.get('status')}** "
                       f"{json.dumps(what)}")
    return ["", "Not measured, or stopped:", *out] if out else []


def _compiled(record: dict[str, Any]) -> str:
    return f"torch.compile ({record['compile_backend']})" if record.get("compile") else "no (eager)"


def _or(value: Any, fmt: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "missing"
    return format(value, fmt)


# ------------------------------------------------------------------------------------------ smoke data
def make_smoke_tarball(folder: Path, per_class_train: int = 15, per_class_test: int = 6) -> Path:
    """A CIFAR-10-shaped image-folder tarball (``train|test/<class>/*.jpg``, 32x32 JPEGs, 10 classes whose
    images differ in colour), the layout of ../shared/data/cifar10-jpg.tar.gz, in ``folder``."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "cifar10-jpg.tar.gz"
    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz") as tar:
        for split, count in (("train", per_class_train), ("test", per_class_test)):
            for label in range(10):
                colour = rng.integers(0, 256, 3)
                for k in range(count):
                    pixels = np.clip(colour + rng.normal(0, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
                    buffer = io.BytesIO()
                    Image.fromarray(pixels).save(buffer, format="JPEG")
                    info = tarfile.TarInfo(f"cifar10/{split}/class{label}/{k:04d}.jpg")
                    info.size = buffer.tell()
                    buffer.seek(0)
                    tar.addfile(info, buffer)
    return path


# ------------------------------------------------------------------------------------------------- main
class UsageError(Exception):
    """Bad arguments: one line, exit status 2."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the evidence files ($OUT)")
    parser.add_argument("--data-dir", help="folder holding cifar10-jpg.tar.gz (or CIFAR-10 in another "
                        "layout rlal reads); --smoke makes its own tiny one when not given")
    parser.add_argument("--work", type=Path, help="folder for runs and caches (default: a new temporary one)")
    parser.add_argument("--budget", type=float, help="seconds for the whole run (default 540; smoke 600)")
    parser.add_argument("--steps", default=",".join(STEPS),
                        help=f"comma-separated subset of {','.join(STEPS)} (default: all)")
    parser.add_argument("--smoke", action="store_true", help="every step on the CPU on tiny data (CI)")
    parser.add_argument("--quality-epochs", type=int, help="fix the quality runs' epochs (default: sized)")
    parser.add_argument("--seeds", help="comma-separated seeds of the quality runs (default 0,1): a later "
                        "call adds seeds to a table at the same --quality-epochs")
    parser.add_argument("--methods", help="comma-separated quality methods (default dense,uniform,rlal,"
                        "depgraph; depgraph runs on each finished dense run)")
    parser.add_argument("--name", default=TABLE, help=f"the quality table's name (default {TABLE}): another "
                        "name for runs under other settings, so they never mix with that table's")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key of the track's config, for the quality runs and the agent step "
                        "(repeatable)")
    return parser.parse_args(argv)


@dataclass(frozen=True)
class Request:
    """What the command line asks for, checked."""

    steps: list[str]
    seeds: tuple[int, ...] | None
    methods: tuple[str, ...] | None
    table: str
    sets: tuple[str, ...]


def check_args(args: argparse.Namespace) -> Request:
    """The command line checked: a :class:`UsageError` (one line) names the first thing wrong."""
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = [s for s in steps if s not in STEPS]
    if unknown or not steps:
        bad = (unknown or [args.steps])[0]
        raise UsageError(f"--steps: unknown step {bad!r} (choose from {', '.join(STEPS)})")
    if args.budget is not None and not args.budget > 0:
        raise UsageError(f"--budget must be > 0 seconds, got {args.budget}")
    if args.quality_epochs is not None and args.quality_epochs < 4:
        raise UsageError(f"--quality-epochs must be >= 4 (warm-up, search, align, fine-tune), got "
                         f"{args.quality_epochs}")
    seeds = _int_list("--seeds", args.seeds) if args.seeds is not None else None
    methods = None
    if args.methods is not None:
        methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
        bad = [m for m in methods if m not in QUALITY_METHODS]
        if bad or not methods:
            raise UsageError(f"--methods: unknown method {(bad or [args.methods])[0]!r} (choose from "
                             f"{', '.join(QUALITY_METHODS)})")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", args.name):
        raise UsageError(f"--name: {args.name!r} is not a plain name (letters, digits, '.', '_', '-')")
    bad_set = next((item for item in args.sets if "=" not in item or not item.split("=", 1)[0].strip()), None)
    if bad_set is not None:
        raise UsageError(f"--set: expected KEY=VALUE, got {bad_set!r}")
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out} exists and is not a folder")
    if args.data_dir is None and not args.smoke:
        raise UsageError("--data-dir is needed (the folder holding cifar10-jpg.tar.gz)")
    if args.data_dir is not None and not Path(args.data_dir).exists():
        raise UsageError(f"--data-dir {args.data_dir}: no such file or folder")
    return Request(steps, seeds, methods, args.name, tuple(args.sets))


def _int_list(option: str, text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UsageError(f"{option}: expected comma-separated whole numbers, got {text!r}") from None
    if not values or min(values) < 0 or len(set(values)) != len(values):
        raise UsageError(f"{option}: expected distinct whole numbers >= 0, got {text!r}")
    return values


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        request = check_args(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from rlal.config import load_config
    from rlal.errors import RlalError

    work = args.work or Path(tempfile.mkdtemp(prefix="rlal-gpu-evidence-"))
    work.mkdir(parents=True, exist_ok=True)
    data_dir = args.data_dir or str(make_smoke_tarball(work / "data").parent)
    data_dir = str(Path(data_dir).resolve())
    make = smoke_settings if args.smoke else gpu_settings
    settings = make(data_dir, args.budget or (600.0 if args.smoke else 540.0))
    if args.quality_epochs is not None:
        settings = dataclasses.replace(settings, quality_epochs=args.quality_epochs)
    if request.seeds is not None:
        settings = dataclasses.replace(settings, seeds=request.seeds)
    if request.methods is not None:
        settings = dataclasses.replace(settings, methods=request.methods)
    settings = dataclasses.replace(settings, table=request.table,
                                   track_overrides=(*settings.track_overrides, *request.sets))
    steps_wanted = request.steps
    try:
        track = load_config(TRACK, list(settings.track_overrides))
    except RlalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ev = Evidence(args.out)
    clock = Clock(settings.budget_s)
    steps = Steps(ev, settings, work)
    ev.add({"step": "run", "kind": "start", "smoke": settings.smoke, "steps": steps_wanted,
            "budget_s": settings.budget_s, "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "work": str(work),
            "data_dir": data_dir, "argv": sys.argv[1:] if argv is None else list(argv)})
    ev.log(f"{'smoke' if settings.smoke else 'GPU'} run, budget {settings.budget_s:.0f} s, work in {work}")
    status = 0
    try:
        env = run_prepare(steps, settings, clock, data_dir)
        if env is None:
            ev.log("prepare failed: see evidence.jsonl and evidence.log")
            status = 1
        elif not settings.smoke and not env.get("cuda"):
            ev.add({"step": "prepare", "kind": "error", "error": "no CUDA device: use --smoke on the CPU"})
            ev.log("no CUDA device: the GPU run stops here (use --smoke on the CPU)")
            status = 1
        else:
            gpu = env.get("cuda") or f"the CPU ({env.get('cpu')})"
            latency_s = settings.step_s["latency"] if "latency" in steps_wanted else 0.0
            if "throughput" in steps_wanted:
                run_throughput(steps, settings, clock, data_dir, track)
            if "agent" in steps_wanted:
                run_agent(steps, settings, clock, settings.track_overrides)
            if "quality" in steps_wanted:
                run_quality(steps, settings, clock, track, list(settings.track_overrides), latency_s, gpu)
            if "latency" in steps_wanted:
                run_latency(steps, settings, clock, track)
    finally:
        steps.stop_all()
        ev.add({"step": "run", "kind": "end", "seconds": round(clock.now(), 1), "status": status})
        ev.write_markdown()
        ev.log(f"done in {clock.now():.0f} s; evidence in {args.out}")
    return status


if __name__ == "__main__":
    sys.exit(main())
