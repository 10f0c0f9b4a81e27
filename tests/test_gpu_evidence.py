"""bench/gpu_evidence.py, the GPU evidence run (issue 11). Its ``--smoke`` mode runs every step on the CPU on
tiny generated data; the test reads what it wrote, so the GPU run cannot rot between the sessions that have a
GPU. Timings are not checked, only that each step recorded what the GPU run records. Also: the pure parts
(how the quality runs are sized and shortened) and bad arguments."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from rlal.config import load_config

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "gpu_evidence.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_evidence", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_evidence"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


ge = load_script()


def run_script(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[Path, list[dict]]:
    root = tmp_path_factory.mktemp("gpu-evidence")
    out = root / "out"
    proc = run_script("--smoke", "--out", str(out), "--work", str(root / "work"), timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    records = [json.loads(line) for line in (out / "evidence.jsonl").read_text().splitlines()]
    return out, records


def of(records: list[dict], step: str, kind: str) -> list[dict]:
    return [r for r in records if r.get("step") == step and r.get("kind") == kind]


def test_the_smoke_run_writes_few_files_that_the_device_tool_returns(smoke):
    out, records = smoke
    # The device tool returns at most 8 files, at most 2 folders down.
    assert sorted(p.name for p in out.rglob("*")) == [
        "evidence.jsonl", "evidence.log", "evidence.md", "results.tar.gz"]
    (end,) = of(records, "run", "end")
    assert end["status"] == 0
    (start,) = of(records, "run", "start")
    assert start["smoke"] is True and start["steps"] == list(ge.STEPS)


def test_no_step_was_skipped_stopped_or_failed(smoke):
    _, records = smoke
    bad = [r for r in records if r.get("kind") in ("skipped", "timeout", "error", "exit")
           or r.get("status") in ("failed", "timed out", "not started", "skipped")]
    assert bad == []


def test_prepare_names_the_machine_and_reads_the_generated_tarball(smoke):
    _, records = smoke
    (env,) = of(records, "prepare", "env")
    assert env["cuda"] is None and env["torch"] and env["torch_pruning"]
    assert env["cpu"] and env["cpu_count"] >= 1 and env["threads"] >= 1
    (data,) = of(records, "prepare", "data")
    assert "tarball" in data["source"]
    assert (data["train_images"], data["reward_images"], data["test_images"]) == (100, 50, 60)


def test_throughput_records_eager_and_compiled_training_and_the_probe(smoke):
    _, records = smoke
    figures = {(r["model"], r["compile"]): r for r in of(records, "throughput", "figure")}
    assert set(figures) == {("resnet56", False), ("mobilenetv2-cifar", True)}
    for figure in figures.values():
        assert figure["train_images"] == 2 * 25  # the timed batches, after the warm-up
        assert figure["images_per_s"] > 0 and figure["s_per_45000"] > 0
    assert figures[("resnet56", False)]["eval_images_per_s"] > 0
    assert figures[("mobilenetv2-cifar", True)]["graph_breaks"] >= 0
    probes = of(records, "throughput", "probe")
    assert sorted(r["rank"] for r in probes) == [0, 1] and {r["world"] for r in probes} == {2}
    assert {r["model"] for r in probes} == {"resnet20"}  # the quality runs' model: the probe sizes them


def test_agent_overhead_is_measured_on_the_tracks_settings(smoke):
    _, records = smoke
    (summary,) = of(records, "agent", "summary")
    assert summary["episodes"] == 2 and summary["model"] == "resnet20" and summary["batch"] == 50
    assert summary["agent_over_train"] > 0 and "train_epoch_s_extrapolated" in summary
    (epoch,) = of(records, "agent", "epoch")
    assert epoch["of_which_reward_s"] > 0 and epoch["sac_update_s"] >= 0
    scores = {r["variant"]: r for r in of(records, "agent", "score")}
    assert set(scores) == {"dense", "masked", "cut"}
    assert all(r["images"] == 60 and r["images_per_s"] > 0 for r in scores.values())


def test_quality_runs_every_method_and_seed_and_writes_the_table(smoke):
    out, records = smoke
    (plan,) = of(records, "quality", "plan")
    # Sized from the 2-process probe as on the GPU; the smoke track's 4 epochs fit.
    assert plan["epochs"] == 4 and plan["concurrency"] == 2 and 0 < plan["predicted_s"] < plan["available_s"]
    assert plan["per_run_images_per_s"] > 0 and set(plan["speed_by_processes"]) == {"2"}
    runs = {(r["method"], r["seed"]): r for r in of(records, "quality", "run")}
    assert set(runs) == {(m, s) for m in ("dense", "uniform", "rlal") for s in (0, 1)} | {("depgraph", 0)}
    for (method, _), run in runs.items():
        assert run["status"] == "done" and 0 <= run["test_acc"] <= 100
        ratio = run["macs"] / run.get("dense_macs", run["macs"])  # dense runs record no dense_macs
        assert ratio == 1 if method == "dense" else ratio <= 0.5 + 0.01
    assert runs[("depgraph", 0)]["epochs"] == 4 + 1  # the dense run it pruned + 1 fine-tune epoch
    # What the next GPU session calibrates the sizing with:
    assert all(r["process_s"] > 0 and r["outside_epochs_s"] >= 0 and r["epoch_s"] > 0 for r in runs.values())
    (elapsed,) = of(records, "quality", "elapsed")
    assert elapsed["runs_s"] > 0 and elapsed["predicted_s"] == plan["predicted_s"]
    assert of(records, "quality", "table")
    with tarfile.open(out / "results.tar.gz") as tar:
        names = set(tar.getnames())
        table = tar.extractfile("docs/results/cifar10-resnet56.md").read().decode()
        rows = json.loads(tar.extractfile("docs/results/cifar10-resnet56.json").read())
    assert "docs/results/cifar10-resnet56/rlal-seed1.yaml" in names
    assert "runs/gpu-evidence/cifar10-resnet56/rlal/seed-0/metrics.jsonl" in names
    assert not any(name.endswith(".safetensors") for name in names)  # records, not weights
    assert "| `rlal` − `uniform` | 0,1 |" in table and "bench/gpu_evidence.py" in table
    assert len(rows) == 7


def test_latency_times_dense_against_each_pruned_model_eager_and_compiled(smoke):
    _, records = smoke
    figures = of(records, "latency", "figure")
    eager = {(r["batch"], r["model"]) for r in figures if r["mode"] == "eager"}
    models = ("dense", "rlal-s0", "uniform-s0", "depgraph-s0")
    assert eager == {(b, m) for b in (1, 8) for m in models}
    compiled = {(r["batch"], r["model"]) for r in figures if r["mode"] == "compiled"}
    assert compiled == {(b, m) for b in (1, 8) for m in ("dense", "rlal-s0")}
    for r in figures:
        assert r["median_ms"] > 0 and r["runs"] == 5
        assert r["ideal_speedup"] == 1 if r["model"] == "dense" else r["ideal_speedup"] > 1.9


def test_the_markdown_has_every_step_and_the_harness_table(smoke):
    out, _ = smoke
    text = (out / "evidence.md").read_text()
    for heading in ("## 1. Training throughput", "## 2. Agent overhead", "## 3. Quality", "## 4. Latency"):
        assert heading in text
    assert "smoke run on the CPU" in text and "**Paired differences**" in text and "missing" in text


# ------------------------------------------------------------------------------- pure parts, no runs
def test_the_epochs_are_cut_to_what_the_measured_speed_fits():
    # 6 runs at once, 10,000 images/s each: an epoch ~5.9 s with the overhead factor.
    epochs, predicted = ge.size_epochs(400, 10_000, runs=6, concurrency=6, config_epochs=30, min_epochs=8)
    assert epochs == 30 and predicted <= 400
    epochs, predicted = ge.size_epochs(120, 10_000, runs=6, concurrency=6, config_epochs=30, min_epochs=8)
    assert 8 < epochs < 30 and predicted <= 120
    one_more = ge.size_epochs(120, 10_000, runs=6, concurrency=6, config_epochs=epochs + 1,
                              min_epochs=epochs + 1)
    assert one_more[1] > 120  # the most that fits
    # Two waves of 3 take twice the start-up: fewer epochs in the same time.
    assert ge.size_epochs(120, 10_000, runs=6, concurrency=3, config_epochs=30, min_epochs=8)[0] < epochs
    assert ge.size_epochs(10, 10_000, runs=6, concurrency=6, config_epochs=30, min_epochs=8)[0] == 8
    assert ge.size_epochs(100, None, runs=6, concurrency=6, config_epochs=30, min_epochs=8) == (
        ge.UNSIZED_EPOCHS, None)


def test_the_runs_at_a_time_that_fit_the_most_epochs_are_chosen():
    # 6 runs: 6 at once in one wave, or 3 at once in two waves (each wave pays the start-up again).
    k, per_run, epochs, predicted = ge.plan_quality(300, {1: 9000.0, 3: 21000.0, 6: 24000.0}, 6, 6, 30, 8)
    assert (k, per_run) == (6, 4000.0) and 8 <= epochs <= 30 and predicted <= 300
    slow_six = ge.plan_quality(300, {1: 9000.0, 3: 30000.0, 6: 12000.0}, 6, 6, 30, 8)
    assert slow_six[:2] == (3, 10000.0)
    # Only the single-process speed: all at once, sharing it; nothing measured: all at once, fixed epochs.
    assert ge.plan_quality(300, {1: 9000.0}, 6, 6, 30, 8)[:2] == (6, 1500.0)
    assert ge.plan_quality(300, {}, 6, 6, 30, 8) == (6, None, ge.UNSIZED_EPOCHS, None)
    assert ge.plan_quality(300, {6: 24000.0}, 6, 4, 30, 8)[:2] == (4, None)  # 6 measured, 4 allowed


def test_concurrent_speed_needs_every_process_of_a_probe():
    def probe(world: int, rank: int, rate: float) -> dict:
        return {"step": "throughput", "kind": "probe", "model": "resnet56", "batch": 512, "world": world,
                "rank": rank, "images_per_s": rate}

    records = [
        {"step": "throughput", "kind": "figure", "model": "resnet56", "batch": 512, "compile": False,
         "images_per_s": 9000.0},
        {"step": "throughput", "kind": "figure", "model": "resnet56", "batch": 512, "compile": True,
         "images_per_s": 20000.0},
        *[probe(3, r, 7000.0) for r in range(3)], *[probe(6, r, 4000.0) for r in range(5)],  # one lost
    ]
    assert ge.concurrent_speed(records, "resnet56", 512) == {1: 9000.0, 3: 21000.0}


@pytest.mark.parametrize("epochs", [8, 10, 12, 15, 20, 25, 29, 30])
def test_a_shortened_track_is_a_valid_config_with_its_schedule_scaled(epochs):
    track = load_config(ge.TRACK)
    items = ge.schedule_overrides(track, epochs)
    assert (items == []) == (epochs == track.train.epochs)
    config = load_config(ge.TRACK, items)  # validates: the cut leaves fine-tuning epochs
    s = config.search
    assert config.train.epochs == epochs and s.cut_epoch < epochs
    assert s.warmup_epochs >= 1 and s.search_epochs >= 2
    assert config.agent.warmup_episodes % s.episodes_per_epoch == 0
    assert config.agent.warmup_episodes < s.search_epochs * s.episodes_per_epoch  # the agent acts too
    assert 1 <= config.baseline.finetune_epochs <= 5


def test_a_run_cut_short_still_renders():
    text = ge.render_markdown([{"step": "run", "kind": "start", "smoke": False, "steps": ["throughput"],
                                "budget_s": 540, "time": "now"}])
    assert "Not finished" in text and "## 1. Training throughput" in text


@pytest.mark.parametrize("args, message", [
    (["--steps", "bogus", "--smoke"], "--steps: unknown step 'bogus'"),
    (["--quality-epochs", "2", "--smoke"], "--quality-epochs must be >= 4"),
    (["--budget", "0", "--smoke"], "--budget must be > 0"),
    (["--seeds", "1,x", "--smoke"], "--seeds: expected comma-separated whole numbers, got '1,x'"),
    (["--seeds", "2,2", "--smoke"], "--seeds: expected distinct whole numbers >= 0"),
    (["--methods", "dense,magic", "--smoke"], "--methods: unknown method 'magic'"),
    (["--name", "../docs", "--smoke"], "--name: '../docs' is not a plain name"),
    (["--set", "env.round_to", "--smoke"], "--set: expected KEY=VALUE, got 'env.round_to'"),
    (["--set", "env.no_such_key=1", "--smoke"], "no_such_key"),
    ([], "--data-dir is needed"),
    (["--data-dir", "/no/such/folder"], "--data-dir /no/such/folder: no such file or folder"),
])
def test_bad_arguments_get_one_line_and_status_2(tmp_path, args, message):
    proc = run_script("--out", str(tmp_path / "out"), *args)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ")
    assert message in proc.stderr and "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert not (tmp_path / "out").exists()  # nothing written


def test_a_budget_too_short_for_the_runs_still_returns_the_rest(tmp_path):
    # 50 s leave nothing for the quality runs once the latency step's share is kept: they are listed as not
    # started, no table is written, and latency falls back to a uniform cut of the dense model.
    out = tmp_path / "out"
    proc = run_script("--smoke", "--steps", "quality,latency", "--budget", "50", "--out", str(out),
                      "--work", str(tmp_path / "work"), timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = [json.loads(line) for line in (out / "evidence.jsonl").read_text().splitlines()]
    runs = of(records, "quality", "run")
    assert len(runs) == 6 and {r["status"] for r in runs} == {"not started"}
    assert [r["why"] for r in of(records, "quality", "skipped")] == ["no run finished: no table"]
    assert [r["name"] for r in of(records, "latency", "model")] == ["uniform-cut"]
    figures = {(r["mode"], r["model"]) for r in of(records, "latency", "figure")}
    # Eager always fits; the compiled pair fits a quiet machine's 50 s but not a loaded one's (the step's
    # deadline stops it), so it may be missing, never half there, and when it is missing the records say why.
    assert {("eager", "dense"), ("eager", "uniform-cut")} <= figures
    compiled = figures - {("eager", "dense"), ("eager", "uniform-cut")}
    assert compiled in (set(), {("compiled", "dense"), ("compiled", "uniform-cut")})
    stopped = of(records, "latency", "timeout") + of(records, "latency", "skipped")
    assert compiled or stopped
    assert of(records, "throughput", "figure") == [] and of(records, "run", "end")[0]["status"] == 0
    assert "**quality: not started**" in (out / "evidence.md").read_text()
    with tarfile.open(out / "results.tar.gz") as tar:
        assert tar.getnames() == []


@pytest.mark.parametrize(("second", "message"), [
    ({"epochs": 12}, "ran other settings than"),
    ({"table": "cifar10-resnet56-fill"}, "ran table cifar10-resnet56-fill"),
])
def test_merging_calls_that_ran_other_settings_is_refused_in_one_line(tmp_path, second, message):
    merge = Path(__file__).resolve().parent.parent / "bench" / "gpu_evidence_merge.py"
    for name, differs in (("a", {}), ("b", second)):
        call = tmp_path / name
        call.mkdir()
        epochs = differs.get("epochs", 18)
        table = {"table": differs["table"]} if "table" in differs else {}  # calls before --name had none
        records = [{"step": "run", "kind": "start", "time": "t"},
                   {"step": "prepare", "kind": "env", "cpu": "cpu", "cpu_count": 2, "cuda": None},
                   {"step": "quality", "kind": "plan", "epochs": epochs, "config_epochs": 30,
                    "concurrency": 3, "overrides": [f"train.epochs={epochs}"], **table},
                   {"step": "quality", "kind": "run", "method": "uniform", "seed": 0 if name == "a" else 1,
                    "status": "done"}]
        (call / "evidence.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        with tarfile.open(call / "results.tar.gz", "w:gz"):
            pass
    proc = subprocess.run([sys.executable, str(merge), str(tmp_path / "a"), str(tmp_path / "b"),
                           "--results-dir", str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1 and message in proc.stderr
    assert "train.epochs=12" in proc.stderr or "epochs" not in second
    assert not (tmp_path / "results").exists() and not (tmp_path / "runs").exists()


def test_calls_under_another_name_and_settings_make_their_own_table_and_merge_into_one(tmp_path):
    # Two calls of one quality run each, under --name and --set (the next GPU call's shape), then the merge:
    # its success path, on what the calls really wrote.
    name, override = "smoke-nofill", "env.fill_budget=false"
    data = ge.make_smoke_tarball(tmp_path / "data").parent  # one data folder: the calls' settings match
    for seed in (0, 1):
        out = tmp_path / f"call{seed}"
        proc = run_script("--smoke", "--steps", "quality", "--methods", "uniform", "--seeds", str(seed),
                          "--name", name, "--set", override, "--out", str(out), "--data-dir", str(data),
                          "--work", str(tmp_path / f"w{seed}"), timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        records = [json.loads(line) for line in (out / "evidence.jsonl").read_text().splitlines()]
        (plan,) = of(records, "quality", "plan")
        assert plan["table"] == name and override in plan["overrides"]
        assert [r["status"] for r in of(records, "quality", "run")] == ["done"]
        with tarfile.open(out / "results.tar.gz") as tar:
            names = tar.getnames()
        assert f"docs/results/{name}.json" in names
        assert f"runs/gpu-evidence/{name}/uniform/seed-{seed}/result.json" in names
        assert not any("cifar10-resnet56" in n for n in names)
    merge = REPO / "bench" / "gpu_evidence_merge.py"
    proc = subprocess.run([sys.executable, str(merge), str(tmp_path / "call0"), str(tmp_path / "call1"),
                           "--results-dir", str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((tmp_path / "results" / f"{name}.json").read_text())
    rows = rows["runs"] if isinstance(rows, dict) else rows
    assert sorted((r["method"], r["seed"]) for r in rows) == [("uniform", 0), ("uniform", 1)]
    for seed in (0, 1):
        run = tmp_path / "runs" / name / "uniform" / f"seed-{seed}"
        assert (run / "result.json").is_file()
        assert "fill_budget: false" in (run / "config.yaml").read_text()
    assert "2 calls of the device tool" in (tmp_path / "results" / f"{name}.md").read_text()


def test_uniform_matched_runs_on_the_gpu_track_for_more_epochs_than_its_schedule(tmp_path):
    # The next GPU call's third row: uniform at rlal's training compute, priced without a uniform run.
    out = tmp_path / "out"
    proc = run_script("--smoke", "--steps", "quality", "--methods", "uniform-matched", "--seeds", "0",
                      "--out", str(out), "--work", str(tmp_path / "work"), timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = [json.loads(line) for line in (out / "evidence.jsonl").read_text().splitlines()]
    (plan,) = of(records, "quality", "plan")
    runs = of(records, "quality", "run")
    assert [(r["method"], r["status"]) for r in runs] == [("uniform-matched", "done")]
    with tarfile.open(out / "results.tar.gz") as tar:
        config = tar.extractfile("runs/gpu-evidence/cifar10-resnet56/uniform-matched/seed-0/config.yaml")
        epochs = yaml.safe_load(config.read())["train"]["epochs"]
    assert epochs > plan["epochs"]  # rlal's dense epochs cost more than the small network's
