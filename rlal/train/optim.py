"""SGD with momentum and a learning-rate schedule stepped once per batch."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from rlal.config import OptimConfig


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.SGD:
    """SGD over all trainable parameters (weight decay on all of them, as in the ResNet recipe)."""
    return torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad],
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov and cfg.momentum > 0,
        weight_decay=cfg.weight_decay,
    )


def lr_factor(cfg: OptimConfig, step: int, total_steps: int, warmup_steps: int) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based) of ``total_steps``, the
    first ``warmup_steps`` of them rising linearly to it."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    if cfg.schedule == "multistep":
        return cfg.gamma ** sum(progress >= m for m in cfg.milestones)
    return 1.0


def warmup_steps(warmup_epochs: float, epoch_steps: Sequence[int]) -> int:
    """The steps of the first ``warmup_epochs`` epochs, each epoch counted in its own steps: a warm-up of
    0.3 epochs is 0.3 of the first epoch's steps whether that epoch is a whole one or a share of one."""
    covered = sum(min(1.0, max(0.0, warmup_epochs - e)) * n for e, n in enumerate(epoch_steps))
    return round(covered)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, epoch_steps: Sequence[int], start_step: int = 0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-batch schedule over a run whose epochs take ``epoch_steps`` batches each (its warm-up counted in
    those epochs, see :func:`warmup_steps`), standing after ``start_step`` of them (a fresh optimiser that
    continues a run's schedule, e.g. after the cut)."""
    total, warmup = sum(epoch_steps), warmup_steps(cfg.warmup_epochs, epoch_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(cfg, step, total, warmup)
    )
    with warnings.catch_warnings():  # stepping a fresh scheduler forward before any optimiser step
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(start_step):
            scheduler.step()
    return scheduler
