"""The MACs budget and AMC's action wall: every episode's sub-network meets the target by construction.

**Action -> keep count.** Layer ``l`` has ``C_l`` channels. An action ``a`` in [0, 1] is the keep ratio
rescaled onto [min_keep_ratio, 1]::

    keep ratio  r = min_keep_ratio + a * (1 - min_keep_ratio)
    keep count  k = the allowed count nearest to r * C_l (halves round up)

where the allowed counts of a layer are the multiples of ``round_to`` and the full width ``C_l``, from the
one nearest to ``min_keep_ratio * C_l`` (itself at least ``round_to``, so at least 1) up to ``C_l``. So
``a = 0`` gives the layer's minimum count and ``a = 1`` keeps every channel. With ``round_to = 1`` this is
``Plan.from_keep_ratios``'s rounding; with ``round_to > 1`` that function can round a width that is not a
multiple down below ``C_l`` even at ratio 1, which this mapping does not.

**The wall** (AMC, He et al. 2018, Sec. 3.3, "we limit the action space"): before layer ``t`` is pruned,
its candidate counts up to the agent's choice are priced with the layers before ``t`` at their chosen
counts and every layer after ``t`` at its minimum, and the largest count whose sub-network fits the target
is applied. The cost model is monotone in each keep count, so a count that fits with the later layers at
their minimum keeps the target reachable whatever they choose: no episode can fail or be rejected, and the
minimum count always fits because the previous step (or, for ``t = 0``, the feasibility check at
construction) priced exactly that keep vector. The whole keep vector is priced each time
(:meth:`CostModel.evaluate`, vectorised over the candidates): a conv's MACs are its output channels times
its input channels, so costs are bilinear between neighbouring layers (VGG) and never a per-layer sum.

A clip lands just under the target: one allowed step more at that layer would exceed it. A policy that
keeps everything therefore ends within a fraction of a percent below the target; an episode only ends far
below it when the agent itself chose to prune more.

**Relative actions** (``env.action_mode: relative``, the default). The wall starves the last layers:
whatever the early layers overspend, the late ones pay, down to the floor. Instead, each action tilts its
layer away from the uniform allocation ``u`` (the largest keep ratio common to every layer that fits the
target, :meth:`Budget.uniform_plan`)::

    preference  p_l = u * action_range ** (2 * a_l - 1)      (a = 0.5: exactly u)
    keep ratio  r_l = clip(s * p_l, min_keep_ratio, 1)
    keep count  k_l = the allowed count nearest to r_l * C_l

with one common scale ``s``, the largest whose plan fits the target (:meth:`Budget.on_budget`, a bisection:
the cost is monotone in ``s``). So every episode lands on the budget, no layer falls below the floor, and
an agent that has learned nothing (every action 0.5) proposes the uniform plan.
"""

from __future__ import annotations

import math

import numpy as np

from rlal.errors import RlalError
from rlal.structure import Plan, Structure
from rlal.structure.trace import model_label


class Budget:
    """The MACs target of one structure, the allowed keep counts of its layers, and the action wall."""

    def __init__(
        self, structure: Structure, target_macs: float, min_keep_ratio: float = 0.1, round_to: int = 1
    ) -> None:
        self.structure = structure
        self.cost = structure.cost
        self.min_keep_ratio = float(min_keep_ratio)
        self.round_to = int(round_to)
        self.dense_macs: int = self.cost.dense_macs
        self.target_macs: int = resolve_target(target_macs, self.dense_macs)
        """The budget in MACs: every finished episode's sub-network costs at most this."""
        self.allowed: list[np.ndarray] = [
            allowed_counts(layer.channels, self.min_keep_ratio, self.round_to) for layer in structure.layers
        ]
        """Per layer, the keep counts an action can map to, ascending (int64)."""
        self.min_keep = np.array([counts[0] for counts in self.allowed], dtype=np.int64)
        """Per layer, the count of action 0."""
        self.min_macs: int = int(self.cost.macs(self.min_keep))
        """MACs of the smallest sub-network (every layer at its minimum count)."""
        self._check_feasible(target_macs)

    @property
    def target_ratio(self) -> float:
        """The target as a fraction of the dense MACs."""
        return self.target_macs / self.dense_macs

    def count(self, layer: int, action: float) -> int:
        """The keep count that ``action`` (in [0, 1]) asks for at ``layer``, before the wall."""
        ratio = self.min_keep_ratio + float(action) * (1.0 - self.min_keep_ratio)
        return self._nearest(layer, ratio * self.structure.layers[layer].channels)

    def _nearest(self, layer: int, raw: float) -> int:
        """The allowed count of ``layer`` nearest to ``raw`` channels (halves up, as Plan rounds)."""
        counts = self.allowed[layer]
        i = int(np.searchsorted(counts, raw))  # counts[i - 1] < raw <= counts[i]
        if i == 0:
            return int(counts[0])
        if i == len(counts):
            return int(counts[-1])
        below, above = counts[i - 1], counts[i]
        return int(above if above - raw <= raw - below + 1e-9 else below)

    def nearest_counts(self, ratios: np.ndarray) -> np.ndarray:
        """Per layer, the allowed count nearest to ``ratios[l] * channels`` (halves up), as :meth:`count`."""
        channels = self.structure.channels
        counts = [self._nearest(t, float(r) * channels[t]) for t, r in enumerate(ratios)]
        return np.array(counts, dtype=np.int64)

    def on_budget(self, preference: np.ndarray) -> np.ndarray:
        """Keep counts ``nearest_counts(clip(s * preference, min_keep_ratio, 1))`` for the largest common
        scale ``s`` whose sub-network fits the target (relative actions; see the module docstring)."""
        preference = np.maximum(np.asarray(preference, dtype=np.float64), 1e-9)

        def counts_at(scale: float) -> np.ndarray:
            return self.nearest_counts(np.clip(scale * preference, self.min_keep_ratio, 1.0))

        low, high = 0.0, 1.0 / preference.min()  # every layer at its floor / every layer whole
        if self.cost.macs(counts_at(high)) <= self.target_macs:  # cannot happen below the dense MACs
            return counts_at(high)
        for _ in range(50):  # the counts are a step function of the scale: 2^-50 is far below one step
            middle = (low + high) / 2
            fits = self.cost.macs(counts_at(middle)) <= self.target_macs
            low, high = (middle, high) if fits else (low, middle)
        return counts_at(low)

    def uniform_plan(self) -> tuple[Plan, float]:
        """The plan of the uniform baseline and its ratio: the largest keep ratio ``r`` whose plan
        ``Plan.from_keep_ratios(structure, r)`` (every layer keeps ``round(r * channels)``, rounded to
        ``round_to``) meets the target; ``r`` is searched by bisection on ``[min_keep_ratio, 1]``."""

        def plan_at(ratio: float) -> Plan:
            return Plan.from_keep_ratios(self.structure, ratio, round_to=self.round_to)

        def fits(ratio: float) -> bool:
            return self.cost.of(plan_at(ratio))[0] <= self.target_macs

        low, high = self.min_keep_ratio, 1.0
        if not fits(low):
            raise RlalError(
                f"no keep ratio common to every layer meets env.target_macs ({self.target_macs:,} MACs): "
                f"even env.min_keep_ratio={low:g} in every layer costs {self.cost.of(plan_at(low))[0]:,} MACs"
            )
        for _ in range(40):  # 2^-40: far below one channel of any layer
            middle = (low + high) / 2
            low, high = (middle, high) if fits(middle) else (low, middle)
        return plan_at(low), low

    def action_of(self, layer: int, count: int) -> float:
        """An action that maps to ``count`` at ``layer`` (its keep ratio rescaled onto [0, 1], clipped)."""
        if self.min_keep_ratio >= 1.0:
            return 1.0
        ratio = count / self.structure.layers[layer].channels
        return float(np.clip((ratio - self.min_keep_ratio) / (1.0 - self.min_keep_ratio), 0.0, 1.0))

    def wall(self, keep: np.ndarray, layer: int, count: int) -> int:
        """The largest allowed count <= ``count`` for ``layer`` such that, with ``keep[:layer]`` as chosen
        and every later layer at its minimum, the sub-network fits the target."""
        trial = keep.astype(np.int64, copy=True)
        trial[layer + 1 :] = self.min_keep[layer + 1 :]
        trial[layer] = count
        if self.cost.macs(trial) <= self.target_macs:  # the usual case: one row priced
            return count
        candidates = self.allowed[layer][self.allowed[layer] < count]
        rows = np.repeat(trial[None, :], len(candidates), axis=0)
        rows[:, layer] = candidates
        fits = np.flatnonzero(self.cost.macs(rows) <= self.target_macs)
        if len(fits) == 0:  # cannot happen: the previous step priced the minimum count of this layer
            raise RuntimeError(f"action wall: no keep count of layer {layer} fits the target (a bug)")
        return int(candidates[fits[-1]])

    def _check_feasible(self, target_macs: float) -> None:
        """Raise :class:`RlalError` with the feasible range unless min_macs <= target < dense."""
        if self.min_macs <= self.target_macs < self.dense_macs:
            return
        low = math.ceil(self.min_macs / self.dense_macs * 1e4) / 1e4  # printed fraction that is feasible
        label = model_label(self.structure.model)
        given = (
            f"env.target_macs={target_macs:g} ({self.target_macs:,} MACs, {self.target_ratio:.4f} of dense)"
        )
        if self.min_macs >= self.dense_macs:  # no layer can shrink: the target is not what is wrong
            key = "env.min_keep_ratio" if self.min_keep_ratio >= 1 else "env.round_to"
            value = self.min_keep_ratio if key == "env.min_keep_ratio" else self.round_to
            widths = sorted({layer.channels for layer in self.structure.layers})
            raise RlalError(
                f"{key}={value:g} leaves no prunable layer of {label} (widths {widths}) anything to remove, "
                f"so no MACs target can be met; lower {key}"
            )
        if self.target_macs >= self.dense_macs:
            why = f"is not below the dense model's {self.dense_macs:,} MACs: there is nothing to prune"
        else:
            why = (
                f"is below the smallest sub-network of {label}: {self.min_macs:,} MACs "
                f"({self.min_macs / self.dense_macs:.4f} of dense) with every prunable layer at "
                f"min_keep_ratio={self.min_keep_ratio:g} (policy={self.structure.policy})"
            )
        raise RlalError(
            f"{given} {why}; feasible targets lie in [{low:.4f}, 1) as a fraction of the dense MACs, "
            f"or in [{self.min_macs:,}, {self.dense_macs:,}) MACs"
        )


def resolve_target(target_macs: float, dense_macs: int) -> int:
    """The budget in MACs: ``target_macs`` is a fraction of ``dense_macs`` if <= 1, else absolute MACs."""
    if not target_macs > 0 or not math.isfinite(target_macs):
        raise RlalError(f"env.target_macs must be a positive number, got {target_macs!r}")
    absolute = target_macs * dense_macs if target_macs <= 1 else target_macs
    return math.floor(absolute + 1e-6)  # 1e-6: a fraction times MACs off by float rounding


def allowed_counts(channels: int, min_keep_ratio: float, round_to: int) -> np.ndarray:
    """Keep counts a layer of ``channels`` may take, ascending: multiples of ``round_to`` and ``channels``
    itself, from the one nearest to ``min_keep_ratio * channels`` (halves up) upwards."""
    counts = np.unique(np.append(np.arange(round_to, channels + 1, round_to), channels)).astype(np.int64)
    raw = min_keep_ratio * channels
    nearest = int(np.argmin(np.abs(counts - raw) - 1e-9 * (counts >= raw)))  # halves up
    return counts[nearest:]
