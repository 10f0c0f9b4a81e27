"""SGD with momentum and a learning-rate schedule stepped once per batch."""

from __future__ import annotations

import math
import warnings

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


def lr_factor(cfg: OptimConfig, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based) of ``total_steps``."""
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    if cfg.schedule == "multistep":
        return cfg.gamma ** sum(progress >= m for m in cfg.milestones)
    return 1.0


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int, steps_per_epoch: int,
    start_step: int = 0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-batch schedule over ``total_steps`` batches (its warm-up counted in epochs of
    ``steps_per_epoch``), standing after ``start_step`` of them (a fresh optimiser that continues a run's
    schedule, e.g. after the cut)."""
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(cfg, step, total_steps, steps_per_epoch)
    )
    with warnings.catch_warnings():  # stepping a fresh scheduler forward before any optimiser step
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(start_step):
            scheduler.step()
    return scheduler
