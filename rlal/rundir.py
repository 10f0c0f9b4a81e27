"""The run directory: what a run writes, and the guard against overwriting another run's results."""

from __future__ import annotations

import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

import rlal
from rlal.checkpoint import write_json
from rlal.config import RunConfig, save_config
from rlal.errors import RlalError

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
