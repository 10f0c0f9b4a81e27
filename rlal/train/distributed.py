"""Several processes, one run: the process group, DDP, data shards and the checks that keep ranks in step.

``torchrun`` (or any launcher that sets torch's ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``) starts one process per device; :func:`from_env` joins them into torch's default process
group (NCCL on CUDA, gloo on the CPU) and returns a :class:`Dist` that the training loops receive through
:class:`~rlal.train.runtime.Runtime`. A single process (no ``WORLD_SIZE``, or 1) gets ``Dist()`` and nothing
of torch.distributed is touched, so single-process runs compute exactly what they did before.

What the loops do with it (docs/distributed.md has the whole picture):

- weights train under DistributedDataParallel, each rank on its own shard of every epoch
  (:func:`shard`); after each epoch BatchNorm buffers are copied from rank 0 and every rank's parameters
  and buffers are compared by digest (:meth:`Dist.check_in_sync`);
- the agent's episodes of an epoch are split across ranks and their rewards all-gathered
  (:func:`rlal.train.joint.run_agent_episodes`); plans are asserted identical (:meth:`Dist.same`);
- only rank 0 touches the run directory (:meth:`Dist.on_main` runs a step there and sends the outcome,
  or its error, to the others).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import hashlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as tdist
from torch import nn

from rlal.config import RunConfig, TrainConfig
from rlal.errors import RlalError
from rlal.report.metrics import MetricsWriter

T = TypeVar("T")

_LAUNCH_VARS = ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Dist:
    """This process's place in the job: ``rank`` of ``world_size`` (``local_rank`` on its node)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """Whether there are other processes (collectives run only then)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes the run directory and prints."""
        return self.rank == 0

    # --- collectives (each returns at once in a single process) -------------------------------------

    def gather(self, value: T) -> list[T]:
        """``value`` of every rank, in rank order (any picklable object)."""
        if not self.enabled:
            return [value]
        out: list[Any] = [None] * self.world_size
        tdist.all_gather_object(out, value)
        return out

    def broadcast(self, value: T | None) -> T:
        """Rank 0's ``value`` on every rank."""
        if not self.enabled:
            return value  # type: ignore[return-value]
        # Sent as torch.save bytes: broadcast_object_list's unpickler fails on some tensors (a checkpoint's
        # weights read from safetensors). The bytes come from rank 0 of this very job.
        buffer = io.BytesIO()
        if self.is_main:
            torch.save(value, buffer)
        box = [buffer.getvalue()]
        tdist.broadcast_object_list(box, src=0)
        return torch.load(io.BytesIO(box[0]), weights_only=False)

    def on_main(self, step: Callable[[], T]) -> T:
        """Run ``step`` on rank 0 and give its result to every rank. An :class:`RlalError` (or ``OSError``)
        it raises is raised on every rank with the same message, so the others exit with rank 0's one-line
        error instead of waiting for it until the timeout."""
        if not self.enabled:
            return step()
        outcome: tuple[bool, Any] = (True, None)
        if self.is_main:
            try:
                outcome = (True, step())
            except (RlalError, OSError) as exc:  # what the command line reports as one line
                outcome = (False, exc)
                self.broadcast(outcome)
                raise
        ok, value = self.broadcast(outcome)
        if not ok:
            raise value from None
        return value

    def same(self, value: Any, what: str) -> None:
        """Check that every rank holds an equal ``value`` (compared by its repr, so NaN equals NaN);
        anything else is a bug: the ranks would go on computing different runs."""
        if not self.enabled:
            return
        seen = self.gather(repr(value))
        if len(set(seen)) > 1:
            raise RuntimeError(f"ranks disagree on {what}: rank 0 has {seen[0][:200]}, another "
                               f"{next(s for s in seen if s != seen[0])[:200]} (a bug)")

    def sync_buffers(self, model: nn.Module) -> None:
        """Copy rank 0's buffers (BatchNorm running statistics) to every rank. DDP sends them at the start of
        each forward, so after an epoch each rank holds the statistics of its own last batch; scoring and
        checkpoints need one set."""
        if not self.enabled:
            return
        for buffer in model.buffers():
            tdist.broadcast(buffer.data, src=0)

    def check_in_sync(self, model: nn.Module) -> list[str]:
        """Every rank's digest of ``model``'s parameters and buffers (after :meth:`sync_buffers`); raises if
        they differ. Returns the digests (for the epoch's metrics record); [] in a single process."""
        if not self.enabled:
            return []
        digests = self.gather(state_digest(model))
        if len(set(digests)) > 1:
            raise RuntimeError(f"ranks ended the epoch with different weights ({digests}): a bug")
        return digests

    def reduce_stats(self, stats: Any) -> Any:
        """One :class:`~rlal.train.epoch.EpochStats` for the whole job from each rank's: images summed, loss,
        accuracy and regulariser averaged over them, the slowest rank's seconds."""
        if not self.enabled:
            return stats
        every = self.gather((stats.loss, stats.acc, stats.images, stats.seconds, stats.reg_loss))
        images = sum(s[2] for s in every)
        return dataclasses.replace(
            stats,
            loss=sum(s[0] * s[2] for s in every) / images,
            acc=sum(s[1] * s[2] for s in every) / images,
            images=images,
            seconds=max(s[3] for s in every),
            reg_loss=sum(s[4] for s in every) / len(every),
        )

    def wrap(self, model: nn.Module, sync_bn: bool = False) -> nn.Module:
        """The module a training step runs: ``model`` itself in a single process, else a DDP wrapper around
        it (around a copy whose BatchNorms are SyncBatchNorms sharing ``model``'s parameters and buffers,
        with ``sync_bn``). ``model`` stays what scoring, checkpoints and the regulariser see."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        trained = _sync_bn_view(model) if sync_bn else model
        device = next(model.parameters()).device
        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(trained, device_ids=ids)


def launched() -> bool:
    """Whether this process was started as one of several (``WORLD_SIZE`` > 1)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        raise RlalError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number") from None


def from_env(cfg: TrainConfig) -> tuple[Dist, torch.device | None]:
    """Join the job this process was launched into, and the device it must use (None: decide as a single
    process would). Idempotent: a second call returns the group already joined.

    Raises :class:`RlalError` for more processes on a node than it has GPUs, a ``train.device`` naming one
    GPU for all processes, ``train.sync_bn`` on the CPU, or a launch without torchrun's variables."""
    if not launched():
        return Dist(), None
    missing = [name for name in _LAUNCH_VARS if name not in os.environ]
    if missing:
        raise RlalError(f"WORLD_SIZE is set but {', '.join(missing)} is not: start the job with torchrun")
    world, rank, local = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", local + 1))
    cuda = cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())
    device = torch.device("cpu")
    if cuda:
        if cfg.device.startswith("cuda:"):
            raise RlalError(f"train.device is {cfg.device!r}, but under torchrun each process takes the GPU "
                            f"of its LOCAL_RANK: use auto or cuda")
        gpus = torch.cuda.device_count()
        if per_node > gpus:
            raise RlalError(f"{per_node} processes on this node but {gpus} GPU{'s' if gpus != 1 else ''}: "
                            f"start at most {gpus} (torchrun --nproc_per_node={gpus})")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    elif cfg.sync_bn:
        raise RlalError("train.sync_bn needs CUDA devices (torch's SyncBatchNorm runs on GPUs only); "
                        "set it to false for a CPU job")
    if not tdist.is_initialized():
        tdist.init_process_group(
            "nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=cfg.dist_timeout),
            **({"device_id": device} if cuda else {}),
        )
    return Dist(rank=rank, world_size=world, local_rank=local), device


def check_same_config(dist: Dist, config: RunConfig) -> None:
    """Refuse, with one line on every rank, a job whose ranks were given different configs (only where the
    data lives and how progress is shown may differ from node to node)."""
    if not dist.enabled:
        return
    from rlal.rundir import RELOCATABLE, config_differences

    configs = dist.gather(config)
    for rank, other in enumerate(configs):
        changed = [key for key in config_differences(configs[0], other) if key not in RELOCATABLE]
        if changed:
            raise RlalError(
                f"rank {rank} was started with another config than rank 0 ({', '.join(changed[:3])} "
                f"differ{'s' if len(changed) == 1 else ''}): give every rank the same --config and --set"
            )


def shard(loader: T, dist: Dist) -> T:
    """``loader``'s share for this rank: every rank a disjoint, equally long part of each epoch (the
    loaders' ``shard`` method); ``loader`` itself in a single process."""
    if not dist.enabled:
        return loader
    make = getattr(loader, "shard", None)
    if make is None:
        raise RlalError(f"a {type(loader).__name__} cannot be split across ranks (no shard method)")
    return make(dist.rank, dist.world_size)


def state_digest(model: nn.Module) -> str:
    """SHA-256 of every parameter and buffer of ``model`` (names, shapes and bytes)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def close() -> None:
    """Leave the process group, if this process joined one (the end of a command-line run)."""
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()


def _sync_bn_view(model: nn.Module) -> nn.Module:
    """A module tree that runs as ``model`` but with SyncBatchNorm where ``model`` has BatchNorm, sharing
    every parameter and buffer (so the optimiser, built on ``model``, trains both). ``model``'s own tree is
    left as it is: scoring sub-networks must not synchronise, since ranks score different plans."""
    if isinstance(model, nn.modules.batchnorm._BatchNorm):
        return nn.SyncBatchNorm.convert_sync_batchnorm(copy.copy(model))
    view = copy.copy(model)
    view._modules = {name: _sync_bn_view(child) if child is not None else None
                     for name, child in model._modules.items()}
    return view


def is_main_process() -> bool:
    """Whether this process is rank 0 of the job it joined, or runs alone (what prints a run's summary)."""
    return not (tdist.is_available() and tdist.is_initialized()) or tdist.get_rank() == 0


class SilentMetrics(MetricsWriter):
    """The metrics log of a rank other than 0: writes nothing, but counts the records as rank 0's does."""

    def __init__(self, lines: int) -> None:  # no file: only rank 0 owns the run directory
        self.lines = lines

    def write(self, record: dict[str, Any]) -> None:
        self.lines += 1

    def truncate(self, lines: int) -> None:
        self.lines = lines
