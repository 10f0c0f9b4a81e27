"""Latency cost model: a plan's predicted inference latency, from timings of its convs at their widths.

    allowed = [allowed_counts(layer.channels, 0.2, 8) for layer in structure.layers]
    latency = LatencyModel.build(structure, allowed, backend="onnxruntime-cpu", batch=64)  # timed, or cached
    latency.predict(keep)      # ms per batch of 64, vectorised over (B, L) keep counts
    latency.dense_ms           # the dense model, timed whole (and latency.min_ms, the smallest sub-network)

MACs are a poor proxy for speed: on a CPU a 45-channel conv can be slower than a 48-channel one, and ops
that pruning does not touch (residual additions, pooling, per-call overhead) do not shrink. So a latency
budget needs timings, taken on the backend and at the batch size the model will be deployed with.

**What is timed.** Every conv and linear module whose MACs the cost model counts is a *unit*: a conv with the
module's kernel, stride, padding, dilation and groups, then BatchNorm and ReLU (the usual pattern, which ONNX
Runtime fuses into the conv), on an input of the module's spatial size, at ``batch``. A plan sets each unit's
output and input channels (:meth:`CostModel.widths`). Each unit is timed at the widths its governing layer's
allowed keep counts give it: all of them when there are at most ``grid`` per axis (e.g. ``round_to: 8`` on
layers of up to 128 channels), else ``grid`` of them evenly spaced, ends included, with linear interpolation
in between. Modules of the same shapes share timings, so a ResNet-56 times each of its stages' shapes once.

**Prediction.** ``latency(plan) = rest + scale * sum over units of unit(out, in)``. Two whole models are
timed as well, the dense one and the smallest sub-network (every layer at its minimum count), and ``rest``
and ``scale`` make the prediction exact at both: ``rest`` is what pruning does not change (residual
additions, pooling, per-call overhead), ``scale`` what timing units one by one gets wrong (ONNX Runtime fuses
a residual addition into the conv before it, a unit in isolation has its inputs in cache). The prediction is
checked against the measured latency of cut models in ``bench/latency_predictor.py`` and at the end of every
run with a latency target.

**Monotone by construction.** Each unit's table is replaced by its running maximum along each axis, so a
wider layer is never predicted faster. The budget's action wall and bisections rely on that (a keep count
that fits with the later layers at their minimum must keep the target reachable). The price: a width
measured faster than a narrower one is predicted at the narrower one's time, so the budget errs on the
safe side.

**Cache.** Timings are written as JSON under ``cache_dir`` (default ``$XDG_CACHE_HOME/rlal/latency``, else
``~/.cache/rlal/latency``), one file per model and per backend, batch, threads, device and library versions;
a later build reuses every unit it finds there and times only the missing ones. A run also keeps the table
it used in its run directory, so a resumed run prices plans exactly as before.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rlal.checkpoint import atomic_write
from rlal.errors import RlalError
from rlal.structure.layers import Structure
from rlal.structure.plan import Plan, check_plan
from rlal.structure.trace import example_input, model_label

TABLE_VERSION = 2
TIMED_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
"""Module types a latency table can time (transposed convs are not supported)."""


@dataclass(frozen=True)
class Unit:
    """One timed op: a conv (+ BatchNorm + ReLU) or a linear layer at given widths and input size."""

    kind: str  # "conv" or "linear"
    in_channels: int  # total input channels (not per group)
    out_channels: int
    groups: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    bias: bool
    spatial: tuple[int, ...]  # the input's size after the channel dimension (conv) or before it (linear)

    @property
    def key(self) -> str:
        """A stable name of the unit's shapes: the cache's key."""
        dims = "x".join(map(str, self.spatial)) or "-"
        if self.kind == "linear":
            return f"linear i{self.in_channels} o{self.out_channels} b{int(self.bias)} @{dims}"
        join = lambda t: "x".join(map(str, t))  # noqa: E731
        return (f"conv i{self.in_channels} o{self.out_channels} g{self.groups} k{join(self.kernel)} "
                f"s{join(self.stride)} p{join(self.padding)} d{join(self.dilation)} b{int(self.bias)} "
                f"@{dims}")

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One example's input shape (no batch dimension)."""
        if self.kind == "linear":
            return (*self.spatial, self.in_channels)
        return (self.in_channels, *self.spatial)

    def torch_module(self) -> nn.Module:
        """The unit as a PyTorch module in eval mode."""
        if self.kind == "linear":
            return nn.Linear(self.in_channels, self.out_channels, bias=self.bias).eval()
        n = len(self.kernel)
        conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[n - 1]
        norm = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)[n - 1]
        return nn.Sequential(
            conv(self.in_channels, self.out_channels, self.kernel, self.stride, self.padding, self.dilation,
                 self.groups, bias=self.bias),
            norm(self.out_channels), nn.ReLU(),
        ).eval()  # fmt: skip

    def onnx_bytes(self) -> bytes:
        """The unit as a serialised ONNX model (Conv + Relu, or MatMul + Add), built directly: exporting
        each unit from PyTorch would take far longer than timing it. BatchNorm is left out because ONNX
        Runtime folds it into the conv."""
        from rlal.export import _import

        onnx = _import("onnx")
        TensorProto, helper, numpy_helper = onnx.TensorProto, onnx.helper, onnx.numpy_helper

        rng = np.random.default_rng(0)
        inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", *self.input_shape])]
        if self.kind == "linear":
            weight = rng.standard_normal((self.in_channels, self.out_channels)).astype(np.float32)
            nodes = [helper.make_node("MatMul", ["x", "w"], ["y" if not self.bias else "m"])]
            inits = [numpy_helper.from_array(weight, "w")]
            if self.bias:
                nodes.append(helper.make_node("Add", ["m", "b"], ["y"]))
                inits.append(numpy_helper.from_array(np.zeros(self.out_channels, np.float32), "b"))
        else:
            shape = (self.out_channels, self.in_channels // self.groups, *self.kernel)
            inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), "w"),
                     numpy_helper.from_array(np.zeros(self.out_channels, np.float32), "b")]
            nodes = [
                helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=list(self.kernel),
                                 strides=list(self.stride), pads=list(self.padding) * 2,
                                 dilations=list(self.dilation), group=self.groups),
                helper.make_node("Relu", ["c"], ["y"]),
            ]  # fmt: skip
        outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
        graph = helper.make_graph(nodes, "unit", inputs, outputs, initializer=inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8  # readable by every onnxruntime this project supports
        return model.SerializeToString()


Timer = Callable[[Unit], float]
"""Milliseconds per batch of one unit (tests pass an analytic one)."""


@dataclass(frozen=True)
class _Call:
    """One call of a counted module in the dense model, with the grid its widths are timed on."""

    column: int  # the module's column in CostModel.widths
    unit: Unit  # at full width
    depthwise: bool
    out_grid: tuple[int, ...]
    in_grid: tuple[int, ...]  # input channels per group

    def at(self, out: int, inn: int) -> Unit:
        """The unit at ``out`` output channels and ``inn`` input channels per group."""
        u = self.unit
        if u.kind == "linear":
            return _replace(u, in_channels=inn, out_channels=out)
        if self.depthwise:  # channels, groups and outputs shrink together
            return _replace(u, in_channels=out, out_channels=out, groups=out)
        return _replace(u, in_channels=inn * u.groups, out_channels=out)


class LatencyModel:
    """Predicted latency (ms per batch) of the sub-networks of one :class:`Structure` on one backend."""

    def __init__(self, structure: Structure, calls: Sequence[_Call], unit_ms: dict[str, float],
                 dense_ms: float, min_ms: float, min_keep: Sequence[int], meta: dict[str, Any]) -> None:
        self.structure = structure
        self.meta = dict(meta)
        """Backend, batch, threads, device and library versions the timings were taken with."""
        self.dense_ms = float(dense_ms)
        """The dense model's measured latency (ms per batch)."""
        self.unit_ms = dict(unit_ms)
        """Every timed unit's median latency, by :attr:`Unit.key`."""
        self.cache_path: Path | None = None
        """Where the table was read from or written to (None: not cached)."""
        self._calls = list(calls)
        self._tables = [
            _monotone(np.array([[unit_ms[c.at(o, i).key] for i in c.in_grid] for o in c.out_grid]))
            for c in self._calls
        ]
        self.min_ms = float(min_ms)
        """The smallest sub-network's measured latency (every layer at its minimum keep count)."""
        self.min_keep = np.asarray(min_keep, dtype=np.int64)
        """That sub-network's keep counts."""
        dense_units = float(self._units(structure.channels[None, :])[0])
        min_units = float(self._units(self.min_keep[None, :])[0])
        if not (self.dense_ms > self.min_ms and dense_units > min_units):
            raise RlalError(
                f"pruning shows no measurable speed-up on {meta['backend']} at batch {meta['batch']}: the "
                f"dense model took {self.dense_ms:.3f} ms and the smallest sub-network {self.min_ms:.3f} ms; "
                f"time more calls (env.latency_runs), a larger batch (env.latency_batch), or on a quieter "
                f"machine, or use env.target_macs alone"
            )
        self.scale = (self.dense_ms - self.min_ms) / (dense_units - min_units)
        """Multiplies the units' sum (> 0: the prediction stays monotone); see the module docstring."""
        self.rest_ms = self.dense_ms - self.scale * dense_units
        """What pruning does not change (see the module docstring)."""

    @property
    def backend(self) -> str:
        return str(self.meta["backend"])

    @property
    def batch(self) -> int:
        return int(self.meta["batch"])

    def predict(self, keep: np.ndarray) -> np.ndarray:
        """Predicted ms per batch for keep counts of shape (L,) (a 0-d array) or (B, L) (a vector)."""
        k = np.asarray(keep, dtype=np.float64)
        total = self.rest_ms + self.scale * self._units(np.atleast_2d(k))
        return total[0] if k.ndim == 1 else total

    def _units(self, keep: np.ndarray) -> np.ndarray:
        """Sum of the units' interpolated timings for (B, L) keep counts."""
        out, inn = self.structure.cost.widths(keep)
        total = np.zeros(out.shape[0])
        for call, table in zip(self._calls, self._tables, strict=True):
            total += _bilinear(call.out_grid, call.in_grid, table, out[:, call.column], inn[:, call.column])
        return total

    def of(self, plan: Plan) -> float:
        """Predicted ms per batch of the sub-network ``plan`` describes."""
        check_plan(self.structure, plan)
        return float(self.predict(plan.array()))

    def to_json(self) -> dict[str, Any]:
        """The table as plain data (what the cache and a run directory hold)."""
        return {"version": TABLE_VERSION, "meta": self.meta, "dense_ms": self.dense_ms, "min_ms": self.min_ms,
                "min_keep": self.min_keep.tolist(), "min_ms_by_keep": {_keep_key(self.min_keep): self.min_ms},
                "units": dict(sorted(self.unit_ms.items()))}

    @classmethod
    def build(
        cls,
        structure: Structure,
        allowed: Sequence[np.ndarray],
        *,
        backend: str = "torch-cpu",
        batch: int = 64,
        threads: int | None = None,
        grid: int = 16,
        runs: int = 15,
        warmup: int = 3,
        cache_dir: str | Path | None = None,
        stored: str | Path | dict[str, Any] | None = None,
        timer: Timer | None = None,
        whole_timer: Callable[[np.ndarray], float] | None = None,
    ) -> LatencyModel:
        """Time (or read from the cache) the units of ``structure``'s sub-networks whose layers take the keep
        counts ``allowed`` (per layer, ascending), and the dense and smallest models.

        ``stored`` (a table file, or a table as :meth:`to_json` gives it: a resumed run's own, or rank 0's
        under ``torchrun``) is authoritative: it is used whenever it was timed for this model, backend and
        batch, even on another machine or thread count (with a warning), so that a run never changes its
        prices midway. The cache (``cache_dir``; None = the default, see the module docstring, ``""`` = none)
        is used only for the same machine, threads and library versions. ``timer`` (one unit) and
        ``whole_timer`` (the sub-network of some keep counts, cut from the model) replace the real
        measurements (tests). Raises :class:`RlalError` when the smallest sub-network is not measurably
        faster than the dense model."""
        if grid < 2:
            raise RlalError(f"env.latency_grid must be >= 2, got {grid}")
        threads = threads if threads is not None else torch.get_num_threads()
        calls = _calls(structure, allowed, grid)
        needed = {c.at(o, i).key: c.at(o, i) for c in calls for o in c.out_grid for i in c.in_grid}
        meta = {"backend": backend, "batch": int(batch), "threads": int(threads), **_environment(backend)}
        model_print = _fingerprint(structure, {"backend": backend, "batch": int(batch)})
        fingerprint = _fingerprint(structure, meta)
        meta |= {"model": model_label(structure.model), "fingerprint": fingerprint,
                 "model_fingerprint": model_print}
        min_keep = [int(counts[0]) for counts in allowed]

        unit_ms: dict[str, float] = {}
        dense_ms: float | None = None
        min_ms: float | None = None
        path = None if cache_dir == "" else _cache_dir(cache_dir) / f"{meta['model']}-{fingerprint}.json"
        cached = _read_table(path, "fingerprint", fingerprint) if path is not None else None
        own = _read_table(stored, "model_fingerprint", model_print) if stored is not None else None
        if stored is not None and own is None:
            _warn(f"the stored latency table does not fit {meta['model']} on {backend} at batch {batch}: "
                  f"timing a new one")
        if own is not None and own["meta"].get("fingerprint") != fingerprint:
            _warn(f"using the run's latency table timed on {own['meta'].get('device')} with "
                  f"{own['meta'].get('threads')} thread(s) (this machine: {meta['device']}, {threads})")
        for table in (cached, own):  # the run's own table last: it wins
            if table is not None:
                unit_ms |= table["units"]
                dense_ms = float(table["dense_ms"])
                min_ms = table.get("min_ms_by_keep", {}).get(_keep_key(min_keep), min_ms)
        if own is not None:  # the run's own (or rank 0's) table: its meta, so its fingerprint travels on
            meta = dict(own["meta"])
        missing = [unit for key, unit in needed.items() if key not in unit_ms]
        time_unit = timer or _UnitTimer(backend, batch, threads, warmup, runs)
        for unit in missing:
            unit_ms[unit.key] = float(time_unit(unit))
        time_whole = whole_timer or _WholeTimer(structure, backend, batch, threads, warmup, runs)
        timed_whole = dense_ms is None or min_ms is None
        if dense_ms is None:
            dense_ms = float(time_whole(structure.channels))
        if min_ms is None:
            min_ms = float(time_whole(np.array(min_keep)))
        model = cls(structure, calls, unit_ms, dense_ms, float(min_ms), min_keep, meta)
        if path is not None and own is None and (missing or timed_whole or cached is None):
            table = model.to_json()
            if cached is not None:  # keep what the cache held for other widths and floors
                table["units"] = dict(sorted({**cached["units"], **table["units"]}.items()))
                table["min_ms_by_keep"] = {**cached.get("min_ms_by_keep", {}), **table["min_ms_by_keep"]}
            _write_table(path, table)
        model.cache_path = path
        return model

    def write(self, path: str | Path) -> None:
        """Write the table as JSON at ``path`` (atomically)."""
        _write_table(Path(path), self.to_json())


def _calls(structure: Structure, allowed: Sequence[np.ndarray], grid: int) -> list[_Call]:
    """Every call of every counted module, with the widths its unit is timed at."""
    model = structure.model
    modules = dict(model.named_modules())
    cost = structure.cost
    shapes: dict[str, list[tuple[int, ...]]] = {}
    hooks = []
    for name in cost.counted:
        module = modules[name]
        if not isinstance(module, TIMED_TYPES):
            raise RlalError(f"a latency budget cannot time {name} ({type(module).__name__}): only "
                            f"Conv1d/2d/3d and Linear layers are supported; use env.target_macs alone")
        hooks.append(module.register_forward_hook(
            lambda m, args, out, name=name: shapes.setdefault(name, []).append(tuple(args[0].shape[1:]))))
    try:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(example_input(model, structure.input_shape))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()

    channels = structure.channels
    calls = []
    for column, name in enumerate(cost.counted):
        module = modules[name]
        out_drop, in_drop = cost.governing(name)
        for shape in shapes.get(name, []):
            if isinstance(module, nn.Linear):
                unit = Unit("linear", module.in_features, module.out_features, 1, (), (), (), (),
                            module.bias is not None, tuple(shape[:-1]))
                depthwise = False
            else:
                padding = _padding(module)
                unit = Unit("conv", module.in_channels, module.out_channels, module.groups,
                            tuple(module.kernel_size), tuple(module.stride), padding, tuple(module.dilation),
                            module.bias is not None, tuple(shape[1:]))
                depthwise = 1 < module.groups == module.in_channels == module.out_channels
            per_group_in = unit.in_channels // unit.groups
            # A depthwise conv's groups follow its channels; another grouped conv keeps its groups.
            multiple = 1 if depthwise else unit.groups
            out_grid = _axis(unit.out_channels, out_drop, channels, allowed, grid, multiple=multiple)
            in_grid = (1,) if depthwise else _axis(per_group_in, in_drop, channels, allowed, grid, multiple=1)
            calls.append(_Call(column, unit, depthwise, out_grid, in_grid))
    return calls


def _axis(full: int, drop: np.ndarray, channels: np.ndarray, allowed: Sequence[np.ndarray], grid: int,
          multiple: int) -> tuple[int, ...]:
    """The widths one axis of a unit is timed at: as the layers that govern it allow, at most ``grid``."""
    governing = np.flatnonzero(drop)
    if len(governing) == 0:
        return (full,)
    if len(governing) == 1:
        i = governing[0]
        values = full - (channels[i] - allowed[i]) * drop[i]
    else:  # several layers feed this axis (concatenations): span the range evenly
        low = full - sum((channels[i] - allowed[i][0]) * drop[i] for i in governing)
        values = np.linspace(low, full, grid)
    values = np.unique(np.maximum(np.rint(values).astype(np.int64), 1))
    if len(values) > grid:
        values = values[np.unique(np.rint(np.linspace(0, len(values) - 1, grid)).astype(np.int64))]
    if multiple > 1:  # a grouped conv's output is a multiple of its groups (tied groups keep it so)
        values = np.unique(np.maximum(np.ceil(values / multiple) * multiple, multiple).astype(np.int64))
    return tuple(int(v) for v in values)


def _padding(module: nn.Module) -> tuple[int, ...]:
    """A conv's padding per side as integers (``'same'``/``'valid'`` resolved)."""
    padding = module.padding
    if isinstance(padding, str):
        if padding == "valid":
            return (0,) * len(module.kernel_size)
        return tuple(d * (k - 1) // 2 for k, d in zip(module.kernel_size, module.dilation, strict=True))
    return tuple(padding)


def _replace(unit: Unit, **changes: Any) -> Unit:
    return Unit(**{**asdict(unit), **changes})


def _monotone(table: np.ndarray) -> np.ndarray:
    """The running maximum along both axes: never faster when wider (see the module docstring)."""
    return np.maximum.accumulate(np.maximum.accumulate(table, axis=0), axis=1)


def _bilinear(xs: Sequence[int], ys: Sequence[int], table: np.ndarray, x: np.ndarray, y: np.ndarray
              ) -> np.ndarray:
    """``table`` (len(xs) x len(ys)) interpolated linearly at points (x, y), clamped to the grid."""
    xs_a, ys_a = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)

    def locate(grid: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if len(grid) == 1:
            zero = np.zeros(len(v), dtype=np.int64)
            return zero, zero, np.zeros(len(v))
        v = np.clip(v, grid[0], grid[-1])
        hi = np.clip(np.searchsorted(grid, v), 1, len(grid) - 1)
        lo = hi - 1
        return lo, hi, (v - grid[lo]) / (grid[hi] - grid[lo])

    x0, x1, fx = locate(xs_a, x)
    y0, y1, fy = locate(ys_a, y)
    top = table[x0, y0] * (1 - fy) + table[x0, y1] * fy
    bottom = table[x1, y0] * (1 - fy) + table[x1, y1] * fy
    return top * (1 - fx) + bottom * fx


class _UnitTimer:
    """Times units on a backend: the median of ``runs`` single calls after ``warmup`` (as
    :func:`rlal.export.measure_latency`)."""

    def __init__(self, backend: str, batch: int, threads: int, warmup: int, runs: int) -> None:
        self.backend, self.batch, self.threads, self.warmup, self.runs = backend, batch, threads, warmup, runs

    def __call__(self, unit: Unit) -> float:
        from rlal.export import measure_latency, onnx_runner, onnxruntime_session

        if self.backend == "onnxruntime-cpu":
            fn: Any = onnx_runner(onnxruntime_session(unit.onnx_bytes(), self.threads))
            device = "cpu"
        else:
            fn, device = unit.torch_module(), "cuda" if self.backend == "torch-cuda" else "cpu"
        with torch_threads(self.threads):
            return float(measure_latency(fn, unit.input_shape, self.batch, device=device, warmup=self.warmup,
                                         runs=self.runs)["median_ms"])


class _WholeTimer:
    """Times the sub-network of some keep counts, cut from the model (the dense model itself at full
    width), on a backend; the training model is left where and as it is."""

    def __init__(self, structure: Structure, backend: str, batch: int, threads: int, warmup: int,
                 runs: int) -> None:
        self.structure, self.backend, self.batch = structure, backend, batch
        self.threads, self.warmup, self.runs = threads, warmup, runs

    def __call__(self, keep: np.ndarray) -> float:
        from rlal.export import export_onnx, measure_latency, onnx_runner
        from rlal.structure.surgery import cut

        structure, shape = self.structure, self.structure.input_shape
        if np.array_equal(keep, structure.channels):
            model = copy.deepcopy(structure.model)
        else:
            model = cut(structure, Plan.from_keep_counts(structure, [int(k) for k in keep]))
        model = model.cpu().eval()
        with torch_threads(self.threads):
            if self.backend == "onnxruntime-cpu":
                with tempfile.TemporaryDirectory(prefix="rlal-latency-") as tmp:
                    runner = onnx_runner(export_onnx(model, shape, Path(tmp) / "model.onnx"), self.threads)
                return float(measure_latency(runner, shape, self.batch, warmup=self.warmup,
                                             runs=self.runs)["median_ms"])
            device = "cuda" if self.backend == "torch-cuda" else "cpu"
            return float(measure_latency(model, shape, self.batch, device=device, warmup=self.warmup,
                                         runs=self.runs)["median_ms"])


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Torch's CPU threads set to ``n`` for a block, the previous number put back after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _environment(backend: str) -> dict[str, Any]:
    from rlal.export import environment

    env = environment()
    device = env["cuda"] if backend == "torch-cuda" else env["cpu"]
    return {"device": device, "torch": env["torch"],
            "onnxruntime": env["onnxruntime"] if backend == "onnxruntime-cpu" else None}


def _fingerprint(structure: Structure, meta: dict[str, Any]) -> str:
    """What a table depends on: the model's modules and input shape, and where it is timed."""
    modules = [(name, type(m).__name__, repr(m)) for name, m in structure.model.named_modules()
               if isinstance(m, TIMED_TYPES)]
    text = json.dumps({"input": list(structure.input_shape), "modules": modules, **meta}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cache_dir(cache_dir: str | Path | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rlal" / "latency"


def _keep_key(keep: Sequence[int] | np.ndarray) -> str:
    return ",".join(str(int(k)) for k in keep)


def _warn(message: str) -> None:
    import warnings

    warnings.warn(message, stacklevel=3)


def _read_table(source: str | Path | dict[str, Any], key: str, fingerprint: str) -> dict[str, Any] | None:
    """A stored table (a file, or the table itself) whose ``meta[key]`` is ``fingerprint``, or None
    (missing, unreadable, or another model's or machine's)."""
    if isinstance(source, dict):
        stored: Any = source
    else:
        try:
            stored = json.loads(Path(source).read_text())
        except (OSError, ValueError):
            return None
    ok = (isinstance(stored, dict) and stored.get("version") == TABLE_VERSION
          and isinstance(stored.get("meta"), dict) and stored["meta"].get(key) == fingerprint
          and isinstance(stored.get("units"), dict) and isinstance(stored.get("dense_ms"), int | float)
          and isinstance(stored.get("min_ms"), int | float)
          and all(isinstance(v, int | float) and math.isfinite(v) and v > 0
                  for v in stored["units"].values()))
    return stored if ok else None


def _write_table(path: Path, table: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: tmp.write_text(json.dumps(table, indent=1) + "\n"))
    except (OSError, RlalError) as exc:  # a cache that cannot be written only costs a re-measurement later
        import warnings

        warnings.warn(f"latency table not written at {path}: {exc}", stacklevel=3)
