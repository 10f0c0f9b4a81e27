"""Analytic MACs and parameters of sub-networks, vectorised over many keep vectors, with no forward pass.

Counted exactly as :func:`rlal.models.count_macs_params` counts a model: MACs of conv and linear layers only,
parameters of every module. Dropping ``r_l = C_l - k_l`` channels of layer ``l`` removes, from every module
dimension in the layer's group, ``r_l * n / C_l`` positions, where ``n`` is how many of that dimension's
positions the group covers (``n = C_l`` for a conv's output or input channels and for a concatenation
slice; ``C_l * H * W`` for a flattened feature map feeding a linear layer). So for every conv/linear layer
``m``, with ``R`` the B x L matrix of dropped channels:

    out_m = out0_m - R @ O[:, m]         in_m = in0_m - R @ I[:, m]   (in = in_channels / groups)
    MACs  = sum_m positions_m * kernel_m * out_m * in_m
    params = constant + sum_m kernel_m * out_m * in_m + bias_m * out_m + sum_j per_channel_j * ch_j

where ``O`` and ``I`` (L x M) come from the dependency graph once, ``positions`` from one forward pass
(recorded in the structure's census) and ``ch_j`` is the width of a per-channel module (BN) in a group. A
depthwise conv's ``in / groups`` stays 1. Everything is exact integer arithmetic carried in float64.
"""

from __future__ import annotations

import math

import numpy as np
from torch import nn

from rlal.errors import RlalError
from rlal.structure.layers import Structure
from rlal.structure.plan import Plan, check_plan
from rlal.structure.trace import COUNTED_TYPES


class CostModel:
    """MACs and parameters of the sub-networks of one :class:`Structure` (usually ``structure.cost``)."""

    def __init__(self, structure: Structure) -> None:
        self.structure = structure
        model = structure.model
        modules = dict(model.named_modules())
        layers = structure.layers
        counted = [name for name, m in modules.items() if isinstance(m, COUNTED_TYPES)]
        column = {name: j for j, name in enumerate(counted)}
        per_channel = sorted(
            {
                m.module
                for layer in layers
                for m in layer.members
                if m.kind not in ("conv", "depthwise", "linear")
            }
        )
        norm_column = {name: j for j, name in enumerate(per_channel)}

        n_layers, n_counted = len(layers), len(counted)
        out0, in0, kernel, positions, bias = (np.zeros(n_counted) for _ in range(5))
        for j, name in enumerate(counted):
            m = modules[name]
            if isinstance(m, nn.Linear):
                out0[j], in0[j], kernel[j] = m.out_features, m.in_features, 1
            else:
                out0[j], in0[j], kernel[j] = (
                    m.out_channels,
                    m.in_channels // m.groups,
                    math.prod(m.kernel_size),
                )
            positions[j] = structure.census.positions.get(name, 0)
            bias[j] = 1.0 if getattr(m, "bias", None) is not None else 0.0
        ch0 = np.array([_norm_channels(modules[n]) for n in per_channel], dtype=np.float64)
        per_channel_params = np.array(
            [
                sum(p.numel() for p in modules[n].parameters(recurse=False)) / ch
                for n, ch in zip(per_channel, ch0, strict=True)
            ],
            dtype=np.float64,
        )

        out_drop = np.zeros((n_layers, n_counted))
        in_drop = np.zeros((n_layers, n_counted))
        ch_drop = np.zeros((n_layers, len(per_channel)))
        for i, layer in enumerate(layers):
            for member in layer.members:
                n = len(member.local) / layer.channels  # positions dropped per dropped layer channel
                if member.kind in ("conv", "linear"):
                    (out_drop if member.role == "out" else in_drop)[i, column[member.module]] += n
                elif member.kind == "depthwise":  # in_channels / groups stays 1
                    out_drop[i, column[member.module]] += n
                else:
                    ch_drop[i, norm_column[member.module]] += n

        counted_params = sum(p.numel() for name in counted for p in modules[name].parameters(recurse=False))
        norm_params = sum(p.numel() for name in per_channel for p in modules[name].parameters(recurse=False))
        total_params = sum(p.numel() for p in model.parameters())

        self.counted: tuple[str, ...] = tuple(counted)
        """The conv and linear modules whose MACs are counted, in module order (columns of :meth:`widths`)."""
        self._channels = structure.channels.astype(np.float64)
        self._out0, self._in0, self._ch0 = out0, in0, ch0
        self._out_drop, self._in_drop, self._ch_drop = out_drop, in_drop, ch_drop
        self._mac_coef = positions * kernel
        self._weight_coef = kernel
        self._bias = bias
        self._per_channel_params = per_channel_params
        self._constant_params = float(total_params - counted_params - norm_params)
        dense_macs, dense_params = self.evaluate(structure.channels)
        self.dense_macs: int = int(dense_macs)
        """MACs of the dense model for one example at the traced input shape."""
        self.dense_params: int = int(dense_params)
        """Parameters of the dense model."""

    def evaluate(self, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(MACs, params)`` for keep counts ``keep``: shape (L,) gives two int64 scalars (0-d arrays),
        shape (B, L) two int64 vectors of length B. Counts outside [1, channels] raise :class:`RlalError`."""
        k = np.asarray(keep, dtype=np.float64)
        single = k.ndim == 1
        k = np.atleast_2d(k)
        if k.ndim != 2 or k.shape[1] != len(self._channels):
            raise RlalError(
                f"keep counts must have shape (L,) or (B, L) with L={len(self._channels)}, "
                f"got {np.shape(keep)}"
            )
        if (k < 1).any() or (k > self._channels).any() or (k != np.round(k)).any():
            bad = int(np.argwhere((k < 1) | (k > self._channels) | (k != np.round(k)))[0, 1])
            layer = self.structure.layers[bad]
            raise RlalError(f"keep counts for layer {layer.name} must be integers in [1, {layer.channels}]")
        dropped = self._channels - k
        out = self._out0 - dropped @ self._out_drop
        inn = self._in0 - dropped @ self._in_drop
        weights = out * inn
        macs = weights @ self._mac_coef
        params = (
            self._constant_params
            + weights @ self._weight_coef
            + out @ self._bias
            + (self._ch0 - dropped @ self._ch_drop) @ self._per_channel_params
        )
        macs, params = np.rint(macs).astype(np.int64), np.rint(params).astype(np.int64)
        return (macs[0], params[0]) if single else (macs, params)

    def widths(self, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(out, in)``: each counted module's output channels and input channels per group (columns as
        :attr:`counted`) for keep counts ``keep`` of shape (B, L), each a (B, M) float64 array of integers.
        Counts are not checked here (see :meth:`evaluate`)."""
        dropped = self._channels - np.atleast_2d(np.asarray(keep, dtype=np.float64))
        return self._out0 - dropped @ self._out_drop, self._in0 - dropped @ self._in_drop

    def governing(self, module: str) -> tuple[np.ndarray, np.ndarray]:
        """How the layers' dropped channels shrink ``module``: per layer, output positions dropped per
        dropped channel and input positions (per group) dropped per dropped channel, two (L,) arrays."""
        j = self.counted.index(module)
        return self._out_drop[:, j].copy(), self._in_drop[:, j].copy()

    def macs(self, keep: np.ndarray) -> np.ndarray:
        """MACs only (see :meth:`evaluate`)."""
        return self.evaluate(keep)[0]

    def of(self, plan: Plan) -> tuple[int, int]:
        """``(MACs, params)`` of the sub-network a plan describes."""
        check_plan(self.structure, plan)
        macs, params = self.evaluate(plan.array())
        return int(macs), int(params)


def _norm_channels(module: nn.Module) -> int:
    """Channels of a per-channel module (BN, InstanceNorm, PReLU)."""
    for attribute in ("num_features", "num_parameters"):
        if hasattr(module, attribute):
            return int(getattr(module, attribute))
    raise RlalError(f"cannot tell the channels of {type(module).__name__}")
