"""Dense training: the unpruned baseline, and the warm-up the joint method starts from."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from rlal.checkpoint import rng_state, save_checkpoint, save_weights, set_rng_state, write_json
from rlal.config import RunConfig
from rlal.data import Data, build_data
from rlal.models import count_macs_params
from rlal.report.markdown import write_report
from rlal.rundir import guarded_epochs, open_run, run_lock
from rlal.structure import ArchSpec
from rlal.train.distributed import SilentMetrics, check_same_config, shard
from rlal.train.epoch import EpochStats, evaluate, train_one_epoch
from rlal.train.optim import build_optimizer, build_scheduler
from rlal.train.runtime import Runtime, resolve_runtime, seed_everything


@dataclass(frozen=True)
class DenseResult:
    """What a dense run produced; the same figures are in ``result.json`` of its run directory."""

    model: nn.Module
    run_dir: Path
    test_acc: float
    macs: int
    params: int
    epochs: int
    seconds: float
    """Wall-clock of the whole run, data loading included."""


def fit_dense(config: RunConfig, out: Path, *, overwrite: bool = False, resume: bool = False) -> DenseResult:
    """Train ``config.model`` on ``config.data`` from scratch and save it into the run directory ``out``
    (or, with ``resume``, continue the run there from its last epoch checkpoint). The directory is locked
    from when it is opened until the run ends (see :mod:`rlal.rundir`)."""
    with run_lock(out):
        return _fit_dense(config, out, overwrite=overwrite, resume=resume)


def _fit_dense(config: RunConfig, out: Path, *, overwrite: bool, resume: bool) -> DenseResult:
    start = time.perf_counter()
    runtime, data, model = setup(config)
    dist = runtime.dist
    train = shard(data.train, dist)  # this rank's part of every epoch (all of it in a single process)
    macs, params = count_macs_params(model, input_shape(data))
    optimizer = build_optimizer(model, config.optim)
    scheduler = build_scheduler(optimizer, config.optim, [len(train)] * config.train.epochs)
    step_model = dist.wrap(model, config.train.sync_bn)
    step_model = torch.compile(step_model) if config.train.compile else step_model
    test_model = model if dist.enabled else step_model  # tested alike on every rank: no DDP collective

    run_dir, metrics, checkpoint = dist.on_main(lambda: open_run(
        out, config, {"device": runtime.describe(), "data_source": data.source},
        overwrite=overwrite, resume=resume,
    ))
    if not dist.is_main:
        metrics = SilentMetrics(metrics.lines)
    done, seconds_before = 0, 0.0
    if checkpoint is not None:
        model.load_state_dict(checkpoint.weights)
        optimizer.load_state_dict(checkpoint.state["optimizer"])
        scheduler.load_state_dict(checkpoint.state["scheduler"])
        set_rng_state(checkpoint.state["rng"])
        done, seconds_before = checkpoint.epoch, checkpoint.state["seconds"]

    test = None
    with guarded_epochs(run_dir) as guard:
        for epoch in range(done + 1, config.train.epochs + 1):
            guard.epoch = epoch
            train.set_epoch(epoch)
            stats = train_one_epoch(
                model, train, optimizer, scheduler, runtime,
                label_smoothing=config.optim.label_smoothing, clip_grad_norm=config.optim.clip_grad_norm,
                progress=config.train.progress,
                desc=f"dense {epoch}/{config.train.epochs}", step_model=step_model,
            )
            dist.sync_buffers(model)
            stats, synced = dist.reduce_stats(stats), dist.check_in_sync(model)
            test = evaluate(test_model, data.test, runtime) if eval_due(epoch, config) else None
            ranks = {"rank_state_sha256": synced} if synced else {}
            metrics.write({**epoch_record(epoch, "dense", stats, test, optimizer), **ranks})
            if config.train.progress and dist.is_main:
                print(format_epoch(epoch, config.train.epochs, stats, test), flush=True)
            if dist.is_main:
                save_checkpoint(run_dir, epoch, model, {
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": rng_state(),
                    "metrics_lines": metrics.lines,
                    "seconds": seconds_before + time.perf_counter() - start,
                })

    if test is None:  # resumed after the last epoch's checkpoint but before the results were written
        test = evaluate(test_model, data.test, runtime)
    seconds = seconds_before + time.perf_counter() - start
    result = DenseResult(
        model=model, run_dir=run_dir, test_acc=test.acc, macs=macs, params=params,
        epochs=config.train.epochs, seconds=seconds,
    )
    if not dist.is_main:  # rank 0 writes the run's files
        return result
    save_weights(model, run_dir / "model.safetensors")
    write_json(
        run_dir / "model.json",
        {
            "model": config.model.name,
            "num_classes": data.spec.num_classes,
            "in_channels": data.spec.in_channels,
            "input_size": data.spec.input_size,
            "classes": list(data.classes),
        },
    )
    write_json(
        run_dir / "result.json",
        {
            "method": "dense",
            "model": config.model.name,
            "dataset": data.spec.name,
            "test_acc": test.acc,
            "test_images": test.images,
            "macs": macs,
            "params": params,
            "epochs": config.train.epochs,
            "train_images_per_epoch": data.train.num_samples,
            "seconds": seconds,
            "device": runtime.describe(),
            "resumed": checkpoint is not None,
        },
    )
    write_report(run_dir)
    return result


def setup(config: RunConfig) -> tuple[Runtime, Data, nn.Module]:
    """Resolve the runtime, seed every generator, read the data and build the model on its device.

    Called before the run directory is touched: a missing dataset or a bad model name fails first.
    """
    runtime = resolve_runtime(config.train)
    check_same_config(runtime.dist, config)  # before minutes of data loading
    seed_everything(config.seed)
    # Only the joint method scores sub-networks on the reward split; the others just leave it out of training.
    data = build_data(config.data, runtime.device, seed=config.seed, channels_last=runtime.channels_last,
                      need_reward=config.method == "rlal")
    return runtime, data, place(build_model(config, data), runtime)


def build_model(config: RunConfig, data: Data) -> nn.Module:
    """The model ``model.name`` names, sized for the dataset actually read (classes, channels, input size):
    a zoo model, or a user's ``package.module:function`` (see :func:`model_arch`)."""
    # A factory named by the run's own config: importing and running it is what the user asked for.
    return model_arch(config, data).build(trust_factory=True)


def model_arch(config: RunConfig, data: Data) -> ArchSpec:
    """How the run's dense model is (re)built. A ``package.module:function`` name is a user's factory,
    called with the keyword arguments of ``num_classes``, ``in_channels`` and ``input_size`` that its
    signature accepts (a factory of none of them builds the same model for any data)."""
    sizes = {"num_classes": data.spec.num_classes, "in_channels": data.spec.in_channels,
             "input_size": data.spec.input_size}
    name = config.model.name
    if ":" not in name:
        return ArchSpec.zoo(name, **sizes)
    # The run's own config names this factory: importing it is what the user asked for.
    taken = ArchSpec.from_factory(name).accepted_keywords(list(sizes), trust_factory=True)
    return ArchSpec.from_factory(name, **{k: sizes[k] for k in taken})


def input_shape(data: Data) -> tuple[int, int, int]:
    return (data.spec.in_channels, data.spec.input_size, data.spec.input_size)


def place(model: nn.Module, runtime: Runtime) -> nn.Module:
    """Move the model to the run's device and memory format."""
    fmt = torch.channels_last if runtime.channels_last else torch.contiguous_format
    return model.to(device=runtime.device, memory_format=fmt)


def eval_due(epoch: int, config: RunConfig) -> bool:
    """Whether ``epoch`` ends with a test pass: every ``train.eval_every`` epochs, and always the last."""
    every = config.train.eval_every
    return epoch == config.train.epochs or bool(every and epoch % every == 0)


def epoch_record(
    epoch: int, phase: str, stats: EpochStats, test: EpochStats | None, optimizer: torch.optim.Optimizer
) -> dict[str, float | int | str | None]:
    """One ``metrics.jsonl`` line for a training epoch."""
    return {
        "epoch": epoch,
        "phase": phase,
        "lr": optimizer.param_groups[0]["lr"],
        "train_loss": stats.loss,
        "train_acc": stats.acc,
        "train_images": stats.images,
        "train_seconds": stats.seconds,
        "train_images_per_s": stats.images_per_s,
        "grad_norm_median": stats.grad_norm_median,
        "grad_norm_max": stats.grad_norm_max,
        **({"clipped_steps": stats.clipped_steps} if stats.clipped_steps is not None else {}),
        "test_loss": test.loss if test else None,
        "test_acc": test.acc if test else None,
    }


def format_epoch(epoch: int, epochs: int, stats: EpochStats, test: EpochStats | None) -> str:
    line = (
        f"epoch {epoch}/{epochs}  loss {stats.loss:.4f}  train acc {stats.acc:.2f}%  "
        f"{stats.images_per_s:.0f} img/s"
    )
    return line + (f"  test acc {test.acc:.2f}%" if test else "")
