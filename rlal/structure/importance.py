"""Which channels a layer keeps: score every channel of a group, keep the top-k.

Criteria (``criterion=``):

* ``"l2"`` (default): the L2 norm of everything the channel owns across the whole group: its filter in every
  conv/linear layer writing it, the matching input slice of every layer reading it, its depthwise filter and
  its BN scale. This is Torch-Pruning's ``GroupMagnitudeImportance(p=2)`` ranking (which takes the mean of
  the same squared terms), except that depthwise filters count too.
* ``"l1"``: the same with absolute values (p = 1).
* ``"bn_scale"``: ``|gamma|`` of the group's BN layers (network slimming); a group without BN is an error.
* ``"random"``: uniform scores from a generator seeded with ``seed`` and the layer name (for ablations).

Scores are computed on the structure's model as it is now, so call again after training steps. Ties keep
the lower channel index, so the selection is deterministic.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from typing import Literal

import torch
from torch import nn

from rlal.errors import RlalError
from rlal.structure.layers import PrunableLayer, Structure
from rlal.structure.plan import Plan, check_plan

Criterion = Literal["l2", "l1", "bn_scale", "random"]
CRITERIA: tuple[str, ...] = ("l2", "l1", "bn_scale", "random")


def channel_importance(
    structure: Structure, criterion: Criterion = "l2", *, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Score of every channel of every layer (a float64 CPU vector of length ``channels`` per layer name);
    higher means more important."""
    score = _SCORERS.get(criterion)
    if score is None:
        raise RlalError(f"unknown channel criterion {criterion!r} (valid: {', '.join(CRITERIA)})")
    modules = dict(structure.model.named_modules())
    with torch.no_grad():
        return {layer.name: score(layer, modules, seed) for layer in structure.layers}


def channel_order(scores: torch.Tensor) -> torch.Tensor:
    """Channel indices from most to least important (ties: lower index first)."""
    return torch.sort(scores, descending=True, stable=True).indices


def select_channels(
    structure: Structure,
    plan: Plan,
    criterion: Criterion = "l2",
    *,
    scores: Mapping[str, torch.Tensor] | None = None,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """The channels each layer keeps under ``plan``: the top ``keep`` by ``criterion`` (or by precomputed
    ``scores`` from :func:`channel_importance`), as sorted int64 CPU index vectors by layer name."""
    check_plan(structure, plan)
    if scores is None:
        scores = channel_importance(structure, criterion, seed=seed)
    kept = {}
    for layer, k in zip(structure.layers, plan.keep, strict=True):
        layer_scores = scores.get(layer.name)
        if layer_scores is None or layer_scores.shape != (layer.channels,):
            raise RlalError(f"scores for layer {layer.name} must have {layer.channels} entries")
        kept[layer.name] = channel_order(layer_scores)[:k].sort().values
    return kept


def _magnitude(p: int, layer: PrunableLayer, modules: Mapping[str, nn.Module]) -> torch.Tensor:
    """Sum over the group's coupled parameters of ``|w| ** p`` per channel (the Lp norm, to the p)."""
    total = torch.zeros(layer.channels, dtype=torch.float64)
    for member in layer.members:
        module = modules[member.module]
        weight = getattr(module, "weight", None)
        if weight is None:
            continue
        w = weight.detach()
        local = torch.tensor(member.local, device=w.device)
        if member.kind in ("conv", "linear") and member.role == "in":
            w = w.index_select(1, local).transpose(0, 1)  # (in, out, *kernel)
        else:  # a conv/linear filter, a depthwise filter, a BN/InstanceNorm/PReLU scale
            w = w.index_select(0, local)
        terms = w.reshape(len(member.local), -1).abs().pow(p).sum(1)
        total.index_add_(0, torch.tensor(member.root), terms.to("cpu", torch.float64))
    return total


def _l2(layer: PrunableLayer, modules: Mapping[str, nn.Module], seed: int) -> torch.Tensor:
    return _magnitude(2, layer, modules).sqrt()


def _l1(layer: PrunableLayer, modules: Mapping[str, nn.Module], seed: int) -> torch.Tensor:
    return _magnitude(1, layer, modules)


def _bn_scale(layer: PrunableLayer, modules: Mapping[str, nn.Module], seed: int) -> torch.Tensor:
    total = torch.zeros(layer.channels, dtype=torch.float64)
    found = False
    for member in layer.members:
        module = modules[member.module]
        if member.kind == "batchnorm" and getattr(module, "weight", None) is not None:
            gamma = module.weight.detach()[list(member.local)].abs()
            total.index_add_(0, torch.tensor(member.root), gamma.to("cpu", torch.float64))
            found = True
    if not found:
        raise RlalError(
            f"criterion 'bn_scale' needs a BatchNorm with a scale in layer {layer.name}, found none"
        )
    return total


def _random(layer: PrunableLayer, modules: Mapping[str, nn.Module], seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(layer.name.encode()))
    return torch.rand(layer.channels, generator=generator, dtype=torch.float64)


_SCORERS: dict[str, Callable[[PrunableLayer, Mapping[str, nn.Module], int], torch.Tensor]] = {
    "l2": _l2,
    "l1": _l1,
    "bn_scale": _bn_scale,
    "random": _random,
}


def check_kept(structure: Structure, kept: Mapping[str, object]) -> dict[str, torch.Tensor]:
    """Explicit kept channel indices by layer name -> a sorted int64 CPU vector for every layer (layers not
    named keep all channels). Unknown names, empty selections, repeats or indices out of range raise
    :class:`RlalError` naming the layer."""
    if not isinstance(kept, Mapping):
        raise RlalError(f"kept channels must be a mapping by layer name, got {type(kept).__name__}")
    for name in kept:
        structure.index(name)  # raises for an unknown name
    result = {}
    for layer in structure.layers:
        if layer.name not in kept:
            result[layer.name] = torch.arange(layer.channels)
            continue
        try:
            idx = torch.as_tensor(kept[layer.name]).reshape(-1)
        except (TypeError, ValueError, RuntimeError):
            raise RlalError(f"kept channels for layer {layer.name} must be a sequence of integers") from None
        if idx.is_floating_point() or idx.dtype == torch.bool:
            raise RlalError(f"kept channels for layer {layer.name} must be integers")
        idx = idx.to("cpu", torch.int64)
        if idx.numel() == 0:
            raise RlalError(f"layer {layer.name} keeps no channel (at least one must stay)")
        if idx.min() < 0 or idx.max() >= layer.channels:
            raise RlalError(f"kept channels for layer {layer.name} must lie in [0, {layer.channels})")
        if idx.unique().numel() != idx.numel():
            raise RlalError(f"kept channels for layer {layer.name} repeat an index")
        result[layer.name] = idx.sort().values
    return result
