"""Evaluate and time a saved pruned model: what ``rlal eval`` and ``rlal bench latency`` report.

A *pruned model* is a directory written by :func:`rlal.structure.save_pruned` (``spec.json`` +
``weights.safetensors``); a joint run keeps it in ``RUN_DIR/pruned/``, next to the run's ``config.yaml``.
Either directory may be given. The dataset to score it on is, in order: the one asked for, the one the spec
records (``"dataset"``, if present), the one in the run's ``config.yaml``.

A spec naming a user factory (code to import and run) is loaded only with ``trust_factory=True``
(``--trust-factory``); see :func:`rlal.structure.load_pruned`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rlal.config import INSTANCE_MODEL, DataConfig, load_config
from rlal.data.specs import IN_MEMORY
from rlal.errors import RlalError
from rlal.export import Backend, compare_latency, measure_latency
from rlal.models import count_macs_params
from rlal.structure import ArchSpec, Plan, find_layers, load_pruned
from rlal.structure.io import SPEC_FILE

PRUNED_DIR = "pruned"
CONFIG_FILE = "config.yaml"


@dataclass(frozen=True)
class SavedPruned:
    """A pruned model read back from disk, with what its spec and run directory say about it."""

    directory: Path
    """The directory holding ``spec.json`` and the weights."""
    run_dir: Path | None
    """The run directory it came from, if it sits in one (a parent holding ``config.yaml``)."""
    model: nn.Module
    """The cut model, on the CPU, in eval mode."""
    spec: dict[str, Any]
    input_shape: tuple[int, ...]
    trust_factory: bool = False
    """Whether the caller opted in to importing the spec's factory (needed again by :meth:`dense`)."""

    @property
    def name(self) -> str:
        """The zoo model name or the factory."""
        arch = self.spec["arch"]
        return str(arch.get("model", arch.get("factory")))

    def dense(self) -> nn.Module:
        """The dense model the pruned one was cut from, freshly initialised (for MACs and timing only),
        in eval mode."""
        return ArchSpec.from_dict(self.spec["arch"]).build(trust_factory=self.trust_factory).eval()


class _Predictor:
    """The latency table's prediction for a saved plan: the table of the run's own budget settings
    (``env.min_keep_ratio``, ``env.round_to``, ``env.latency_grid``; defaults without a run directory), one
    per backend and batch, read from the cache or timed (see :mod:`rlal.structure.latency`). The layers are
    found once, the tables built as asked."""

    def __init__(self, saved: SavedPruned, dense: nn.Module, runs: int) -> None:
        from rlal.config import EnvConfig
        from rlal.env import allowed_counts

        self.env = EnvConfig()
        if saved.run_dir is not None:
            with contextlib.suppress(RlalError):
                self.env = load_config(saved.run_dir / CONFIG_FILE).env
        self.structure = find_layers(dense, saved.input_shape, policy=saved.spec.get("policy", "internal"))
        keep = [int(saved.spec["keep"][name]) for name in self.structure.names]
        self.plan = Plan.from_keep_counts(self.structure, keep)
        env = self.env
        self.allowed = [np.union1d(allowed_counts(layer.channels, env.min_keep_ratio, env.round_to), [k])
                        for layer, k in zip(self.structure.layers, keep, strict=True)]
        self.runs = min(runs, self.env.latency_runs)

    def __call__(self, backend: str, batch: int) -> dict[str, Any]:
        from rlal.structure.latency import LatencyModel

        table = LatencyModel.build(self.structure, self.allowed, backend=backend, batch=batch,
                                   grid=self.env.latency_grid, runs=self.runs,
                                   cache_dir=self.env.latency_cache)
        predicted = table.of(self.plan)
        return {"predicted_ms": predicted, "table_dense_ms": table.dense_ms,
                "predicted_speedup": table.dense_ms / predicted}


def locate_pruned(path: str | Path) -> tuple[Path, Path | None]:
    """``(pruned model directory, run directory or None)`` for a pruned model directory or a run directory
    holding ``pruned/``; :class:`RlalError` naming ``path`` if it is neither."""
    path = Path(path)
    if not path.exists():
        raise RlalError(f"{path}: no such file or directory")
    if not path.is_dir():
        raise RlalError(f"{path}: not a directory (give a pruned model directory or a run directory)")
    if (path / SPEC_FILE).is_file():
        parent = path.parent
        return path, parent if (parent / CONFIG_FILE).is_file() else None
    if (path / PRUNED_DIR / SPEC_FILE).is_file():
        return path / PRUNED_DIR, path
    hint = " (a dense run: it has no pruned model)" if (path / "model.safetensors").is_file() else ""
    raise RlalError(f"{path}: neither a pruned model ({SPEC_FILE}) nor a run directory with "
                    f"{PRUNED_DIR}/{SPEC_FILE}{hint}")


def open_pruned(path: str | Path, *, trust_factory: bool = False) -> SavedPruned:
    """Locate (see :func:`locate_pruned`) and load a pruned model; :class:`RlalError` for anything wrong.
    A factory spec needs ``trust_factory=True`` (:class:`~rlal.errors.UntrustedFactory` otherwise)."""
    directory, run_dir = locate_pruned(path)
    _refuse_an_instance(directory, run_dir)
    # Validates the spec and the weights, naming the file at fault.
    model = load_pruned(directory, trust_factory=trust_factory)
    spec = json.loads((directory / SPEC_FILE).read_text())
    return SavedPruned(directory, run_dir, model, spec, tuple(spec["input_shape"]), trust_factory)


def _refuse_an_instance(directory: Path, run_dir: Path | None) -> None:
    """A one-line error for a model saved by the Python API from an instance without a factory: nothing on
    disk says how to rebuild its dense architecture, so the command line cannot load it."""
    try:
        spec = json.loads((directory / SPEC_FILE).read_text())
    except (OSError, ValueError):
        return  # load_pruned names the damaged file
    if not isinstance(spec, dict) or "arch" not in spec or spec["arch"] is not None:
        return
    what = "a model instance"
    if run_dir is not None:
        with contextlib.suppress(RlalError):  # a damaged config.yaml only loses the class name
            what = f"an instance of {_instance_class(load_config(run_dir / CONFIG_FILE).model.name)}"
    raise RlalError(
        f"{directory} was saved from {what} given to the Python API without a factory, so the command "
        f"line cannot rebuild it: load it in Python with rlal.load_pruned({str(directory)!r}, "
        f"model=YourNet(...)), or train with JointPruner(..., factory='package.module:function')"
    )


def _instance_class(name: str) -> str:
    prefix, _, suffix = INSTANCE_MODEL.partition("{}")
    return name.removeprefix(prefix).removesuffix(suffix) if name.startswith(prefix) else "a model"


def data_config(saved: SavedPruned, *, dataset: str | None = None, data_dir: str | None = None,
                batch: int | None = None) -> DataConfig:
    """The data settings to score ``saved`` with: the run's ``config.yaml`` data section when there is one
    (so that ``test_subset`` and the data location match the run's own result), with the dataset, data
    directory and evaluation batch overridden as given. Only the test split matters: no reward split."""
    config = load_config(saved.run_dir / CONFIG_FILE).data if saved.run_dir is not None else DataConfig()
    chosen = dataset or saved.spec.get("dataset") or (config.dataset if saved.run_dir is not None else None)
    if chosen is None:
        raise RlalError(f"{saved.directory}: cannot tell which dataset it was trained on (no {CONFIG_FILE} "
                        "next to it and none in its spec); pass --dataset")
    if batch is not None and batch < 1:
        raise RlalError(f"--batch must be >= 1, got {batch}")
    changes: dict[str, Any] = {"dataset": chosen, "reward_size": 0, "train_subset": None, "augment": False}
    if dataset is not None and dataset != config.dataset:
        # The run's settings were for another dataset; an image folder is read at the model's input size.
        size = saved.input_shape[-1] if dataset == "imagefolder" else None
        changes |= {"data_dir": None, "test_subset": None, "input_size": size, "in_channels": None,
                    "classes": None}
    if data_dir is not None:
        changes["data_dir"] = data_dir
    if batch is not None:
        changes["eval_batch_size"] = batch
    return dataclasses.replace(config, **changes)


def evaluate_pruned(
    path: str | Path,
    *,
    dataset: str | None = None,
    data_dir: str | None = None,
    batch: int | None = None,
    device: str = "auto",
    latency_batches: Sequence[int] = (1, 64),
    warmup: int = 10,
    runs: int = 50,
    trust_factory: bool = False,
) -> dict[str, Any]:
    """Test accuracy (fp32, on ``device``), MACs and params (with the dense model's, rebuilt from the spec)
    and CPU latency at each of ``latency_batches`` (see :func:`rlal.export.measure_latency`) of the pruned
    model at ``path``. Returns one JSON-ready dict. ``trust_factory``: see :func:`open_pruned`."""
    from rlal.data import build_data, dataset_spec
    from rlal.train.epoch import evaluate
    from rlal.train.runtime import Runtime

    saved = open_pruned(path, trust_factory=trust_factory)
    cfg = data_config(saved, dataset=dataset, data_dir=data_dir, batch=batch)
    runtime = Runtime(resolve_device(device), amp_dtype=None, channels_last=False)  # fp32: the reference
    if cfg.dataset == IN_MEMORY:
        test, data_name, source = _recorded_test(saved)
    else:
        spec = dataset_spec(cfg.dataset)
        if spec.name != "imagefolder":  # checked before reading a possibly large dataset
            _check_shape(saved, spec.name, (spec.in_channels, spec.input_size, spec.input_size))
        data = build_data(cfg, runtime.device, seed=0, need_reward=False)
        side = data.spec.input_size
        _check_shape(saved, data.spec.name, (data.spec.in_channels, side, side))
        classes = (saved.spec["arch"] or {}).get("kwargs", {}).get("num_classes")
        if classes is not None and classes != data.spec.num_classes:
            raise RlalError(f"{saved.directory}: the model has {classes} classes but {data.spec.name} has "
                            f"{data.spec.num_classes}")
        model = saved.model.to(runtime.device)
        test = evaluate(model, data.test, runtime)
        model.cpu()
        data_name, source = data.spec.name, data.source
    model = saved.model  # on the CPU again: MACs and latency are measured there
    macs, params = count_macs_params(model, saved.input_shape)
    dense_macs, dense_params = count_macs_params(saved.dense(), saved.input_shape)
    latency = [measure_latency(model, saved.input_shape, b, device="cpu", warmup=warmup, runs=runs)
               for b in latency_batches]
    return {
        "path": str(saved.directory), "model": saved.name, "dataset": data_name,
        "data_source": source, "input_shape": list(saved.input_shape), "test_acc": test.acc,
        "test_loss": test.loss, "test_images": test.images, "device": str(runtime.device),
        "test_recorded": cfg.dataset == IN_MEMORY,
        "macs": macs, "params": params, "dense_macs": dense_macs, "dense_params": dense_params,
        "macs_ratio": macs / dense_macs, "latency_cpu": latency,
    }  # fmt: skip


def _check_shape(saved: SavedPruned, name: str, shape: tuple[int, int, int]) -> None:
    if tuple(saved.input_shape) != shape:
        raise RlalError(f"{saved.directory}: the model takes {list(saved.input_shape)} inputs but "
                        f"{name} images are {list(shape)}")


def _recorded_test(saved: SavedPruned) -> tuple[Any, str, str]:
    """The test figures a run on in-memory tensors recorded in its ``result.json``: its images are not on
    disk to be scored again."""
    assert saved.run_dir is not None  # IN_MEMORY comes from a run's config.yaml
    try:
        result = json.loads((saved.run_dir / "result.json").read_text())
        acc, images = float(result["test_acc"]), int(result["test_images"])
    except (OSError, ValueError, KeyError, TypeError):
        raise RlalError(f"{saved.run_dir} trained on tensors given to the Python API and its result.json "
                        "holds no test accuracy: pass --dataset (and --data-dir) to score it on data on disk"
                        ) from None
    from rlal.train.epoch import EpochStats

    stats = EpochStats(loss=None, acc=acc, images=images, seconds=0.0)  # type: ignore[arg-type]  # not recorded
    source = "the run's result.json (its test images were tensors in memory; --dataset scores it again)"
    return stats, IN_MEMORY, source


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when present, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``; RlalError otherwise."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise RlalError(f"--device {name!r} is not a device (use auto, cpu, cuda or cuda:N)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RlalError(f"--device is {name!r} but no CUDA device is available")
    return device


def bench_pruned(
    path: str | Path,
    *,
    batches: Sequence[int] = (1, 64),
    backends: Sequence[Backend] | None = None,
    warmup: int = 10,
    runs: int = 50,
    trust_factory: bool = False,
    predict: bool = True,
) -> dict[str, Any]:
    """Dense vs pruned latency of the pruned model at ``path`` on each backend (see
    :func:`rlal.export.compare_latency`), with the ideal speed-up (dense MACs / pruned MACs) and the
    fraction of it achieved. The dense model is rebuilt from the spec with fresh weights: latency does not
    depend on the weights' values. ``trust_factory``: see :func:`open_pruned`.

    With ``predict``, each row also carries the latency table's prediction for the plan (see
    :class:`_Predictor`): ``predicted_speedup`` and ``prediction_error`` (predicted / measured speed-up,
    minus 1)."""
    saved = open_pruned(path, trust_factory=trust_factory)
    dense = saved.dense()
    macs, params = count_macs_params(saved.model, saved.input_shape)
    dense_macs, dense_params = count_macs_params(dense, saved.input_shape)
    ideal = dense_macs / macs
    rows = compare_latency(dense, saved.model, saved.input_shape, batches=batches, backends=backends,
                           warmup=warmup, runs=runs)
    predictor = _Predictor(saved, dense, runs) if predict else None
    for row in rows:
        row["of_ideal"] = row["speedup"] / ideal
        if predictor is not None:
            try:
                row.update(predictor(row["backend"], row["batch"]))
                row["prediction_error"] = row["predicted_speedup"] / row["speedup"] - 1
            except RlalError as exc:  # e.g. no measurable speed-up at this batch: the figure is missing
                row.update(predicted_speedup=None, prediction_error=None, prediction_missing=str(exc))
    return {
        "path": str(saved.directory), "model": saved.name, "input_shape": list(saved.input_shape),
        "dense_macs": dense_macs, "macs": macs, "dense_params": dense_params, "params": params,
        "ideal_speedup": ideal, "latency": rows,
    }  # fmt: skip

