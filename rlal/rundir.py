"""The run directory: what a run writes, and the guard against overwriting another run's results."""

from __future__ import annotations

import contextlib
import json
import platform
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import rlal
from rlal.checkpoint import POINTER, Checkpoint, load_checkpoint, write_json
from rlal.config import RunConfig, load_config, save_config
from rlal.errors import RlalError, RunInterrupted, TrainingDiverged
from rlal.report.metrics import MetricsWriter

RUN_MARKERS = ("metrics.jsonl", "result.json")
"""Files whose presence means a directory already holds a run."""


def prepare_run_dir(out: Path, *, overwrite: bool = False) -> Path:
    """Create ``out`` for a new run; refuse (unless ``overwrite``) if it already holds one."""
    if out.exists() and not out.is_dir():
        raise RlalError(f"--out {out} exists and is not a directory")
    held = [name for name in RUN_MARKERS if (out / name).exists()]
    if held and not overwrite:
        raise RlalError(
            f"run directory {out} already holds a run ({held[0]}); choose another --out or pass --overwrite"
        )
    for name in held:
        (out / name).unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RlalError(f"cannot create run directory {out}: {exc.strerror}") from None
    return out


def write_run_header(out: Path, config: RunConfig, extra: dict[str, Any] | None = None) -> None:
    """Write the resolved config and the run's provenance before the first step."""
    save_config(config, out / "config.yaml")
    write_json(
        out / "run.json",
        {
            "rlal_version": rlal.__version__,
            "code_version": code_version(),
            "torch_version": torch.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "seed": config.seed,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **(extra or {}),
        },
    )


def code_version() -> str:
    """The git commit of the rlal checkout (with ``-dirty`` when it has changes), else the package version."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=root, capture_output=True, text=True, timeout=5, check=True,
        )
        return out.stdout.strip() or rlal.__version__
    except (OSError, subprocess.SubprocessError):
        return rlal.__version__


def open_run(
    out: Path, config: RunConfig, header: dict[str, Any], *, overwrite: bool = False, resume: bool = False
) -> tuple[Path, MetricsWriter, Checkpoint | None]:
    """Start a new run in ``out`` (header and config written first), or with ``resume`` reopen the run
    there at its last complete checkpoint: ``metrics.jsonl`` is cut back to what that checkpoint had seen.
    Returns the run directory, its metrics writer and the checkpoint (None for a new run)."""
    if not resume:
        run_dir = prepare_run_dir(out, overwrite=overwrite)
        write_run_header(run_dir, config, header)
        return run_dir, MetricsWriter(run_dir / "metrics.jsonl"), None
    checkpoint = resumable_checkpoint(out)
    metrics = MetricsWriter(out / "metrics.jsonl")
    metrics.truncate(checkpoint.state["metrics_lines"])
    return out, metrics, checkpoint


def load_run_config(run_dir: Path) -> RunConfig:
    """The config a run directory was started with (what ``--resume`` continues it with)."""
    _require_run_dir(run_dir)
    return load_config(run_dir / "config.yaml")


def resumable_checkpoint(run_dir: Path) -> Checkpoint:
    """The checkpoint a ``--resume`` continues from; a one-line error when there is none to continue."""
    _require_run_dir(run_dir)
    if (run_dir / "result.json").exists():
        raise RlalError(f"the run in {run_dir} is already complete (result.json): nothing to resume")
    checkpoint = load_checkpoint(run_dir)
    if checkpoint is None:
        raise RlalError(
            f"the run in {run_dir} stopped before its first epoch ended (no checkpoint): "
            f"start it again with --overwrite"
        )
    return checkpoint


def _require_run_dir(run_dir: Path) -> None:
    if not (run_dir / "config.yaml").is_file():
        raise RlalError(f"{run_dir} is not a run directory (no config.yaml): nothing to resume")


@dataclass
class EpochGuard:
    """The epoch under way, for the messages of :func:`guarded_epochs`."""

    run_dir: Path
    epoch: int = 0


@contextlib.contextmanager
def guarded_epochs(run_dir: Path) -> Iterator[EpochGuard]:
    """Run a training loop that checkpoints every epoch so that it ends with a message saying what is kept:

    - SIGINT or SIGTERM abandons the epoch under way (the checkpoint of the last complete one is intact,
      because every checkpoint is written aside and then renamed) and raises :class:`RunInterrupted`
      with the command that resumes the run;
    - a NaN/inf loss raises :class:`TrainingDiverged` naming the last good checkpoint.
    """
    guard = EpochGuard(run_dir)
    previous = None
    if threading.current_thread() is threading.main_thread():  # signals reach only the main thread
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield guard
    except KeyboardInterrupt:
        raise RunInterrupted(
            f"interrupted in epoch {guard.epoch}; {_kept(run_dir)}; "
            f"continue with: rlal train --resume {run_dir}"
        ) from None
    except TrainingDiverged as exc:
        where = str(exc).replace("training diverged", f"training diverged in epoch {guard.epoch}", 1)
        raise TrainingDiverged(f"{where}; {_kept(run_dir)}") from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _kept(run_dir: Path) -> str:
    try:
        epoch = json.loads((run_dir / POINTER).read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return "no epoch had finished, so there is no checkpoint"
    return f"the checkpoint of epoch {epoch} is kept in {run_dir}"
