"""One entry point for every training method: ``config.method`` picks the loop."""

from __future__ import annotations

from pathlib import Path

from rlal.config import BASELINE_METHODS, RunConfig
from rlal.errors import RlalError
from rlal.rundir import run_lock
from rlal.train.dense import DenseResult
from rlal.train.result import PrunedResult

RESUMABLE = ("dense", "rlal")
"""Methods that checkpoint every epoch; the baselines are short and start again."""


def fit(
    config: RunConfig, out: Path, *, overwrite: bool = False, resume: bool = False
) -> DenseResult | PrunedResult:
    """Run ``config.method`` into the run directory ``out`` (``resume``: continue the run there). The run
    holds the directory's lock from when it opens it until it ends, however it ends (see
    :mod:`rlal.rundir`)."""
    if resume and config.method not in RESUMABLE:
        raise RlalError(f"--resume continues dense and rlal runs; a {config.method} run starts again")
    with run_lock(out):
        if config.method in BASELINE_METHODS:
            from rlal.train.baselines import fit_baseline

            return fit_baseline(config, out, overwrite=overwrite)
        if config.method == "dense":
            from rlal.train.dense import fit_dense

            return fit_dense(config, out, overwrite=overwrite, resume=resume)
        from rlal.train.joint import fit_joint

        return fit_joint(config, out, overwrite=overwrite, resume=resume)
