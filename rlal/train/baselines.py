"""Same-budget baselines of the joint method (issue 6): the same data, zoo, cost model and MACs target.

    uniform:    every prunable layer keeps the same fraction of its channels, the largest fraction whose
                sub-network meets ``env.target_macs``; that small model is cut from a freshly initialised
                one and trained from scratch for ``train.epochs``.
    magnitude:  the classic three stages: train dense (``baseline.pretrain_epochs``), keep the same fraction
                of every layer (as ``uniform``) choosing the channels by filter norm (``baseline.criterion``,
                L1 by default, Li et al. 2017), fine-tune (``baseline.finetune_epochs``).
    depgraph:   the same three stages, pruned with Torch-Pruning's group-norm importance and global ranking
                (DepGraph, Fang et al. 2023: ``GroupMagnitudeImportance(p=2)``, ``global_pruning=True``):
                channels of different layers compete, so the layers end up with different keep ratios.
                DepGraph's optional sparse training before pruning is not run.

Every baseline prunes exactly the prunable layers of :func:`rlal.structure.find_layers` under
``env.policy`` (the classifier and, under ``internal``, channels tied by residual additions stay whole), keeps
at least ``env.min_keep_ratio`` of each layer (rounded as the environment rounds) and meets the target by
*our* cost model (:class:`~rlal.structure.CostModel`, conv + linear MACs), never by Torch-Pruning's own
counter, which also counts BN, ReLU and pooling ops. Each result is an rlal :class:`~rlal.structure.Plan`,
so ``RUN_DIR/pruned`` loads with :func:`rlal.load_pruned` like the joint method's.

A run directory holds what a joint run's does (``config.yaml``, ``run.json``, ``metrics.jsonl``,
``result.json``, ``pruned/``). ``metrics.jsonl`` phases: ``train`` (uniform), or ``pretrain``, one ``prune``
record, ``fine-tune``. ``result.json``'s ``epochs`` are the epochs of training actually spent: for the
three-stage methods pre-training plus fine-tuning (with a ``dense_run``, that run's epochs plus fine-tuning).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from rlal.checkpoint import load_weights, write_json
from rlal.config import BASELINE_METHODS, OptimConfig, RunConfig
from rlal.data import Data
from rlal.env import Budget, latency_check, make_budget, shared_latency_table
from rlal.errors import RlalError
from rlal.report.markdown import write_report
from rlal.report.metrics import MetricsWriter
from rlal.report.widths import write_widths
from rlal.rundir import prepare_run_dir, run_lock, write_run_header
from rlal.structure import (
    Plan,
    Structure,
    channel_importance,
    channel_order,
    cut,
    find_layers,
    save_pruned,
    select_channels,
)
from rlal.structure.masks import remove_inert_hooks
from rlal.structure.trace import COUNTED_TYPES
from rlal.train.dense import epoch_record, format_epoch, input_shape, model_arch, place, setup
from rlal.train.distributed import SilentMetrics, shard
from rlal.train.epoch import EpochStats, evaluate, train_one_epoch
from rlal.train.optim import build_optimizer, build_scheduler
from rlal.train.result import PrunedResult
from rlal.train.runtime import Runtime


@dataclass(frozen=True)
class Selection:
    """Which channels a baseline keeps: the plan, the kept channel indices per layer, and the one number
    that was searched to meet the budget (``uniform``/``magnitude``: the common keep ratio; ``depgraph``:
    Torch-Pruning's global pruning ratio)."""

    plan: Plan
    kept: dict[str, torch.Tensor] | None
    """Sorted channel indices per layer name; None = the top ``keep`` by ``env.criterion``."""
    searched: float


def fit_baseline(config: RunConfig, out: Path, *, overwrite: bool = False) -> PrunedResult:
    """Run the baseline named by ``config.method`` (``uniform``, ``magnitude`` or ``depgraph``)."""
    fits: dict[str, Callable[..., PrunedResult]] = {
        "uniform": fit_uniform, "magnitude": fit_magnitude, "depgraph": fit_depgraph,
    }
    if config.method not in fits:
        valid = ", ".join(BASELINE_METHODS)
        raise RlalError(f"method {config.method!r} is not a baseline (baselines: {valid})")
    return fits[config.method](config, out, overwrite=overwrite)


def fit_uniform(config: RunConfig, out: Path, *, overwrite: bool = False) -> PrunedResult:
    """Cut the uniform plan that meets ``env.target_macs`` from a freshly initialised ``config.model`` and
    train the small model from scratch for ``train.epochs``."""
    with run_lock(out):  # the directory's lock, taken when it is opened, is held until the run ends
        return _fit_uniform(config, out, overwrite)


def _fit_uniform(config: RunConfig, out: Path, overwrite: bool) -> PrunedResult:
    start = time.perf_counter()
    runtime, data, model = setup(config)
    structure = find_layers(model, input_shape(data), policy=config.env.policy)
    budget = _budget(structure, config, runtime)  # an infeasible target fails here, before the run directory
    selection = uniform_plan(structure, budget)
    small = place(cut(structure, selection.plan, criterion=config.env.criterion), runtime)

    run_dir, metrics = _start_run(config, out, overwrite, runtime, data)
    metrics.write({"phase": "prune", "epoch": 0, **_prune_record(structure, selection)})
    test = _train_phase(small, data, runtime, config, config.optim, metrics, phase="train",
                        first=1, epochs=config.train.epochs, total=config.train.epochs)
    return _finish("uniform", config, start, run_dir, data, structure, selection, small, test,
                   epochs=config.train.epochs, runtime=runtime,
                   extra={"keep_ratio": selection.searched,
                          **_latency_figures(budget, selection.plan, small, runtime)})


def fit_magnitude(config: RunConfig, out: Path, *, overwrite: bool = False) -> PrunedResult:
    """Train dense, keep the same fraction of every layer's channels by ``baseline.criterion`` (L1 filter
    norm), fine-tune."""
    with run_lock(out):
        return _three_stage("magnitude", config, out, overwrite)


def fit_depgraph(config: RunConfig, out: Path, *, overwrite: bool = False) -> PrunedResult:
    """Train dense, prune with Torch-Pruning's group-norm importance and global ranking to the target,
    fine-tune."""
    with run_lock(out):
        return _three_stage("depgraph", config, out, overwrite)


def uniform_plan(structure: Structure, budget: Budget) -> Selection:
    """The largest keep ratio common to every layer whose plan meets ``budget.target_macs``
    (:meth:`Budget.uniform_plan`, the plan the joint method's reward and final choice compare against)."""
    plan, ratio = budget.uniform_plan()
    return Selection(plan, None, ratio)


def depgraph_plan(structure: Structure, budget: Budget) -> Selection:
    """DepGraph's selection on the structure's model as it is now: Torch-Pruning's
    ``GroupMagnitudeImportance(p=2)`` (the group norm, each group normalised by its mean) ranked globally
    (``global_pruning=True``) by a ``MetaPruner`` restricted to the structure's layers, at the smallest
    global pruning ratio whose plan meets ``budget.target_macs`` by our cost model (a bisection over the
    number of channels pruned; the cost falls monotonically as the ratio grows).

    The model is never pruned by Torch-Pruning: its groups are taken interactively and mapped onto the
    structure's layers, then cut by :func:`rlal.structure.cut`. One difference from a plain
    ``pruner.step()``: in one step Torch-Pruning 1.6 does not apply ``max_pruning_ratio`` to a global ranking
    (it only stops later iterative steps from pruning a layer already below it) and silently skips a group it
    would empty, so here every layer keeps at least its ``env.min_keep_ratio`` count (as in every method),
    its most important channels by the same scores.
    """
    model = copy.deepcopy(structure.model).to("cpu", torch.float32, memory_format=torch.contiguous_format)
    remove_inert_hooks(model)
    model.eval()
    names = {module: name for name, module in model.named_modules()}
    owners = _layer_owners(structure)
    # Every conv/linear layer that writes no channel of a prunable layer is ignored, so Torch-Pruning's
    # groups are exactly the structure's layers: the classifier, residual groups under policy "internal"...
    # (every conv kind: a transposed conv is a Torch-Pruning layer too, though the cost model skips it)
    ignored = [
        m for name, m in model.named_modules()
        if isinstance(m, (*COUNTED_TYPES, nn.modules.conv._ConvNd)) and name not in owners
    ]
    importance = _CachedImportance(tp.importance.GroupMagnitudeImportance(p=2))
    pruner = tp.pruner.MetaPruner(
        model, torch.zeros(1, *structure.input_shape), importance=importance, global_pruning=True,
        pruning_ratio=0.0, ignored_layers=ignored, round_to=budget.round_to if budget.round_to > 1 else None,
    )
    pruner.DG.check_pruning_group = lambda group: True  # see the docstring: a layer is capped below instead
    total = pruner.initial_total_channels
    if total != int(structure.channels.sum()):
        raise RuntimeError(f"Torch-Pruning sees {total} prunable channels, the structure "
                           f"{int(structure.channels.sum())} (a bug)")

    def layer_scores(layer_name: str) -> torch.Tensor:
        for root, scores in importance.scores.items():
            owner, to_layer = owners[names[root]]
            if owner == layer_name:
                ordered = torch.zeros(len(to_layer), dtype=torch.float64)
                ordered[list(to_layer.values())] = scores[list(to_layer)].to(torch.float64)
                return ordered
        raise RuntimeError(f"no Torch-Pruning importance for layer {layer_name} (a bug)")

    def select(n_pruned: int) -> tuple[Plan, dict[str, torch.Tensor]]:
        pruner.reset()
        pruner.per_step_pruning_ratio = [0.0, n_pruned / total]
        dropped: dict[str, set[int]] = {name: set() for name in structure.names}
        for group in pruner.step(interactive=True):
            layer, to_layer = owners[names[group[0].dep.target.module]]
            dropped[layer].update(to_layer[int(i)] for i in group[0].idxs)
        kept = {}
        for i, layer in enumerate(structure.layers):
            keep = sorted(set(range(layer.channels)) - dropped[layer.name])
            if len(keep) < budget.min_keep[i]:
                keep = sorted(channel_order(layer_scores(layer.name))[: budget.min_keep[i]].tolist())
            kept[layer.name] = torch.tensor(keep, dtype=torch.int64)
        plan = Plan.from_keep_counts(structure, {name: len(k) for name, k in kept.items()})
        return plan, kept

    def fits(n_pruned: int) -> bool:
        return bool(budget.fits(select(n_pruned)[0].array()))

    low, high = 0, total  # dense does not fit (the budget checked it); pruning everything gives the minimum
    if not fits(high):
        raise RuntimeError("depgraph: the minimum widths miss a target the budget found feasible (a bug)")
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if fits(middle) else (middle, high)
    plan, kept = select(high)
    return Selection(plan, kept, high / total)


class _CachedImportance(tp.importance.Importance):
    """Torch-Pruning's group importance, computed once per group (the weights do not change while the
    pruning ratio is searched), by the group's root module."""

    def __init__(self, inner: tp.importance.Importance) -> None:
        self.inner = inner
        self.scores: dict[nn.Module, torch.Tensor] = {}

    def __call__(self, group: Any) -> torch.Tensor:
        root = group[0].dep.target.module
        if root not in self.scores:
            self.scores[root] = self.inner(group)
        return self.scores[root]


def _layer_owners(structure: Structure) -> dict[str, tuple[str, dict[int, int]]]:
    """Module name -> (layer name, output position -> layer channel) for every conv/linear/depthwise module
    whose output channels belong to a prunable layer."""
    owners = {}
    for layer in structure.layers:
        for member in layer.members:
            if member.role == "out" and member.kind in ("conv", "depthwise", "linear"):
                owners[member.module] = (layer.name, dict(zip(member.local, member.root, strict=True)))
    return owners


def _three_stage(method: str, config: RunConfig, out: Path, overwrite: bool) -> PrunedResult:
    """Pre-train dense (or load a dense run), prune to the target with ``method``'s selection, fine-tune."""
    start = time.perf_counter()
    runtime, data, model = setup(config)
    structure = find_layers(model, input_shape(data), policy=config.env.policy)
    budget = _budget(structure, config, runtime)
    b = config.baseline
    dense_epochs = _read_dense_run(Path(b.dense_run), config, data) if b.dense_run else None
    if method == "magnitude":
        channel_importance(structure, b.criterion)  # a criterion the model cannot support fails now
    pretrain, finetune = b.resolved_epochs(config.train.epochs, dense_epochs)
    total = pretrain + finetune

    run_dir, metrics = _start_run(config, out, overwrite, runtime, data)
    if b.dense_run:
        load_weights(model, Path(b.dense_run) / "model.safetensors")
        dense_test = evaluate(model, data.test, runtime)
    else:
        dense_test = _train_phase(model, data, runtime, config, config.optim, metrics, phase="pretrain",
                                  first=1, epochs=pretrain, total=total)

    if method == "magnitude":
        selection = uniform_plan(structure, budget)
        selection = dataclasses.replace(
            selection, kept=select_channels(structure, selection.plan, b.criterion, seed=config.seed)
        )
    else:
        selection = depgraph_plan(structure, budget)
    small = place(cut(structure, selection.plan, kept=selection.kept), runtime)
    pruned_test = evaluate(small, data.test, runtime)
    searched = "keep_ratio" if method == "magnitude" else "pruning_ratio"
    at_prune = {"pretrained_test_acc": dense_test.acc, "pruned_test_acc": pruned_test.acc,
                searched: selection.searched}
    metrics.write({"phase": "prune", "epoch": pretrain, **_prune_record(structure, selection), **at_prune})

    finetune_lr = b.finetune_lr if b.finetune_lr is not None else config.optim.lr / 10
    finetune_optim = dataclasses.replace(config.optim, lr=finetune_lr, warmup_epochs=0.0)
    test = _train_phase(small, data, runtime, config, finetune_optim, metrics, phase="fine-tune",
                        first=pretrain + 1, epochs=finetune, total=total)
    extra = {"pretrain_epochs": pretrain, "finetune_epochs": finetune, "finetune_lr": finetune_optim.lr,
             "dense_run": b.dense_run, **at_prune, **_latency_figures(budget, selection.plan, small, runtime)}
    return _finish(method, config, start, run_dir, data, structure, selection, small, test, epochs=total,
                   extra=extra, runtime=runtime)


def _latency_figures(budget: Budget, plan: Plan, small: nn.Module, runtime: Runtime) -> dict[str, Any]:
    """The latency check of a run with a latency budget (:func:`rlal.env.latency_check`), timed on rank 0
    alone (it alone writes ``result.json``)."""
    return latency_check(budget, plan, small) if runtime.dist.is_main else {}


def _budget(structure: Structure, config: RunConfig, runtime: Runtime) -> Budget:
    """The joint method's budget: the same targets (MACs, and latency when set), minimum widths and rounding
    (and the same error with the feasible range for an infeasible target)."""
    table = shared_latency_table(structure, config.env, runtime)  # rank 0's, on every rank
    return make_budget(structure, config.env, device=str(runtime.device), stored=table)


def _read_dense_run(run: Path, config: RunConfig, data: Data) -> int:
    """Check that ``run`` is a finished dense run of the same model on the same data; its epochs."""
    try:
        spec = json.loads((run / "model.json").read_text())
        result = json.loads((run / "result.json").read_text())
    except (OSError, json.JSONDecodeError):
        raise RlalError(f"baseline.dense_run {run} is not a finished dense run (no readable model.json "
                        "and result.json)") from None
    if not (run / "model.safetensors").is_file():
        raise RlalError(f"baseline.dense_run {run} has no model.safetensors")
    want = {"model": config.model.name, "num_classes": data.spec.num_classes,
            "in_channels": data.spec.in_channels, "input_size": data.spec.input_size}
    for key, value in want.items():
        if spec.get(key) != value:
            raise RlalError(
                f"baseline.dense_run {run} holds {key}={spec.get(key)!r}, this run needs {value!r}"
            )
    epochs = result.get("epochs")
    if result.get("method") != "dense" or not isinstance(epochs, int):
        raise RlalError(f"baseline.dense_run {run} is not a dense run (result.json method/epochs)")
    return epochs


def _start_run(
    config: RunConfig, out: Path, overwrite: bool, runtime: Runtime, data: Data
) -> tuple[Path, MetricsWriter]:
    def start() -> Path:
        run_dir = prepare_run_dir(out, overwrite=overwrite)
        write_run_header(run_dir, config, {"device": runtime.describe(), "data_source": data.source})
        return run_dir

    run_dir = runtime.dist.on_main(start)  # rank 0 alone writes the run directory
    return run_dir, MetricsWriter(run_dir / "metrics.jsonl") if runtime.dist.is_main else SilentMetrics(0)


def _train_phase(
    model: nn.Module, data: Data, runtime: Runtime, config: RunConfig, optim: OptimConfig,
    metrics: MetricsWriter, *, phase: str, first: int, epochs: int, total: int,
) -> EpochStats:
    """Train ``model`` for ``epochs`` epochs numbered from ``first`` (of ``total``) on a fresh optimiser and
    a full schedule of ``optim``; test every ``train.eval_every`` epochs and after the last. The last test."""
    dist = runtime.dist
    train = shard(data.train, dist)  # this rank's part of every epoch (all of it in a single process)
    step = dist.wrap(model, config.train.sync_bn)
    optimizer = build_optimizer(model, optim)
    scheduler = build_scheduler(optimizer, optim, [len(train)] * epochs)
    test = None
    for epoch in range(first, first + epochs):
        train.set_epoch(epoch)
        stats = train_one_epoch(
            model, train, optimizer, scheduler, runtime, label_smoothing=optim.label_smoothing,
            clip_grad_norm=optim.clip_grad_norm,
            progress=config.train.progress, desc=f"{phase} {epoch}/{total}", step_model=step,
        )
        dist.sync_buffers(model)
        stats, synced = dist.reduce_stats(stats), dist.check_in_sync(model)
        last = epoch == first + epochs - 1
        every = config.train.eval_every
        test = evaluate(model, data.test, runtime) if last or (every and epoch % every == 0) else None
        ranks = {"rank_state_sha256": synced} if synced else {}
        metrics.write({**epoch_record(epoch, phase, stats, test, optimizer), **ranks})
        if config.train.progress and dist.is_main:
            print(f"[{phase}] " + format_epoch(epoch, total, stats, test), flush=True)
    assert test is not None  # the last epoch always evaluates
    return test


def _prune_record(structure: Structure, selection: Selection) -> dict[str, Any]:
    macs, params = structure.cost.of(selection.plan)
    return {"macs": macs, "params": params, "plan": selection.plan.to_dict()}


def _finish(
    method: str, config: RunConfig, start: float, run_dir: Path, data: Data, structure: Structure,
    selection: Selection, small: nn.Module, test: EpochStats, *, epochs: int, extra: dict[str, Any],
    runtime: Runtime,
) -> PrunedResult:
    """Save the pruned model and ``result.json`` (the joint method's keys plus ``extra``); rank 0 alone
    writes, once every rank is checked to have chosen the same plan."""
    plan = selection.plan
    macs, params = structure.cost.of(plan)
    arch = model_arch(config, data)
    seconds = time.perf_counter() - start
    cost = structure.cost
    result = PrunedResult(
        method=method, model=small, plan=plan, run_dir=run_dir, test_acc=test.acc,
        dense_macs=cost.dense_macs, macs=macs, dense_params=cost.dense_params, params=params,
        epochs=epochs, seconds=seconds,
    )
    runtime.dist.same(plan.keep, "the pruning plan")
    if not runtime.dist.is_main:
        return result
    write_widths(run_dir / "widths.csv", structure, plan)
    save_pruned(run_dir / "pruned", small, arch=arch, plan=plan, input_shape=input_shape(data),
                policy=config.env.policy, classes=list(data.classes))
    write_json(run_dir / "result.json", {
        "method": method, "model": config.model.name, "dataset": data.spec.name,
        "test_acc": test.acc, "test_images": test.images,
        "dense_macs": cost.dense_macs, "macs": macs, "macs_ratio": macs / cost.dense_macs,
        "dense_params": cost.dense_params, "params": params,
        "target_macs": config.env.target_macs, "epochs": epochs, "seconds": seconds,
        "train_images_per_epoch": data.train.num_samples, "plan": plan.to_dict(), **extra,
    })  # fmt: skip
    write_report(run_dir)
    return result
