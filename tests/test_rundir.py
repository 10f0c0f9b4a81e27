"""The run directory (issue 12): `--overwrite` leaves nothing of the old run, and one run directory is used
by one process at a time (the `run.lock` file)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli import assert_one_line_error, run_cli
from test_train import fmnist_dir, small_config  # noqa: F401  (fixture re-used)

import rlal.train.baselines
import rlal.train.dense
import rlal.train.joint
from rlal.errors import RlalError, RunDirLocked, RunInterrupted
from rlal.rundir import LOCK_FILE, prepare_run_dir, run_lock
from rlal.train.run import fit

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ("data.train_subset=128", "data.test_subset=50", "data.augment=false", "data.eval_batch_size=100")


def dense_config(data_dir: Path, *extra: str):
    return small_config(data_dir, "method=dense", "train.epochs=1", *TINY, *extra)


def joint_config(data_dir: Path, *extra: str):
    return small_config(
        data_dir, "method=rlal", "train.epochs=3", "search.warmup_epochs=1", "search.search_epochs=1",
        "search.align_epochs=0", "search.episodes_per_epoch=3", "search.final_window=1",
        "env.target_macs=0.5", "env.reward_batches=1", "agent.warmup_episodes=2", "agent.updates_per_epoch=2",
        "agent.batch_size=8", "agent.context.updates_per_epoch=2", "search.align.lam=0.01", *TINY, *extra,
    )


def write_lock(run_dir: Path, pid: int, host: str | None = None) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / LOCK_FILE
    lock.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "started": "earlier"}))
    return lock


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


# --- overwrite -------------------------------------------------------------------------------------------


def test_a_dense_run_over_an_old_rlal_run_leaves_nothing_of_the_old_run(fmnist_dir, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    fit(joint_config(fmnist_dir), out)
    assert (out / "pruned").is_dir() and (out / "checkpoint-0003").is_dir()
    assert (out / "episodes.json").exists() and (out / "plots").is_dir()
    (out / "notes.txt").write_text("mine")  # not the layout's: kept

    fit(dense_config(fmnist_dir), out, overwrite=True)
    fresh = tmp_path / "fresh"
    fit(dense_config(fmnist_dir), fresh)
    assert sorted(os.listdir(out)) == sorted([*os.listdir(fresh), "notes.txt"])
    assert not (out / "pruned").exists() and not (out / "checkpoint-0003").exists()
    assert [p.name for p in out.glob("checkpoint-*")] == ["checkpoint-0001"]
    assert json.loads((out / "result.json").read_text())["method"] == "dense"
    assert (out / "notes.txt").read_text() == "mine"


def test_a_new_run_stopped_before_its_first_checkpoint_cannot_resume_the_old_run(
    fmnist_dir, tmp_path, monkeypatch  # noqa: F811
):
    out = tmp_path / "run"
    fit(dense_config(fmnist_dir), out)  # the old run: finished, with the checkpoint of epoch 1

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(rlal.train.dense, "train_one_epoch", interrupted)
        with pytest.raises(RunInterrupted, match="no epoch had finished"):
            fit(dense_config(fmnist_dir, "seed=1"), out, overwrite=True)
    with pytest.raises(RlalError, match="stopped before its first epoch ended"):
        fit(dense_config(fmnist_dir, "seed=1"), out, resume=True)


# --- the lock --------------------------------------------------------------------------------------------


def test_a_second_process_opening_a_run_dir_in_use_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from pathlib import Path; from rlal.rundir import prepare_run_dir, run_lock\n"
         "out = Path(sys.argv[1])\n"
         "with run_lock(out):\n"
         "    prepare_run_dir(out); print('locked', flush=True); sys.stdin.read()\n",
         str(out)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(RunDirLocked, match=rf"in use by another rlal process \(pid {holder.pid} on "
                                               rf"{socket.gethostname()}"):
            prepare_run_dir(out)
        with pytest.raises(RunDirLocked):
            prepare_run_dir(out, overwrite=True)
    finally:
        holder.communicate("", timeout=60)  # end of stdin: the holder's run ends
    assert holder.returncode == 0 and not (out / LOCK_FILE).exists()
    with run_lock(out):
        prepare_run_dir(out)  # free again


def test_train_into_a_locked_run_dir_is_a_one_line_error_naming_the_holder(
    fmnist_dir, tmp_path, capsys  # noqa: F811
):
    out = tmp_path / "run"
    write_lock(out, os.getppid())  # a live process that is not this one
    code, _, err = run_cli(capsys, "train", "--method", "dense", "--out", str(out),
                           "--data-dir", str(fmnist_dir), "--set", "data.download=false")
    assert_one_line_error(code, err, f"pid {os.getppid()} on {socket.gethostname()}")


def test_a_stale_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    out = tmp_path / "run"
    write_lock(out, dead_pid())
    with run_lock(out):
        prepare_run_dir(out)
        assert json.loads((out / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (out / LOCK_FILE).exists()


def test_a_lock_held_from_another_host_is_never_taken_over(tmp_path):
    out = tmp_path / "run"
    lock = write_lock(out, dead_pid(), host="elsewhere.example")
    with pytest.raises(RunDirLocked, match=rf"on elsewhere\.example.*remove {lock}"):
        prepare_run_dir(out)
    assert json.loads(lock.read_text())["host"] == "elsewhere.example"


def test_the_lock_is_held_while_a_run_runs_and_released_when_it_finishes(
    fmnist_dir, tmp_path, monkeypatch  # noqa: F811
):
    out = tmp_path / "run"
    holders = []
    real = rlal.train.dense.save_checkpoint

    def save_and_look(run_dir, *args, **kwargs):
        holders.append(json.loads((run_dir / LOCK_FILE).read_text()))
        real(run_dir, *args, **kwargs)

    monkeypatch.setattr(rlal.train.dense, "save_checkpoint", save_and_look)
    fit(dense_config(fmnist_dir), out)
    assert [(h["pid"], h["host"]) for h in holders] == [(os.getpid(), socket.gethostname())]
    assert (out / "result.json").exists() and not (out / LOCK_FILE).exists()


@pytest.mark.parametrize(
    ("method", "module", "function"),
    [("dense", rlal.train.dense, "train_one_epoch"), ("uniform", rlal.train.baselines, "train_one_epoch"),
     ("rlal", rlal.train.joint, "_train_epoch")],
)
@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_the_lock_is_released_after_an_exception_or_interrupt(
    fmnist_dir, tmp_path, monkeypatch, method, module, function, error  # noqa: F811
):
    def fail(*args, **kwargs):
        assert (tmp_path / "run" / LOCK_FILE).exists()  # the run opened (and locked) its directory
        raise error

    monkeypatch.setattr(module, function, fail)
    config = joint_config(fmnist_dir) if method == "rlal" else dense_config(fmnist_dir, f"method={method}")
    with pytest.raises((error, RunInterrupted)):
        fit(config, tmp_path / "run")
    assert (tmp_path / "run" / "config.yaml").exists() and not (tmp_path / "run" / LOCK_FILE).exists()


def test_a_run_header_names_the_host_it_ran_on(tmp_path):
    from rlal.config import RunConfig
    from rlal.machine import cpu_name
    from rlal.rundir import write_run_header

    write_run_header(tmp_path, RunConfig())
    header = json.loads((tmp_path / "run.json").read_text())
    assert header["host"].startswith(f"a {os.cpu_count()}-core {cpu_name()}")
