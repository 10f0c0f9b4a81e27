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

**Grouped convolutions** (``groups`` > 1, not depthwise) are pruned as Torch-Pruning prunes them: the same
positions in every group go together, so each group keeps the same number of channels and the conv keeps
its ``groups``. A layer whose channels enter or leave a grouped conv with G groups therefore decides on
sets of G channels (``PrunableLayer.tied``): its ``channels`` counts these sets, and a keep count of k
keeps k * G channels. Whole groups are never removed.

Never prunable, whatever the policy (listed in ``skipped`` with the reason): the classifier output and any
channels that reach the model output; channels that pass through an operation in ``forward`` that splits,
slices, pads, regroups or mixes the channel dimension (``torch.split``/``chunk``, ``x[:, :16]``, a
ShuffleNet channel shuffle ``view(n, g, c // g, h, w).transpose(1, 2)``, ``pixel_shuffle``, the zero
padding of an "option A" ResNet shortcut, a mean or softmax over the channels...), which a cut cannot
follow; a grouped conv whose groups mix channels of several layers; transposed convs; groups containing a
normalisation across channels (GroupNorm, LayerNorm) or another module Torch-Pruning cannot cut exactly;
channels that come straight from the model input; single-channel groups; and conv/linear layers the
forward pass never calls.

**The masked-vs-cut contract is checked up front.** Before returning, :func:`find_layers` cuts a copy of the
model (random weights, random keeps in every layer) and compares it with the masked dense copy (see
:mod:`rlal.structure.contract`). A layer whose cut fails or computes something else than its masked
sub-network is moved to ``skipped`` with the failure as its reason, so a model is refused or narrowed at
once, never after hours of training, and never cut into a model that is not the scored sub-network.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch_pruning as tp
from torch import nn
from torch_pruning import ops

from rlal.errors import RlalError
from rlal.structure.grouped import MemberKind, Raw, Role, tie_grouped
from rlal.structure.trace import (
    COUNTED_TYPES,
    Census,
    Trace,
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
    """Channels of the group (the first conv's output channels): the most a plan can keep. In a layer tied
    by a grouped conv (``tied`` > 1) a channel is a set of ``tied`` real channels, one per group."""
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
    tied: int = 1
    """Real channels per channel of the layer: 1, or the groups of the grouped conv(s) the channels enter
    or leave (the same position in every group is kept or removed together)."""

    @property
    def out_channels(self) -> int:
        """The first conv's output channels (:attr:`channels` times :attr:`tied`)."""
        return self.channels * self.tied


@dataclass(frozen=True)
class SkippedGroup:
    """A channel group (or an unused conv/linear layer) that cannot be pruned, and why."""

    module: str
    """The group's first conv/linear layer in forward order (or the module concerned)."""
    reason: str
    modules: tuple[str, ...] = ()
    writers: tuple[str, ...] = ()
    """The conv/linear layers whose output channels are the group's."""
    macs: int = 0
    """Dense MACs (one example) of the writers that read no prunable layer either: MACs no plan can
    reduce because of this skip (see :meth:`Structure.mac_owners`)."""


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

    @cached_property
    def mac_owners(self) -> dict[str, tuple[Literal["layer", "skipped"], int]]:
        """Where each called conv/linear module's MACs are listed (``widths.csv``, :meth:`describe`), so
        that every module counts once: ``("layer", i)`` for the prunable layer writing its outputs, else the
        first prunable layer reading its inputs (both sides shrink with it); ``("skipped", j)`` for the
        skipped group writing its outputs (no plan changes its MACs). Modules in neither are absent."""
        return _mac_owners(self.layers, self.skipped)

    def describe(self) -> dict[str, object]:
        """Layers and skipped groups as plain data (see :func:`describe_layers`)."""
        dense = self.cost.dense_macs

        def share(macs: int) -> float:
            return macs / dense if dense else 0.0

        layers = []
        for layer in self.layers:
            entry: dict[str, object] = {"name": layer.name, "channels": layer.out_channels}
            entry["macs"] = layer.macs
            if layer.tied > 1:
                entry["tied"] = layer.tied
            layers.append(entry)
        skipped_macs = sum(s.macs for s in self.skipped)
        return {
            "policy": self.policy,
            "input_shape": list(self.input_shape),
            "dense_macs": dense,
            "dense_params": self.cost.dense_params,
            "prunable_layers": layers,
            "skipped": [
                {"module": s.module, "reason": s.reason, "macs": s.macs, "macs_share": share(s.macs)}
                for s in self.skipped
            ],
            "skipped_macs_share": share(skipped_macs),
        }


def find_layers(model: nn.Module, input_shape: tuple[int, ...], *, policy: Policy = "internal") -> Structure:
    """Trace ``model`` on one example of ``input_shape`` (no batch dimension, e.g. ``(3, 32, 32)``) and
    return its prunable layers under the residual ``policy`` (see the module docstring).

    Every layer returned has passed the masked-vs-cut check; the others are in ``skipped`` with their
    reason. The model is left unchanged (its train/eval flags are restored). Raises :class:`RlalError` for
    an unknown policy, a bad input shape, a forward that fails or depends on the input values, a model
    Torch-Pruning cannot trace, or a model without any prunable layer (the message lists every skipped
    layer with its reason).
    """
    if policy not in POLICIES:
        raise RlalError(f"residual policy must be one of {POLICIES}, got {policy!r}")
    shape = check_input_shape(input_shape)
    if not isinstance(model, nn.Module):
        raise RlalError(f"expected a torch.nn.Module, got {type(model).__name__}")
    x = example_input(model, shape)
    census = take_census(model, x)
    trace = build_graph(model, x)
    names = {module: name for name, module in model.named_modules()}

    layers: list[PrunableLayer] = []
    skipped: list[SkippedGroup] = []
    try:
        groups = list(trace.graph.get_all_groups())
    except Exception as exc:  # Torch-Pruning's own failure on an odd graph
        detail = (str(exc).strip().splitlines() or [""])[0][:200]
        raise RlalError(
            f"Torch-Pruning cannot group the channels of {model_label(model)}: {type(exc).__name__}: {detail}"
        ) from None
    for group in groups:
        result = _classify(group, trace, names, census, policy)
        (layers if isinstance(result, PrunableLayer) else skipped).append(result)
    for name, module in model.named_modules():
        if isinstance(module, COUNTED_TYPES) and name not in census.order:
            skipped.append(SkippedGroup(name, "not called by the forward pass", (name,), (name,)))

    def position(name: str) -> int:
        return census.order.get(name, len(census.order))

    layers.sort(key=lambda layer: position(layer.name))
    layers, failed = _keep_the_contract(Structure(model, shape, policy, _indexed(layers), (), census))
    skipped = sorted([*skipped, *failed], key=lambda s: position(s.module))
    if not layers:
        reasons = "; ".join(f"{s.module}: {s.reason}" for s in skipped) or "no conv or linear layer"
        raise RlalError(f"{model_label(model)} has no prunable layer ({reasons})")
    skipped = _with_macs(model, layers, skipped, census)
    return Structure(model, shape, policy, layers, tuple(skipped), census)


def _indexed(layers: Sequence[PrunableLayer]) -> tuple[PrunableLayer, ...]:
    return tuple(replace(layer, index=i) for i, layer in enumerate(layers))


def _keep_the_contract(candidates: Structure) -> tuple[tuple[PrunableLayer, ...], list[SkippedGroup]]:
    """The candidate layers whose cut computes their masked sub-network, and the others as skipped groups
    with the failure as the reason (see :mod:`rlal.structure.contract`)."""
    from rlal.structure.contract import failing_layers  # contract.py cuts and masks, which import this

    if not candidates.layers:
        return (), []
    failures = failing_layers(candidates)
    kept = [layer for layer in candidates.layers if layer.name not in failures]
    failed = [
        SkippedGroup(layer.name, failures[layer.name], layer.modules, _writers(layer))
        for layer in candidates.layers
        if layer.name in failures
    ]
    return _indexed(kept), failed


def _with_macs(
    model: nn.Module, layers: Sequence[PrunableLayer], skipped: list[SkippedGroup], census: Census
) -> list[SkippedGroup]:
    """The skipped groups with the dense MACs of the modules listed under them (see
    :meth:`Structure.mac_owners`)."""
    modules = dict(model.named_modules())
    owned = [0] * len(skipped)
    for name, (kind, j) in _mac_owners(layers, skipped).items():
        if kind == "skipped":
            owned[j] += conv_or_linear_macs(modules[name], census.positions.get(name, 0))
    return [replace(group, macs=macs) for group, macs in zip(skipped, owned, strict=True)]


def describe_layers(
    model: nn.Module, input_shape: tuple[int, ...], policy: Policy = "internal"
) -> dict[str, object]:
    """For ``rlal info``: ``{"prunable_layers": [{"name", "channels", "macs"}, ...], "skipped": [{"module",
    "reason", "macs", "macs_share"}, ...]}`` plus ``policy``, ``input_shape``, ``dense_macs``,
    ``dense_params`` and ``skipped_macs_share``.

    A layer's ``macs`` are the dense MACs of the convs whose output channels it owns: the conv(s) writing
    the channels and any depthwise conv on them (not the next conv that reads them); ``channels`` are real
    channels, and a layer tied by a grouped conv adds ``tied`` (channels kept or removed together). A
    skipped group's ``macs`` are those of the convs writing its channels that read no prunable layer either:
    MACs no plan can reduce; ``macs_share`` is their fraction of ``dense_macs``.
    """
    return find_layers(model, input_shape, policy=policy).describe()


def describe_lines(info: dict[str, object]) -> list[str]:
    """The text form of :func:`describe_layers`'s result, one line per layer and skipped group (for
    ``rlal info``)."""
    layers = info["prunable_layers"]
    skipped = info["skipped"]
    lines = [f"{len(layers)} prunable layers (policy {info['policy']}); a keep ratio counts channels:"]
    for layer in layers:
        tied = f" (tied in sets of {layer['tied']})" if "tied" in layer else ""
        macs = layer["macs"] / 1e6
        lines.append(f"  {layer['name']:<32} {layer['channels']:>5} channels  {macs:8.2f} M MACs{tied}")
    if skipped:
        lines.append(f"{len(skipped)} skipped, holding {info['skipped_macs_share']:.1%} of the MACs "
                     "(MACs no plan can reduce):")
    for item in skipped:
        lines.append(f"  skipped {item['module']} ({item['macs_share']:.1%} of the MACs): {item['reason']}")
    return lines


def conv_or_linear_macs(module: nn.Module, positions: int) -> int:
    """Dense MACs of one conv/linear layer with ``positions`` output positions per channel."""
    if isinstance(module, nn.Linear):
        return positions * module.out_features * module.in_features
    kernel = math.prod(module.kernel_size)
    return positions * module.out_channels * (module.in_channels // module.groups) * kernel


def _writers(layer: PrunableLayer) -> tuple[str, ...]:
    kinds = ("conv", "depthwise", "linear")
    return tuple(m.module for m in layer.members if m.role == "out" and m.kind in kinds)


def _mac_owners(
    layers: Sequence[PrunableLayer], skipped: Sequence[SkippedGroup]
) -> dict[str, tuple[Literal["layer", "skipped"], int]]:
    """See :meth:`Structure.mac_owners`."""
    owners: dict[str, tuple[Literal["layer", "skipped"], int]] = {}
    for i, layer in enumerate(layers):
        for name in _writers(layer):
            owners.setdefault(name, ("layer", i))
    for i, layer in enumerate(layers):  # input -> output: the first layer reading a module lists it
        for m in layer.members:
            if m.role == "in" and m.kind in ("conv", "linear"):
                owners.setdefault(m.module, ("layer", i))
    for j, group in enumerate(skipped):
        for name in group.writers:
            owners.setdefault(name, ("skipped", j))
    return owners


def _classify(
    group: tp.Group, trace: Trace, names: dict[object, str], census: Census, policy: Policy
) -> PrunableLayer | SkippedGroup:
    """Turn one Torch-Pruning group into a prunable layer, or into a skipped entry with its reason."""
    graph = trace.graph
    raw: list[Raw] = []
    problems: list[str] = []
    passed: set[object] = set()  # autograd nodes of the forward the group's channels pass through
    writers: list[str] = []
    reaches_output = False
    additive = False
    for item in group:
        dep = item.dep
        module = dep.target.module
        if isinstance(module, ops._OutputOp) or (
            dep.target in trace.output_nodes and graph.is_out_channel_pruning_fn(dep.handler)
        ):
            reaches_output = True  # these channels are (part of) what the model returns
        passed.add(dep.target.grad_fn)
        additive = additive or _adds(dep.target)
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
        if isinstance(module, COUNTED_TYPES) and graph.is_out_channel_pruning_fn(dep.handler):
            writers.append(name)
        kind_role = _HANDLERS.get(dep.handler)
        if kind_role is None:
            problems.append(f"{type(module).__name__} {name} in the group is not supported")
            continue
        kind, role = kind_role
        problem = _member_problem(module, name, kind, role, item.idxs)
        if problem is not None:
            problems.append(problem)
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
    writers.sort(key=position)

    def skip(reason: str) -> SkippedGroup:
        return SkippedGroup(first, reason, modules, tuple(dict.fromkeys(writers)))

    if reaches_output:
        if any(r[2] == "linear" for r in producers):
            return skip("classifier output (never pruned)")
        return skip("feeds the model output (never pruned)")
    channel_op = next((op for fn, op in trace.channel_ops.items() if fn in passed), None)  # first in forward
    if channel_op is not None:
        return skip(f"its channels pass through {channel_op} in forward, which a cut cannot follow")
    if problems:
        return skip(problems[0])
    if not producers:
        return skip("channels come from the model input")
    tied = tie_grouped(raw, len(group[0].idxs))
    if isinstance(tied, str):
        return skip(tied)
    raw, channels, per_set = tied
    if channels < 2 and per_set > 1:
        grouped = next(r[1] for r in raw if r[2] == "conv" and r[0].groups > 1)
        return skip(
            f"grouped conv {grouped} ties all {per_set} channels together (one per group): only whole groups "
            "could go, which is not supported"
        )
    if channels < 2:
        return skip("a single channel")
    # Several writers joined by an addition are a residual stream; joined only by products (a
    # squeeze-excitation gate multiplying a conv's output) they are one block's channels (issue 13).
    residual = len(producers) > 1 and additive
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
        tied=per_set,
    )


_GATES = ("MulBackward", "DivBackward")
"""Element-wise joins of two tensors that gate one by the other rather than sum them."""


def _adds(node: object) -> bool:
    """Whether a graph node joins several inputs element-wise other than by a product (an addition, a
    subtraction, a maximum...)."""
    if not isinstance(node.module, ops._ElementWiseOp) or len(node.inputs) < 2:
        return False
    name = node.grad_fn.name() if node.grad_fn is not None else ""
    return not name.startswith(_GATES)


def _member_problem(
    module: nn.Module, name: str, kind: MemberKind, role: Role, idxs: list[int]
) -> str | None:
    """Why a group member cannot be cut as Torch-Pruning maps it, or None."""
    if kind in ("conv", "depthwise") and getattr(module, "transposed", False):
        return f"transposed conv {name} not supported"
    if kind == "depthwise" and module.in_channels != module.out_channels:
        # Torch-Pruning calls a conv with groups == out_channels depthwise, even with several inputs per group
        inputs, groups = module.in_channels, module.groups
        return f"grouped conv {name} with {inputs} inputs and groups={groups} not supported"
    width = _width(module, kind, role)
    if idxs and (min(idxs) < 0 or max(idxs) >= width):
        return f"channel mapping into {name} out of range (a broadcast Torch-Pruning takes for element-wise?)"
    return None


def _width(module: nn.Module, kind: MemberKind, role: Role) -> int:
    """Size of the module dimension a member of this kind and role indexes (before grouping)."""
    if kind == "linear":
        return module.out_features if role == "out" else module.in_features
    if kind in ("conv", "depthwise"):
        return module.out_channels if role == "out" else module.in_channels
    return module.num_parameters if kind == "prelu" else module.num_features


def _members(
    raw: list[Raw],
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
