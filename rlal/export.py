"""ONNX export and latency measurement of (pruned) models.

    export_onnx(model, (3, 32, 32), "small.onnx")                    # dynamic batch axis, atomic write
    measure_latency(model, (3, 32, 32), batch=64, device="cpu")        # {"median_ms": ..., "p10_ms": ...}
    measure_latency(onnx_runner("small.onnx"), (3, 32, 32), batch=1)  # the same, in ONNX Runtime
    compare_latency(dense, small, (3, 32, 32))                        # dense vs pruned, every backend

**What a latency figure means.** ``measure_latency`` builds one random input batch, calls the model
``warmup`` times untimed (so that lazy initialisation, oneDNN/cuDNN algorithm selection, the CUDA caching
allocator and the CPU caches have settled), then calls it ``runs`` more times and times *each call on its
own* with ``time.perf_counter`` (on CUDA with ``torch.cuda.synchronize()`` before starting the clock and
before stopping it, so a figure is the whole forward pass, launch overhead included). The result is the
median of those ``runs`` per-call times in milliseconds, with the 10th and 90th percentiles for the spread;
PyTorch runs under ``torch.inference_mode()``. One call is one forward pass of the whole batch, so the
figure is the latency of a batch, not of an image (``images_per_s`` divides it out). The median of many
single calls, rather than the mean or the total, keeps a few preempted calls on a shared machine from
moving the figure. When a dense and a pruned model are compared (:func:`compare_latency`), their timed calls
alternate in turns of 10, so that a burst of load from another process slows both alike. CPU figures depend
on the thread count: it is recorded with every figure, and ONNX Runtime is given the same number of intra-op
threads as PyTorch. On a machine shared with other jobs, time with one thread (``--threads 1``): with more,
OpenMP threads that wait for a busy core make the figures swing by orders of magnitude.

ONNX Runtime and the ``onnx`` package are optional (``pip install 'rlal[export]'``); a function that needs
them raises :class:`~rlal.errors.RlalError` saying so when they are absent.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from rlal.checkpoint import atomic_write
from rlal.errors import RlalError
from rlal.machine import describe

Exporter = Literal["auto", "torchscript", "dynamo"]
Backend = Literal["torch-cpu", "onnxruntime-cpu", "torch-cuda"]
BACKENDS: tuple[Backend, ...] = ("torch-cpu", "onnxruntime-cpu", "torch-cuda")

DYNAMO_MIN_OPSET = 18
"""The ``torch.export``-based ONNX exporter has no implementations below opset 18: asked for 17 (torch 2.13)
it exports 18, then tries ONNX's version converter, which fails on ResNets (Squeeze/Unsqueeze axes), keeps 18
and logs a traceback. So opsets below 18 go through the TorchScript exporter (deprecated, still in 2.13)."""

INPUT_NAME, OUTPUT_NAME = "input", "logits"
EXTRA_HINT = "pip install 'rlal[export]'"


def export_onnx(
    model: nn.Module,
    input_shape: Sequence[int],
    path: str | Path,
    opset: int = 17,
    *,
    exporter: Exporter = "auto",
) -> Path:
    """Write ``model`` as an ONNX file at ``path`` (atomically: a crash never leaves a partial file) with one
    input ``input`` of shape ``[batch, *input_shape]`` whose batch axis is dynamic, and one output ``logits``.

    ``exporter="auto"`` uses the TorchScript exporter below opset 18 and the ``torch.export`` (dynamo)
    exporter from 18 (see :data:`DYNAMO_MIN_OPSET`). The model is traced in eval mode on its own device; its
    train/eval mode is restored after. Raises :class:`RlalError` if the export fails or the file does not
    carry the requested opset."""
    onnx = _import("onnx")
    if opset < 7:
        raise RlalError(f"ONNX opset must be >= 7, got {opset}")
    if exporter == "auto":
        exporter = "dynamo" if opset >= DYNAMO_MIN_OPSET else "torchscript"
    if exporter == "dynamo" and opset < DYNAMO_MIN_OPSET:
        raise RlalError(f"the dynamo ONNX exporter needs opset >= {DYNAMO_MIN_OPSET}, got {opset}")
    if exporter == "dynamo":
        _import("onnxscript")
    path = Path(path)
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    # Batch 2, not 1: an exporter may specialise a dimension of size 1 to a constant.
    example = torch.randn(2, *input_shape, device=device)
    was_training = model.training
    model.eval()

    def write(tmp: Path) -> None:
        common: dict[str, Any] = {
            "input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME], "opset_version": opset,
        }
        if exporter == "dynamo":
            common |= {"dynamo": True, "external_data": False,
                       "dynamic_shapes": ({0: torch.export.Dim("batch")},)}
        else:
            common |= {"dynamo": False,
                       "dynamic_axes": {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}}
        # Both exporters print progress and deprecation notes that say nothing about this model.
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(tmp), **common)
        tmp.chmod(0o666 & ~_umask())  # the temporary file is private (0600); the export is an ordinary file

    try:
        atomic_write(path, write)
    except RlalError:
        raise
    except Exception as exc:  # the exporters raise many types, none of them ours
        raise RlalError(f"ONNX export ({exporter}, opset {opset}) failed: {type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    finally:
        model.train(was_training)
    proto = onnx.load(str(path), load_external_data=False)
    got = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if got != opset:
        raise RlalError(f"{path}: exported with opset {got}, not the requested {opset}")
    onnx.checker.check_model(proto)
    return path


def onnxruntime_session(path: str | Path | bytes, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU ``InferenceSession`` on ``path`` (or a serialised model) with every graph
    optimisation on and ``threads`` intra-op threads (default: as many as PyTorch uses, so that the two
    compare fairly)."""
    ort = _import("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads if threads is not None else torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    try:
        model = path if isinstance(path, bytes) else str(path)
        return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own exception types
        what = "a serialised model" if isinstance(path, bytes) else path
        raise RlalError(f"{what}: ONNX Runtime cannot load it ({type(exc).__name__})") from None


def onnx_runner(session_or_path: Any, threads: int | None = None) -> Callable[[torch.Tensor], np.ndarray]:
    """A function ``x -> logits`` that runs a CPU tensor through an ONNX Runtime session (or the ONNX file
    at a path); ``x.numpy()`` shares the tensor's memory, so nothing is copied on the way in."""
    session = (onnxruntime_session(session_or_path, threads)
               if isinstance(session_or_path, str | Path) else session_or_path)
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> np.ndarray:
        return session.run(None, {name: x.numpy()})[0]

    return run


def measure_latency(
    fn_or_model: nn.Module | Callable[[torch.Tensor], Any],
    input_shape: Sequence[int],
    batch: int,
    *,
    device: str | torch.device = "cpu",
    warmup: int = 10,
    runs: int = 50,
    seed: int = 0,
) -> dict[str, Any]:
    """Latency of one forward pass of a ``batch`` of random ``input_shape`` images: ``warmup`` untimed calls,
    then ``runs`` calls each timed alone (see the module docstring). A module is put in eval mode and moved
    to ``device``; any other callable is called with a tensor on ``device``.

    Returns ``{"batch", "device", "threads", "warmup", "runs", "median_ms", "p10_ms", "p90_ms",
    "images_per_s"}``, ``images_per_s`` being ``batch`` over the median."""
    return _measure_interleaved({"model": fn_or_model}, input_shape, batch, device=device, warmup=warmup,
                                runs=runs, seed=seed)["model"]


INTERLEAVE_BLOCK = 10
"""Timed calls per turn when several models are timed together (see :func:`_measure_interleaved`)."""


def _measure_interleaved(
    fns: dict[str, nn.Module | Callable[[torch.Tensor], Any]],
    input_shape: Sequence[int],
    batch: int,
    *,
    device: str | torch.device,
    warmup: int,
    runs: int,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """:func:`measure_latency` of several models on the same input, their timed calls taken in turns of
    :data:`INTERLEAVE_BLOCK` (A x10, B x10, A x10, ...): on a shared machine a burst of load from another
    process then slows every model alike instead of whichever happened to be running."""
    if batch < 1 or runs < 1 or warmup < 0:
        raise RlalError(f"latency needs batch >= 1, runs >= 1, warmup >= 0; got {batch}, {runs}, {warmup}")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RlalError(f"device {device} asked for but CUDA is not available")
    fns = {name: fn.eval().to(device) if isinstance(fn, nn.Module) else fn for name, fn in fns.items()}
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *input_shape, generator=generator).to(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times: dict[str, list[float]] = {name: [] for name in fns}
    with torch.inference_mode():
        for fn in fns.values():
            for _ in range(warmup):
                fn(x)
            sync()
        for start in range(0, runs, INTERLEAVE_BLOCK):
            for name, fn in fns.items():
                for _ in range(min(INTERLEAVE_BLOCK, runs - start)):
                    begin = time.perf_counter()
                    fn(x)
                    sync()
                    times[name].append(time.perf_counter() - begin)
    threads = torch.get_num_threads()
    summaries = {}
    for name, seconds in times.items():
        ms = np.asarray(seconds) * 1e3
        median = float(np.median(ms))
        summaries[name] = {
            "batch": batch, "device": str(device), "threads": threads, "warmup": warmup, "runs": runs,
            "median_ms": median, "p10_ms": float(np.percentile(ms, 10)),
            "p90_ms": float(np.percentile(ms, 90)), "images_per_s": batch / median * 1e3,
        }  # fmt: skip
    return summaries


def available_backends() -> list[Backend]:
    """The backends :func:`compare_latency` can time here: PyTorch eager on the CPU always, ONNX Runtime on
    the CPU when it is installed, PyTorch on CUDA when a GPU is visible."""
    backends: list[Backend] = ["torch-cpu"]
    if _installed("onnxruntime") and _installed("onnx"):
        backends.append("onnxruntime-cpu")
    if torch.cuda.is_available():
        backends.append("torch-cuda")
    return backends


def compare_latency(
    dense: nn.Module,
    pruned: nn.Module,
    input_shape: Sequence[int],
    *,
    batches: Sequence[int] = (1, 64),
    backends: Sequence[Backend] | None = None,
    warmup: int = 10,
    runs: int = 50,
    opset: int = 17,
) -> list[dict[str, Any]]:
    """Time ``dense`` and ``pruned`` on each backend (default :func:`available_backends`) at each batch size.

    One row per (backend, batch): ``{"backend", "batch", "threads", "dense": <measure_latency dict>,
    "pruned": <...>, "speedup"}``, ``speedup`` = dense median / pruned median. The two models are timed
    on the same input, in alternating turns of 10 calls (so that load from other processes hits both
    alike). For ONNX Runtime both are exported first (to a temporary directory) with :func:`export_onnx`.
    Both models are left on the CPU in eval mode."""
    backends = list(backends) if backends is not None else available_backends()
    rows: list[dict[str, Any]] = []
    for backend in backends:
        runners = _runners(backend, dense, pruned, input_shape, opset)
        device = "cuda" if backend == "torch-cuda" else "cpu"
        for batch in batches:
            figures = _measure_interleaved(runners, input_shape, batch, device=device, warmup=warmup,
                                           runs=runs)
            rows.append({
                "backend": backend, "batch": batch, "threads": figures["dense"]["threads"], **figures,
                "speedup": figures["dense"]["median_ms"] / figures["pruned"]["median_ms"],
            })
        if backend == "torch-cuda":
            dense.cpu()
            pruned.cpu()
    return rows


def _runners(
    backend: Backend, dense: nn.Module, pruned: nn.Module, input_shape: Sequence[int], opset: int
) -> dict[str, Any]:
    if backend in ("torch-cpu", "torch-cuda"):
        return {"dense": dense, "pruned": pruned}
    if backend != "onnxruntime-cpu":
        raise RlalError(f"unknown latency backend {backend!r} (valid: {', '.join(BACKENDS)})")
    dense.cpu()
    pruned.cpu()
    runners = {}
    with tempfile.TemporaryDirectory(prefix="rlal-onnx-") as tmp:
        for name, model in (("dense", dense), ("pruned", pruned)):
            path = export_onnx(model, input_shape, Path(tmp) / f"{name}.onnx", opset)
            runners[name] = onnx_runner(path)  # the session holds the model: the file may go
    return runners


def environment() -> dict[str, Any]:
    """What a latency figure depends on besides the model: the machine (:func:`rlal.machine.describe`)
    and ONNX Runtime's version (None when it is not installed)."""
    ort = _import("onnxruntime").__version__ if _installed("onnxruntime") else None
    return {**describe(), "onnxruntime": ort}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _import(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise RlalError(f"{module} is not installed: {EXTRA_HINT}") from None
