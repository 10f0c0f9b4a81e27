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

**Filling the budget** (``env.fill_budget``, the default). Rounding to ``round_to`` can leave a plan well
under the target: one step down of a 64-channel layer at ``round_to: 8`` is 1/8 of its width. The uniform
plan and every relative plan are therefore topped up (:meth:`Budget.fill`): the thinnest layer that can
take one more allowed step without breaking the target takes it, until none can. Both plans go through
the same fill, so the all-0.5 episode still proposes exactly the uniform plan.

**A latency budget** (``env.target_latency``, beside or instead of the MACs one) enters every one of these
checks the same way: a keep vector *fits* when its MACs meet the MACs target and its latency, predicted by
the run's :class:`~rlal.structure.latency.LatencyModel`, meets the latency target. That model is monotone in
every keep count by construction, so the wall's argument and the bisections hold for both budgets.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from rlal.config import EnvConfig
from rlal.errors import RlalError
from rlal.structure import Plan, Structure
from rlal.structure.latency import LatencyModel, torch_threads
from rlal.structure.trace import model_label


class Budget:
    """The MACs (and latency) target of one structure, the allowed keep counts of its layers, and the action
    wall."""

    def __init__(
        self, structure: Structure, target_macs: float | None, min_keep_ratio: float = 0.1, round_to: int = 1,
        *, latency: LatencyModel | None = None, target_latency: float | None = None,
        target_latency_ms: float | None = None, floor: np.ndarray | None = None, fill_budget: bool = True,
    ) -> None:
        self.structure = structure
        self.cost = structure.cost
        self.min_keep_ratio = float(min_keep_ratio)
        self.round_to = int(round_to)
        self.fill_budget = bool(fill_budget)
        """Whether the uniform and relative plans spend what their rounding leaves (``env.fill_budget``)."""
        self.dense_macs: int = self.cost.dense_macs
        self.macs_budget = target_macs is not None
        """Whether there is a MACs budget (without one, ``target_macs`` is the dense MACs)."""
        self.target_macs: int = (resolve_target(target_macs, self.dense_macs) if target_macs is not None
                                 else self.dense_macs)
        """The budget in MACs: every finished episode's sub-network costs at most this."""
        self.latency = latency
        """The latency model of a latency budget (None: MACs only)."""
        self.target_latency_ms: float | None = None
        """The latency budget in ms per batch (None: none)."""
        if (target_latency is not None or target_latency_ms is not None) and latency is None:
            raise ValueError("a latency target needs a latency model")
        if latency is not None:
            if target_latency is None and target_latency_ms is None:
                raise ValueError("a latency model without a latency target")
            self.target_latency_ms = (float(target_latency_ms) if target_latency_ms is not None
                                      else float(target_latency) * latency.dense_ms)
        self.allowed: list[np.ndarray] = [
            allowed_counts(layer.channels, self.min_keep_ratio, self.round_to) for layer in structure.layers
        ]
        """Per layer, the keep counts an action can map to, ascending (int64)."""
        if floor is not None:  # a per-layer floor above min_keep_ratio (env.residual_floor)
            self.allowed = [counts[counts >= min(int(least), counts[-1])]
                            for counts, least in zip(self.allowed, floor, strict=True)]
        self.min_keep = np.array([counts[0] for counts in self.allowed], dtype=np.int64)
        """Per layer, the count of action 0."""
        self.min_macs: int = int(self.cost.macs(self.min_keep))
        """MACs of the smallest sub-network (every layer at its minimum count)."""
        if self.macs_budget:
            self._check_feasible(target_macs)
        if latency is not None:
            self._check_latency_feasible(target_latency, target_latency_ms)

    def fits(self, keep: np.ndarray) -> np.ndarray:
        """Whether keep counts of shape (L,) (a 0-d bool array) or (B, L) (a vector) meet every budget."""
        ok = self.cost.macs(keep) <= self.target_macs
        if self.latency is not None:
            assert self.target_latency_ms is not None
            ok = ok & (self.latency.predict(keep) <= self.target_latency_ms * (1 + 1e-12))
        return ok

    def latency_of(self, keep: np.ndarray) -> float | None:
        """Predicted latency (ms per batch) of keep counts, or None without a latency budget."""
        return None if self.latency is None else float(self.latency.predict(np.asarray(keep)))

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
        scale ``s`` whose sub-network fits the target (relative actions; see the module docstring), then,
        with ``fill_budget``, what rounding left of the budget spent by :meth:`fill`."""
        preference = np.maximum(np.asarray(preference, dtype=np.float64), 1e-9)

        def counts_at(scale: float) -> np.ndarray:
            return self.nearest_counts(np.clip(scale * preference, self.min_keep_ratio, 1.0))

        low, high = 0.0, 1.0 / preference.min()  # every layer at its floor / every layer whole
        if self.fits(counts_at(high)):  # cannot happen below the dense model's cost
            return counts_at(high)
        for _ in range(50):  # the counts are a step function of the scale: 2^-50 is far below one step
            middle = (low + high) / 2
            fits = self.fits(counts_at(middle))
            low, high = (middle, high) if fits else (low, middle)
        return self.fill(counts_at(low)) if self.fill_budget else counts_at(low)

    def uniform_plan(self) -> tuple[Plan, float]:
        """The plan of the uniform baseline and its ratio ``r``: the largest keep ratio whose plan
        ``Plan.from_keep_ratios(structure, r)`` (every layer keeps ``round(r * channels)``, rounded to
        ``round_to``) meets the target, ``r`` searched by bisection on ``[min_keep_ratio, 1]``; then, with
        ``fill_budget``, the budget that rounding leaves spent by :meth:`fill`."""

        def plan_at(ratio: float) -> Plan:
            return Plan.from_keep_ratios(self.structure, ratio, round_to=self.round_to)

        def fits(ratio: float) -> bool:
            return bool(self.fits(plan_at(ratio).array()))

        low, high = self.min_keep_ratio, 1.0
        if not fits(low):
            smallest = plan_at(low)
            latency = self.latency_of(smallest.array())
            raise RlalError(
                f"no keep ratio common to every layer meets the budget ({self.describe_targets()}): even "
                f"env.min_keep_ratio={low:g} in every layer costs {self.cost.of(smallest)[0]:,} MACs"
                + (f" and {latency:.3f} ms" if latency is not None else "")
            )
        for _ in range(40):  # 2^-40: far below one channel of any layer
            middle = (low + high) / 2
            low, high = (middle, high) if fits(middle) else (low, middle)
        plan = plan_at(low)
        if self.fill_budget:
            plan = Plan.from_keep_counts(self.structure, self.fill(plan.array()))
        return plan, low

    def fill(self, keep: np.ndarray) -> np.ndarray:
        """``keep`` grown while it fits: each step adds one allowed step (``round_to`` channels, or the rest
        of the layer) to the layer with the smallest keep ratio that can take it (ties: the cheaper step,
        then the earlier layer). The result fits and no single layer can grow one step more.

        Thinnest first keeps the plan as close to uniform as the budget allows: with ``round_to: 8`` at
        50% on ResNet-56 the common ratio puts the 64-channel layers at 24 (46.2% of the MACs); the fill
        brings them back to 32 one by one until the budget binds."""
        keep = np.asarray(keep, dtype=np.int64).copy()
        channels = self.structure.channels
        while True:
            rows, grown = [], []
            for t, counts in enumerate(self.allowed):
                above = counts[counts > keep[t]]
                if len(above):
                    row = keep.copy()
                    row[t] = above[0]
                    rows.append(row)
                    grown.append(t)
            if not rows:
                return keep
            rows_array = np.stack(rows)
            fits = self.fits(rows_array)
            if not fits.any():
                return keep
            added = self.cost.macs(rows_array) - self.cost.macs(keep)
            order = sorted(np.flatnonzero(fits), key=lambda i: (keep[grown[i]] / channels[grown[i]], added[i],
                                                               grown[i]))
            keep = rows_array[order[0]]

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
        if self.fits(trial):  # the usual case: one row priced
            return count
        candidates = self.allowed[layer][self.allowed[layer] < count]
        rows = np.repeat(trial[None, :], len(candidates), axis=0)
        rows[:, layer] = candidates
        fits = np.flatnonzero(self.fits(rows))
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


    def describe_targets(self) -> str:
        """The budgets in words, e.g. ``15,510,976 MACs, 11.200 ms per batch of 64``."""
        parts = [f"{self.target_macs:,} MACs"] if self.macs_budget else []
        if self.latency is not None:
            parts.append(f"{self.target_latency_ms:.3f} ms per batch of {self.latency.batch} on "
                         f"{self.latency.backend}")
        return ", ".join(parts)

    def _check_latency_feasible(self, target_latency: float | None, target_latency_ms: float | None) -> None:
        """Raise :class:`RlalError` with the feasible range unless the smallest sub-network's predicted
        latency <= target < the dense model's."""
        latency, target = self.latency, self.target_latency_ms
        assert latency is not None and target is not None
        fastest = float(latency.predict(self.min_keep))
        if fastest <= target < latency.dense_ms:
            return
        given = (f"env.target_latency={target_latency:g}" if target_latency is not None
                 else f"env.target_latency_ms={target_latency_ms:g}")
        why = ("is not below the dense model's" if target >= latency.dense_ms
               else "is below the smallest sub-network's")
        raise RlalError(
            f"{given} ({target:.3f} ms per batch of {latency.batch} on {latency.backend}) {why} latency; "
            f"feasible latency targets lie in [{math.ceil(fastest / latency.dense_ms * 1e4) / 1e4:.4f}, 1) "
            f"of the dense model's {latency.dense_ms:.3f} ms, or in "
            f"[{fastest:.3f}, {latency.dense_ms:.3f}) ms "
            f"(every prunable layer at min_keep_ratio={self.min_keep_ratio:g}, round_to={self.round_to})"
        )


def make_budget(
    structure: Structure, cfg: EnvConfig, *, device: str = "cpu", threads: int | None = None,
    stored: Path | dict[str, Any] | None = None,
) -> Budget:
    """The budget ``cfg`` asks for on ``structure``: the MACs target and, when ``env.target_latency`` (or
    ``target_latency_ms``) is set, a latency target priced by a latency table timed on ``device``'s backend
    (or read from ``stored``, a table file or table, or from the cache; see :mod:`rlal.structure.latency`).
    An infeasible target raises :class:`RlalError` with the feasible range."""
    latency = None
    if cfg.latency_budget:
        allowed = [allowed_counts(layer.channels, cfg.min_keep_ratio, cfg.round_to)
                   for layer in structure.layers]
        latency = LatencyModel.build(
            structure, allowed, backend=latency_backend(cfg, device), batch=cfg.latency_batch,
            threads=cfg.latency_threads or threads, grid=cfg.latency_grid, runs=cfg.latency_runs,
            cache_dir=cfg.latency_cache, stored=stored,
        )
    budget = Budget(structure, cfg.target_macs, cfg.min_keep_ratio, cfg.round_to, latency=latency,
                    target_latency=cfg.target_latency, target_latency_ms=cfg.target_latency_ms,
                    fill_budget=cfg.fill_budget)
    if cfg.residual_floor == "min":
        return budget
    # The shared residual widths never narrow below the uniform plan's: at 6% MACs on ResNet-56 the plans
    # that did lost most to uniform (docs/benchmarks.md, eleventh session).
    uniform = budget.uniform_plan()[0].array()
    residual = np.array([layer.residual for layer in structure.layers])
    return Budget(structure, cfg.target_macs, cfg.min_keep_ratio, cfg.round_to, latency=latency,
                  target_latency=cfg.target_latency, target_latency_ms=cfg.target_latency_ms,
                  floor=np.where(residual, uniform, 0), fill_budget=cfg.fill_budget)


def latency_check(budget: Budget, plan: Plan, small: nn.Module) -> dict[str, Any]:
    """``{"latency": ...}`` for a run's ``result.json`` when ``budget`` has a latency target, else ``{}``:
    the target, the plan's predicted latency, and the latency of ``small`` (the cut model) and of the dense
    model measured now, interleaved, on the budget's backend; whether the target was met by the prediction
    and by the measurement (which also carries the machine's noise)."""
    latency, target = budget.latency, budget.target_latency_ms
    if latency is None or target is None:
        return {}
    from rlal.export import compare_latency

    dense = copy.deepcopy(budget.structure.model).cpu().eval()
    pruned = copy.deepcopy(small).cpu().eval()
    backend = latency.backend
    with torch_threads(int(latency.meta["threads"])):
        row = compare_latency(dense, pruned, budget.structure.input_shape, batches=[latency.batch],
                              backends=[backend], warmup=5, runs=30)[0]
    predicted = latency.of(plan)
    measured, dense_now = row["pruned"]["median_ms"], row["dense"]["median_ms"]
    # The table's dense time and the one measured now differ by the machine's drift; the ratio carries over.
    measured_ratio = measured / dense_now
    return {"latency": {
        "backend": backend, "batch": latency.batch, "threads": int(latency.meta["threads"]),
        "target_ms": target, "target_ratio": target / latency.dense_ms, "table_dense_ms": latency.dense_ms,
        "predicted_ms": predicted, "predicted_ratio": predicted / latency.dense_ms,
        "measured_ms": measured, "measured_dense_ms": dense_now, "measured_ratio": measured_ratio,
        "speedup": dense_now / measured, "predicted_error": predicted / latency.dense_ms / measured_ratio - 1,
        "met_predicted": bool(predicted <= target * (1 + 1e-9)),
        "met_measured": bool(measured_ratio <= target / latency.dense_ms),
    }}  # fmt: skip


def latency_backend(cfg: EnvConfig, device: str = "cpu") -> str:
    """``env.latency_backend`` resolved: ``auto`` is PyTorch on the run's device."""
    if cfg.latency_backend != "auto":
        if cfg.latency_backend == "torch-cuda" and not str(device).startswith("cuda"):
            raise RlalError("env.latency_backend=torch-cuda needs the run on a CUDA device")
        return cfg.latency_backend
    return "torch-cuda" if str(device).startswith("cuda") else "torch-cpu"


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
