"""One epoch of training and one pass of evaluation: the two steps every method is built from."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sized
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from rlal.errors import RlalError, TrainingDiverged
from rlal.train.runtime import Runtime

Regularizer = Callable[[nn.Module], torch.Tensor]
"""A penalty added to the loss each step; the alignment regulariser of the joint method plugs in here. One
with an ``after_step(model, lr)`` method has it run after every optimiser step too (the alignment's
proximal form acts there, not through the loss)."""

ExtraLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor, float], torch.Tensor]
"""A second loss on each step's batch, ``extra_loss(model, x, y, label_smoothing)``: the joint method's
sub-network training (:mod:`rlal.train.subnet`) plugs in here."""


@dataclass(frozen=True)
class EpochStats:
    loss: float
    """Mean cross-entropy over the epoch's images (regulariser excluded)."""
    acc: float
    """Top-1 accuracy in percent."""
    images: int
    seconds: float
    reg_loss: float = 0.0
    """Mean regulariser value per step (0 when there is none)."""
    extra_loss: float | None = None
    """Mean value per step of the extra loss (None when there is none)."""
    grad_norm_median: float | None = None
    """Median over the epoch's steps of the gradient's total L2 norm before any clipping (None: not a
    training epoch): the usual step's size, against which ``grad_norm_max`` shows a spike."""
    grad_norm_max: float | None = None
    """The largest of those norms."""
    clipped_steps: int | None = None
    """Steps whose gradient was scaled down to ``optim.clip_grad_norm`` (None when clipping is off)."""

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")


def train_one_epoch(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    runtime: Runtime,
    *,
    label_smoothing: float = 0.0,
    regularizer: Regularizer | None = None,
    progress: bool = False,
    desc: str = "train",
    step_model: nn.Module | None = None,
    after_step: Callable[[nn.Module, float], None] | None = None,
    clip_grad_norm: float = 0.0,
    extra_loss: ExtraLoss | None = None,
    max_steps: int | None = None,
) -> EpochStats:
    """Train ``model`` for one pass over ``loader``; the schedule is stepped once per batch. ``step_model``
    runs the forward pass when given (``model`` wrapped for data-parallel training); the regulariser always
    reads ``model`` itself. ``after_step(model, lr)`` runs after every optimiser step with that step's
    learning rate; by default, the regulariser's own ``after_step`` if it has one (the alignment's proximal
    step), so passing the alignment as ``regularizer`` is enough in either of its forms. ``clip_grad_norm``
    > 0 scales the gradients down to that total L2 norm before each step (the whole step's gradient, with
    the regulariser's when it is in the loss; under DDP after the all-reduce, so every rank clips alike).
    ``extra_loss`` is added to each step's loss (it runs on ``model``, not the DDP wrapper). ``max_steps``
    ends the epoch after that many steps (the first batches of the loader's order for the epoch)."""
    if after_step is None:
        after_step = getattr(regularizer, "after_step", None)
    model.train()
    forward = model if step_model is None else step_model
    forward.train()
    device = runtime.device
    loss_sum = torch.zeros((), device=device)
    reg_sum = torch.zeros((), device=device)
    extra_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    images = steps = 0
    grad_norms: list[torch.Tensor] = []  # kept on the device, read once at the end
    _sync(device)
    start = time.perf_counter()
    total = len(loader) if isinstance(loader, Sized) else None
    if max_steps is not None:
        total = max_steps if total is None else min(total, max_steps)
    # disable=None: tqdm draws only on a terminal, so logs and CI output get the per-epoch lines alone.
    bar = tqdm(
        loader, total=total, desc=desc, leave=False, disable=None if progress else True, dynamic_ncols=True
    )
    for x, y in bar:
        with runtime.autocast():
            logits = forward(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
        total_loss = loss
        if regularizer is not None:
            reg = regularizer(model)
            total_loss = loss + reg
            reg_sum += reg.detach()
        if extra_loss is not None:
            with runtime.autocast():
                extra = extra_loss(model, x, y, label_smoothing)
            total_loss = total_loss + extra
            extra_sum += extra.detach()
        optimizer.zero_grad(set_to_none=True)
        total_loss.backward()
        # The total norm before clipping, for the epoch's record: it shows the spikes clipping is for.
        if clip_grad_norm > 0:
            norm = nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
        else:
            norm = nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
        grad_norms.append(norm.detach())
        optimizer.step()
        if after_step is not None:
            after_step(model, optimizer.param_groups[0]["lr"])
        if scheduler is not None:
            scheduler.step()
        # Accumulate on the device: reading a value back every step would stall a GPU.
        loss_sum += loss.detach() * y.numel()
        correct += (logits.argmax(1) == y).sum()
        images += y.numel()
        steps += 1
        # Only when the bar is drawn: each .item() waits for the GPU's queue to drain.
        if not bar.disable and steps % 20 == 0:
            bar.set_postfix(
                loss=f"{loss_sum.item() / images:.3f}", acc=f"{100 * correct.item() / images:.1f}"
            )
        if steps == max_steps:
            break
    _sync(device)
    seconds = time.perf_counter() - start
    if images == 0:
        raise RlalError("the training split is empty: no batch to train on (check data.train_subset)")
    mean_loss = loss_sum.item() / images
    reg_loss = reg_sum.item() / steps
    extra_mean = extra_sum.item() / steps if extra_loss is not None else None
    for what, value in (("loss", mean_loss), ("regulariser", reg_loss), ("extra loss", extra_mean)):
        if value is not None and not math.isfinite(value):
            raise TrainingDiverged(f"training diverged: the {what} is {value} (try a lower optim.lr)")
    norms = torch.stack(grad_norms).float().cpu()
    return EpochStats(
        loss=mean_loss,
        acc=100.0 * correct.item() / images,
        images=images,
        seconds=seconds,
        reg_loss=reg_loss,
        extra_loss=extra_mean,
        grad_norm_median=norms.median().item(),
        grad_norm_max=norms.max().item(),
        clipped_steps=int((norms > clip_grad_norm).sum()) if clip_grad_norm > 0 else None,
    )


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: Iterable[tuple[torch.Tensor, torch.Tensor]], runtime: Runtime
) -> EpochStats:
    """Mean loss and top-1 accuracy over ``loader`` in eval mode; the model's mode is restored after."""
    was_training = model.training
    model.eval()
    device = runtime.device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    images = 0
    _sync(device)
    start = time.perf_counter()
    try:
        for x, y in loader:
            with runtime.autocast():
                logits = model(x)
            loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
            images += y.numel()
    finally:
        model.train(was_training)
    _sync(device)
    seconds = time.perf_counter() - start
    if images == 0:
        return EpochStats(loss=float("nan"), acc=float("nan"), images=0, seconds=seconds)
    return EpochStats(
        loss=loss_sum.item() / images, acc=100.0 * correct.item() / images, images=images, seconds=seconds
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
