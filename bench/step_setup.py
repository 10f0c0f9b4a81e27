"""The setup the per-step overhead benchmarks share: T2's network on random batches, one runtime.

A training step's cost does not depend on the pixels, so random images stand in for Fashion-MNIST; the
network is ResNet-56 at 1x28x28 with 10 classes, as on T2.
"""

from __future__ import annotations

import torch
from torch import nn

from rlal.config import TrainConfig
from rlal.models import create_model
from rlal.train.runtime import Runtime, resolve_runtime, seed_everything

SHAPE = (1, 28, 28)
"""One Fashion-MNIST image."""


Batch = tuple[torch.Tensor, torch.Tensor]


def t2_steps(threads: int, batch: int, steps: int) -> tuple[Runtime, nn.Module, list[Batch]]:
    """A CPU runtime of ``threads`` threads, a seeded ResNet-56 and ``steps`` random batches of ``batch``."""
    runtime = resolve_runtime(TrainConfig(device="cpu", threads=threads, progress=False))
    seed_everything(0)
    model = create_model("resnet56", num_classes=10, in_channels=SHAPE[0], input_size=SHAPE[1])
    batches = [(torch.randn(batch, *SHAPE), torch.randint(0, 10, (batch,))) for _ in range(steps)]
    return runtime, model, batches
