"""Run a model on example inputs: check that one trace describes it, record what the cost model needs, and
build Torch-Pruning's ``DependencyGraph``.

Torch-Pruning traces through autograd, so it records whichever path one forward pass happened to take. A
forward with data-dependent control flow (``if x.sum() > 0:``) would give a graph that is wrong for other
inputs, and channel surgery based on it would silently break the model. We therefore run a few probe inputs
(the example, its absolute value, its negated absolute value, zeros) and require the same sequence of torch
operations for all of them. This catches branches on the sign or size of activations; it cannot prove that
no input anywhere takes another path.

Everything here leaves the model as it found it: train/eval flags are restored and every hook is removed.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
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


def build_graph(model: nn.Module, x: torch.Tensor) -> tuple[tp.DependencyGraph, set[object]]:
    """Torch-Pruning's dependency graph of ``model`` traced on ``x``, and the graph nodes whose outputs are
    model outputs (a group touching one reaches the model output). A failure becomes an RlalError."""
    # The trace follows autograd, so it needs grad mode and a graph even when every parameter is frozen.
    x = x.detach().clone().requires_grad_(True)
    outputs: list[torch.Tensor] = []

    def keep_outputs(out: object) -> object:
        outputs.extend(t for t in tp.utils.flatten_as_list(out) if isinstance(t, torch.Tensor))
        return out

    with preserved_modes(model), torch.enable_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Torch-Pruning warns about every op it treats as element-wise
        try:
            # A tuple, because Torch-Pruning first tries ``model(*example_inputs)``: a bare batch-of-one
            # tensor would be unpacked into one unbatched example.
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
    return graph, output_nodes
