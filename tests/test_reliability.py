"""Issue 12's catalogue, run side: damaged checkpoints, edited run directories, a full or read-only disk,
a hostile checkpoint and signals at start-up. Each ends in one `error:`/`stopped:` line with its exit
status, never a traceback, and never loses or half-writes what the run had already written.

The other cases of the catalogue sit with the code they test: data (test_data_*), pruned-model specs
(test_structure_io), configs (test_config). docs/reliability.md lists them all.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import SafetensorError
from test_cli import assert_one_line_error, run_cli
from test_train import fmnist_dir  # noqa: F401  (fixture re-used)

import rlal.checkpoint
import rlal.train.dense
from rlal.checkpoint import load_checkpoint
from rlal.models import create_model
from rlal.report.metrics import read_metrics
from rlal.rundir import LOCK_FILE
from rlal.structure import ArchSpec, Plan, cut, save_pruned
from rlal.structure.layers import find_layers

pytestmark = pytest.mark.usefixtures("one_thread")

ENOSPC_SAFETENSORS = "Error while serializing: I/O error: No space left on device (os error 28)"
"""What safetensors 0.8 raises on a full disk (seen on a 2.5 MB tmpfs)."""


def dense_settings(data_dir: Path, *extra: str) -> list[str]:
    """A dense ResNet-20 run of 2 epochs on 128 images: about a second an epoch."""
    return [
        "method=dense", "model.name=resnet20", "data.dataset=fashion-mnist", f"data.data_dir={data_dir}",
        "data.reward_size=100", "data.batch_size=64", "data.download=false", "data.train_subset=128",
        "data.test_subset=50", "data.augment=false", "data.eval_batch_size=100", "train.epochs=2",
        "train.device=cpu", "train.progress=false", "optim.lr=0.05", *extra,
    ]


def train_args(data_dir: Path, out: Path, *extra: str) -> list[str]:
    args = ["train", "--out", str(out)]
    for setting in dense_settings(data_dir, *extra):
        args += ["--set", setting]
    return args


def stop_after_first_epoch(monkeypatch) -> None:
    """Make the dense loop stop (as Ctrl-C would) right after the checkpoint of epoch 1."""
    real = rlal.train.dense.save_checkpoint

    def save_then_stop(run_dir, epoch, *args, **kwargs):
        real(run_dir, epoch, *args, **kwargs)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(rlal.train.dense, "save_checkpoint", save_then_stop)


def stopped_run(data_dir: Path, out: Path, capsys, *extra: str) -> Path:
    """A run stopped after the checkpoint of epoch 1 of 2: what `--resume` continues."""
    with pytest.MonkeyPatch.context() as patch:
        stop_after_first_epoch(patch)
        code, _, err = run_cli(capsys, *train_args(data_dir, out, *extra))
    assert code == 130 and "checkpoint of epoch 1 is kept" in err, err
    return out


@pytest.fixture
def stopped(fmnist_dir, tmp_path, capsys) -> Path:  # noqa: F811
    return stopped_run(fmnist_dir, tmp_path / "run", capsys)


def no_data_read(monkeypatch) -> None:
    """Fail the test if the run reads its data: a refusal must come before minutes of data loading."""
    def read(*args, **kwargs):
        raise AssertionError("the data was read before the refusal")

    monkeypatch.setattr(rlal.train.dense, "build_data", read)


def snapshot(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def edit_config(run_dir: Path, section: str, key: str, value) -> None:
    path = run_dir / "config.yaml"
    config = yaml.safe_load(path.read_text())
    config[section][key] = value
    path.write_text(yaml.safe_dump(config, sort_keys=False))


# --- resume after the run directory was damaged or edited ---------------------------------------------


def test_resume_from_truncated_checkpoint_weights_is_a_one_line_error(stopped, capsys):
    weights = stopped / "checkpoint-0001" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    before = snapshot(stopped)
    code, _, err = run_cli(capsys, "train", "--resume", str(stopped))
    assert_one_line_error(code, err, str(weights), "damaged")
    assert snapshot(stopped) == before  # nothing written, the lock released


def test_resume_after_config_yaml_edited_to_another_model_is_refused_naming_the_key(
    stopped, capsys, monkeypatch
):
    edit_config(stopped, "model", "name", "resnet32")
    no_data_read(monkeypatch)
    code, _, err = run_cli(capsys, "train", "--resume", str(stopped))
    assert_one_line_error(code, err, "model.name: 'resnet20' -> 'resnet32'", str(stopped))
    assert not (stopped / LOCK_FILE).exists()


def test_resume_after_train_epochs_edited_is_refused_naming_the_key(stopped, capsys, monkeypatch):
    edit_config(stopped, "train", "epochs", 5)
    no_data_read(monkeypatch)
    code, _, err = run_cli(capsys, "train", "--resume", str(stopped))
    assert_one_line_error(code, err, "train.epochs: 2 -> 5")


def test_resume_accepts_a_data_dir_moved_since_the_run_started(stopped, fmnist_dir, tmp_path, capsys):  # noqa: F811
    moved = shutil.copytree(fmnist_dir, tmp_path / "moved")
    edit_config(stopped, "data", "data_dir", str(moved))
    code, _, err = run_cli(capsys, "train", "--resume", str(stopped))
    assert code == 0, err
    assert json.loads((stopped / "result.json").read_text())["epochs"] == 2


@pytest.mark.parametrize("damage", ["deleted", "emptied"])
def test_resume_with_metrics_jsonl_lost_is_refused_and_writes_nothing(stopped, capsys, monkeypatch, damage):
    metrics = stopped / "metrics.jsonl"
    if damage == "deleted":
        metrics.unlink()
    else:
        metrics.write_text("")
    before = snapshot(stopped)
    no_data_read(monkeypatch)
    code, _, err = run_cli(capsys, "train", "--resume", str(stopped))
    assert_one_line_error(code, err, str(metrics), "checkpoint of epoch 1")
    assert snapshot(stopped) == before


def test_resume_refuses_a_checkpoint_copied_from_another_run(fmnist_dir, tmp_path, capsys, monkeypatch):  # noqa: F811
    mine = stopped_run(fmnist_dir, tmp_path / "mine", capsys)
    other = stopped_run(fmnist_dir, tmp_path / "other", capsys, "seed=1")
    shutil.rmtree(mine / "checkpoint-0001")
    shutil.copytree(other / "checkpoint-0001", mine / "checkpoint-0001")
    shutil.copy(other / "checkpoint.json", mine / "checkpoint.json")
    no_data_read(monkeypatch)
    code, _, err = run_cli(capsys, "train", "--resume", str(mine))
    assert_one_line_error(code, err, "belongs to another run")


def test_a_malicious_state_pt_is_refused_in_one_line_and_never_suggests_weights_only_false(
    stopped, tmp_path, capsys
):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    torch.save({"optimizer": Payload()}, stopped / "checkpoint-0001" / "state.pt")
    code, _, err = run_cli(capsys, "train", "--resume", str(stopped))
    assert_one_line_error(code, err, "state.pt", "refused")
    assert "weights_only" not in err
    assert not marker.exists()


# --- a full or read-only disk ---------------------------------------------------------------------------


@pytest.mark.parametrize("writer", ["model.safetensors", "state.pt", "checkpoint.json"])
def test_a_full_disk_while_writing_a_checkpoint_keeps_the_previous_one_and_leaves_no_temporary_files(
    fmnist_dir, tmp_path, capsys, monkeypatch, writer  # noqa: F811
):
    """ENOSPC in the middle of each of the checkpoint's three writes (as each writer reports it)."""
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        if writer == "model.safetensors":  # safetensors: its own error type, after a partial file
            real_save_file = rlal.checkpoint.save_file

            def save_file(tensors, filename, metadata=None):
                if ".checkpoint-0002.tmp" not in filename:
                    return real_save_file(tensors, filename, metadata=metadata)
                Path(filename).write_bytes(b"\0" * 64)
                raise SafetensorError(ENOSPC_SAFETENSORS)

            patch.setattr(rlal.checkpoint, "save_file", save_file)
        elif writer == "state.pt":  # torch: "unexpected pos", no reason given; the disk is (nearly) full
            real_save = torch.save

            def save(obj, f, *args, **kwargs):
                if ".checkpoint-0002.tmp" not in str(f):
                    return real_save(obj, f, *args, **kwargs)
                Path(f).write_bytes(b"PK\3\4")
                raise RuntimeError("[enforce fail at inline_container.cc:778] . unexpected pos 1152 vs 1046")

            patch.setattr(torch, "save", save)
            patch.setattr(rlal.checkpoint.shutil, "disk_usage",
                          lambda path: shutil._ntuple_diskusage(10 << 30, 10 << 30, 0))
        else:  # the pointer: a plain write that fails with ENOSPC
            real_write_text = Path.write_text

            def write_text(self, text, *args, **kwargs):
                if self.name.startswith(".checkpoint.json.") and '"epoch": 2' in text:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
                return real_write_text(self, text, *args, **kwargs)

            patch.setattr(Path, "write_text", write_text)
        code, _, err = run_cli(capsys, *train_args(fmnist_dir, out))

    assert_one_line_error(code, err, "checkpoint of epoch 2", "No space left on device",
                          "checkpoint of epoch 1 is kept", f"rlal train --resume {out}")
    assert not [p.name for p in out.rglob("*.tmp")]  # .checkpoint-0002.tmp and every atomic write's file
    assert load_checkpoint(out).epoch == 1 and not (out / "result.json").exists()
    assert not (out / LOCK_FILE).exists()
    # Space freed: the run continues from the intact checkpoint and ends as if nothing had happened.
    code, _, err = run_cli(capsys, "train", "--resume", str(out))
    assert code == 0, err
    assert [r["epoch"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2]


def read_only(monkeypatch, root: Path) -> None:
    """Make everything under ``root`` read-only as a read-only mount is (EROFS), whoever runs the test
    (chmod does not stop root): the calls that create, open for writing, rename or remove files."""
    root = root.resolve()

    def inside(path) -> bool:
        try:
            return Path(os.fsdecode(path)).resolve().is_relative_to(root)
        except (TypeError, ValueError):
            return False

    def refuse(path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))

    real_open, real_mkdir, real_replace, real_unlink = os.open, os.mkdir, os.replace, os.unlink
    real_io_open = io.open

    def os_open(path, flags, *args, **kwargs):
        writes = flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND)
        return refuse(path) if writes and inside(path) else real_open(path, flags, *args, **kwargs)

    def io_open(file, mode="r", *args, **kwargs):
        writes = isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+")
        return refuse(file) if writes and inside(file) else real_io_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(os, "mkdir", lambda p, *a, **k: refuse(p) if inside(p) else real_mkdir(p, *a, **k))
    monkeypatch.setattr(os, "replace", lambda a, b, **k: refuse(b) if inside(b) else real_replace(a, b, **k))
    monkeypatch.setattr(os, "unlink", lambda p, **k: refuse(p) if inside(p) else real_unlink(p, **k))
    monkeypatch.setattr(io, "open", io_open)


@pytest.mark.parametrize("out_exists", [False, True])
def test_a_new_run_on_a_read_only_file_system_is_a_one_line_error(
    fmnist_dir, tmp_path, capsys, monkeypatch, out_exists  # noqa: F811
):
    mount = tmp_path / "mount"
    out = mount / "run"
    out.mkdir(parents=True) if out_exists else mount.mkdir()
    read_only(monkeypatch, mount)
    code, _, err = run_cli(capsys, *train_args(fmnist_dir, out))
    assert_one_line_error(code, err, str(out), "Read-only file system")


def test_resume_on_a_read_only_file_system_is_a_one_line_error_and_keeps_the_checkpoint(
    stopped, capsys, monkeypatch
):
    before = snapshot(stopped)
    read_only(monkeypatch, stopped)
    code, _, err = run_cli(capsys, "train", "--resume", str(stopped))
    assert_one_line_error(code, err, str(stopped), "Read-only file system")
    monkeypatch.undo()
    assert snapshot(stopped) == before


# --- file modes -----------------------------------------------------------------------------------------


def test_weights_files_are_written_with_mode_0644(fmnist_dir, tmp_path, capsys):  # noqa: F811
    previous = os.umask(0o022)
    try:
        code, _, err = run_cli(capsys, *train_args(fmnist_dir, tmp_path / "run", "train.epochs=1"))
        structure = find_layers(create_model("resnet20"), (3, 32, 32))
        plan = Plan.from_keep_ratios(structure, 0.5)
        pruned = save_pruned(tmp_path / "pruned", cut(structure, plan), arch=ArchSpec.zoo("resnet20"),
                             plan=plan, input_shape=(3, 32, 32))
    finally:
        os.umask(previous)
    assert code == 0, err
    run = tmp_path / "run"
    for path in (run / "model.safetensors", run / "checkpoint-0001" / "model.safetensors",
                 run / "checkpoint-0001" / "state.pt", run / "result.json", pruned / "weights.safetensors"):
        assert oct(path.stat().st_mode & 0o777) == oct(0o644), path


# --- signals and warnings -------------------------------------------------------------------------------


def test_sigterm_during_start_up_stops_with_a_message_and_writes_nothing(fmnist_dir, tmp_path):  # noqa: F811
    """SIGTERM while the data is being read (before the run directory exists): one `stopped:` line."""
    out = tmp_path / "run"
    script = textwrap.dedent("""
        import sys, time
        import rlal.train.dense
        from rlal.cli import main

        def slow_data(*args, **kwargs):
            print("reading data", flush=True)
            time.sleep(120)

        rlal.train.dense.build_data = slow_data
        sys.exit(main(sys.argv[1:]))
    """)
    process = subprocess.Popen([sys.executable, "-c", script, *train_args(fmnist_dir, out)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "reading data", process.stderr.read()
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert err.strip().count("\n") == 0 and err.startswith("stopped: ") and "SIGTERM" in err, err
    assert not out.exists()



# --- budget settings that leave nothing to prune -------------------------------------------------------


@pytest.mark.parametrize("setting", [{"round_to": 64}, {"min_keep_ratio": 1.0}])
def test_an_infeasible_round_to_or_min_keep_ratio_names_that_key_and_no_empty_range(setting):
    from test_structure_nets import zoo_structure

    from rlal.env import Budget
    from rlal.errors import RlalError

    key = next(iter(setting))
    with pytest.raises(RlalError) as info:
        Budget(zoo_structure("resnet20"), 0.5, **setting)
    message = str(info.value)
    assert f"env.{key}" in message and "[1.0000, 1)" not in message
