"""Channel masks: score a candidate sub-network on the dense model without changing any tensor's shape.

Forward hooks multiply module outputs by a 0/1 channel vector. Zeroing a conv's output is not enough: the
BN after it adds its bias back, and a depthwise conv + BN turn zero inputs into nonzero outputs. So every
output of a layer's group (conv, linear, BN, depthwise conv) that flows into anything but a per-channel
module of the same group is masked: the BN ending a conv -> BN chain, the last BN of MobileNetV2's
expand -> BN -> depthwise -> BN chain, a branch's BN before a concatenation or addition (see
``GroupMember.mask_output``; masking every member would give the same result at twice the hook cost). The
next conv/linear layer then sees exact zeros where the cut model has no channel, so the masked dense model
computes what :func:`rlal.structure.cut` builds (to float rounding), as long as every element-wise op
between a masked module and the next conv maps 0 to 0 (ReLU, ReLU6, SiLU, GELU, hardswish, pooling,
addition...; not sigmoid or tanh).

Parameters and buffers are never touched: switching the masks off gives back the dense model exactly, and
a deep copy of a masked model is dense.

    masks = ChannelMasks(structure)
    with masks.applied(plan):            # top-k channels by the criterion, on the current weights
        accuracy = evaluate(model, reward_split)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import TracebackType

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from rlal.errors import RlalError
from rlal.structure.importance import Criterion, check_kept, select_channels
from rlal.structure.layers import Structure
from rlal.structure.plan import Plan


class ChannelMasks:
    """Keep masks for one :class:`Structure`, switchable on and off (``enable``/``disable`` or ``with``)."""

    def __init__(self, structure: Structure) -> None:
        self.structure = structure
        modules = dict(structure.model.named_modules())
        # masked module -> its output channels and, per layer touching it, (layer, local, root) positions
        self._targets: dict[str, list[tuple[int, torch.Tensor, torch.Tensor]]] = {}
        self._widths: dict[str, int] = {}
        for i, layer in enumerate(structure.layers):
            for member in layer.members:
                if member.mask_output:
                    module = modules[member.module]
                    self._targets.setdefault(member.module, []).append(
                        (i, torch.tensor(member.local), torch.tensor(member.root))
                    )
                    self._widths[member.module] = _out_width(module)
        self._modules = {name: modules[name] for name in self._targets}
        self._masks: dict[str, torch.Tensor] = {}
        self._handles: list[RemovableHandle] = []
        self.plan: Plan | None = None
        """The plan last set with :meth:`set_plan` (None after :meth:`set_kept`)."""
        self.kept: dict[str, torch.Tensor] | None = None
        """Kept channel indices per layer currently loaded into the masks."""

    @property
    def enabled(self) -> bool:
        """Whether the hooks are registered (the model computes the sub-network)."""
        return bool(self._handles)

    def set_plan(
        self,
        plan: Plan,
        criterion: Criterion = "l2",
        *,
        scores: Mapping[str, torch.Tensor] | None = None,
        seed: int = 0,
    ) -> None:
        """Load the sub-network of ``plan``: each layer keeps its top ``keep`` channels by ``criterion`` on
        the current weights (or by precomputed ``scores``). Takes effect at once if the masks are on."""
        kept = select_channels(self.structure, plan, criterion, scores=scores, seed=seed)
        self._load(kept)
        self.plan = plan

    def set_kept(self, kept: Mapping[str, object]) -> None:
        """Load explicit kept channel indices by layer name (layers not named keep everything)."""
        self._load(check_kept(self.structure, kept))
        self.plan = None

    def enable(self) -> None:
        """Register the hooks; the model now computes the loaded sub-network. Needs a plan loaded first."""
        if self.kept is None:
            raise RlalError("no plan loaded into the channel masks: call set_plan first")
        if self._handles:
            return
        for name, module in self._modules.items():
            dim = -1 if isinstance(module, nn.Linear) else 1
            self._handles.append(module.register_forward_hook(_MaskHook(self._masks, name, dim)))

    def disable(self) -> None:
        """Remove the hooks; the model is the dense model again, bit for bit."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> ChannelMasks:
        self.enable()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.disable()

    @contextmanager
    def applied(
        self,
        plan: Plan,
        criterion: Criterion = "l2",
        *,
        scores: Mapping[str, torch.Tensor] | None = None,
        seed: int = 0,
    ) -> Iterator[ChannelMasks]:
        """``with masks.applied(plan):`` loads ``plan``, switches the masks on, and afterwards restores the
        previous on/off state and loaded masks."""
        was_enabled, previous = self.enabled, (self.plan, self.kept)
        self.set_plan(plan, criterion, scores=scores, seed=seed)
        self.enable()
        try:
            yield self
        finally:
            if previous[1] is not None:
                self._load(previous[1])
                self.plan = previous[0]
            if not was_enabled:
                self.disable()

    def _load(self, kept: dict[str, torch.Tensor]) -> None:
        """Build the 0/1 output vector of every masked module from per-layer kept indices."""
        keep = []
        for layer in self.structure.layers:
            vector = torch.zeros(layer.channels)
            vector[kept[layer.name]] = 1.0
            keep.append(vector)
        for name, entries in self._targets.items():
            mask = torch.ones(self._widths[name])
            for i, local, root in entries:
                mask[local] = keep[i][root]
            # Updating the shared dict in place lets enabled hooks pick the new masks up at once.
            self._masks[name] = mask.to(_device_of(self._modules[name]))
        self.kept = kept


class _MaskHook:
    """Forward hook: output * (0/1 channel vector along ``dim``). A deep copy is inert (see __deepcopy__)."""

    def __init__(self, masks: dict[str, torch.Tensor], name: str, dim: int) -> None:
        self.masks, self.name, self.dim = masks, name, dim

    def __call__(
        self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor
    ) -> torch.Tensor:
        mask = self.masks[self.name]
        if mask.device != output.device or mask.dtype != output.dtype:
            mask = self.masks[self.name] = mask.to(output.device, output.dtype)  # cached for the next call
        shape = [1] * output.dim()
        shape[self.dim] = -1
        return output * mask.view(shape)

    def __deepcopy__(self, memo: dict[int, object]) -> InertHook:
        # copy.deepcopy(model) copies forward hooks too; a copy must not carry full-width masks into a model
        # that may be cut to other widths, nor drag the whole ChannelMasks along.
        return InertHook()


class InertHook:
    """What a mask hook becomes in a deep copy of the model: does nothing (surgery removes it)."""

    def __call__(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        return None


def remove_inert_hooks(model: nn.Module) -> None:
    """Drop the inert hooks a deep copy of a masked model carries."""
    for module in model.modules():
        for key, hook in list(module._forward_hooks.items()):
            if isinstance(hook, InertHook):
                del module._forward_hooks[key]


def _out_width(module: nn.Module) -> int:
    for attribute in ("out_channels", "out_features", "num_features", "num_parameters"):
        if hasattr(module, attribute):
            return int(getattr(module, attribute))
    raise RlalError(f"cannot tell the output channels of {type(module).__name__}")


def _device_of(module: nn.Module) -> torch.device:
    tensor = next(iter([*module.parameters(), *module.buffers()]), None)
    return tensor.device if tensor is not None else torch.device("cpu")
