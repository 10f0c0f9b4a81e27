"""What a pruning run (the joint method or a same-budget baseline) hands back to its caller."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from rlal.structure import Plan


@dataclass(frozen=True)
class PrunedResult:
    """The small model and its figures; the same figures are in ``result.json`` of the run directory."""

    method: str
    """``rlal`` or a baseline (``uniform``, ``magnitude``, ``depgraph``)."""
    model: nn.Module
    """The cut model after its last training epoch."""
    plan: Plan
    run_dir: Path
    test_acc: float
    dense_macs: int
    macs: int
    dense_params: int
    params: int
    epochs: int
    """Epochs of training actually spent (pre-training + fine-tuning for magnitude and depgraph)."""
    seconds: float
    """Wall-clock of the run, summed over its sessions when it was resumed."""
