"""Checkpoints, resume, interruption and divergence: a stopped run continues to the same end, and nothing
already written is lost or half-written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_train import fmnist_dir  # noqa: F401  (fixture re-used)

import rlal.train.dense
import rlal.train.joint
from rlal.checkpoint import load_checkpoint, state_equal
from rlal.cli import main
from rlal.config import load_config
from rlal.errors import RlalError, RunInterrupted, TrainingDiverged
from rlal.report.metrics import MetricsWriter, read_metrics
from rlal.train.dense import fit_dense
from rlal.train.joint import fit_joint

pytestmark = pytest.mark.usefixtures("one_thread")

# Wall-clock fields differ between any two runs; everything else must match exactly.
TIMING = {"train_seconds", "train_images_per_s", "seconds"}


def joint_overrides(data_dir: Path) -> list[str]:
    """A tiny joint run of 7 epochs: warm-up 1, search 3 (the final choice ends epoch 4), align 1 (the cut
    ends epoch 5), fine-tune 2."""
    return [
        "method=rlal", "model.name=resnet20", "data.dataset=fashion-mnist", f"data.data_dir={data_dir}",
        "data.reward_size=100", "data.batch_size=64", "data.download=false", "data.train_subset=256",
        "data.augment=false", "data.eval_batch_size=100", "train.epochs=7", "train.device=cpu",
        "train.progress=false", "train.threads=1", "optim.lr=0.05", "search.warmup_epochs=1",
        "search.search_epochs=3", "search.episodes_per_epoch=3", "search.final_window=2",
        "env.target_macs=0.5", "env.reward_batches=1", "agent.warmup_episodes=2", "agent.updates_per_epoch=4",
        "agent.batch_size=16", "agent.context.updates_per_epoch=4", "search.align.lam=0.01",
    ]


def dense_overrides(data_dir: Path) -> list[str]:
    joint_only = ("method", "search", "env", "agent")
    kept = [o for o in joint_overrides(data_dir) if o.split("=")[0].split(".")[0] not in joint_only]
    return [*kept, "method=dense", "train.epochs=3"]


def untimed(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def same_metrics(run: Path, reference: Path) -> bool:
    return untimed(read_metrics(run / "metrics.jsonl")) == untimed(read_metrics(reference / "metrics.jsonl"))


def interrupt_after(monkeypatch, module, epoch: int) -> None:
    """Make ``module``'s loop stop (as Ctrl-C would) right after the checkpoint of ``epoch``."""
    real = module.save_checkpoint

    def save_then_stop(run_dir, at, *args, **kwargs):
        real(run_dir, at, *args, **kwargs)
        if at == epoch:
            raise KeyboardInterrupt

    monkeypatch.setattr(module, "save_checkpoint", save_then_stop)


@pytest.fixture(scope="module")
def joint_reference(fmnist_dir, tmp_path_factory):  # noqa: F811
    """The uninterrupted joint run every resumed one must reproduce."""
    out = tmp_path_factory.mktemp("reference") / "run"
    result = fit_joint(load_config(None, joint_overrides(fmnist_dir)), out)
    return result, out


STOPS = {"warm-up": 1, "search-1": 2, "search": 3, "choice": 4, "cut": 5, "fine-tune": 6}


@pytest.mark.parametrize("stop_after", list(STOPS.values()), ids=list(STOPS))
def test_a_joint_run_stopped_after_any_epoch_resumes_to_the_uninterrupted_result(
    fmnist_dir, joint_reference, tmp_path, monkeypatch, stop_after  # noqa: F811
):
    reference, reference_dir = joint_reference
    config = load_config(None, joint_overrides(fmnist_dir))
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        interrupt_after(patch, rlal.train.joint, stop_after)
        with pytest.raises(RunInterrupted, match=rf"checkpoint of epoch {stop_after} is kept.*--resume"):
            fit_joint(config, out)
    assert load_checkpoint(out).epoch == stop_after
    assert not (out / "result.json").exists()

    resumed = fit_joint(config, out, resume=True)
    assert resumed.plan == reference.plan
    assert resumed.test_acc == reference.test_acc
    assert same_metrics(out, reference_dir)
    saved = json.loads((out / "result.json").read_text())
    assert saved["resumed"] is True and saved["plan"] == reference.plan.to_dict()
    # the search's scoring passes are counted once, whatever epoch the run was stopped after
    uninterrupted = json.loads((reference_dir / "result.json").read_text())
    assert saved["search_forward_images"] == uninterrupted["search_forward_images"] > 0


@pytest.mark.parametrize("path", ["geometric", "linear"])
def test_a_run_stopped_between_two_align_epochs_resumes_on_the_same_steering_path(
    fmnist_dir, tmp_path, monkeypatch, path  # noqa: F811
):
    """The steering's path and progress are in the checkpoint: a run stopped after the first of two align
    epochs ends exactly where an uninterrupted one does."""
    # One search epoch and one fine-tune epoch: all that is needed around the two align epochs (3 and 4).
    overrides = [*joint_overrides(fmnist_dir), "search.search_epochs=1", "search.final_window=1",
                 "search.align_epochs=2", "train.epochs=5", f"search.align.path={path}"]
    config = load_config(None, overrides)
    reference = fit_joint(config, tmp_path / "reference")
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        interrupt_after(patch, rlal.train.joint, 3)  # the first of the two align epochs
        with pytest.raises(RunInterrupted):
            fit_joint(config, out)
    assert load_checkpoint(out).state["align"]["steer"]["linear"] is (path == "linear")
    resumed = fit_joint(config, out, resume=True)
    assert resumed.test_acc == reference.test_acc
    assert same_metrics(out, tmp_path / "reference")


def test_a_run_with_a_shorter_dense_phase_stopped_at_the_cut_resumes_on_its_schedule(
    fmnist_dir, tmp_path, monkeypatch  # noqa: F811
):
    """The small model's schedule, rebuilt on resuming, starts where the shortened dense phase left it."""
    overrides = [*joint_overrides(fmnist_dir), "search.search_epochs=1", "search.final_window=1",
                 "train.epochs=5", "search.dense_epoch_fraction=0.5"]
    # the cut ends epoch 3 (warm-up 1, search 1, align 1)
    stopped_and_resumed_like_the_uninterrupted_run(load_config(None, overrides), 3, tmp_path, monkeypatch)


def stopped_and_resumed_like_the_uninterrupted_run(config, stop_after: int, tmp_path, monkeypatch) -> None:
    """Run ``config`` whole, and again stopped after epoch ``stop_after`` and resumed: the same results."""
    reference = fit_joint(config, tmp_path / "reference")
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        interrupt_after(patch, rlal.train.joint, stop_after)
        with pytest.raises(RunInterrupted):
            fit_joint(config, out)
    resumed = fit_joint(config, out, resume=True)
    assert resumed.test_acc == reference.test_acc
    assert same_metrics(out, tmp_path / "reference")


def test_a_run_scoring_with_bn_re_estimation_resumes_in_a_search_epoch_to_the_uninterrupted_result(
    fmnist_dir, tmp_path, monkeypatch  # noqa: F811
):
    """The BN re-estimation batches of a search epoch are those of the last epoch trained, also when the
    run was resumed just before it (a resumed run's loader starts at epoch 0)."""
    overrides = [*joint_overrides(fmnist_dir), "search.search_epochs=2", "search.final_window=1",
                 "train.epochs=5", "env.bn_recalibration_batches=1"]
    # stopped after the first search epoch: the second scores on resuming
    stopped_and_resumed_like_the_uninterrupted_run(load_config(None, overrides), 2, tmp_path, monkeypatch)


def wait_past_checkpoint(process: subprocess.Popen, out: Path, epoch: int, timeout: float) -> None:
    """Wait until the run in ``out`` has checkpointed ``epoch`` (while ``process`` still runs), then a little
    longer, so that a kill lands inside the next epoch."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        pointer = out / "checkpoint.json"
        if pointer.exists() and json.loads(pointer.read_text())["epoch"] >= epoch:
            break
        time.sleep(0.02)
    output = process.stdout.read() if process.poll() is not None and process.stdout else ""
    assert process.poll() is None, f"the run ended before it could be killed: {output}"
    time.sleep(0.3)  # into the next epoch


def test_a_joint_run_killed_mid_epoch_resumes_to_the_uninterrupted_result(
    fmnist_dir, joint_reference, tmp_path  # noqa: F811
):
    reference, reference_dir = joint_reference
    out = tmp_path / "run"
    command = [sys.executable, "-m", "rlal.cli", "train", "--out", str(out)]
    for override in joint_overrides(fmnist_dir):
        command += ["--set", override]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_past_checkpoint(process, out, 2, timeout=120)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert not (out / "result.json").exists()
    killed_at = load_checkpoint(out).epoch

    assert main(["train", "--resume", str(out)]) == 0
    saved = json.loads((out / "result.json").read_text())
    assert saved["plan"] == reference.plan.to_dict(), f"killed after the checkpoint of epoch {killed_at}"
    assert saved["test_acc"] == reference.test_acc
    assert same_metrics(out, reference_dir)


def test_sigterm_stops_the_run_with_exit_130_and_the_command_that_resumes_it(
    fmnist_dir, tmp_path  # noqa: F811
):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "rlal.cli", "train", "--out", str(out)]
    for override in joint_overrides(fmnist_dir):
        command += ["--set", override]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None and not (out / "checkpoint.json").exists():
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert err.strip().count("\n") == 0 and f"rlal train --resume {out}" in err
    assert load_checkpoint(out) is not None  # the last complete epoch's checkpoint is intact


def test_a_dense_run_resumes_to_the_uninterrupted_weights(fmnist_dir, tmp_path, monkeypatch):  # noqa: F811
    config = load_config(None, dense_overrides(fmnist_dir))
    reference = fit_dense(config, tmp_path / "reference")
    with monkeypatch.context() as patch:
        interrupt_after(patch, rlal.train.dense, 1)
        with pytest.raises(RunInterrupted):
            fit_dense(config, tmp_path / "run")
    resumed = fit_dense(config, tmp_path / "run", resume=True)
    assert resumed.test_acc == reference.test_acc
    assert state_equal(resumed.model, reference.model)
    assert same_metrics(tmp_path / "run", tmp_path / "reference")


def test_a_diverging_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
    fmnist_dir, tmp_path, monkeypatch  # noqa: F811
):
    config = load_config(None, dense_overrides(fmnist_dir))
    real = rlal.train.dense.train_one_epoch
    calls = []

    def diverge_in_epoch_2(model, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # poison the weights as an exploding step would
            for p in model.parameters():
                p.data.fill_(float("nan"))
        return real(model, *args, **kwargs)

    monkeypatch.setattr(rlal.train.dense, "train_one_epoch", diverge_in_epoch_2)
    kept = r"diverged in epoch 2: the loss is nan .*; the checkpoint of epoch 1 is kept"
    with pytest.raises(TrainingDiverged, match=kept):
        fit_dense(config, tmp_path / "run")
    checkpoint = load_checkpoint(tmp_path / "run")
    assert checkpoint.epoch == 1
    assert all(v.isfinite().all() for v in checkpoint.weights.values() if v.is_floating_point())
    assert not (tmp_path / "run" / "result.json").exists()


def test_resume_refuses_a_finished_run_a_run_without_checkpoint_and_new_settings(
    fmnist_dir, tmp_path, capsys  # noqa: F811
):
    config = load_config(None, [*dense_overrides(fmnist_dir), "train.epochs=1"])
    fit_dense(config, tmp_path / "done")
    assert main(["train", "--resume", str(tmp_path / "done")]) == 2
    assert "already complete" in capsys.readouterr().err

    (tmp_path / "empty").mkdir()
    assert main(["train", "--resume", str(tmp_path / "empty")]) == 2
    assert "not a run directory" in capsys.readouterr().err

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "config.yaml").write_text((tmp_path / "done" / "config.yaml").read_text())
    assert main(["train", "--resume", str(fresh)]) == 2
    assert "no checkpoint" in capsys.readouterr().err

    assert main(["train", "--resume", str(fresh), "--set", "train.epochs=9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "--set" in err and err.count("\n") == 1


def test_resuming_drops_metrics_written_after_the_checkpoint_and_a_torn_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    writer = MetricsWriter(path)
    for epoch in (1, 2, 3):
        writer.write({"epoch": epoch})
    with path.open("a") as f:
        f.write('{"epoch": 4, "tr')  # a crash in the middle of a write
    reopened = MetricsWriter(path)
    assert reopened.lines == 3
    reopened.truncate(2)
    assert read_metrics(path) == [{"epoch": 1}, {"epoch": 2}]
    reopened.write({"epoch": 3})
    assert [r["epoch"] for r in read_metrics(path)] == [1, 2, 3]


def test_a_checkpoint_that_cannot_be_read_is_a_one_line_error(tmp_path):
    (tmp_path / "checkpoint.json").write_text('{"epoch": 3, "directory": "checkpoint-0003"}')
    with pytest.raises(RlalError, match=r"checkpoint-0003 \(named in .*checkpoint.json\) is missing"):
        load_checkpoint(tmp_path)
