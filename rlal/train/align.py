"""The alignment regulariser: pull the channels the agent's plan would remove toward zero while training.

The joint method (paper, "alignment" term of the training objective) trains the weights *toward* the
structure the agent currently prefers: every channel that the selected plan drops is penalised by the L2
norm of everything it owns, summed over channels and layers (a group lasso, Yuan & Lin 2006, "Model
selection and estimation in regression with grouped variables")::

    R(theta) = lam * sum_layers sum_{c removed} || theta_c ||_2

where ``theta_c`` is *every* parameter slice that :func:`rlal.structure.cut` would delete with channel
``c``: the filter of each conv/linear layer writing it (and its bias), its depthwise filter (and bias), its
BN/InstanceNorm scale and shift, its PReLU slope, and the input slice of every conv/linear layer reading it.
The norm is not squared, so the penalty drives whole groups to exactly zero (like the lasso for scalars)
instead of merely shrinking them; once a removed channel's group is zero, cutting it changes nothing.

Usage in the joint loop::

    align = AlignmentRegularizer(structure)
    ...
    align.set_plan(plan, select_channels(structure, plan))
    align.lam = lambda_at(epoch, align_cfg)
    train_one_epoch(model, data.train, opt, sched, runtime, regularizer=align)
    log(removed_kept_ratio=align.removed_kept_norm_ratio(model))

The grouping is taken from each layer's :class:`~rlal.structure.GroupMember` list, exactly what
``importance.py`` sums for the ``"l2"`` criterion and what ``surgery.py`` cuts, plus the biases (a removed
channel whose BN shift is not zero still feeds a constant into the next layer, so cutting it would not be
free). Everything is precomputed as index tensors; a step costs a few ``index_select``/``index_add`` calls
per coupled tensor and one ``sqrt`` over all removed channels, never a Python loop over channels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from rlal.config import AlignConfig
from rlal.errors import RlalError
from rlal.structure.importance import check_kept, select_channels
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

    def __init__(self, structure: Structure, lam: float = AlignConfig.lam) -> None:
        self.structure = structure
        self.lam = float(lam)
        params = dict(structure.model.named_parameters())
        modules = dict(structure.model.named_modules())
        # per layer: the parameter slices carrying its channels (weights as importance.py reads them, plus
        # the biases of "out" members, which surgery.cut removes too)
        self._slices: list[list[_Slice]] = []
        for layer in structure.layers:
            slices = []
            for member in layer.members:
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

    # ------------------------------------------------------------------ plan
    def set_plan(self, plan: Plan | None, kept: Mapping[str, object] | None = None) -> None:
        """Penalise, in every layer, the channels not in ``kept`` (sorted indices by layer name, as from
        :func:`~rlal.structure.select_channels`; layers not named keep everything). Without ``kept`` the
        channels are chosen by ``select_channels(structure, plan)`` on the current weights (L2 criterion).
        ``set_plan(None)`` clears the plan (penalty 0). Invalid selections raise :class:`RlalError`."""
        if plan is None and kept is None:
            self._removed = None
            self._penalty_gathers, self._penalty_size = [], 0
            self._device_cache.clear()
            return
        if kept is None:
            selection = select_channels(self.structure, plan)
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

    @property
    def removed_masks(self) -> list[torch.Tensor] | None:
        """The penalised channels as one bool mask per layer (None without a plan); what a checkpoint keeps,
        since ``set_plan`` would choose the channels again from whatever the weights are then."""
        return None if self._removed is None else [m.clone() for m in self._removed]

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
        """``lam * penalty(model)``: the :data:`~rlal.train.epoch.Regularizer` seam."""
        if self.lam == 0 or self._penalty_size == 0:
            return _zero(model)
        return self.lam * self.penalty(model)

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
        norms = torch.cat(list(self.channel_norms(model).values()))
        removed = torch.cat(self._removed)
        if not removed.any() or removed.all():
            return float("nan")
        kept_mean = norms[~removed].mean().item()
        if kept_mean == 0:
            return float("nan")
        return norms[removed].mean().item() / kept_mean


def _zero(model: nn.Module) -> torch.Tensor:
    """A 0-dim zero on the model's device (so ``loss + reg`` never mixes devices)."""
    param = next(model.parameters(), None)
    if param is None:
        return torch.zeros(())
    return torch.zeros((), device=param.device, dtype=param.dtype)
