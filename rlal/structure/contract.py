"""The masked-vs-cut contract, checked once when the layers are found.

Everything the agent scores is the dense model under :class:`~rlal.structure.ChannelMasks`; what the run
returns is :func:`~rlal.structure.cut`. The two must compute the same function, or the model shipped is
not the sub-network that was chosen. Torch-Pruning's graph can be wrong about a model (an operation it
takes for element-wise moves channels, a broadcast couples channels that are not the same), and that shows
only at the cut, after the whole training run (issue 13). So :func:`~rlal.structure.find_layers` calls
:func:`failing_layers` before returning: a copy of the model with random weights is cut to random keeps in
every layer at once and compared with its masked self. When that fails, the layers are tried one at a time
(each with those already accepted) to find the ones to skip, each with the failure as its reason.

The copy runs on the CPU in float32 with seeded random weights and BN statistics calibrated on random
inputs, so the verdict depends on the architecture only: not on the weights at hand (a model loaded with
``load_pruned`` gets the layers it was saved with) nor on the device's precision (TF32).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from rlal.structure.layers import PrunableLayer, Structure
from rlal.structure.masks import ChannelMasks, remove_inert_hooks
from rlal.structure.surgery import cut

TOLERANCE = 1e-4
"""Largest accepted difference between masked and cut outputs, relative to the outputs' magnitude."""
SEED = 0


def failing_layers(structure: Structure) -> dict[str, str]:
    """Layers of ``structure`` whose cut does not compute their masked sub-network: name -> reason.
    Empty when every layer keeps the contract (the usual case: one cut and two forward passes)."""
    probe = _random_copy(structure.model, structure.input_shape)
    x = torch.randn(1, *structure.input_shape, generator=torch.Generator().manual_seed(SEED))
    rng = np.random.default_rng(SEED)

    def attempt(layers: Sequence[PrunableLayer]) -> str | None:
        sub = Structure(probe, structure.input_shape, structure.policy, tuple(layers), (), structure.census)
        kept = {  # fewer channels than the layer has, in random positions
            layer.name: np.sort(rng.choice(layer.channels, rng.integers(1, layer.channels), replace=False))
            for layer in layers
        }
        return _compare(sub, kept, x)

    layers = structure.layers
    if attempt(layers) is None:
        return {}
    failures: dict[str, str] = {}
    accepted: list[PrunableLayer] = []
    for layer in layers:
        reason = attempt([*accepted, layer])
        if reason is None:
            accepted.append(layer)
        else:
            failures[layer.name] = reason
    return failures


def _compare(structure: Structure, kept: dict[str, np.ndarray], x: torch.Tensor) -> str | None:
    """Why the cut of ``kept`` differs from the masked model, or None when they agree."""
    selection = {name: idx.tolist() for name, idx in kept.items()}
    try:
        masks = ChannelMasks(structure)
        masks.set_kept(selection)
        with torch.no_grad():
            with masks:
                masked = _tensors(structure.model(x))
            small = cut(structure, kept=selection).eval()
            pruned = _tensors(small(x))
    except Exception as exc:  # the user's forward on a cut model can raise anything
        detail = (str(exc).strip().splitlines() or [""])[0][:160]
        return f"cutting it breaks the forward pass ({type(exc).__name__}: {detail})"
    if [t.shape for t in masked] != [t.shape for t in pruned]:
        return "cutting it changes the shape of the model's outputs"
    scale = max((t.abs().max().item() for t in masked if t.numel()), default=0.0)
    pairs = [(a, b) for a, b in zip(masked, pruned, strict=True) if a.numel()]
    error = max((float((a - b).abs().max()) for a, b in pairs), default=0.0)
    if not math.isfinite(error) or error > TOLERANCE * max(scale, 1e-3):
        return (
            f"its cut computes something else than its masked sub-network (difference {error:.3g} on outputs "
            f"of magnitude {scale:.3g}): an operation in forward moves its channels, or turns the zeros of a "
            "dropped channel into other values (a sigmoid before the next conv)"
        )
    return None


def _tensors(output: object) -> list[torch.Tensor]:
    return [t.float() for t in tp.utils.flatten_as_list(output) if isinstance(t, torch.Tensor)]


def _random_copy(model: nn.Module, input_shape: tuple[int, ...]) -> nn.Module:
    """A CPU float32 copy of ``model`` in eval mode with seeded random weights: unit-gain filters, BN scales
    in [0.5, 1.5], nonzero shifts (so that a BN adding its bias back to a dropped channel shows), and BN
    running statistics measured on random inputs (so activations stay O(1) at any depth)."""
    probe = copy.deepcopy(model)
    remove_inert_hooks(probe)
    probe = probe.to("cpu", torch.float32)
    g = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for module in probe.modules():
            for name, p in module.named_parameters(recurse=False):
                if p.dim() >= 2:
                    p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(max(1, p[0].numel())))
                elif name == "weight":
                    p.copy_(torch.rand(p.shape, generator=g) + 0.5)
                else:
                    p.copy_(torch.rand(p.shape, generator=g) * 0.6 - 0.3)
        norms = [m for m in probe.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        norms = [m for m in norms if m.track_running_stats and m.running_mean is not None]
        if norms:
            momenta = [m.momentum for m in norms]
            for m in norms:
                m.reset_running_stats()
                m.momentum = None  # a plain average over the calibration batch
            try:
                probe.train()
                with torch.random.fork_rng(devices=[]):  # dropout must not move the caller's random stream
                    probe(torch.randn(2, *input_shape, generator=g))
            except Exception:  # a forward that only works in eval mode: keep the default statistics
                for m in norms:
                    m.reset_running_stats()
            for m, momentum in zip(norms, momenta, strict=True):
                m.momentum = momentum
    return probe.eval()
