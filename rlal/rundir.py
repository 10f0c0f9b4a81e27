"""The run directory: what a run writes, the guard against overwriting another run's results, and the lock
that keeps two processes out of one run directory.

**Lock.** While a run (train, resume, demo, baseline) uses a directory it holds ``run.lock`` there: a JSON
file with the holder's pid, host name and start time, created with ``O_CREAT | O_EXCL`` so that exactly one
process can create it. Another process opening the directory is refused with a one-line
:class:`~rlal.errors.RunDirLocked` naming the holder. A lock whose holder is gone (same host, pid no longer
alive: a ``kill -9`` or a power cut) is taken over; one held from another host is never judged stale, since
its pid cannot be checked from here. The lock is taken where the directory is opened
(:func:`prepare_run_dir`, :func:`open_run`) and released when the enclosing :func:`run_lock` block ends,
normally or by an exception or Ctrl-C; a lock taken outside any such block is released when the process
exits. A process never blocks itself: opening a directory it already holds is allowed.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import rlal
from rlal.checkpoint import (
    POINTER,
    RUN_HEADER,
    Checkpoint,
    load_checkpoint,
    read_pointer,
    write_json,
    write_text,
)
from rlal.config import RunConfig, dump_config, load_config
from rlal.errors import RlalError, RunDirLocked, RunInterrupted, TrainingDiverged
from rlal.machine import host
from rlal.report.markdown import PLOTS_DIR, REPORT_FILE
from rlal.report.metrics import MetricsWriter, read_metrics
from rlal.report.widths import WIDTHS_FILE

RUN_MARKERS = ("metrics.jsonl", "result.json")
"""Files whose presence means a directory already holds a run."""

LOCK_FILE = "run.lock"

LATENCY_FILE = "latency.json"
"""A run's latency table (runs with a latency budget; see :mod:`rlal.structure.latency`)."""
RUN_FILES = (
    "config.yaml", "run.json", "metrics.jsonl", POINTER, "episodes.json", WIDTHS_FILE, REPORT_FILE,
    "model.safetensors", "model.json", "result.json", LATENCY_FILE,
)
"""The files a run writes at the top of its directory (see the README's table)."""
RUN_DIRS = ("pruned", PLOTS_DIR)
"""The folders a run writes (besides its checkpoints)."""
RUN_PATTERNS = ("checkpoint-[0-9]*", ".checkpoint-*.tmp", *(f".{name}.*.tmp" for name in RUN_FILES))
"""Checkpoints, and what an interrupted atomic write can leave behind."""


def check_run_dir(out: Path, *, overwrite: bool = False) -> None:
    """Refuse early (before data is read) to start a run in ``out``: when it is not a directory, holds a run
    and ``overwrite`` is not given, or is locked by another live process. Writes nothing."""
    if out.exists() and not out.is_dir():
        raise RlalError(f"--out {out} exists and is not a directory")
    _refuse_a_held_run(out, overwrite)
    holder = _holder(out / LOCK_FILE)
    if holder is not None and not _is_mine(holder) and not _is_stale(holder):
        raise RunDirLocked(_locked_message(out, holder))


def prepare_run_dir(out: Path, *, overwrite: bool = False) -> Path:
    """Create ``out`` for a new run and lock it (see the module docstring); refuse (unless ``overwrite``)
    if it already holds a run.

    ``overwrite`` first removes everything the run layout owns (:data:`RUN_FILES`, :data:`RUN_DIRS` and
    :data:`RUN_PATTERNS`: results, report, pruned model, checkpoints), so that nothing of the old run can
    be mistaken for the new one's, e.g. resumed from. Other files a user put in the directory are kept."""
    if out.exists() and not out.is_dir():
        raise RlalError(f"--out {out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RlalError(f"cannot create run directory {out}: {exc.strerror}") from None
    taken = lock_run_dir(out)
    try:
        _refuse_a_held_run(out, overwrite)  # under the lock: no other run can be writing here now
        if overwrite:
            clear_run_dir(out)
    except BaseException:
        if taken:  # refused: do not keep a lock on a directory this process will not use
            release_run_lock(out)
        raise
    return out


def _refuse_a_held_run(out: Path, overwrite: bool) -> None:
    held = [name for name in RUN_MARKERS if (out / name).exists()]
    if held and not overwrite:
        raise RlalError(
            f"run directory {out} already holds a run ({held[0]}); choose another --out or pass --overwrite"
        )


def clear_run_dir(out: Path) -> None:
    """Remove what a run's layout owns from ``out`` (see :func:`prepare_run_dir`), keeping the lock and any
    other file. The old run's result and checkpoint pointer go first, so an interrupted clean-up never
    leaves something that looks like a finished or resumable run."""
    paths = [out / name for name in ("result.json", POINTER, *RUN_FILES, *RUN_DIRS)]
    paths += [path for pattern in RUN_PATTERNS for path in sorted(out.glob(pattern))]
    for path in dict.fromkeys(paths):  # ordered, without duplicates
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        except OSError as exc:
            raise RlalError(f"--overwrite cannot remove {path}: {exc.strerror}") from None


def write_run_header(out: Path, config: RunConfig, extra: dict[str, Any] | None = None) -> None:
    """Write the resolved config and the run's provenance before the first step. ``run.json`` also keeps
    the config the run starts with, and its digest (which every checkpoint pointer repeats), so that a
    resume can tell an edited ``config.yaml`` or another run's checkpoint (see :func:`check_resumable`)."""
    write_text(out / "config.yaml", dump_config(config))
    write_json(
        out / RUN_HEADER,
        {
            "rlal_version": rlal.__version__,
            "code_version": code_version(),
            "torch_version": torch.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "host": host(),  # a table rebuilt elsewhere names the machine the run ran on
            "seed": config.seed,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **(extra or {}),
            "config_sha256": config_digest(config),
            "config": _plain(config),
        },
    )


def config_digest(config: RunConfig) -> str:
    """A digest of the resolved config (key order and YAML formatting do not matter)."""
    return hashlib.sha256(json.dumps(_plain(config), sort_keys=True).encode()).hexdigest()


def _plain(config: RunConfig) -> dict[str, Any]:
    return json.loads(json.dumps(config.to_dict()))  # what a JSON round trip gives (tuples -> lists)


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
    Either way the directory is locked first (see the module docstring). Returns the run directory, its
    metrics writer and the checkpoint (None for a new run)."""
    if not resume:
        run_dir = prepare_run_dir(out, overwrite=overwrite)
        write_run_header(run_dir, config, header)
        return run_dir, MetricsWriter(run_dir / "metrics.jsonl"), None
    _require_run_dir(out)
    check_same_config(out, config, "the config given")
    taken = lock_run_dir(out)
    try:
        checkpoint = resumable_checkpoint(out)
        metrics_lines = checkpoint.state["metrics_lines"]
        _check_metrics(out, checkpoint.epoch, metrics_lines)
        metrics = MetricsWriter(out / "metrics.jsonl")
        metrics.truncate(metrics_lines)
    except BaseException:
        if taken:
            release_run_lock(out)
        raise
    return out, metrics, checkpoint


def load_run_config(run_dir: Path) -> RunConfig:
    """The config a run directory was started with (what ``--resume`` continues it with). A
    ``config.yaml`` edited since the run started is refused, naming the changed keys (see
    :func:`check_same_config`)."""
    _require_run_dir(run_dir)
    config = load_config(run_dir / "config.yaml")
    check_same_config(run_dir, config, "its config.yaml")
    return config


RELOCATABLE = frozenset({
    "data.data_dir", "data.cache_dir", "data.workers", "train.device", "train.progress", "train.threads",
    "train.dist_timeout",
})
"""Keys a resumed run may change: where the files are and where it runs, not what it computes."""


def check_same_config(run_dir: Path, config: RunConfig, what: str) -> None:
    """Refuse to continue the run in ``run_dir`` with a ``config`` other than the one it started with
    (kept in ``run.json``), naming the keys that differ; only :data:`RELOCATABLE` keys may change. A run
    started before ``run.json`` kept its config is not checked."""
    try:
        started = json.loads((run_dir / RUN_HEADER).read_text()).get("config")
    except (OSError, ValueError, AttributeError):
        started = None
    if not isinstance(started, dict):
        return
    changed = [
        f"{key}: {old!r} -> {new!r}" for key, old, new in _differences(started, _plain(config))
        if key not in RELOCATABLE
    ]
    if changed:
        listed = "; ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        raise RlalError(
            f"{what} differs from the config the run in {run_dir} started with ({listed}): "
            f"a run continues only with its own config; undo the change, or start a new run with it "
            f"(another --out, or --overwrite)"
        )


def config_differences(a: RunConfig, b: RunConfig) -> list[str]:
    """The dotted keys whose values differ between two configs."""
    return [key for key, _, _ in _differences(_plain(a), _plain(b))]


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted key, old value, new value)`` for every key both dicts have with different values. A key
    only one has is skipped: a setting added to (or dropped from) rlal since the run started."""
    out = []
    for key in old.keys() & new.keys():
        a, b = old[key], new[key]
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append((f"{prefix}{key}", a, b))
    return sorted(out)


def check_resumable(run_dir: Path) -> None:
    """Everything a ``--resume`` of ``run_dir`` needs that can be checked without reading the checkpoint
    or any data: a config unchanged since the start, no result yet, a checkpoint of this run, and every
    metrics record that checkpoint has seen. One :class:`RlalError` line otherwise; writes nothing."""
    load_run_config(run_dir)
    info = _pointer_of_unfinished_run(run_dir)
    try:
        header = json.loads((run_dir / RUN_HEADER).read_text())
    except (OSError, ValueError):
        header = {}
    started = header.get("config_sha256") if isinstance(header, dict) else None
    taken = info.get("config_sha256")
    if started and taken and started != taken:
        raise RlalError(
            f"the checkpoint in {run_dir} ({info['directory']}) belongs to another run: its config digest "
            f"differs from the one in {run_dir / RUN_HEADER}; start this run again with --overwrite"
        )
    if isinstance(info.get("metrics_lines"), int):
        _check_metrics(run_dir, info["epoch"], info["metrics_lines"])


def resumable_checkpoint(run_dir: Path) -> Checkpoint:
    """The checkpoint a ``--resume`` continues from; a one-line error when there is none to continue."""
    check_resumable(run_dir)
    checkpoint = load_checkpoint(run_dir)
    assert checkpoint is not None  # check_resumable found its pointer
    return checkpoint


def _pointer_of_unfinished_run(run_dir: Path) -> dict[str, Any]:
    if (run_dir / "result.json").exists():
        raise RlalError(f"the run in {run_dir} is already complete (result.json): nothing to resume")
    info = read_pointer(run_dir)
    if info is None:
        raise RlalError(
            f"the run in {run_dir} stopped before its first epoch ended (no checkpoint): "
            f"start it again with --overwrite"
        )
    return info


def _check_metrics(run_dir: Path, epoch: int, lines: int) -> None:
    """Refuse to resume when ``metrics.jsonl`` lost records the checkpoint had seen: the resumed run
    would write a log missing its first epochs, and the report would draw from it as if it were whole."""
    path = run_dir / "metrics.jsonl"
    if not path.exists() and lines > 0:
        raise RlalError(
            f"{path} is missing, but the checkpoint of epoch {epoch} was taken after {lines} records: the "
            f"resumed run would lose them; restore the file, or start the run again with --overwrite"
        )
    found = len(read_metrics(path))
    if found < lines:
        raise RlalError(
            f"{path} holds {found} records, but the checkpoint of epoch {epoch} was taken after {lines}: the "
            f"resumed run would lose the others; restore the file, or start the run again with --overwrite"
        )


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


# --- the run directory's lock (see the module docstring) -----------------------------------------------

TAKEOVER_TRIES = 50
"""Attempts (10 ms apart) to take a lock while another process is taking over the same stale one."""

_registry = threading.Lock()
_held: dict[Path, str] = {}
"""Run directories (resolved) this process holds the lock of, with the lock file's exact content."""
_scopes: dict[Path, int] = {}
"""Open :func:`run_lock` blocks per run directory (resolved)."""


@contextlib.contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """The lifetime of a run in ``out``: the lock the run takes when it opens the directory is released
    when the outermost such block for ``out`` ends, however it ends. Creates nothing by itself, so a run
    that fails before opening its directory (a missing dataset, say) leaves no trace."""
    key = Path(out).resolve()
    with _registry:
        _scopes[key] = _scopes.get(key, 0) + 1
    try:
        yield
    finally:
        with _registry:
            _scopes[key] -= 1
            last = _scopes[key] == 0
            if last:
                del _scopes[key]
        if last:
            release_run_lock(out)


def lock_run_dir(out: Path) -> bool:
    """Take the lock of the existing directory ``out`` for this process: True if taken now, False if this
    process held it already. :class:`RunDirLocked` naming the holder if another live process holds it."""
    key = out.resolve()
    path = out / LOCK_FILE
    content = json.dumps({
        "pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }) + "\n"  # fmt: skip
    # Held throughout: a lock file with this pid that is not in _held then surely belongs to a dead
    # earlier process that had the same pid, never to another thread of this one.
    with _registry:
        if key in _held:
            return False
        for _ in range(TAKEOVER_TRIES):
            try:
                # O_EXCL: checking that no lock exists and creating it are one atomic step: one process wins.
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = _holder(path)
                if holder is None or not (_is_mine(holder) or _is_stale(holder)):
                    raise RunDirLocked(_locked_message(out, holder)) from None
                _remove_stale(path, holder)
                time.sleep(0.01)
                continue
            except OSError as exc:
                raise RlalError(f"cannot create the lock {path}: {exc.strerror}") from None
            with os.fdopen(fd, "w") as f:
                f.write(content)
            _held[key] = content
            return True
    guard = path.with_name(path.name + ".takeover")
    raise RunDirLocked(f"run directory {out}: cannot take over the stale {path}; if no rlal run is using the "
                       f"directory, remove it and {guard.name}")


def release_run_lock(out: Path) -> None:
    """Release this process's lock on ``out``, if it holds one. The file is removed only while it still
    holds this process's content, so a lock another process took over is left alone."""
    with _registry:
        content = _held.pop(Path(out).resolve(), None)
    if content is None:
        return
    path = Path(out) / LOCK_FILE
    with contextlib.suppress(OSError):
        if path.read_text() == content:
            path.unlink()


@atexit.register
def _release_all() -> None:
    # A run opened outside a run_lock block (a direct call of a training function) keeps its lock until
    # the process ends; release it then, so it never looks held by a pid that may be reused.
    with _registry:
        held = list(_held)
    for key in held:
        release_run_lock(key)


def _holder(path: Path) -> dict[str, Any] | None:
    """The lock file's content, or None when it cannot be read (missing, being written, corrupt)."""
    try:
        holder = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(holder, dict) or not isinstance(holder.get("pid"), int):
        return None
    return holder


def _is_mine(holder: dict[str, Any]) -> bool:
    return holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname()


def _is_stale(holder: dict[str, Any]) -> bool:
    """Whether the holder is a process of this host that no longer runs (another host's: never)."""
    if holder.get("host") != socket.gethostname() or holder["pid"] <= 0:
        return False
    try:
        os.kill(holder["pid"], 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # it exists, under another user
    return False


def _remove_stale(path: Path, holder: dict[str, Any]) -> None:
    """Remove the stale lock at ``path`` unless it changed since it was judged stale. Two processes may find
    the same stale lock: a takeover file created with O_EXCL lets only one of them remove it, so neither
    can remove the fresh lock the other has just created."""
    guard = path.with_name(path.name + ".takeover")
    try:
        os.close(os.open(guard, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:
        return  # another process is taking over: the next attempt sees its lock
    try:
        if _holder(path) == holder:
            path.unlink(missing_ok=True)
    finally:
        guard.unlink(missing_ok=True)


def _locked_message(out: Path, holder: dict[str, Any] | None) -> str:
    lock = out / LOCK_FILE
    if holder is None:
        return f"run directory {out} is locked ({lock} is unreadable); remove it if no rlal run uses {out}"
    who = f"pid {holder['pid']} on {holder.get('host', '?')}, since {holder.get('started', '?')}"
    if holder.get("host") != socket.gethostname():
        return f"run directory {out} is in use by another rlal process ({who}); remove {lock} if it has ended"
    return f"run directory {out} is in use by another rlal process ({who}); wait for it to end"
