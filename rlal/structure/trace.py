"""Run a model on example inputs: check that one trace describes it, record what the cost model needs, and
build Torch-Pruning's ``DependencyGraph``.

Torch-Pruning traces through autograd, so it records whichever path one forward pass happened to take. A
forward with data-dependent control flow (``if x.sum() > 0:``) would give a graph that is wrong for other
inputs, and channel surgery based on it would silently break the model. We therefore run a few probe inputs
(the example, its absolute value, its negated absolute value, zeros) and require the same sequence of torch
operations for all of them. This catches branches on the sign or size of activations; it cannot prove that
no input anywhere takes another path.

Torch-Pruning maps channels through concatenations and flattening, but treats most other operations as
element-wise: a channel shuffle (``view(n, g, c // g, h, w).transpose(1, 2)``), a split or a slice of the
channels, a mean over them. The graph would then couple the wrong channels, and a cut would fail or quietly
compute something else. While Torch-Pruning traces, :class:`_ChannelOpRecorder` therefore notes every torch
operation that moves, splits, mixes or resizes the channel dimension (dimension 1), keyed by the autograd
node of its result, so that :func:`~rlal.structure.find_layers` can skip the layers whose channels pass
through one (issue 13).

Everything here leaves the model as it found it: train/eval flags are restored and every hook is removed.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn
from torch.overrides import TorchFunctionMode

from rlal.errors import RlalError

COUNTED_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
"""Layers whose MACs are counted: the same types as :func:`rlal.models.count_macs_params`."""


@dataclass(frozen=True)
class Census:
    """What one forward pass of a single example tells us about a model's modules.

    ``order``: qualified module name -> position of its first call in the forward pass (input -> output).
    ``positions``: for every called conv/linear layer, its output elements per output channel for one
    example, summed over calls (H_out * W_out for a 2-D conv called once; 1 for a linear layer on a vector).
    A layer's MACs are ``positions * out_channels * in_channels / groups * kernel volume``.
    ``calls``: module name -> how many times the forward pass calls it.
    """

    order: dict[str, int]
    positions: dict[str, int]
    calls: dict[str, int]


def model_label(model: nn.Module) -> str:
    """How messages name a model: its class name."""
    return type(model).__name__


def check_input_shape(input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """``input_shape`` (one example, no batch dimension, e.g. ``(3, 32, 32)``) as a tuple of positive ints."""
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise RlalError(f"input shape must be a tuple of positive integers, got {input_shape!r}") from None
    if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape):
        raise RlalError(
            f"input shape must be a tuple of positive integers such as (3, 32, 32), got {shape!r}"
        )
    return shape


def example_input(model: nn.Module, input_shape: tuple[int, ...]) -> torch.Tensor:
    """A fixed random batch of one example on the model's device and floating dtype."""
    tensors = [*model.parameters(), *model.buffers()]
    device = tensors[0].device if tensors else torch.device("cpu")
    dtype = next((t.dtype for t in tensors if t.is_floating_point()), torch.get_default_dtype())
    generator = torch.Generator().manual_seed(0)
    return torch.randn(1, *input_shape, generator=generator).to(device=device, dtype=dtype)


@contextmanager
def preserved_modes(model: nn.Module) -> Iterator[None]:
    """Run the body with the model in eval mode, then restore every module's own train/eval flag."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield
    finally:
        for m, training in modes:
            m.training = training


class _OpRecorder(TorchFunctionMode):
    """Records the name of every torch function called while active."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []
        self.paused = False  # set by our own hooks, whose tensor calls are not the model's

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if not self.paused:
            self.ops.append(getattr(func, "__name__", repr(func)))
        return func(*args, **(kwargs or {}))


def _run(model: nn.Module, x: torch.Tensor) -> object:
    """One forward pass; any failure becomes a one-line RlalError naming the model and the input shape."""
    try:
        return model(x)
    except Exception as exc:  # the user's forward can raise anything
        detail = (str(exc).strip().splitlines() or [""])[0][:200]
        raise RlalError(
            f"{model_label(model)} failed on an example input of shape {tuple(x.shape)}: "
            f"{type(exc).__name__}: {detail}"
        ) from None


def take_census(model: nn.Module, x: torch.Tensor) -> Census:
    """Run the probes (see the module docstring) and record module order and conv/linear output positions.

    Raises :class:`RlalError` if the forward fails or takes different paths for different probes.
    """
    names = {m: name for name, m in model.named_modules()}
    order: dict[str, int] = {}
    positions: dict[str, int] = {}
    calls: dict[str, int] = {}
    recorder = _OpRecorder()

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        recorder.paused = True
        try:
            record(module, output)
        finally:
            recorder.paused = False

    def record(module: nn.Module, output: torch.Tensor) -> None:
        name = names[module]
        order.setdefault(name, len(order))
        calls[name] = calls.get(name, 0) + 1
        if isinstance(module, COUNTED_TYPES) and isinstance(output, torch.Tensor):
            channels = module.out_features if isinstance(module, nn.Linear) else module.out_channels
            positions[name] = positions.get(name, 0) + output.numel() // (channels * x.shape[0])

    probes = [x, x.abs(), -x.abs(), torch.zeros_like(x)]
    sequences: list[list[str]] = []
    with preserved_modes(model), torch.no_grad():
        handles = [m.register_forward_hook(hook) for m in names if m is not model]
        try:
            for i, probe in enumerate(probes):
                recorder = _OpRecorder()
                with recorder:
                    _run(model, probe)
                sequences.append(recorder.ops)
                if i == 0:  # the census comes from the first probe only
                    for handle in handles:
                        handle.remove()
                    handles = []
        finally:
            for handle in handles:
                handle.remove()
    if any(seq != sequences[0] for seq in sequences[1:]):
        raise RlalError(
            f"{model_label(model)} runs different operations for different inputs (data-dependent control "
            "flow in forward), so its channel dependencies cannot be traced"
        )
    return Census(order=order, positions=positions, calls=calls)


@dataclass(frozen=True)
class Trace:
    """Torch-Pruning's dependency graph of a model and what our own recording of the same forward adds.

    ``output_nodes``: the graph nodes whose outputs are model outputs (a group touching one reaches the
    model output). ``channel_ops``: autograd node -> description, for every operation of the forward that
    moves, splits, mixes or resizes the channel dimension (see the module docstring); a graph node with one
    of these ``grad_fn`` lies on such an operation.
    """

    graph: tp.DependencyGraph
    output_nodes: set[object]
    channel_ops: dict[object, str]


# Operations that only rearrange elements: applied to a tensor holding each element's channel index, they
# show where the channels go (see _rearranges_channels).
_REARRANGING = frozenset({
    "view", "reshape", "flatten", "unflatten", "view_as", "reshape_as", "transpose", "permute", "movedim",
    "moveaxis", "swapaxes", "swapdims", "t", "split", "chunk", "tensor_split", "split_with_sizes", "unbind",
    "narrow", "__getitem__", "index_select", "select", "expand", "expand_as", "repeat", "repeat_interleave",
    "tile", "roll", "flip", "pixel_shuffle", "pixel_unshuffle", "channel_shuffle", "native_channel_shuffle",
    "pad",
})
# Operations whose outputs mix values along the dimensions they are given (all of them by default).
_MIXING = frozenset({
    "mean", "sum", "nansum", "nanmean", "prod", "amax", "amin", "max", "min", "argmax", "argmin", "median",
    "std", "var", "std_mean", "var_mean", "logsumexp", "norm", "normalize", "softmax", "log_softmax",
    "softmin", "cumsum", "cumprod", "local_response_norm",
})
_ALWAYS_MIXING = frozenset({"local_response_norm"})  # across neighbouring channels, whatever the arguments
_DIM_ARGUMENT = {"norm": 2, "normalize": 2}  # positional index of ``dim`` where it is not the second
_DIM_DEFAULT = {"normalize": 1}  # where leaving ``dim`` out does not mean every dimension


class _ChannelOpRecorder(TorchFunctionMode):
    """Records, by the autograd node of its result, every torch operation that touches the channels."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: dict[object, str] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if name in _REARRANGING or name in _MIXING:
            try:
                found = _channel_op(func, name, args, kwargs, result)
            except Exception:  # an odd call we cannot replay: the contract check still sees what it does
                found = None
            if found is not None:
                for t in tp.utils.flatten_as_list(result):
                    if isinstance(t, torch.Tensor) and t.grad_fn is not None:
                        self.ops[t.grad_fn] = found
        return result


def _channel_op(
    func: Callable[..., object], name: str, args: Sequence[object], kwargs: dict[str, object], result: object
) -> str | None:
    """How ``func(*args, **kwargs)`` touches the channel dimension (dimension 1) of its first argument, in a
    few words, or None when it leaves every channel in place."""
    x = args[0] if args else None
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or not x.is_floating_point():
        return None
    if name in _ALWAYS_MIXING:
        return f"{name} across the channels"
    if name in _MIXING:
        if len(args) > 1 and isinstance(args[1], torch.Tensor):
            return None  # max(a, b), min(a, b): element-wise
        position = _DIM_ARGUMENT.get(name, 1)
        dim = kwargs.get("dim", args[position] if len(args) > position else _DIM_DEFAULT.get(name))
        dims = range(x.dim()) if dim is None else (dim,) if isinstance(dim, int) else tuple(dim)
        if any(d % x.dim() == 1 for d in dims):
            return f"{name} across the channels"
        return None
    channels = x.shape[1]
    if name == "pad":  # pads with constants, so only the sizes tell whether the channels were padded
        padded = isinstance(result, torch.Tensor) and result.dim() == x.dim() and result.shape[1] != channels
        return "pad of the channel dimension" if padded else None
    index = torch.arange(channels, dtype=torch.float64, device=x.device)
    probe = index.view(1, channels, *([1] * (x.dim() - 2))).expand(x.shape).contiguous()
    replayed = tp.utils.flatten_as_list(func(probe, *args[1:], **kwargs))
    if all(_keeps_channels(x, out) for out in replayed if isinstance(out, torch.Tensor)):
        return None
    if name in ("split", "chunk", "tensor_split", "split_with_sizes", "unbind", "narrow", "__getitem__",
                "index_select", "select"):
        return f"{name} of the channels (a split or slice)"
    if name in ("view", "reshape", "flatten", "unflatten", "view_as", "reshape_as"):
        shapes = [tuple(t.shape) for t in tp.utils.flatten_as_list(result) if isinstance(t, torch.Tensor)]
        return f"{name} {tuple(x.shape)} -> {shapes[0]} regrouping the channels (a channel shuffle?)"
    if name in ("pixel_shuffle", "pixel_unshuffle", "channel_shuffle", "native_channel_shuffle"):
        return name
    return f"{name} moving or resizing the channel dimension"


def _keeps_channels(x: torch.Tensor, out: torch.Tensor) -> bool:
    """Whether ``out``, computed from a tensor holding each element's channel index, keeps every channel in
    place: the same channels along dimension 1, or the channel-major flattening (and its inverse) that
    Torch-Pruning maps onto a linear layer."""
    channels = x.shape[1]
    if out.dim() < 2 or out.shape[0] != x.shape[0]:
        return False
    if out.shape[1] == channels:  # channels in place, whatever happened to the other dimensions
        index = torch.arange(channels, dtype=out.dtype, device=out.device)
        return bool((out == index.view(1, channels, *([1] * (out.dim() - 2)))).all())
    rows = out.reshape(out.shape[0], -1)
    if out.dim() == 2 and out.shape[1] % channels == 0:  # flatten (n, c, h, w) -> (n, c * h * w)
        per_channel = out.shape[1] // channels
        index = torch.arange(out.shape[1], device=out.device) // per_channel
        return bool((rows == index.to(out.dtype)).all())
    if x.dim() == 2 and rows.shape[1] == channels and channels % out.shape[1] == 0:
        # unflatten (n, f) -> (n, c, h, w): the inverse, feature f lands at channel f // (h * w)
        return bool((rows == torch.arange(channels, dtype=out.dtype, device=out.device)).all())
    return False


def build_graph(model: nn.Module, x: torch.Tensor) -> Trace:
    """Torch-Pruning's dependency graph of ``model`` traced on ``x``, with the model's output nodes and its
    channel operations (see :class:`Trace`). A failure becomes an RlalError."""
    # The trace follows autograd, so it needs grad mode and a graph even when every parameter is frozen.
    x = x.detach().clone().requires_grad_(True)
    outputs: list[torch.Tensor] = []
    recorder = _ChannelOpRecorder()

    def keep_outputs(out: object) -> object:
        outputs.extend(t for t in tp.utils.flatten_as_list(out) if isinstance(t, torch.Tensor))
        return out

    with preserved_modes(model), torch.enable_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Torch-Pruning warns about every op it treats as element-wise
        try:
            # A tuple, because Torch-Pruning first tries ``model(*example_inputs)``: a bare batch-of-one
            # tensor would be unpacked into one unbatched example.
            with recorder:
                graph = tp.DependencyGraph().build_dependency(
                    model, example_inputs=(x,), output_transform=keep_outputs, verbose=False
                )
        except RlalError:
            raise
        except Exception as exc:
            detail = (str(exc).strip().splitlines() or [""])[0][:200]
            raise RlalError(
                f"Torch-Pruning cannot trace {model_label(model)}: {type(exc).__name__}: {detail}"
            ) from None
    # Torch-Pruning adds an output node only when the last op is not a module (the classifier is its own
    # node), so find the nodes that produced the outputs by their autograd function.
    output_fns = {id(t.grad_fn) for t in outputs if t.grad_fn is not None}
    output_nodes = {node for node in graph.module2node.values() if id(node.grad_fn) in output_fns}
    return Trace(graph, output_nodes, recorder.ops)
