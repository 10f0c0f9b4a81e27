"""The measuring side of the GPU evidence run (``bench/gpu_evidence.py``): one step per process.

    python bench/gpu_evidence_steps.py STEP SPEC_JSON RECORDS_JSONL

``gpu_evidence.py`` starts each step in a process of its own, so a step that crashes, hangs in a compile or
runs past its time is killed alone and the run goes on. A step appends one JSON object per figure to
RECORDS_JSONL, flushed as it is written: what a killed step measured before it was killed is kept. Steps:

- ``prepare``: the machine and library versions; reads (decodes once, caches) the dataset.
- ``throughput``: dense training images/s of one model, batch and compile setting, timed with CUDA events
  after a warm-up (with ``barrier``, several copies start their timed part together: the concurrency probe).
- ``agent``: the agent's seconds per epoch against one training epoch (``bench/agent_overhead.py``), and
  the seconds to score a masked sub-network (``bench/structure.py``).
- ``table``: the quality table from the finished runs (``rlal.benchmark.write_results``).
- ``latency``: dense vs pruned forward latency, eager and compiled.

Not a public interface: the spec's keys are whatever ``gpu_evidence.py`` writes.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rlal.config import DataConfig, OptimConfig, TrainConfig, load_config
from rlal.data import build_data
from rlal.machine import describe
from rlal.models import count_macs_params, create_model
from rlal.train.epoch import evaluate, train_one_epoch
from rlal.train.optim import build_optimizer, build_scheduler
from rlal.train.runtime import Runtime, resolve_runtime, seed_everything

Spec = dict[str, Any]


class Records:
    """Appends JSON records to a file, flushed and synced one by one (a killed step keeps what it wrote)."""

    def __init__(self, path: Path, step: str) -> None:
        self.path, self.step = path, step

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"step": self.step, **record}) + "\n")
            f.flush()
            os.fsync(f.fileno())


class Timer:
    """Seconds of the code inside ``with timer:``; on CUDA read from events recorded on the stream, so
    they count the GPU's work, not only the host's queueing of it."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.seconds = device, 0.0

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        if self.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            end.synchronize()
            self.seconds = start.elapsed_time(end) / 1e3
        else:
            begin = time.perf_counter()
            yield
            self.seconds = time.perf_counter() - begin


def runtime_for(spec: Spec) -> Runtime:
    return resolve_runtime(TrainConfig(device=spec["device"], progress=False, threads=spec.get("threads")))


def data_config(spec: Spec, batch_size: int) -> DataConfig:
    return DataConfig(dataset="cifar10", data_dir=spec["data_dir"], batch_size=batch_size,
                      eval_batch_size=spec["eval_batch"], reward_size=spec["reward_size"])


# --------------------------------------------------------------------------------------------- prepare
def step_prepare(spec: Spec, out: Records) -> None:
    """The machine and library versions, then the dataset read once (decoded into the cache)."""
    # cpu, cpu_count, threads, torch, and cuda: the GPU's name, None without one (rlal.machine)
    info: dict[str, Any] = {"kind": "env", "python": platform.python_version(), **describe()}
    try:
        import torch_pruning

        info["torch_pruning"] = getattr(torch_pruning, "__version__", "unknown")
    except ImportError:
        info["torch_pruning"] = None  # the depgraph baseline then fails; gpu_evidence.py says so
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info |= {
            "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "gpu_capability": f"{props.major}.{props.minor}", "gpu_sms": props.multi_processor_count,
            "cuda_version": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
        }  # fmt: skip
    out.write(info)
    start = time.perf_counter()
    data = build_data(data_config(spec, 512), torch.device("cpu"), seed=0)
    out.write({
        "kind": "data", "source": data.source, "train_images": data.train.num_samples,
        "reward_images": data.reward.num_samples, "test_images": data.test.num_samples,
        "seconds": round(time.perf_counter() - start, 2),
    })  # fmt: skip


# ------------------------------------------------------------------------------------------ throughput
def step_throughput(spec: Spec, out: Records) -> None:
    """Dense training throughput of ``spec["model"]`` at ``spec["batch"]``, eager or compiled: a warm-up
    (which compiles), then ``timed_epochs`` whole epochs (or ``timed_batches`` batches), CUDA-event timed;
    then, for eager models, one pass over the test set."""
    runtime = runtime_for(spec)
    seed_everything(0)
    data = build_data(data_config(spec, spec["batch"]), runtime.device, seed=0,
                      channels_last=runtime.channels_last)
    fmt = torch.channels_last if runtime.channels_last else torch.contiguous_format
    model = create_model(spec["model"], num_classes=data.spec.num_classes, in_channels=3,
                         input_size=32).to(runtime.device, memory_format=fmt)
    compiled = bool(spec["compile"])
    step_model = torch.compile(model, backend=spec["compile_backend"]) if compiled else model
    optimizer = build_optimizer(model, OptimConfig())
    timed_epochs = spec.get("timed_epochs")
    batches = spec.get("timed_batches")
    steps = len(data.train) * timed_epochs if timed_epochs else batches
    total = spec["warmup_batches"] + steps  # one "epoch" of every step timed
    scheduler = build_scheduler(optimizer, OptimConfig(), [total])
    timer = Timer(runtime.device)

    with timer():  # kernels chosen, the graph compiled, caches warm; not counted in the figures
        train_one_epoch(step_model, FirstBatches(data.train, spec["warmup_batches"]), optimizer,
                        scheduler, runtime)
    warmup_s = timer.seconds
    if spec.get("barrier"):
        wait_at_barrier(Path(spec["barrier"]), spec["rank"], spec["world"], spec["barrier_timeout_s"])

    seconds = images = 0.0
    if timed_epochs:
        for epoch in range(1, timed_epochs + 1):
            data.train.set_epoch(epoch)
            with timer():
                stats = train_one_epoch(step_model, data.train, optimizer, scheduler, runtime)
            seconds += timer.seconds
            images += stats.images
    else:
        with timer():
            stats = train_one_epoch(step_model, FirstBatches(data.train, batches), optimizer, scheduler,
                                    runtime)
        seconds, images = timer.seconds, stats.images
    record: dict[str, Any] = {
        "kind": "probe" if spec.get("barrier") else "figure",
        "model": spec["model"], "batch": spec["batch"], "compile": compiled,
        "compile_backend": spec["compile_backend"] if compiled else None, "device": runtime.describe(),
        "train_images": int(images), "train_seconds": round(seconds, 4),
        "images_per_s": round(images / seconds, 1),
        "epoch_s": round(seconds / timed_epochs, 3) if timed_epochs else None,
        "epoch_images": len(data.train) * data.train.batch_size,
        "s_per_45000": round(45_000 * seconds / images, 3),
        "warmup_s": round(warmup_s, 2), "warmup_batches": spec["warmup_batches"],
        "train_loss": round(stats.loss, 4),
        "rank": spec.get("rank"), "world": spec.get("world"),
    }  # fmt: skip
    if compiled:
        from torch._dynamo.utils import counters

        record["graph_breaks"] = int(sum(counters["graph_break"].values()))
        record["graphs"] = int(counters["stats"]["unique_graphs"])
    if not compiled and not spec.get("barrier"):
        # Eval only eager: a compiled model in eval mode would be compiled again (another minute).
        test = evaluate(model, data.test, runtime)
        record["eval_images_per_s"] = round(test.images / test.seconds, 1)
    if runtime.device.type == "cuda":
        record["max_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    out.write(record)


class FirstBatches:
    """The first ``n`` batches of a loader, as a loader (``train_one_epoch`` reads ``len``)."""

    def __init__(self, loader: Any, n: int) -> None:
        self.loader, self.n = loader, min(n, len(loader))

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[Any]:
        for k, batch in enumerate(self.loader):
            if k == self.n:
                return
            yield batch


def wait_at_barrier(folder: Path, rank: int, world: int, timeout_s: float) -> None:
    """Mark this process ready and wait until ``world`` processes are: the timed parts then overlap."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"ready-{rank}").touch()
    deadline = time.monotonic() + timeout_s
    while len(list(folder.glob("ready-*"))) < world:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(list(folder.glob('ready-*')))} of {world} probe processes ready")
        time.sleep(0.05)


# ------------------------------------------------------------------------------------------------ agent
def step_agent(spec: Spec, out: Records) -> None:
    """``bench/agent_overhead.py``'s measurement with the quality track's data, model, environment and
    agent settings (``spec["config"]`` with ``spec["overrides"]``)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import agent_overhead  # bench/agent_overhead.py

    config = load_config(spec["config"], spec["overrides"])
    runtime = resolve_runtime(config.train)
    seed_everything(0)
    data = build_data(config.data, runtime.device, seed=0, channels_last=runtime.channels_last)
    episodes = spec.get("episodes") or config.search.episodes_per_epoch
    lines = agent_overhead.measure(
        runtime, data, data.source, episodes=episodes, epochs=spec["epochs"],
        train_batches=spec.get("train_batches"), env_cfg=config.env, agent_cfg=config.agent,
        model_name=config.model.name,
    )
    for line in lines:
        line.pop("episodes_note", None)  # P here is the track's search.episodes_per_epoch
        out.write({"kind": "summary" if line.get("summary") else "epoch", "batch": config.data.batch_size,
                   **line})
    # docs/benchmarks.md's structure table: scoring the dense, masked and cut ResNet-56 (bench/structure.py).
    import structure as structure_bench  # bench/structure.py

    from rlal.structure import find_layers

    torch.manual_seed(0)
    layers = find_layers(create_model("resnet56").eval(), (3, 32, 32))
    for record in structure_bench.bench_scoring(layers, runtime.device.type, spec["score_images"],
                                                spec["score_batch"], spec["score_repeats"]):
        out.write({"kind": "score", **record})


# ------------------------------------------------------------------------------------------------ table
def step_table(spec: Spec, out: Records) -> None:
    """The quality table (``<results>/<name>.md``, ``.json``, ``.png``, configs) from every finished run."""
    from rlal.benchmark import write_results

    config_path = Path(spec["config"])
    base = load_config(config_path, spec["overrides"])
    path = write_results(spec["name"], config_path, base, Path(spec["runs_dir"]), Path(spec["results_dir"]),
                         spec["note"])
    out.write({"kind": "table", "path": str(path)})


# ---------------------------------------------------------------------------------------------- latency
def step_latency(spec: Spec, out: Records) -> None:
    """Forward latency of the dense model and each pruned one at each batch size: eager (every model), then
    compiled (the dense model and the first pruned one) at ``compiled_batches`` while ``spec["deadline"]``
    allows. On CUDA the
    models run as trained (bf16 autocast, channels-last); each figure is the median of ``runs`` calls after
    ``warmup``, the models' calls taken in alternating turns of 10."""
    runtime = runtime_for(spec)
    device = runtime.device
    shape = (3, 32, 32)
    dense = create_model(spec["model"], num_classes=10, in_channels=3, input_size=32).eval()
    models: dict[str, nn.Module] = {"dense": dense}
    sources = pruned_models(spec, dense, shape)
    for name, (model, source) in sources.items():
        models[name] = model
        out.write({"kind": "model", "name": name, "source": source})
    macs = {name: count_macs_params(m, shape)[0] for name, m in models.items()}
    fmt = torch.channels_last if runtime.channels_last else torch.contiguous_format
    for model in models.values():
        model.to(device, memory_format=fmt)

    def emit(mode: str, batch: int, times: dict[str, list[float]]) -> None:
        dense_ms = float(np.median(times["dense"]))
        for name, ms in times.items():
            median = float(np.median(ms))
            out.write({
                "kind": "figure", "mode": mode, "device": runtime.describe(), "batch": batch, "model": name,
                "median_ms": round(median, 4), "p10_ms": round(float(np.percentile(ms, 10)), 4),
                "p90_ms": round(float(np.percentile(ms, 90)), 4), "runs": len(ms),
                "macs": macs[name], "speedup": round(dense_ms / median, 3),
                "ideal_speedup": round(macs["dense"] / macs[name], 3),
                "of_ideal": round(dense_ms / median / (macs["dense"] / macs[name]), 3),
            })  # fmt: skip

    for batch in spec["batches"]:
        emit("eager", batch, timed_calls(models, batch, shape, runtime, spec["warmup"], spec["runs"]))
    if not sources:
        return
    first = next(iter(sources))
    # One compiled entry per (model, batch) on the same forward code: more than dynamo's default 8.
    torch._dynamo.config.recompile_limit = 64
    compile_s = 0.0
    for batch in spec["compiled_batches"]:  # in order of importance
        left = spec["deadline"] - time.time()
        if compile_s and left < 2.5 * compile_s:
            out.write({"kind": "skipped", "mode": "compiled", "batch": batch,
                       "why": f"{left:.0f} s left, a compile pair took {compile_s:.0f} s"})
            continue
        pair = {name: torch.compile(models[name], backend=spec["compile_backend"], dynamic=False)
                for name in ("dense", first)}
        start = time.perf_counter()
        times = timed_calls(pair, batch, shape, runtime, spec["warmup"], spec["runs"])
        compile_s = time.perf_counter() - start
        emit("compiled", batch, times)


def pruned_models(
    spec: Spec, dense: nn.Module, shape: tuple[int, int, int]
) -> dict[str, tuple[nn.Module, str]]:
    """The pruned models of the quality runs named in ``spec["pruned"]`` that finished (name -> (model,
    run directory)); when none did, a uniform cut of ``dense`` to ``spec["target_macs"]``."""
    from rlal.evaluate import open_pruned

    found: dict[str, tuple[nn.Module, str]] = {}
    for name, run_dir in spec["pruned"].items():
        if (Path(run_dir) / "pruned" / "spec.json").is_file():
            found[name] = (open_pruned(run_dir).model.eval(), run_dir)
    if found:
        return found
    from rlal.env import Budget
    from rlal.structure import cut, find_layers

    structure = find_layers(dense, shape)
    plan, ratio = Budget(structure, spec["target_macs"], 0.2, 1).uniform_plan()
    why = f"no finished quality run: a uniform cut, keep ratio {ratio:.3f}"
    return {"uniform-cut": (cut(structure, plan).eval(), why)}


def timed_calls(
    models: dict[str, Callable[[torch.Tensor], Any]], batch: int, shape: tuple[int, int, int],
    runtime: Runtime, warmup: int, runs: int,
) -> dict[str, list[float]]:
    """Milliseconds of each of ``runs`` forward calls per model on one random batch, after ``warmup``
    calls each (a compile happens there); the models take turns of 10 calls."""
    device = runtime.device
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(0)).to(device)
    if runtime.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    timer = Timer(device)
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode(), runtime.autocast():
        for fn in models.values():
            for _ in range(warmup):
                fn(x)
        for start in range(0, runs, 10):
            for name, fn in models.items():
                for _ in range(min(10, runs - start)):
                    with timer():
                        fn(x)
                    times[name].append(timer.seconds * 1e3)
    return times


STEPS: dict[str, Callable[[Spec, Records], None]] = {
    "prepare": step_prepare, "throughput": step_throughput, "agent": step_agent, "table": step_table,
    "latency": step_latency,
}


def main(argv: list[str]) -> int:
    step, spec_text, records = argv
    spec = json.loads(spec_text)
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    out = Records(Path(records), spec.get("label", step))
    try:
        STEPS[step](spec, out)
    except Exception as exc:
        # One line for the evidence; the traceback goes to the log for whoever reads it.
        out.write({"kind": "error", "error": f"{type(exc).__name__}: {exc}"})
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
