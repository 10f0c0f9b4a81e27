"""Atomic writes for everything a run leaves on disk, so a crash never leaves a half-written file, and the
per-epoch checkpoint a run resumes from.

A checkpoint is a directory ``checkpoint-NNNN/`` (``model.safetensors`` + ``state.pt``) written complete
under a temporary name, fsynced and renamed; only then does the pointer file ``checkpoint.json`` (itself
written atomically) move to it. A crash at any moment therefore leaves the previous checkpoint intact, and
so does a write that fails (a full disk): the half-written temporary directory is removed and the failure
is one :class:`~rlal.errors.RlalError` line saying which checkpoint is kept.

A checkpoint is untrusted input when it is read back: the weights are safetensors, and ``state.pt`` is
loaded with ``torch.load(weights_only=True)``, which refuses any pickled object other than tensors and
plain containers; a file that holds one is reported in one line and never loaded another way.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import random
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from rlal.errors import RlalError, WriteFailed

LOW_SPACE = 1 << 20
"""Free bytes below which a failed write is put down to a full disk (torch does not say why it failed)."""


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file next to ``path``, fsync it, then rename it into place.

    A failure (a full disk, a read-only file system) removes the temporary file, leaves ``path`` as it was
    and raises :class:`~rlal.errors.WriteFailed` naming ``path`` and the cause, in one line."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        reason = write_failure(exc, path.parent)
        raise WriteFailed(f"cannot write {path}: {reason}", reason) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        # After the write: safetensors replaces the file with a private (0600) one. Results are meant to be
        # shared, so they get the mode a plain open() would give (0644 under the usual umask).
        os.chmod(tmp, 0o666 & ~_umask())
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)
    except (OSError, SafetensorError, RuntimeError) as exc:  # torch.save reports I/O errors as RuntimeError
        reason = write_failure(exc, tmp)
        raise WriteFailed(f"cannot write {path}: {reason}", reason) from None
    finally:
        tmp.unlink(missing_ok=True)


def write_failure(exc: BaseException, where: Path) -> str:
    """Why writing near ``where`` failed, in a few words: the OS's reason when there is one (``No space
    left on device``, ``Read-only file system``), else a full disk when little space is left (torch only
    says "unexpected pos"), else the first line of the error."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc)
    if "os error 28" in text or "No space left" in text:
        return os.strerror(errno.ENOSPC)
    try:
        free = shutil.disk_usage(where if where.exists() else where.parent).free
    except OSError:
        free = None
    if free is not None and free < LOW_SPACE:
        return f"{os.strerror(errno.ENOSPC)} ({free:,} bytes free)"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first[:200]


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it, so set it straight back
    os.umask(mask)
    return mask


def _fsync(path: Path) -> None:
    """Flush a file's (or a directory's entries') data to disk, so a rename never exposes an empty file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_weights(model: nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    """Save a module's state dict as safetensors (no pickle: a weights file is untrusted input)."""
    # clone(): safetensors refuses tensors sharing storage (tied weights); loading fills both names again.
    state = {k: v.detach().to("cpu").clone().contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=metadata))


def load_weights(model: nn.Module, path: Path) -> nn.Module:
    """Load safetensors weights saved by :func:`save_weights` into ``model`` (strict)."""
    model.load_state_dict(read_safetensors(path), strict=True)
    return model


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a missing, truncated or corrupt file is one :class:`RlalError`
    line naming it (safetensors' own errors are not ``OSError`` and would otherwise end in a traceback)."""
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise RlalError(f"{path}: no such file") from None
    except OSError as exc:
        raise RlalError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (SafetensorError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RlalError(f"{path} is damaged: not a complete safetensors file ({first})") from None


def state_equal(a: nn.Module, b: nn.Module) -> bool:
    """True when two modules hold bit-identical state dicts (used by determinism checks)."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- the per-epoch checkpoint -------------------------------------------------------------------------

POINTER = "checkpoint.json"


@dataclass(frozen=True)
class Checkpoint:
    """A complete checkpoint: the state at the end of ``epoch``."""

    epoch: int
    weights: dict[str, torch.Tensor]
    """The model's state dict (the dense model, or the cut model once the run has cut it)."""
    state: dict[str, Any]
    """Everything else the run needs to continue exactly: optimiser, schedule, agent, RNG, ..."""


RUN_HEADER = "run.json"
"""Written by :func:`rlal.rundir.write_run_header`; its ``config_sha256`` is copied into each pointer."""


def save_checkpoint(run_dir: Path, epoch: int, model: nn.Module, state: dict[str, Any]) -> None:
    """Checkpoint the end of ``epoch`` (see the module docstring); older checkpoints are then removed.

    ``state`` may hold tensors, numbers, strings, None and lists/tuples/dicts of them: it is loaded back
    with ``torch.load(weights_only=True)``, which executes nothing from the file. The pointer also records
    ``state["metrics_lines"]`` and the run's config digest (from ``run.json``), so that a resume can check,
    without loading the checkpoint, that the metrics it continues and the config it continues with are
    the ones the checkpoint was taken with.

    A write that fails (full disk, read-only file system) removes the half-written checkpoint and raises
    :class:`~rlal.errors.WriteFailed` saying which earlier checkpoint is kept.
    """
    name = f"checkpoint-{epoch:04d}"
    final = run_dir / name
    tmp = run_dir / f".{name}.tmp"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_weights(model, tmp / "model.safetensors")
        atomic_write(tmp / "state.pt", lambda path: torch.save(state, path))
        shutil.rmtree(final, ignore_errors=True)  # a complete but unreferenced one left by an earlier crash
        os.replace(tmp, final)
        _fsync(run_dir)
        pointer = {"epoch": epoch, "directory": name, "metrics_lines": state.get("metrics_lines"),
                   "config_sha256": _config_digest(run_dir)}
        write_json(run_dir / POINTER, pointer)
    except (OSError, WriteFailed) as exc:
        shutil.rmtree(tmp, ignore_errors=True)  # the pointer still names the previous, intact checkpoint
        why = exc.reason if isinstance(exc, WriteFailed) else write_failure(exc, run_dir)
        raise WriteFailed(
            f"cannot write the checkpoint of epoch {epoch} in {run_dir} ({why}); {_previous(run_dir)}", why
        ) from None
    for stale in run_dir.glob("checkpoint-*"):
        if stale.name != name and stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    for stale in run_dir.glob(".checkpoint-*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)


def _config_digest(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / RUN_HEADER).read_text()).get("config_sha256")
    except (OSError, ValueError, AttributeError):
        return None  # a run started by an older rlal, or a bare directory (a unit test)


def _previous(run_dir: Path) -> str:
    """What a failed checkpoint write leaves to resume from."""
    try:
        info = read_pointer(run_dir)
    except RlalError:
        info = None
    if info is None:
        return "there is no earlier checkpoint: start the run again once the directory can be written"
    return (f"the checkpoint of epoch {info['epoch']} is kept; once the directory can be written again, "
            f"continue with: rlal train --resume {run_dir}")


def read_pointer(run_dir: Path) -> dict[str, Any] | None:
    """The content of ``checkpoint.json`` (``epoch``, ``directory`` and, from this version on,
    ``metrics_lines`` and ``config_sha256``), or None when the run has no checkpoint yet."""
    pointer = run_dir / POINTER
    if not pointer.exists():
        return None
    try:
        info = json.loads(pointer.read_text())
        info["epoch"] = int(info["epoch"])
        name = info["directory"]
        if not isinstance(name, str) or Path(name).name != name or not name.startswith("checkpoint-"):
            raise ValueError(f"bad directory {name!r}")  # never a path out of the run directory
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RlalError(f"{pointer} is corrupt ({exc}); the run cannot be resumed") from None
    return info


def load_checkpoint(run_dir: Path) -> Checkpoint | None:
    """The checkpoint ``checkpoint.json`` points to, or None when the run has none yet. A missing, damaged
    or unsafe file is one :class:`RlalError` line naming it."""
    info = read_pointer(run_dir)
    if info is None:
        return None
    directory = run_dir / info["directory"]
    if not directory.is_dir():
        raise RlalError(f"checkpoint {directory} (named in {run_dir / POINTER}) is missing")
    weights = read_safetensors(directory / "model.safetensors")
    state_path = directory / "state.pt"
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise RlalError(f"{state_path}: no such file") from None
    except pickle.UnpicklingError:
        # torch's message suggests weights_only=False, i.e. running the file's code: never pass that on.
        raise RlalError(
            f"{state_path} holds objects other than tensors and plain values, which could run code when "
            f"loaded: refused (it was not written by rlal, or was altered)"
        ) from None
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RlalError(f"{state_path} is damaged: {first}") from None
    if not isinstance(state, dict):
        raise RlalError(f"{state_path} does not hold a checkpoint state (a {type(state).__name__})")
    return Checkpoint(epoch=info["epoch"], weights=weights, state=state)


def rng_state() -> dict[str, Any]:
    """The global generators' states (python, numpy, torch CPU and CUDA), as checkpointable values."""
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    random.setstate(_tuples(state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(value: Any) -> Any:
    # random.setstate needs tuples all the way down; a round trip through the checkpoint may give lists.
    return tuple(_tuples(v) for v in value) if isinstance(value, list | tuple) else value
