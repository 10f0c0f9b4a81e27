"""The alignment regulariser: pull the channels the agent's plan would remove toward zero while training.

The joint method (paper, "alignment" term of the training objective) trains the weights *toward* the
structure the agent currently prefers: every channel that the selected plan drops is penalised by the L2
norm of everything it owns, summed over channels and layers (a group lasso, Yuan & Lin 2006, "Model
selection and estimation in regression with grouped variables")::

    R(theta) = lam * sum_layers sum_{c removed} || theta_c ||_2

where ``theta_c`` is every parameter slice that :func:`rlal.structure.cut` would delete with channel ``c``
*and that changes the output*: its BN/InstanceNorm scale and shift, its PReLU slope, the input slice of
every conv/linear layer reading it, and the filter (and bias) of each conv/linear/depthwise layer writing it
unless that output only feeds per-channel members of the layer in a group with a norm layer: a norm
rescales its input, so shrinking the filter in front of it would cost penalty and change nothing.
The norm is not squared, so the penalty drives whole groups to exactly zero (like the lasso for scalars)
instead of merely shrinking them; once a removed channel's group is zero, cutting it changes nothing.

Usage in the joint loop::

    align = AlignmentRegularizer(structure)
    ...
    align.set_plan(plan, criterion=env.criterion)         # the channels the cut would drop
    align.lam = lambda_at(epoch, align_cfg)
    train_one_epoch(model, data.train, opt, sched, runtime, regularizer=align)  # runs align.after_step too
    log(removed_kept_ratio=align.removed_kept_norm_ratio(model))

**Steering** (:meth:`AlignmentRegularizer.steer`). How far a fixed ``lam`` pulls depends on the number of
steps, the learning rate and the channels' norms, so no one value suits a 6-epoch CPU run and a 200-epoch
GPU one. For the frozen-plan epochs before the cut, the weight is instead sized and then steered. Sized: a
removed group's norm falls by about ``lr * lam / (1 - momentum)`` per SGD step from the penalty alone, so
``lam = mean removed norm * (1 - momentum) / (lr * 0.8 * steps)`` would bring it to zero at 80% of the
steps if nothing pulled back. Steered: every step, the removed/kept norm ratio should follow a path
(linear by default, or geometric) from its value at the start to ``target_ratio``, reached at 80% of the
steps (the rest consolidates);
``lam`` is multiplied by 1.1 at every step the ratio is above the path and divided by 1.1 at every step it
is below, so the cross-entropy's pull back is answered whatever its size. On the linear path ``lam`` never
falls below its sized start, which alone would bring the removed norm down linearly: without that floor, a
dip below the path early on let ``lam`` decay by factors and the channels grow back before the end. A
hand-written controller, because it is part of the method (alignment must reach the cut), not a general
training utility.

**Proximal steps** (``search.align.step: proximal``, the default). Added to the loss, the penalty's
subgradient ``lam * theta_c / ||theta_c||`` has the same length however small the group is, so SGD steps
across zero and, with momentum, circles it; the larger ``lam``, the wider the circle. When most channels are
removed (6% MACs, residual widths pruned) the steered ratio stalled at ~0.07 while ``lam`` grew to 0.31. The
proximal form (Parikh & Boyd 2014, "Proximal algorithms", group soft-thresholding) leaves the penalty out of
the loss and, after every optimiser step, shortens each removed group by
``tau = lr * lam / (1 - momentum)``, setting it to exactly zero when it is shorter than that: a removed
channel stays at zero while its pull back is weaker than ``tau``. Steering is the same in both forms.
(Holding every removed group at exactly zero once the path reached its target, so that the last fifth of
the steps trained the very sub-network that is cut, was tried and dropped: the controller lags its path, so
the hold takes what is left in one step, and on two tuning seeds the align epoch's loss rose from 0.64-0.65
to 0.81-0.94.)

The grouping is taken from each layer's :class:`~rlal.structure.GroupMember` list, exactly what
``importance.py`` sums for the ``"l2"`` criterion and what ``surgery.py`` cuts, plus the biases (a removed
channel whose BN shift is not zero still feeds a constant into the next layer, so cutting it would not be
free). Everything is precomputed as index tensors; a step costs a few ``index_select``/``index_add`` calls
per coupled tensor and one ``sqrt`` over all removed channels, never a Python loop over channels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from rlal.config import AlignConfig
from rlal.errors import RlalError
from rlal.structure.importance import Criterion, check_kept, select_channels
from rlal.structure.layers import Structure
from rlal.structure.plan import Plan


def lambda_at(epoch: int, cfg: AlignConfig) -> float:
    """Penalty weight for search epoch ``epoch`` (0-based, counted from the first search epoch).

    ``"constant"``: ``cfg.lam``. ``"linear"``: ``cfg.lam * min(1, (epoch + 1) / ramp_epochs)``, so the
    first search epoch already regularises a little and epoch ``ramp_epochs - 1`` reaches ``lam``.
    """
    if epoch < 0:
        raise RlalError(f"epoch must be >= 0, got {epoch}")
    if cfg.schedule == "constant":
        return float(cfg.lam)
    return float(cfg.lam) * min(1.0, (epoch + 1) / cfg.ramp_epochs)


@dataclass(frozen=True)
class _Slice:
    """One parameter tensor's share of a layer: ``param.index_select(dim, local)`` gives, along ``dim``,
    the positions belonging to layer channels ``root`` (one root channel may own several positions, e.g. a
    flattened map feeding a linear layer)."""

    param: str
    dim: int
    local: torch.Tensor
    root: torch.Tensor


@dataclass(frozen=True)
class _Gather:
    """A parameter's positions to read and the (global) channel slot each one adds its square into."""

    param: str
    dim: int
    positions: torch.Tensor
    slots: torch.Tensor


class AlignmentRegularizer:
    """Group-lasso penalty on the channels a plan removes, over all coupled parameters of each channel.

    Built once per structure; :meth:`set_plan` chooses the removed channels; calling the object returns
    ``lam * penalty(model)``, so it plugs into ``train_one_epoch(regularizer=...)``. Without a plan (or
    with one that removes nothing) the penalty is 0. ``model`` is the structure's model or any model with
    the same parameter names and shapes (e.g. one restored from a checkpoint).
    """

    def __init__(
        self, structure: Structure, lam: float = AlignConfig.lam, *,
        proximal: bool = AlignConfig.step == "proximal", momentum: float = 0.0,
    ) -> None:
        self.structure = structure
        self._lam = float(lam)
        self.proximal = proximal
        """Apply the penalty as a proximal step after each optimiser step (:meth:`prox_step`) instead of
        adding its subgradient to the loss; the default follows ``AlignConfig.step``."""
        self.momentum = float(momentum)
        """The optimiser's SGD momentum: the proximal step shrinks by ``lr * lam / (1 - momentum)``, what
        the subgradient's constant pull amounts to under momentum, so ``lam`` means the same in both."""
        self._lam_t: torch.Tensor | None = None  # while steering: lam as a device scalar (see _steer_step)
        params = dict(structure.model.named_parameters())
        modules = dict(structure.model.named_modules())
        # per layer: the parameter slices carrying its channels (weights as importance.py reads them, plus
        # the biases of "out" members, which surgery.cut removes too)
        self._slices: list[list[_Slice]] = []
        for layer in structure.layers:
            slices = []
            normed = any(m.kind in ("batchnorm", "instancenorm") for m in layer.members)
            for member in layer.members:
                if normed and member.role == "out" and member.kind in ("conv", "linear", "depthwise") \
                        and not member.mask_output:
                    continue  # scale-free: only per-channel members, a norm among them, read this output
                module = modules[member.module]
                local = torch.tensor(member.local, dtype=torch.int64)
                root = torch.tensor(member.root, dtype=torch.int64)
                names = ["weight"] if member.role == "in" else ["weight", "bias"]
                for attr in names:
                    qualified = f"{member.module}.{attr}"
                    if getattr(module, attr, None) is None or qualified not in params:
                        continue  # no bias, affine=False norm, ...
                    # conv/linear inputs are dim 1; conv/linear outputs, depthwise filters, norm scales and
                    # every bias are dim 0
                    dim = 1 if member.role == "in" and member.kind in ("conv", "linear") else 0
                    slices.append(_Slice(qualified, dim, local, root))
            self._slices.append(slices)
        self._removed: list[torch.Tensor] | None = None  # bool mask per layer, True = removed
        self._penalty_gathers: list[_Gather] = []
        self._penalty_size = 0
        # every channel of every layer, for the diagnostics
        self._all_gathers, self._all_size = self._gathers(
            [torch.ones(layer.channels, dtype=torch.bool) for layer in structure.layers]
        )
        self._device_cache: dict[tuple[int, int, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}
        self._removed_weights: dict[torch.device, torch.Tensor] = {}  # 1.0 at removed channels
        self._steer: dict[str, float] | None = None  # see steer()

    # ------------------------------------------------------------------ plan
    def set_plan(
        self, plan: Plan | None, kept: Mapping[str, object] | None = None, *, criterion: Criterion = "l2",
        scores: Mapping[str, torch.Tensor] | None = None,
    ) -> None:  # fmt: skip
        """Penalise, in every layer, the channels not in ``kept`` (sorted indices by layer name, as from
        :func:`~rlal.structure.select_channels`; layers not named keep everything). Without ``kept`` the
        channels are chosen by ``select_channels(structure, plan, criterion)`` on the current weights (or
        on ``scores``): the run's ``env.criterion``, the one its scorer and its cut use.
        ``set_plan(None)`` clears the plan (penalty 0). Invalid selections raise :class:`RlalError`."""
        if plan is None and kept is None:
            self._removed = None
            self._penalty_gathers, self._penalty_size = [], 0
            self._device_cache.clear()
            self._removed_weights.clear()
            return
        if kept is None:
            selection = select_channels(self.structure, plan, criterion, scores=scores)
        else:
            selection = check_kept(self.structure, kept)
            if plan is not None:
                for layer, k in zip(self.structure.layers, plan.keep, strict=True):
                    if len(selection[layer.name]) != k:
                        raise RlalError(
                            f"layer {layer.name}: the plan keeps {k} channels, kept lists "
                            f"{len(selection[layer.name])}"
                        )
        removed = []
        for layer in self.structure.layers:
            mask = torch.ones(layer.channels, dtype=torch.bool)
            mask[selection[layer.name]] = False
            removed.append(mask)
        self.set_removed(removed)

    def set_removed(self, removed: list[torch.Tensor]) -> None:
        """Penalise the channels marked True in ``removed`` (one bool mask per layer, in layer order)."""
        if len(removed) != len(self.structure.layers):
            raise RlalError(f"need one removed-channel mask per layer ({len(self.structure.layers)})")
        masks = []
        for layer, mask in zip(self.structure.layers, removed, strict=True):
            mask = torch.as_tensor(mask).to("cpu", torch.bool).reshape(-1)
            if mask.numel() != layer.channels:
                raise RlalError(f"removed mask for layer {layer.name} must have {layer.channels} entries")
            masks.append(mask)
        self._removed = masks
        self._penalty_gathers, self._penalty_size = self._gathers(masks)
        self._device_cache.clear()
        self._removed_weights.clear()

    @property
    def removed_masks(self) -> list[torch.Tensor] | None:
        """The penalised channels as one bool mask per layer (None without a plan); what a checkpoint keeps,
        since ``set_plan`` would choose the channels again from whatever the weights are then."""
        return None if self._removed is None else [m.clone() for m in self._removed]

    @property
    def kept(self) -> dict[str, torch.Tensor] | None:
        """Kept channel indices by layer name (None without a plan): exactly what the cut must keep."""
        if self._removed is None:
            return None
        return {
            layer.name: (~mask).nonzero().flatten()
            for layer, mask in zip(self.structure.layers, self._removed, strict=True)
        }

    @property
    def removed(self) -> dict[str, torch.Tensor] | None:
        """Removed channel indices by layer name (None without a plan)."""
        if self._removed is None:
            return None
        return {
            layer.name: mask.nonzero().flatten()
            for layer, mask in zip(self.structure.layers, self._removed, strict=True)
        }

    def _gathers(self, masks: list[torch.Tensor]) -> tuple[list[_Gather], int]:
        """For the channels selected by ``masks``, the positions of each parameter to read and the global
        slot (0..total selected channels) each adds into; parameters with nothing selected are dropped."""
        per_param: dict[tuple[str, int], tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        offset = 0
        for slices, mask in zip(self._slices, masks, strict=True):
            # slot of each selected channel of this layer; -1 for the others
            slot = torch.full((mask.numel(),), -1, dtype=torch.int64)
            count = int(mask.sum())
            slot[mask] = torch.arange(offset, offset + count)
            for s in slices:
                chosen = mask[s.root]
                if chosen.any():
                    positions, slots = per_param.setdefault((s.param, s.dim), ([], []))
                    positions.append(s.local[chosen])
                    slots.append(slot[s.root[chosen]])
            offset += count
        # one gather per (parameter, dim) even if several layers read it (a conv's input channels come
        # from several layers when its input is a concatenation)
        gathers = [
            _Gather(param, dim, torch.cat(positions), torch.cat(slots))
            for (param, dim), (positions, slots) in per_param.items()
        ]
        return gathers, offset

    # ------------------------------------------------------------------ penalty
    def _squared_norms(self, model: nn.Module, gathers: list[_Gather], size: int, key: int) -> torch.Tensor:
        """Sum of squares of every selected channel's coupled parameters (a vector of ``size`` slots)."""
        total: torch.Tensor | None = None
        for i, g in enumerate(gathers):
            param = model.get_parameter(g.param)
            positions, slots = self._on_device(key, i, g, param.device)
            w = param.index_select(g.dim, positions).movedim(g.dim, 0)
            sq = w.reshape(positions.numel(), -1).square().sum(1)
            if total is None:
                total = torch.zeros(size, dtype=sq.dtype, device=sq.device)
            total = total.index_add(0, slots, sq)
        if total is None:
            raise RlalError("internal error: no parameter to gather")  # callers check size > 0
        return total

    def _on_device(
        self, key: int, i: int, g: _Gather, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Index tensors on the parameter's device, moved once per plan (not every step)."""
        cache_key = (key, i, device)
        hit = self._device_cache.get(cache_key)
        if hit is None:
            hit = (g.positions.to(device), g.slots.to(device))
            self._device_cache[cache_key] = hit
        return hit

    def penalty(self, model: nn.Module) -> torch.Tensor:
        """``sum_layers sum_{c removed} ||theta_c||_2`` (0-dim, differentiable), without ``lam``.

        Only the removed channels' parameter positions are read, so the parameters of kept channels get
        exactly zero gradient. At a group that is exactly zero the norm's gradient ``theta / ||theta||`` is
        0/0; instead of adding an epsilon inside the sqrt (which would make an all-zero group cost
        ``sqrt(eps)`` rather than 0) the sqrt is taken only where the sum of squares is positive and the
        gradient there is set to 0, a valid subgradient of the norm at 0 (the proximal fixed point).
        """
        if self._penalty_size == 0:
            return _zero(model)
        sq = self._squared_norms(model, self._penalty_gathers, self._penalty_size, key=0)
        positive = sq > 0
        norms = torch.where(positive, torch.where(positive, sq, torch.ones_like(sq)).sqrt(), 0.0)
        return norms.sum()

    def __call__(self, model: nn.Module) -> torch.Tensor:
        """``lam * penalty(model)``: the :data:`~rlal.train.epoch.Regularizer` seam (steering ``lam`` first
        when :meth:`steer` is on)."""
        if self._penalty_size == 0:
            return _zero(model)
        if self._steer is not None:
            lam = self._steer_step(model)
        elif self._lam == 0:
            return _zero(model)
        else:
            lam = self._lam
        if self.proximal:  # the shrinking happens in prox_step; the value is still reported
            with torch.no_grad():
                return lam * self.penalty(model)
        return lam * self.penalty(model)

    @torch.no_grad()
    def prox_step(self, model: nn.Module, lr: float) -> None:
        """The group lasso's proximal step, after the optimiser's step at learning rate ``lr``: every
        removed group is scaled by ``max(0, 1 - tau / ||theta_c||)`` with ``tau = lr * lam / (1 - momentum)``
        (group soft-thresholding; why, in the module docstring), so a group whose pull back is weaker than
        ``tau`` lands on exactly zero. Without ``proximal`` this does nothing."""
        if not self.proximal or self._penalty_size == 0:
            return
        lam = self._lam_t if self._lam_t is not None else self._lam
        if not isinstance(lam, torch.Tensor) and lam == 0:
            return
        tau = lr * lam / (1.0 - self.momentum)
        norms = self._squared_norms(model, self._penalty_gathers, self._penalty_size, key=0).sqrt()
        # every factor from the same norms, then applied: a tensor in two groups (a conv's filter and its
        # input slice) is scaled by both
        factor = (1 - tau / norms.clamp_min(torch.finfo(norms.dtype).tiny)).clamp_min(0)
        for i, g in enumerate(self._penalty_gathers):
            param = model.get_parameter(g.param)
            positions, slots = self._on_device(0, i, g, param.device)
            shape = [1] * param.dim()
            shape[g.dim] = -1
            scale = factor.index_select(0, slots).to(param.dtype).view(shape)
            param.index_copy_(g.dim, positions, param.index_select(g.dim, positions) * scale)

    def after_step(self, model: nn.Module, lr: float) -> None:
        """Run by :func:`~rlal.train.epoch.train_one_epoch` after every optimiser step: :meth:`prox_step`."""
        self.prox_step(model, lr)

    @property
    def lam(self) -> float:
        """The penalty weight (reading it while steering waits for the device once)."""
        if self._lam_t is not None:
            self._lam = float(self._lam_t)
        return self._lam

    @lam.setter
    def lam(self, value: float) -> None:
        self._lam = float(value)
        self._lam_t = None

    # ------------------------------------------------------------------ steering
    def steer(
        self, model: nn.Module, target_ratio: float, steps: int, lr: float | None = None,
        momentum: float | None = None, path: str = "linear",
    ) -> None:
        """Steer ``lam`` over the next ``steps`` calls so that the norm ratio reaches ``target_ratio`` (see
        the module docstring) along ``path`` (``"linear"`` or ``"geometric"``); the path starts at the ratio
        ``model`` has now. Given the learning rate ``lr`` (and SGD ``momentum``, by default the one the
        regulariser was built with) of those steps, ``lam``
        starts at the size that would reach zero at 80% of them, or at the current ``lam`` if that is larger
        (on the linear path, also its floor). Needs a plan."""
        if self._removed is None:
            raise RlalError("steer() needs a plan: call set_plan first")
        if path not in ("geometric", "linear"):
            raise RlalError(f"steering path must be 'geometric' or 'linear', got {path!r}")
        start = self.removed_kept_norm_ratio(model)
        if not math.isfinite(start) or target_ratio <= 0 or steps < 1:
            self._steer = None
            return
        if lr is not None and lr > 0:
            norms = torch.cat(list(self.channel_norms(model).values()))
            removed_mean = norms[torch.cat(self._removed)].mean().item()
            gain = 1 - (self.momentum if momentum is None else momentum)
            self.lam = max(self.lam, removed_mean * gain / (lr * _STEER_REACH * steps))
        self.lam = max(self.lam, _LAM_FLOOR)
        self._steer = {"start": max(start, target_ratio), "target": target_ratio, "steps": steps, "done": 0,
                       "linear": path == "linear", "floor": self.lam if path == "linear" else _LAM_FLOOR}

    def _steer_step(self, model: nn.Module) -> torch.Tensor:
        """One step of the controller; returns this step's ``lam`` as a device scalar. The ratio and ``lam``
        stay on the device, so steering adds no host synchronisation to a GPU step."""
        s = self._steer
        assert s is not None
        progress = min(1.0, s["done"] / max(1.0, _STEER_REACH * s["steps"]))
        if s.get("linear"):
            wanted = s["start"] + (s["target"] - s["start"]) * progress
        else:
            wanted = s["start"] * (s["target"] / s["start"]) ** progress
        ratio = self._ratio_tensor(model)
        lam = self._lam_t
        if lam is None or lam.device != ratio.device:
            lam = torch.tensor(self._lam, dtype=torch.float64, device=ratio.device)
        up, down = lam * _STEER_GAIN, (lam / _STEER_GAIN).clamp_min(s.get("floor", _LAM_FLOOR))
        self._lam_t = torch.where(ratio.isfinite(), torch.where(ratio > wanted, up, down), lam)
        s["done"] += 1
        return self._lam_t.to(ratio.dtype) if ratio.dtype != torch.float64 else self._lam_t

    @torch.no_grad()
    def _ratio_tensor(self, model: nn.Module) -> torch.Tensor:
        """:meth:`removed_kept_norm_ratio` as a 0-dim tensor on the model's device (NaN where undefined).
        Masked sums over host-known counts, not boolean indexing, which would wait for the device."""
        assert self._removed is not None
        norms = self._squared_norms(model, self._all_gathers, self._all_size, key=1).sqrt()
        removed = self._removed_weights.get(norms.device)
        if removed is None:  # moved once per plan and device, not every step
            removed = torch.cat(self._removed).to(norms.device, norms.dtype)
            self._removed_weights[norms.device] = removed
        n_removed = self._penalty_size  # removed channels, counted on the host
        n_kept = removed.numel() - n_removed
        if n_removed == 0 or n_kept == 0:
            return torch.full((), float("nan"), device=norms.device)
        removed_mean = (norms * removed).sum() / n_removed
        kept_mean = (norms * (1 - removed)).sum() / n_kept
        return removed_mean / torch.where(kept_mean > 0, kept_mean, float("nan"))

    def state_dict(self) -> dict[str, object]:
        """The penalised channels, ``lam`` and the steering state: what a checkpoint keeps, since
        ``set_plan`` would choose the channels again from whatever the weights are then."""
        return {"removed": self.removed_masks, "lam": self.lam, "steer": dict(self._steer or {}) or None}

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        removed = state["removed"]
        if removed is None:
            self.set_plan(None)
        else:
            self.set_removed(removed)  # type: ignore[arg-type]
        self.lam = float(state["lam"])  # type: ignore[arg-type]
        steer = state.get("steer")
        self._steer = dict(steer) if steer else None  # type: ignore[call-overload]

    # ------------------------------------------------------------------ diagnostics
    @torch.no_grad()
    def channel_norms(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """L2 norm over all coupled parameters of every channel, by layer name (float64 CPU vectors)."""
        sq = self._squared_norms(model, self._all_gathers, self._all_size, key=1)
        norms = sq.double().sqrt().cpu()
        out, offset = {}, 0
        for layer in self.structure.layers:
            out[layer.name] = norms[offset : offset + layer.channels]
            offset += layer.channels
        return out

    @torch.no_grad()
    def removed_kept_norm_ratio(self, model: nn.Module) -> float:
        """Mean channel norm of the removed channels / mean channel norm of the kept channels, pooled over
        all layers. Approaches 0 as the weights align with the plan; NaN without a plan, when the plan
        removes nothing, or when every kept channel is zero."""
        if self._removed is None:
            return float("nan")
        return float(self._ratio_tensor(model))

_STEER_GAIN = 1.1
"""Factor by which steering raises or lowers ``lam`` per step: 1.1^50 ~ 117, so an order of magnitude
takes ~24 steps, short next to an epoch."""
_STEER_REACH = 0.8
"""Share of the steered steps after which the path sits at the target."""
_LAM_FLOOR = 1e-6
"""Steering never lowers ``lam`` below this, so it can always grow back by factors."""


def _zero(model: nn.Module) -> torch.Tensor:
    """A 0-dim zero on the model's device (so ``loss + reg`` never mixes devices)."""
    param = next(model.parameters(), None)
    if param is None:
        return torch.zeros(())
    return torch.zeros((), device=param.device, dtype=param.dtype)
