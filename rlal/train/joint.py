"""The joint method: train the weights and prune them in one run (CVPR 2024, RL agent guidance + alignment).

    warm-up:   train the dense weights
    search:    each epoch: train the weights (cross-entropy + alignment to the chosen plan)
               -> run P agent episodes on the current weights (masked sub-networks, reward split)
               -> fit the epoch-context model to every reward seen so far
               -> update the agent (SAC on [state, z])
               -> choose the plan the weights are aligned to next epoch
    cut:       freeze the final plan, remove its channels physically
    fine-tune: train the small model for the rest of the dense model's epoch budget

Not yet here (issue 5): resume after a crash, the report with plots, ``widths.csv``, ``rlal eval``.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rlal.agent import Agent, Episode, EpochContext, make_agent, make_context, run_episode
from rlal.checkpoint import write_json
from rlal.config import RunConfig, SearchConfig
from rlal.data import Data
from rlal.env import PruningEnv, make_env
from rlal.report.metrics import MetricsWriter
from rlal.rundir import prepare_run_dir, write_run_header
from rlal.structure import ArchSpec, ChannelMasks, Plan, Structure, cut, find_layers, save_pruned
from rlal.train.align import AlignmentRegularizer, lambda_at
from rlal.train.dense import epoch_record, format_epoch, input_shape, place, setup
from rlal.train.epoch import EpochStats, evaluate, train_one_epoch
from rlal.train.optim import build_optimizer, build_scheduler
from rlal.train.runtime import Runtime


@dataclass(frozen=True)
class JointResult:
    """What a joint run produced; the same figures are in ``result.json`` of its run directory."""

    model: nn.Module
    """The cut and fine-tuned small model."""
    plan: Plan
    run_dir: Path
    test_acc: float
    dense_macs: int
    macs: int
    dense_params: int
    params: int
    seconds: float


def fit_joint(config: RunConfig, out: Path, *, overwrite: bool = False) -> JointResult:
    """Train ``config.model`` from scratch and prune it to ``config.env.target_macs`` in the same run."""
    start = time.perf_counter()
    runtime, data, model = setup(config)
    structure = find_layers(model, input_shape(data), policy=config.env.policy)
    # Built before any training: an infeasible MACs target fails here with the feasible range.
    env = make_env(structure, config.env, data, runtime, seed=config.seed)
    agent = make_agent(config.agent, env.state_dim, env.num_layers)
    context = make_context(config.agent, env.num_layers)
    align = AlignmentRegularizer(structure, lam=0.0)

    run_dir = prepare_run_dir(out, overwrite=overwrite)
    write_run_header(run_dir, config, {"device": runtime.describe(), "data_source": data.source})
    metrics = MetricsWriter(run_dir / "metrics.jsonl")
    optimizer = build_optimizer(model, config.optim)
    scheduler = build_scheduler(optimizer, config.optim, config.train.epochs, len(data.train))
    s = config.search

    for epoch in range(1, s.warmup_epochs + 1):
        stats = _train_epoch(model, data, optimizer, scheduler, runtime, config, epoch, "warm-up", None)
        _log(metrics, config, epoch, "warm-up", stats, None, optimizer)

    for t in range(s.search_epochs):  # t indexes the epoch context z_t
        epoch = s.warmup_epochs + 1 + t
        align.lam = lambda_at(t, s.align)
        stats = _train_epoch(model, data, optimizer, scheduler, runtime, config, epoch, "search",
                             align if align.removed is not None else None)
        episodes = run_agent_episodes(env, agent, context, t, s.episodes_per_epoch)
        decoder_loss = context.fit(env.history) if context is not None else float("nan")
        agent_losses = agent.update(context)
        plan = select_plan(env, agent, context, t, episodes, s)
        align.set_plan(plan)
        extra = {
            "align_lambda": align.lam,
            "align_loss": stats.reg_loss,
            "removed_kept_norm_ratio": align.removed_kept_norm_ratio(model),
            "episode_rewards": [e.reward for e in episodes],
            "episode_macs": [e.macs for e in episodes],
            "decoder_loss": decoder_loss,
            **{f"agent_{k}": v for k, v in agent_losses.items()},
            "selected_plan": plan.to_dict(),
            "selected_macs": int(structure.cost.of(plan)[0]),
        }
        _log(metrics, config, epoch, "search", stats, None, optimizer, extra)

    final = choose_final(env, agent, context, s)
    small, at_cut = cut_and_measure(model, structure, final, data, runtime, config)
    small = place(small, runtime)
    metrics.write({"phase": "cut", "epoch": s.warmup_epochs + s.search_epochs, **at_cut})

    # The small model continues the same schedule; momentum restarts (the parameter shapes changed).
    optimizer = build_optimizer(small, config.optim)
    scheduler = build_scheduler(optimizer, config.optim, config.train.epochs, len(data.train))
    with warnings.catch_warnings():  # stepping a fresh scheduler forward before any optimiser step
        warnings.simplefilter("ignore", UserWarning)
        for _ in range((s.warmup_epochs + s.search_epochs) * len(data.train)):
            scheduler.step()
    test = None
    for epoch in range(s.warmup_epochs + s.search_epochs + 1, config.train.epochs + 1):
        stats = _train_epoch(small, data, optimizer, scheduler, runtime, config, epoch, "fine-tune", None)
        last = epoch == config.train.epochs
        every = config.train.eval_every
        test = evaluate(small, data.test, runtime) if last or (every and epoch % every == 0) else None
        _log(metrics, config, epoch, "fine-tune", stats, test, optimizer)
    assert test is not None  # the last epoch always evaluates

    macs, params = structure.cost.of(final)
    arch = ArchSpec.zoo(config.model.name, num_classes=data.spec.num_classes,
                        in_channels=data.spec.in_channels, input_size=data.spec.input_size)
    save_pruned(run_dir / "pruned", small, arch=arch, plan=final, input_shape=input_shape(data),
                policy=config.env.policy, classes=list(data.classes))
    write_json(run_dir / "episodes.json", env.history_records())
    seconds = time.perf_counter() - start
    result = JointResult(
        model=small, plan=final, run_dir=run_dir, test_acc=test.acc,
        dense_macs=structure.cost.dense_macs, macs=int(macs),
        dense_params=structure.cost.dense_params, params=int(params), seconds=seconds,
    )
    write_json(run_dir / "result.json", {
        "method": "rlal", "model": config.model.name, "dataset": data.spec.name, "agent": config.agent.kind,
        "test_acc": result.test_acc, "test_images": test.images,
        "dense_macs": result.dense_macs, "macs": result.macs, "macs_ratio": result.macs / result.dense_macs,
        "dense_params": result.dense_params, "params": result.params,
        "target_macs": config.env.target_macs, "epochs": config.train.epochs, "seconds": seconds,
        "plan": final.to_dict(), **{f"at_cut_{k}": v for k, v in at_cut.items()},
    })  # fmt: skip
    return result


def run_agent_episodes(
    env: PruningEnv, agent: Agent, context: EpochContext | None, t: int, episodes: int
) -> list[Episode]:
    """P exploration episodes on the current weights, conditioned on z_t; each is stored for learning."""
    env.set_epoch(t)  # importance rescored on the new weights; the previous epoch's rewards checked
    z = context.z(t) if context is not None else None
    done = []
    for _ in range(episodes):
        episode = run_episode(env, agent, t, z)
        agent.observe(episode)
        done.append(episode)
    return done


def select_plan(
    env: PruningEnv, agent: Agent, context: EpochContext | None, t: int, episodes: list[Episode],
    cfg: SearchConfig,
) -> Plan:
    """The plan the weights are aligned to next epoch (``search.align_to``)."""
    if cfg.align_to == "deterministic":
        z = context.z(t) if context is not None else None
        return env.plan_of(run_episode(env, agent, t, z, deterministic=True))
    return env.plan_of(_best(episodes))


def choose_final(
    env: PruningEnv, agent: Agent, context: EpochContext | None, cfg: SearchConfig
) -> Plan:
    """The architecture that is cut (``search.final``)."""
    last = cfg.search_epochs - 1
    if cfg.final == "deterministic":
        z = context.z(last) if context is not None else None
        return env.plan_of(run_episode(env, agent, last, z, deterministic=True))
    recent = [e for e in env.history if e.epoch > last - cfg.final_window]
    return env.plan_of(_best(recent))


def cut_and_measure(
    model: nn.Module, structure: Structure, plan: Plan, data: Data, runtime: Runtime, config: RunConfig
) -> tuple[nn.Module, dict[str, Any]]:
    """Cut ``plan`` out of the aligned dense model, measuring what the cut costs: test accuracy of the masked
    dense model vs the cut model (must agree), and how far alignment pulled the removed channels to zero."""
    criterion = config.env.criterion
    masks = ChannelMasks(structure)
    masks.set_plan(plan, criterion)
    with masks:
        masked = evaluate(model, data.test, runtime)
    small = cut(structure, plan, criterion=criterion)
    cut_acc = evaluate(place(small, runtime), data.test, runtime)
    ratio = AlignmentRegularizer(structure)
    ratio.set_plan(plan)
    return small, {
        "masked_test_acc": masked.acc,
        "cut_test_acc": cut_acc.acc,
        "removed_kept_norm_ratio": ratio.removed_kept_norm_ratio(model),
    }


def _best(episodes: list[Episode]) -> Episode:
    scored = [e for e in episodes if math.isfinite(e.reward)]
    if not scored:
        raise RuntimeError("no episode has a finite reward to choose a plan from")
    return scored[int(np.argmax([e.reward for e in scored]))]


def _train_epoch(
    model: nn.Module, data: Data, optimizer: torch.optim.Optimizer, scheduler: Any, runtime: Runtime,
    config: RunConfig, epoch: int, phase: str, regularizer: AlignmentRegularizer | None,
) -> EpochStats:
    data.train.set_epoch(epoch)
    return train_one_epoch(
        model, data.train, optimizer, scheduler, runtime, label_smoothing=config.optim.label_smoothing,
        regularizer=regularizer, progress=config.train.progress,
        desc=f"{phase} {epoch}/{config.train.epochs}",
    )


def _log(
    metrics: MetricsWriter, config: RunConfig, epoch: int, phase: str, stats: EpochStats,
    test: EpochStats | None, optimizer: torch.optim.Optimizer, extra: dict[str, Any] | None = None,
) -> None:
    metrics.write({**epoch_record(epoch, phase, stats, test, optimizer), **(extra or {})})
    if config.train.progress:
        print(f"[{phase}] " + format_epoch(epoch, config.train.epochs, stats, test), flush=True)
