"""Prunable layers: the coupled channel groups of any model, found with Torch-Pruning's ``DependencyGraph``.

A **layer** is one Torch-Pruning group: every tensor dimension that must lose the same channels together
(a conv's output channels, the BN after it, a depthwise conv and its BN, the next conv's input channels, the
slice of a concatenation, a linear layer fed by them...). It is named after its first conv or linear layer
in forward order (``layer2.0.conv1``) and layers are ordered input -> output. Zoo models and a user's own
``nn.Module`` go through the same code; nothing here knows an architecture.

Residual policy (``policy``):

* ``"internal"`` (default): a group whose channels are written by more than one conv/linear layer, i.e.
  tied together by a residual addition (or any element-wise op joining two layers), stays whole. What is
  left are the channels inside blocks: ResNet basic/bottleneck inner convs, MobileNetV2 expansion channels,
  plain conv stacks (VGG), and block outputs that no addition touches.
* ``"all"``: such groups are prunable too; all the convs added together share one keep count.

Never prunable, whatever the policy (listed in ``skipped`` with the reason): the classifier output and any
channels that reach the model output, grouped (non-depthwise) and transposed convs, groups containing a
normalisation across channels (GroupNorm, LayerNorm) or another module Torch-Pruning cannot cut exactly,
channels that come straight from the model input, single-channel groups, and conv/linear layers the
forward pass never calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch_pruning as tp
from torch import nn
from torch_pruning import ops

from rlal.errors import RlalError
from rlal.structure.trace import (
    COUNTED_TYPES,
    Census,
    build_graph,
    check_input_shape,
    example_input,
    model_label,
    take_census,
)

if TYPE_CHECKING:
    from rlal.structure.cost import CostModel

Policy = Literal["internal", "all"]
POLICIES: tuple[str, ...] = ("internal", "all")

MemberKind = Literal["conv", "depthwise", "linear", "batchnorm", "instancenorm", "prelu"]
Role = Literal["out", "in"]

PER_CHANNEL_KINDS: tuple[str, ...] = ("depthwise", "batchnorm", "instancenorm", "prelu")
"""Kinds whose output channel ``c`` depends only on input channel ``c``."""

# Torch-Pruning's pruning function on a group member -> what we call that member. A function missing here
# (LayerNorm, GroupNorm, embeddings, attention, LSTMs) makes the whole group unprunable.
_HANDLERS: dict[object, tuple[MemberKind, Role]] = {
    tp.prune_conv_out_channels: ("conv", "out"),
    tp.prune_conv_in_channels: ("conv", "in"),
    tp.prune_depthwise_conv_out_channels: ("depthwise", "out"),  # the same function prunes its input
    tp.prune_linear_out_channels: ("linear", "out"),
    tp.prune_linear_in_channels: ("linear", "in"),
    tp.prune_batchnorm_out_channels: ("batchnorm", "out"),
    tp.prune_instancenorm_out_channels: ("instancenorm", "out"),
    tp.prune_prelu_out_channels: ("prelu", "out"),
}


@dataclass(frozen=True)
class GroupMember:
    """One module dimension coupled to a layer's channels.

    ``role`` ``"out"``: the module's output channels (conv/linear output, a depthwise conv's channels, a
    BN); ``"in"``: a conv/linear layer's input channels. ``local[i]`` is a channel position in that
    dimension and ``root[i]`` the layer channel it belongs to (a flattened conv output feeding a linear
    layer maps one layer channel to several input features). ``mask_output`` is False when every consumer
    of the module's output is a per-channel member of the same layer (a conv followed by its BN), which
    masks those channels itself.
    """

    module: str
    kind: MemberKind
    role: Role
    local: tuple[int, ...]
    root: tuple[int, ...]
    mask_output: bool = True


@dataclass(frozen=True)
class PrunableLayer:
    """One prunable channel group and its static features (taken from its first conv/linear layer)."""

    name: str
    """Qualified name of the group's first conv/linear layer in forward order, e.g. ``layer2.0.conv1``."""
    index: int
    """Position among the prunable layers, input -> output."""
    channels: int
    """Channels of the group (the first conv's output channels): the most a plan can keep."""
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    in_channels: int
    macs: int
    """Dense MACs of every conv/linear layer whose output channels belong to the group (the convs that write
    the channels plus depthwise convs on them), for one example at the traced input shape."""
    depthwise: bool
    """Whether a depthwise conv is coupled to the group (MobileNetV2 expansion channels)."""
    residual: bool
    """Whether several layers write these channels (a residual addition); only with policy ``"all"``."""
    modules: tuple[str, ...]
    """Every module with a dimension in the group, in forward order."""
    members: tuple[GroupMember, ...] = field(repr=False)

    @property
    def out_channels(self) -> int:
        """The first conv's output channels (equal to :attr:`channels`)."""
        return self.channels


@dataclass(frozen=True)
class SkippedGroup:
    """A channel group (or an unused conv/linear layer) that cannot be pruned, and why."""

    module: str
    """The group's first conv/linear layer in forward order (or the module concerned)."""
    reason: str
    modules: tuple[str, ...] = ()


class Structure:
    """A model's prunable layers, built once from the model and an example input shape.

    Holds the model (not a copy: masks, importance and surgery act on its current weights), the layers in
    order, the skipped groups, and the per-module facts the cost model needs. Build it with
    :func:`find_layers`.
    """

    def __init__(
        self,
        model: nn.Module,
        input_shape: tuple[int, ...],
        policy: Policy,
        layers: tuple[PrunableLayer, ...],
        skipped: tuple[SkippedGroup, ...],
        census: Census,
    ) -> None:
        self.model = model
        self.input_shape = input_shape
        self.policy = policy
        self.layers = layers
        self.skipped = skipped
        self.census = census
        self._index = {layer.name: layer.index for layer in layers}

    def __len__(self) -> int:
        return len(self.layers)

    def __repr__(self) -> str:
        return (
            f"Structure({model_label(self.model)}, input_shape={self.input_shape}, policy={self.policy!r}, "
            f"{len(self.layers)} layers, {len(self.skipped)} skipped)"
        )

    @property
    def names(self) -> tuple[str, ...]:
        """Layer names, input -> output."""
        return tuple(layer.name for layer in self.layers)

    @property
    def channels(self) -> np.ndarray:
        """Channels of each layer (int64, length L): the dense keep counts."""
        return np.array([layer.channels for layer in self.layers], dtype=np.int64)

    def layer(self, name: str) -> PrunableLayer:
        """The layer called ``name``; an unknown name raises :class:`RlalError`."""
        return self.layers[self.index(name)]

    def index(self, name: str) -> int:
        """Position of layer ``name``; an unknown name raises :class:`RlalError`."""
        try:
            return self._index[name]
        except (KeyError, TypeError):
            raise RlalError(
                f"unknown layer {name!r} (not a prunable layer of {model_label(self.model)})"
            ) from None

    @cached_property
    def cost(self) -> CostModel:
        """The analytic cost model of this structure (built on first use)."""
        from rlal.structure.cost import CostModel  # cost.py needs this module's types

        return CostModel(self)

    def describe(self) -> dict[str, object]:
        """Layers and skipped groups as plain data (see :func:`describe_layers`)."""
        return {
            "policy": self.policy,
            "input_shape": list(self.input_shape),
            "dense_macs": self.cost.dense_macs,
            "dense_params": self.cost.dense_params,
            "prunable_layers": [
                {"name": layer.name, "channels": layer.channels, "macs": layer.macs} for layer in self.layers
            ],
            "skipped": [{"module": s.module, "reason": s.reason} for s in self.skipped],
        }


def find_layers(model: nn.Module, input_shape: tuple[int, ...], *, policy: Policy = "internal") -> Structure:
    """Trace ``model`` on one example of ``input_shape`` (no batch dimension, e.g. ``(3, 32, 32)``) and
    return its prunable layers under the residual ``policy`` (see the module docstring).

    The model is left unchanged (its train/eval flags are restored). Raises :class:`RlalError` for an
    unknown policy, a bad input shape, a forward that fails or depends on the input values, a model
    Torch-Pruning cannot trace, or a model without any prunable layer.
    """
    if policy not in POLICIES:
        raise RlalError(f"residual policy must be one of {POLICIES}, got {policy!r}")
    shape = check_input_shape(input_shape)
    if not isinstance(model, nn.Module):
        raise RlalError(f"expected a torch.nn.Module, got {type(model).__name__}")
    x = example_input(model, shape)
    census = take_census(model, x)
    graph, output_nodes = build_graph(model, x)
    names = {module: name for name, module in model.named_modules()}

    layers: list[PrunableLayer] = []
    skipped: list[SkippedGroup] = []
    try:
        groups = list(graph.get_all_groups())
    except Exception as exc:  # Torch-Pruning's own failure on an odd graph
        detail = (str(exc).strip().splitlines() or [""])[0][:200]
        raise RlalError(
            f"Torch-Pruning cannot group the channels of {model_label(model)}: {type(exc).__name__}: {detail}"
        ) from None
    for group in groups:
        result = _classify(group, graph, output_nodes, names, census, policy)
        (layers if isinstance(result, PrunableLayer) else skipped).append(result)
    for name, module in model.named_modules():
        if isinstance(module, COUNTED_TYPES) and name not in census.order:
            skipped.append(SkippedGroup(name, "not called by the forward pass", (name,)))

    def position(name: str) -> int:
        return census.order.get(name, len(census.order))

    layers.sort(key=lambda layer: position(layer.name))
    skipped.sort(key=lambda s: position(s.module))
    if not layers:
        reasons = "; ".join(f"{s.module}: {s.reason}" for s in skipped) or "no conv or linear layer"
        raise RlalError(f"{model_label(model)} has no prunable layer ({reasons})")
    layers = [replace(layer, index=i) for i, layer in enumerate(layers)]
    return Structure(model, shape, policy, tuple(layers), tuple(skipped), census)


def describe_layers(
    model: nn.Module, input_shape: tuple[int, ...], policy: Policy = "internal"
) -> dict[str, object]:
    """For ``rlal info``: ``{"prunable_layers": [{"name", "channels", "macs"}, ...], "skipped": [{"module",
    "reason"}, ...]}`` plus ``policy``, ``input_shape``, ``dense_macs`` and ``dense_params``.

    A layer's ``macs`` are the dense MACs of the convs whose output channels it owns: the conv(s) writing
    the channels and any depthwise conv on them (not the next conv that reads them).
    """
    return find_layers(model, input_shape, policy=policy).describe()


def conv_or_linear_macs(module: nn.Module, positions: int) -> int:
    """Dense MACs of one conv/linear layer with ``positions`` output positions per channel."""
    if isinstance(module, nn.Linear):
        return positions * module.out_features * module.in_features
    kernel = math.prod(module.kernel_size)
    return positions * module.out_channels * (module.in_channels // module.groups) * kernel


def _classify(
    group: tp.Group,
    graph: tp.DependencyGraph,
    output_nodes: set[object],
    names: dict[object, str],
    census: Census,
    policy: Policy,
) -> PrunableLayer | SkippedGroup:
    """Turn one Torch-Pruning group into a prunable layer, or into a skipped entry with its reason."""
    raw: list[tuple[nn.Module, str, MemberKind, Role, tuple[int, ...], tuple[int, ...]]] = []
    problems: list[str] = []
    reaches_output = False
    for item in group:
        dep = item.dep
        module = dep.target.module
        if isinstance(module, ops._OutputOp) or (
            dep.target in output_nodes and graph.is_out_channel_pruning_fn(dep.handler)
        ):
            reaches_output = True  # these channels are (part of) what the model returns
        if isinstance(module, ops._OutputOp):
            continue
        if isinstance(module, nn.Parameter):
            problems.append(
                f"coupled to a bare parameter ({graph._param_to_name.get(module, '?')}), not supported"
            )
            continue
        name = names.get(module)
        if name is None:  # Torch-Pruning's stand-in for a functional op: add, cat, relu, flatten...
            continue
        kind_role = _HANDLERS.get(dep.handler)
        if kind_role is None:
            problems.append(f"{type(module).__name__} {name} in the group is not supported")
            continue
        kind, role = kind_role
        if kind == "conv" and getattr(module, "transposed", False):
            problems.append(f"transposed conv {name} not supported")
            continue
        if kind == "conv" and module.groups > 1:
            problems.append(f"grouped conv not supported ({name}, groups={module.groups})")
            continue
        root = tuple(item.root_idxs)
        if any(r is None for r in root):
            problems.append(f"channel mapping into {name} unknown")
            continue
        raw.append((module, name, kind, role, tuple(int(i) for i in item.idxs), tuple(int(r) for r in root)))

    def position(name: str) -> int:
        return census.order.get(name, len(census.order))

    raw.sort(key=lambda r: position(r[1]))
    producers = [r for r in raw if r[3] == "out" and r[2] in ("conv", "linear")]
    modules = tuple(dict.fromkeys(r[1] for r in raw))
    root_module = names.get(group[0].dep.target.module, "?")
    first = producers[0][1] if producers else root_module

    def skip(reason: str) -> SkippedGroup:
        return SkippedGroup(first, reason, modules)

    if reaches_output:
        if any(r[2] == "linear" for r in producers):
            return skip("classifier output (never pruned)")
        return skip("feeds the model output (never pruned)")
    if problems:
        return skip(problems[0])
    if not producers:
        return skip("channels come from the model input")
    channels = len(group[0].idxs)
    if channels < 2:
        return skip("a single channel")
    residual = len(producers) > 1
    if residual and policy == "internal":
        return skip(f"tied to a residual addition shared by {len(producers)} layers (policy=internal)")

    members = _members(raw, graph, names, census)
    module = producers[0][0]
    linear = isinstance(module, nn.Linear)
    return PrunableLayer(
        name=first,
        index=-1,  # set once all layers are sorted
        channels=channels,
        kernel_size=(1,) if linear else tuple(module.kernel_size),
        stride=(1,) if linear else tuple(module.stride),
        in_channels=module.in_features if linear else module.in_channels,
        macs=sum(
            conv_or_linear_macs(m, census.positions.get(n, 0))
            for m, n, kind, role, _, _ in raw
            if role == "out" and kind in ("conv", "depthwise", "linear")
        ),
        depthwise=any(r[2] == "depthwise" for r in raw),
        residual=residual,
        modules=modules,
        members=members,
    )


def _members(
    raw: list[tuple[nn.Module, str, MemberKind, Role, tuple[int, ...], tuple[int, ...]]],
    graph: tp.DependencyGraph,
    names: dict[object, str],
    census: Census,
) -> tuple[GroupMember, ...]:
    """Group members with ``mask_output`` decided: an output needs no mask when every consumer is a
    per-channel member of this layer on the same channels (called once), since that consumer, or one after
    it, zeroes the dropped channels anyway. Halves the masking work of conv -> BN chains."""
    per_channel = {name: local for _, name, kind, role, local, _ in raw if kind in PER_CHANNEL_KINDS}

    def covered(module: nn.Module, name: str, local: tuple[int, ...]) -> bool:
        node = graph.module2node.get(module)
        if node is None or not node.outputs or census.calls.get(name) != 1:
            return False
        for consumer in node.outputs:
            consumer_name = names.get(consumer.module)
            if consumer_name is None or per_channel.get(consumer_name) != local:
                return False
            if census.calls.get(consumer_name) != 1:
                return False
        return True

    return tuple(
        GroupMember(
            module=name,
            kind=kind,
            role=role,
            local=local,
            root=root,
            mask_output=role == "out" and not covered(module, name, local),
        )
        for module, name, kind, role, local, root in raw
    )
