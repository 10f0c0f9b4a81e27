"""Plans: how many channels each prunable layer keeps.

A :class:`Plan` is an immutable keep count per layer, in the structure's layer order, keyed by layer name;
``plan.to_dict()`` is its JSON form (``{"layer1.0.conv1": 12, ...}``). A keep **ratio** is the fraction of
a layer's channels that stay (1.0 = untouched) and always counts channels, never MACs or parameters.

Every constructor validates against a :class:`~rlal.structure.layers.Structure` (or its layers) and raises
:class:`RlalError` naming the layer for an unknown name, a keep ratio outside (0, 1], a keep count of 0
(which would remove every channel), or a keep count above the layer's channels. Validation never touches
the model.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from rlal.errors import RlalError
from rlal.structure.layers import PrunableLayer, Structure

LayersLike = Structure | Sequence[PrunableLayer]


@dataclass(frozen=True)
class Plan:
    """Keep count per layer: ``names[i]`` keeps ``keep[i]`` channels. Build it with the class methods."""

    names: tuple[str, ...]
    keep: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.keep):
            raise RlalError(
                f"a plan needs one keep count per layer: {len(self.names)} names, {len(self.keep)} counts"
            )
        if len(set(self.names)) != len(self.names):
            raise RlalError("a plan names a layer twice")
        for name, count in zip(self.names, self.keep, strict=True):
            if isinstance(count, bool) or not isinstance(count, int):
                raise RlalError(f"keep count for layer {name} must be an integer, got {count!r}")
            if count < 1:
                raise RlalError(f"keep count {count} for layer {name} would remove every channel (minimum 1)")

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, name: str) -> int:
        """The keep count of layer ``name``."""
        try:
            return self.keep[self.names.index(name)]
        except ValueError:
            raise RlalError(f"unknown layer {name!r} (not in this plan)") from None

    def items(self) -> Iterator[tuple[str, int]]:
        """``(layer name, keep count)`` pairs in layer order."""
        return iter(zip(self.names, self.keep, strict=True))

    def to_dict(self) -> dict[str, int]:
        """The JSON form: layer name -> keep count, in layer order."""
        return dict(self.items())

    def array(self) -> np.ndarray:
        """Keep counts as an int64 vector in layer order (the cost model's input)."""
        return np.array(self.keep, dtype=np.int64)

    def keep_ratios(self, layers: LayersLike) -> dict[str, float]:
        """Keep ratio (kept / channels) per layer."""
        check_plan(layers, self)
        return {layer.name: k / layer.channels for layer, k in zip(_layers(layers), self.keep, strict=True)}

    @classmethod
    def dense(cls, layers: LayersLike) -> Plan:
        """Every layer keeps all its channels."""
        seq = _layers(layers)
        return cls(tuple(layer.name for layer in seq), tuple(layer.channels for layer in seq))

    @classmethod
    def from_keep_counts(cls, layers: LayersLike, counts: Mapping[str, int] | Sequence[int]) -> Plan:
        """A plan from keep counts: a mapping (layers not named keep all their channels) or one count per
        layer in layer order (a list or a NumPy vector)."""
        seq = _layers(layers)
        values = _per_layer(seq, counts, "keep counts")
        keep = []
        for layer, value in zip(seq, values, strict=True):
            if value is None:
                keep.append(layer.channels)
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise RlalError(f"keep count for layer {layer.name} must be an integer, got {value!r}")
            count = int(value)
            if count < 1:
                raise RlalError(
                    f"keep count {count} for layer {layer.name} would remove every channel (minimum 1)"
                )
            if count > layer.channels:
                raise RlalError(
                    f"keep count {count} for layer {layer.name} exceeds its {layer.channels} channels"
                )
            keep.append(count)
        return cls(tuple(layer.name for layer in seq), tuple(keep))

    from_dict = from_keep_counts  # the inverse of to_dict

    @classmethod
    def from_keep_ratios(
        cls,
        layers: LayersLike,
        ratios: Mapping[str, float] | Sequence[float] | float,
        *,
        min_keep: int = 1,
        round_to: int = 1,
    ) -> Plan:
        """A plan from keep ratios in (0, 1]: one number for every layer, a mapping (layers not named keep
        all their channels) or one ratio per layer in layer order.

        ``keep = round(ratio * channels)`` rounded to the nearest multiple of ``round_to`` (e.g. 8 for tensor
        cores), then raised to at least ``min_keep`` (itself rounded up to a multiple of ``round_to``) and
        capped at the layer's channels: a count is a multiple of ``round_to`` or all the channels.
        """
        if isinstance(min_keep, bool) or not isinstance(min_keep, int) or min_keep < 1:
            raise RlalError(f"min_keep must be an integer >= 1, got {min_keep!r}")
        if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
            raise RlalError(f"round_to must be an integer >= 1, got {round_to!r}")
        seq = _layers(layers)
        if isinstance(ratios, numbers.Real) and not isinstance(ratios, bool):
            values: list[object] = [ratios] * len(seq)
        else:
            values = _per_layer(seq, ratios, "keep ratios")
        keep = []
        for layer, value in zip(seq, values, strict=True):
            if value is None:
                keep.append(layer.channels)
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < float(value) <= 1:
                raise RlalError(f"keep ratio for layer {layer.name} must be in (0, 1], got {value!r}")
            keep.append(_round_keep(float(value) * layer.channels, layer.channels, min_keep, round_to))
        return cls(tuple(layer.name for layer in seq), tuple(keep))


def check_plan(layers: LayersLike, plan: Plan) -> None:
    """Raise :class:`RlalError` unless ``plan`` covers exactly these layers, in order, within their
    channels."""
    if not isinstance(plan, Plan):
        raise RlalError(f"expected a Plan, got {type(plan).__name__}")
    seq = _layers(layers)
    names = tuple(layer.name for layer in seq)
    if plan.names != names:
        unknown = [n for n in plan.names if n not in names]
        if unknown:
            raise RlalError(f"plan names unknown layer {unknown[0]!r}")
        missing = [n for n in names if n not in plan.names]
        if missing:
            raise RlalError(f"plan has no keep count for layer {missing[0]}")
        raise RlalError("plan lists the layers in a different order from the model")
    for layer, count in zip(seq, plan.keep, strict=True):
        if count > layer.channels:
            raise RlalError(
                f"keep count {count} for layer {layer.name} exceeds its {layer.channels} channels"
            )


def _layers(layers: LayersLike) -> tuple[PrunableLayer, ...]:
    return layers.layers if isinstance(layers, Structure) else tuple(layers)


def _per_layer(seq: tuple[PrunableLayer, ...], values: object, what: str) -> list[object]:
    """One value (or None = untouched) per layer from a mapping by name or a sequence in layer order."""
    if isinstance(values, Mapping):
        known = {layer.name for layer in seq}
        for name in values:
            if name not in known:
                raise RlalError(f"{what} name unknown layer {name!r}")
        return [values.get(layer.name) for layer in seq]
    if isinstance(values, np.ndarray):
        values = values.tolist()
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise RlalError(
            f"{what} must be a mapping by layer name or one value per layer, got {type(values).__name__}"
        )
    if len(values) != len(seq):
        raise RlalError(f"{what}: expected one value per layer ({len(seq)}), got {len(values)}")
    return list(values)


def _round_keep(raw: float, channels: int, min_keep: int, round_to: int) -> int:
    """Nearest multiple of ``round_to`` (half up), at least ``min_keep`` rounded up, at most ``channels``."""
    count = math.floor(raw / round_to + 0.5 + 1e-9) * round_to  # 1e-9: float error in ratio * channels
    lower = min(channels, math.ceil(min_keep / round_to) * round_to)
    return min(channels, max(lower, count))
