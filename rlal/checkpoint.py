"""Atomic writes for everything a run leaves on disk, so a crash never leaves a half-written file, and the
per-epoch checkpoint a run resumes from.

A checkpoint is a directory ``checkpoint-NNNN/`` (``model.safetensors`` + ``state.pt``) written complete
under a temporary name, fsynced and renamed; only then does the pointer file ``checkpoint.json`` (itself
written atomically) move to it. A crash at any moment therefore leaves the previous checkpoint intact.
"""

from __future__ import annotations

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
from safetensors.torch import load_file, save_file
from torch import nn

from rlal.errors import RlalError


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file next to ``path``, fsync it, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; results are meant to be shared
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


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
    model.load_state_dict(load_file(str(path)), strict=True)
    return model


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


def save_checkpoint(run_dir: Path, epoch: int, model: nn.Module, state: dict[str, Any]) -> None:
    """Checkpoint the end of ``epoch`` (see the module docstring); older checkpoints are then removed.

    ``state`` may hold tensors, numbers, strings, None and lists/tuples/dicts of them: it is loaded back
    with ``torch.load(weights_only=True)``, which executes nothing from the file.
    """
    name = f"checkpoint-{epoch:04d}"
    final = run_dir / name
    tmp = run_dir / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_weights(model, tmp / "model.safetensors")
    atomic_write(tmp / "state.pt", lambda path: torch.save(state, path))
    shutil.rmtree(final, ignore_errors=True)  # a complete but unreferenced one left by an earlier crash
    os.replace(tmp, final)
    _fsync(run_dir)
    write_json(run_dir / POINTER, {"epoch": epoch, "directory": name})
    for stale in run_dir.glob("checkpoint-*"):
        if stale.name != name and stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    for stale in run_dir.glob(".checkpoint-*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)


def load_checkpoint(run_dir: Path) -> Checkpoint | None:
    """The checkpoint ``checkpoint.json`` points to, or None when the run has none yet."""
    pointer = run_dir / POINTER
    if not pointer.exists():
        return None
    try:
        info = json.loads(pointer.read_text())
        directory = run_dir / info["directory"]
        epoch = int(info["epoch"])
    except (ValueError, KeyError, TypeError) as exc:
        raise RlalError(f"{pointer} is corrupt ({exc}); the run cannot be resumed") from None
    try:
        weights = load_file(str(directory / "model.safetensors"))
        state = torch.load(directory / "state.pt", map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, pickle.UnpicklingError) as exc:
        raise RlalError(f"checkpoint {directory} cannot be read: {exc}") from None
    return Checkpoint(epoch=epoch, weights=weights, state=state)


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
