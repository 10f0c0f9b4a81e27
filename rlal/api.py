"""The Python API: the joint method on your own CNN and data, mirroring ``rlal train --method rlal``.

    import rlal
    pruner = rlal.JointPruner(MyNet(), ((train_x, train_y), (test_x, test_y)), target_macs=0.5, epochs=30,
                              out="runs/mynet")
    result = pruner.fit()          # result.model: the small, trained nn.Module; result.plan, .test_acc, ...
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rlal.config import INSTANCE_MODEL, RunConfig, load_config, resolve_config_path, set_value
from rlal.data import IN_MEMORY, Data, build_data, data_from_tensors
from rlal.errors import RlalError
from rlal.rundir import run_lock
from rlal.structure import ArchSpec
from rlal.train.dense import place
from rlal.train.joint import train_and_prune
from rlal.train.result import PrunedResult
from rlal.train.runtime import resolve_runtime, seed_everything


class JointPruner:
    """Train ``model`` from its current (random) weights and prune it to ``target_macs`` in the same run.

    Args:
        model: any CNN (an ``nn.Module`` with conv layers Torch-Pruning can trace); it is trained in place.
        data: ``((train_images, train_labels), (test_images, test_labels))`` as uint8 ``N,C,H,W`` and integer
            tensors (split and batched as ``config.data`` says, see :func:`rlal.data.data_from_tensors`), a
            ready :class:`~rlal.data.Data`, or the name of a shipped dataset (``"fashion-mnist"``,
            ``"cifar10"``, ``"imagefolder"``).
        target_macs: the budget, as a fraction of the dense model's MACs (< 1) or an absolute count; None for
            a latency budget alone.
        target_latency: a latency budget beside (or instead of) the MACs one, as a fraction of the dense
            model's latency, timed where ``env.latency_backend`` says (PyTorch on the run's device by
            default) at ``env.latency_batch``; see :mod:`rlal.structure.latency`.
        epochs: total epochs, the same budget a dense model would get (default: the config's).
        out: the run directory (metrics, checkpoints, report, the pruned model).
        config: a :class:`~rlal.config.RunConfig`, or a YAML path or shipped config name, for everything
            else (optimiser, search schedule, agent, ...); default: rlal's defaults.
        overrides: ``"key=value"`` settings applied on top, as ``--set`` does.
        factory: ``"package.module:function"`` that rebuilds the dense model, recorded in the saved pruned
            model so that it loads with ``rlal.load_pruned(dir, trust_factory=True)`` (loading imports and
            runs the factory, hence the opt-in); without it, ``rlal.load_pruned(dir, model=MyNet())``.
        factory_kwargs: JSON-serialisable keyword arguments for ``factory``.
        overwrite: replace a run already in ``out``.
    """

    def __init__(
        self,
        model: nn.Module,
        data: Data | str | tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]],
        *,
        target_macs: float | None = 0.5,
        target_latency: float | None = None,
        epochs: int | None = None,
        out: str | Path = "runs/joint",
        config: RunConfig | str | Path | None = None,
        overrides: list[str] | tuple[str, ...] = (),
        factory: str | None = None,
        factory_kwargs: dict[str, Any] | None = None,
        overwrite: bool = False,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise RlalError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        settings = ["method=rlal", f"env.target_macs={'null' if target_macs is None else target_macs}"]
        if target_latency is not None:
            settings.append(f"env.target_latency={target_latency}")
        if epochs is not None:
            settings.append(f"train.epochs={epochs}")
        if isinstance(data, str):
            settings.append(f"data.dataset={data}")
        elif not isinstance(data, Data) and not _is_tensor_pairs(data):
            raise RlalError(
                "data must be ((train_images, train_labels), (test_images, test_labels)), a rlal.data.Data "
                "or a dataset name"
            )
        if isinstance(config, RunConfig):
            self.config = copy.deepcopy(config)
            for item in [*settings, *overrides]:
                key, _, value = item.partition("=")
                set_value(self.config, key, value)
            self.config.validate()
        else:
            path = None if config is None else resolve_config_path(str(config))
            self.config = load_config(path, [*settings, *overrides])
        self.model = model
        self.data = data
        self.out = Path(out)
        self.arch = ArchSpec.from_factory(factory, **(factory_kwargs or {})) if factory else None
        self.overwrite = overwrite

    def fit(self) -> PrunedResult:
        """Run warm-up, search (agent + alignment), cut and fine-tuning; returns the small model and figures
        (also in ``out/result.json``, with ``out/report.md``)."""
        start = time.perf_counter()
        runtime = resolve_runtime(self.config.train)
        seed_everything(self.config.seed)
        data = self.data
        if isinstance(data, str):
            data = build_data(self.config.data, runtime.device, seed=self.config.seed,
                              channels_last=runtime.channels_last)
        elif not isinstance(data, Data):
            data = data_from_tensors(*data, cfg=self.config.data, device=runtime.device,
                                     seed=self.config.seed, channels_last=runtime.channels_last)
        check_outputs(self.model, data)
        record_run(self.config, self.model, self.arch, data)
        model = place(self.model, runtime)
        with run_lock(self.out):  # the run directory's lock is released however the run ends
            return train_and_prune(self.config, runtime, data, model, self.arch, self.out,
                                   overwrite=self.overwrite, start=start)


def record_run(config: RunConfig, model: nn.Module, arch: ArchSpec | None, data: Data) -> None:
    """Make ``config`` (what the run directory's ``config.yaml`` holds) describe what this run trains: the
    model (its factory, else its class, marked as an instance the command line cannot rebuild) and the
    data (its name, image shape and classes), so that ``rlal eval`` reads the right dataset and says why it
    cannot rebuild an instance, rather than assuming the default ``resnet20`` on ``fashion-mnist``."""
    if arch is not None and arch.factory is not None:
        config.model.name = arch.factory
    else:
        cls = type(model)
        config.model.name = INSTANCE_MODEL.format(f"{cls.__module__}.{cls.__qualname__}")
    config.data.dataset = data.spec.name
    config.data.in_channels = data.spec.in_channels
    config.data.input_size = data.spec.input_size
    config.data.classes = [str(c) for c in data.classes]
    if data.spec.name == IN_MEMORY:
        config.data.data_dir = None


def check_outputs(model: nn.Module, data: Data) -> None:
    """Refuse, before any training, a model with fewer outputs than the data has classes: a label beyond
    them would otherwise stop the run with an IndexError deep in the loss."""
    shape = (1, data.spec.in_channels, data.spec.input_size, data.spec.input_size)
    param = next(model.parameters(), None)
    x = torch.zeros(shape, device=param.device if param is not None else "cpu")
    was_training = model.training
    try:
        with torch.no_grad():
            out = model.eval()(x)
    except Exception as exc:  # the user's forward can raise anything; say which input it was given
        raise RlalError(f"the model fails on one {list(shape[1:])} image of the data: "
                        f"{type(exc).__name__}: {exc}") from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        return  # an unusual output: leave it to the loss to judge
    if out.shape[1] < data.spec.num_classes:
        raise RlalError(
            f"the model has {out.shape[1]} outputs but the data has {data.spec.num_classes} classes (labels "
            f"0..{data.spec.num_classes - 1}): build it with {data.spec.num_classes} outputs"
        )


def _is_tensor_pairs(data: Any) -> bool:
    return (
        isinstance(data, tuple | list) and len(data) == 2
        and all(isinstance(pair, tuple | list) and len(pair) == 2 for pair in data)
    )
