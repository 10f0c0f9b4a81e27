"""Physical removal: cut a plan's dropped channels out of a deep copy of the model.

Each layer's group members say which positions of which module dimension carry which layer channel, in the
dense model's coordinates. So the dropped positions of every module dimension are collected over all layers
first and each dimension is then cut once with Torch-Pruning's pruning functions (``prune_conv_out_channels``
and friends, which also cut BN running statistics). Cutting per module rather than group by group means no
index needs remapping after an earlier cut (a concatenation's offsets shift as its inputs shrink) and no
second trace of the copy.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
import torch_pruning as tp
from torch import nn

from rlal.errors import RlalError
from rlal.structure.importance import Criterion, check_kept, select_channels
from rlal.structure.layers import PrunableLayer, Structure
from rlal.structure.masks import remove_inert_hooks
from rlal.structure.plan import Plan

_PRUNE = {
    ("conv", "out"): tp.prune_conv_out_channels,
    ("conv", "in"): tp.prune_conv_in_channels,
    ("depthwise", "out"): tp.prune_depthwise_conv_out_channels,
    ("linear", "out"): tp.prune_linear_out_channels,
    ("linear", "in"): tp.prune_linear_in_channels,
    ("batchnorm", "out"): tp.prune_batchnorm_out_channels,
    ("instancenorm", "out"): tp.prune_instancenorm_out_channels,
    ("prelu", "out"): tp.prune_prelu_out_channels,
}


def cut(
    structure: Structure,
    plan: Plan | None = None,
    *,
    criterion: Criterion = "l2",
    kept: Mapping[str, object] | None = None,
    scores: Mapping[str, torch.Tensor] | None = None,
    seed: int = 0,
) -> nn.Module:
    """A smaller, ordinary ``nn.Module``: a deep copy of ``structure.model`` with the channels ``plan``
    drops removed (each layer keeps its top ``keep`` channels by ``criterion`` on the current weights, or
    by precomputed ``scores``), or keeping exactly the channel indices in ``kept`` (layers not named keep
    everything). The input model is left unchanged; the copy keeps its train/eval flags.
    Its outputs equal those of the dense model under :class:`ChannelMasks` with the same selection.
    """
    if kept is None:
        if plan is None:
            raise RlalError("cut needs a plan or explicit kept channels")
        selection = select_channels(structure, plan, criterion, scores=scores, seed=seed)
    else:
        selection = check_kept(structure, kept)
        if plan is not None:
            for layer, k in zip(structure.layers, plan.keep, strict=True):
                if len(selection[layer.name]) != k:
                    count = len(selection[layer.name])
                    raise RlalError(f"layer {layer.name}: the plan keeps {k} channels, kept lists {count}")
    small = copy.deepcopy(structure.model)
    remove_inert_hooks(small)
    cut_in_place(small, structure.layers, selection)
    return small


def cut_in_place(
    model: nn.Module, layers: tuple[PrunableLayer, ...], kept: Mapping[str, torch.Tensor]
) -> None:
    """Remove from ``model`` (the dense architecture the layers were found on) every channel not in
    ``kept`` (sorted indices per layer name, all layers present)."""
    modules = dict(model.named_modules())
    dropped: dict[tuple[str, str, str], set[int]] = {}
    for layer in layers:
        keep = torch.zeros(layer.channels, dtype=torch.bool)
        keep[kept[layer.name]] = True
        if keep.all():
            continue
        for member in layer.members:
            local = torch.tensor(member.local)
            gone = local[~keep[torch.tensor(member.root)]]
            dropped.setdefault((member.module, member.kind, member.role), set()).update(gone.tolist())
    for (name, kind, role), positions in dropped.items():
        module = modules.get(name)
        if module is None:
            raise RlalError(f"module {name} of the plan's layers is missing from the model")
        if kind == "conv" and role == "in" and module.groups > 1:
            # A grouped conv's input positions index its weight (see GroupMember): position j is input
            # channel j of every group, which is how Torch-Pruning's function reads the channels it is given.
            size = module.in_channels // module.groups
            positions = {g * size + j for g in range(module.groups) for j in positions}
        _PRUNE[(kind, role)](module, sorted(positions))
