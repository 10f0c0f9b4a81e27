"""Where and how tensors run: device, mixed precision, memory format, seeding."""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass, field

import numpy as np
import torch

from rlal.config import TrainConfig
from rlal.errors import RlalError
from rlal.train.distributed import Dist, from_env


@dataclass(frozen=True)
class Runtime:
    """Resolved execution settings; ``amp_dtype`` None means full fp32."""

    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool
    dist: Dist = field(default_factory=Dist)
    """This process's rank in a ``torchrun`` job (a single process: rank 0 of 1)."""

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast context for forward passes (BN stays fp32 under autocast, as it should)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def describe(self) -> str:
        amp = "bf16" if self.amp_dtype is torch.bfloat16 else "fp32"
        fmt = "channels-last" if self.channels_last else "contiguous"
        ranks = f" x{self.dist.world_size} ranks" if self.dist.enabled else ""
        return f"{self.device} {amp} {fmt}{ranks}"


def resolve_runtime(cfg: TrainConfig) -> Runtime:
    """Turn ``auto`` settings into concrete ones: bf16 on CUDA, fp32 on CPU; channels-last on both (on the
    CPU it trained ResNets 1.19-1.41x faster, MobileNetV2 1.55-1.81x, docs/benchmarks.md). Under
    ``torchrun`` this process joins the job first, and takes the GPU of its local rank (see
    :mod:`rlal.train.distributed`)."""
    dist, launched_on = from_env(cfg)
    if launched_on is not None:
        device = launched_on
    elif cfg.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(cfg.device)
        except RuntimeError:
            raise RlalError(
                f"train.device {cfg.device!r} is not a device (use auto, cpu, cuda or cuda:N)"
            ) from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RlalError(f"train.device is {cfg.device!r} but no CUDA device is available")
        if device.type not in ("cpu", "cuda"):
            raise RlalError(f"train.device {cfg.device!r} is not supported (use auto, cpu, cuda or cuda:N)")
    on_cuda = device.type == "cuda"
    amp = cfg.amp == "bf16" or (cfg.amp == "auto" and on_cuda)
    channels_last = cfg.channels_last != "off"
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    return Runtime(device=device, amp_dtype=torch.bfloat16 if amp else None, channels_last=channels_last,
                   dist=dist)


def seed_everything(seed: int) -> None:
    """Seed every generator a run draws from; CPU runs with the same seed are then bit-identical."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
