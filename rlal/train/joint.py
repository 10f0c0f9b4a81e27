"""The joint method: train the weights and prune them in one run (CVPR 2024, RL agent guidance + alignment).

    warm-up:   train the dense weights
    search:    each epoch: run P agent episodes on the current weights (masked sub-networks, reward split)
               -> fit the epoch-context model to every reward seen so far
               -> update the agent (SAC on [state, z])
               -> choose the plan to align to, and train the weights this epoch
                  (cross-entropy + alignment to that plan)
    choice:    after the last search epoch, choose the final plan (by default: candidates re-scored on the
               same weights, the uniform plan among them; see :mod:`rlal.train.choice`)
    align:     train with the final plan frozen, the alignment steered until its removed channels are
               near zero (``search.align_epochs``)
    cut:       remove exactly the channels alignment pushed down
    fine-tune: train the small model for the rest of the dense model's epoch budget

Beyond the paper, ``search.dense_epoch_fraction`` < 1 makes every epoch before the cut a share of an epoch's
steps: the dense network's training is the method's overhead over a uniform network, so this is what brings
it to the same training compute (:mod:`rlal.train.compute`).

Beyond the paper, ``search.subnet_weight`` > 0 adds to every warm-up and search step the loss of one drawn
on-budget sub-network (:mod:`rlal.train.subnet`), so the sub-networks the agent scores keep working.

Every epoch ends with a checkpoint of the whole run state (:mod:`rlal.checkpoint`); ``resume=True``
continues from it, and on the CPU a resumed run ends exactly where an uninterrupted one would.

Under ``torchrun`` (:mod:`rlal.train.distributed`) the weights train under DDP, each rank on its shard of
the training split; each search epoch's episodes are split across the ranks and their rewards gathered
(:func:`run_agent_episodes`), so every rank holds the same agent, plans and weights; rank 0 alone writes.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from rlal.agent import (
    Agent,
    AgentConfig,
    Episode,
    EpochContext,
    SACAgent,
    make_agent,
    make_context,
    run_episode,
)
from rlal.checkpoint import rng_state, save_checkpoint, set_rng_state, write_json
from rlal.config import RunConfig, SearchConfig
from rlal.data import Data, Loader
from rlal.env import PruningEnv, latency_check, make_env, shared_latency_table
from rlal.env.reward import first_batches, recalibrated_bn
from rlal.errors import RlalError
from rlal.report.markdown import write_report
from rlal.report.metrics import MetricsWriter
from rlal.report.widths import write_widths
from rlal.rundir import LATENCY_FILE, guarded_epochs, open_run, run_lock
from rlal.structure import (
    ArchSpec,
    ChannelMasks,
    Plan,
    Structure,
    channel_importance,
    cut,
    find_layers,
    save_pruned,
)  # fmt: skip
from rlal.train.align import AlignmentRegularizer, lambda_at
from rlal.train.choice import FinalChoice, decide, score_plans
from rlal.train.compute import ForwardImages
from rlal.train.dense import epoch_record, eval_due, format_epoch, input_shape, model_arch, place, setup
from rlal.train.distributed import Dist, SilentMetrics, check_same_config, shard
from rlal.train.epoch import EpochStats, evaluate, train_one_epoch
from rlal.train.optim import build_optimizer, build_scheduler
from rlal.train.result import PrunedResult
from rlal.train.runtime import Runtime
from rlal.train.subnet import SubnetTraining


def fit_joint(config: RunConfig, out: Path, *, overwrite: bool = False, resume: bool = False) -> PrunedResult:
    """Train the zoo model ``config.model`` from scratch and prune it to ``config.env.target_macs`` in the
    same run, writing the run directory ``out`` (or continuing the run there with ``resume``). The directory
    is locked from when it is opened until the run ends (see :mod:`rlal.rundir`)."""
    start = time.perf_counter()
    with run_lock(out):
        runtime, data, model = setup(config)
        arch = model_arch(config, data)
        return train_and_prune(config, runtime, data, model, arch, out, overwrite=overwrite, resume=resume,
                               start=start)


def train_and_prune(
    config: RunConfig, runtime: Runtime, data: Data, model: nn.Module, arch: ArchSpec | None, out: Path,
    *, overwrite: bool = False, resume: bool = False, start: float | None = None,
) -> PrunedResult:
    """The joint loop on any model (placed on ``runtime``'s device) and data. ``arch`` rebuilds the dense
    model when the pruned one is loaded again; None saves the weights and spec without it (a user's model
    instance then has to be rebuilt by the user)."""
    start = time.perf_counter() if start is None else start
    dist = runtime.dist
    if config.search.subnet_weight > 0 and dist.enabled:  # its extra forward pass bypasses DDP's wrapper
        raise RlalError("search.subnet_weight > 0 runs in a single process only, not under torchrun")
    check_same_config(dist, config)
    train = shard(data.train, dist)  # this rank's part of every epoch; scoring reads all of data.train
    structure = find_layers(model, input_shape(data), policy=config.env.policy)
    # Built before any training: an infeasible target fails here with the feasible range. A latency budget's
    # table is timed once, by rank 0, and kept in the run directory: every rank, and a resumed run, prices
    # plans with the same numbers.
    own_table = out / LATENCY_FILE if resume else None
    latency_table = shared_latency_table(structure, config.env, runtime, own_table)
    env = make_env(structure, config.env, data, runtime, seed=config.seed, latency_table=latency_table)
    s = config.search
    agent_cfg = capped_warmup(run_agent(config), s)
    agent = make_agent(agent_cfg, env.state_dim, env.num_layers)
    context = make_context(agent_cfg, env.num_layers)
    align = AlignmentRegularizer(structure, lam=0.0, proximal=s.align.step == "proximal",
                                 momentum=config.optim.momentum)
    # beyond the paper: sub-networks trained beside the dense model until the choice
    subnets = SubnetTraining(env, s.subnet_weight, config.env.criterion, seed=config.seed) \
        if s.subnet_weight > 0 else None
    optimizer = build_optimizer(model, config.optim)
    scheduler = build_scheduler(optimizer, config.optim, _epoch_steps(config, len(train)))
    last_search = s.warmup_epochs + s.search_epochs
    final: Plan | None = None
    at_cut: dict[str, Any] = {}
    scoring = ForwardImages()  # the search's forward passes, summed over the ranks: what scoring costs

    # Rank 0 opens the run directory and reads the checkpoint; the other ranks receive it from rank 0.
    run_dir, metrics, checkpoint = dist.on_main(lambda: open_run(
        out, config, {"device": runtime.describe(), "data_source": data.source,
                      "agent_warmup_episodes": agent_cfg.warmup_episodes, "agent_seed": agent_cfg.seed},
        overwrite=overwrite, resume=resume,
    ))
    if not dist.is_main:
        metrics = SilentMetrics(metrics.lines)
    elif env.budget.latency is not None and (checkpoint is None or not (run_dir / LATENCY_FILE).exists()):
        env.budget.latency.write(run_dir / LATENCY_FILE)  # a resumed run keeps the file it priced with
    done, seconds_before = 0, 0.0
    if checkpoint is not None:  # continue exactly where the last complete epoch left the run
        state = checkpoint.state
        if state["final_plan"] is not None:
            final = Plan.from_keep_counts(structure, state["final_plan"])
        align.load_state_dict(state["align"])
        if state["at_cut"] is not None:  # the model was cut: rebuild the small one, then load its weights
            at_cut = state["at_cut"]
            model, optimizer, scheduler = _small_model(structure, final, runtime, config, len(train),
                                                       kept=align.kept)
        model.load_state_dict(checkpoint.weights)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        agent.load_state_dict(state["agent"])
        if context is not None:
            context.load_state_dict(state["context"])
        env.load_state_dict(state["env"])
        set_rng_state(state["rng"])
        done, seconds_before = checkpoint.epoch, state["seconds"]
        scoring.images = state.get("scored_images", 0)
    step = dist.wrap(model, config.train.sync_bn)

    test = None
    with guarded_epochs(run_dir) as guard:
        for epoch in range(done + 1, config.train.epochs + 1):
            guard.epoch = epoch
            # The scorer's BN re-estimation, the final choice and the cut read the first batches of the whole
            # training split in the order of the last epoch trained. In a single process that loader is the
            # one training sets; a rank trains on a copy (its shard) and a resumed run starts it at 0, so it
            # is set here, and again after the training of the epochs that choose and cut (below).
            data.train.set_epoch(epoch - 1)
            if epoch <= s.warmup_epochs:
                stats, synced = _train_epoch(model, step, train, optimizer, scheduler, runtime, config, epoch,
                                             "warm-up", None, subnets)
                _log(metrics, config, epoch, "warm-up", stats, None, optimizer, synced, _subnet_record(stats))

            elif epoch <= last_search:
                t = epoch - s.warmup_epochs - 1  # indexes the epoch context z_t
                # The agent acts on the weights as they are now (the previous epoch's), then the weights
                # train toward its plan: so the first search epoch is aligned too.
                rank_scoring = ForwardImages()
                with rank_scoring.counting(model):
                    episodes = run_agent_episodes(
                        env, agent, context, t, s.episodes_per_epoch, dist=dist,
                        progress=config.train.progress, desc=f"search {epoch} agent")
                    decoder_heldout = context.mse(episodes) if context is not None else float("nan")
                    decoder_loss = context.fit(env.history) if context is not None else float("nan")
                    agent_losses = agent.update(context)
                    plan = select_plan(env, agent, context, t, episodes, s)
                dist.same(plan.keep, f"the plan to align to in epoch {epoch}")
                align.set_plan(plan, criterion=config.env.criterion, scores=_scores(env))
                align.lam = lambda_at(t, s.align)
                stats, synced = _train_epoch(model, step, train, optimizer, scheduler, runtime, config, epoch,
                                             "search", align, subnets)
                _log(metrics, config, epoch, "search", stats, None, optimizer, synced, {
                    "align_lambda": align.lam,
                    "align_loss": stats.reg_loss,
                    "removed_kept_norm_ratio": align.removed_kept_norm_ratio(model),  # this epoch's plan
                    "uniform_reward": env.uniform_reward,
                    "episode_rewards": [e.reward for e in episodes],
                    "episode_macs": [e.macs for e in episodes],
                    "decoder_loss": decoder_loss,
                    "decoder_heldout_mse": decoder_heldout,
                    **{f"agent_{k}": v for k, v in agent_losses.items()},
                    "selected_plan": plan.to_dict(),
                    "selected_macs": int(structure.cost.of(plan)[0]),
                    **_subnet_record(stats),
                })
                scoring.images += sum(dist.gather(rank_scoring.images))

            elif epoch <= s.cut_epoch:  # alignment to the frozen final plan, steered toward the target
                if epoch == last_search + 1 and s.align.lam > 0:
                    align.lam = s.align.lam
                    steps = s.align_epochs * s.dense_steps(len(train))
                    align.steer(model, s.align.target_ratio, steps, lr=optimizer.param_groups[0]["lr"],
                                path=s.align.path)
                stats, synced = _train_epoch(model, step, train, optimizer, scheduler, runtime, config, epoch,
                                             "align", align if s.align.lam > 0 else None)
                _log(metrics, config, epoch, "align", stats, None, optimizer, synced, {
                    "align_lambda": align.lam,
                    "align_loss": stats.reg_loss,
                    "removed_kept_norm_ratio": align.removed_kept_norm_ratio(model),
                })

            else:
                stats, synced = _train_epoch(model, step, train, optimizer, scheduler, runtime, config, epoch,
                                             "fine-tune", None)
                test = evaluate(model, data.test, runtime) if eval_due(epoch, config) else None
                _log(metrics, config, epoch, "fine-tune", stats, test, optimizer, synced)

            if epoch in (last_search, s.cut_epoch):  # the choice and the cut read this epoch's order
                data.train.set_epoch(epoch)
            if epoch == last_search:  # freeze the architecture; alignment to it follows
                scores = channel_importance(structure, config.env.criterion)  # the latest weights
                choice_scoring = ForwardImages()
                with choice_scoring.counting(model):
                    final, record = choose_final(env, agent, context, s, data, runtime, config, scores)
                scoring.images += sum(dist.gather(choice_scoring.images))
                dist.same(final.keep, "the final plan")
                metrics.write({"phase": "final-choice", "epoch": epoch, "rule": s.final, **record})
                align.set_plan(final, criterion=config.env.criterion, scores=scores)

            if epoch == s.cut_epoch:  # remove exactly the channels alignment pushed down
                assert final is not None and align.kept is not None
                small, at_cut = cut_and_measure(model, structure, final, align, data, runtime, config)
                metrics.write({"phase": "cut", "epoch": epoch, **at_cut})
                model, optimizer, scheduler = _small_model(structure, final, runtime, config,
                                                           len(train), weights=small)
                step = dist.wrap(model, config.train.sync_bn)

            if dist.is_main:
                save_checkpoint(run_dir, epoch, model, {
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "agent": agent.state_dict(),
                    "context": context.state_dict() if context is not None else None,
                    "env": env.state_dict(),
                    "align": align.state_dict(),
                    "final_plan": final.to_dict() if final is not None else None,
                    "at_cut": at_cut or None,
                    "rng": rng_state(),
                    "scored_images": scoring.images,
                    "metrics_lines": metrics.lines,
                    "seconds": seconds_before + time.perf_counter() - start,
                })

    if test is None:  # resumed after the last epoch's checkpoint but before the results were written
        test = evaluate(model, data.test, runtime)
    assert final is not None  # validation guarantees at least one search epoch
    macs, params = structure.cost.of(final)
    seconds = seconds_before + time.perf_counter() - start
    result = PrunedResult(
        method="rlal", model=model, plan=final, run_dir=run_dir, test_acc=test.acc,
        dense_macs=structure.cost.dense_macs, macs=int(macs), epochs=config.train.epochs,
        dense_params=structure.cost.dense_params, params=int(params), seconds=seconds,
    )
    if not dist.is_main:  # rank 0 writes the run's files
        return result
    write_widths(run_dir / "widths.csv", structure, final)
    save_pruned(run_dir / "pruned", model, arch=arch, plan=final, input_shape=input_shape(data),
                policy=config.env.policy, classes=list(data.classes))
    write_json(run_dir / "episodes.json", env.history_records())
    write_json(run_dir / "result.json", {
        "method": "rlal", "model": _model_name(arch, model), "dataset": data.spec.name,
        "agent": config.agent.kind,
        "test_acc": result.test_acc, "test_images": test.images,
        "dense_macs": result.dense_macs, "macs": result.macs, "macs_ratio": result.macs / result.dense_macs,
        "dense_params": result.dense_params, "params": result.params,
        "target_macs": config.env.target_macs, "epochs": config.train.epochs, "seconds": seconds,
        "train_images_per_epoch": data.train.num_samples,
        "device": runtime.describe(), "resumed": checkpoint is not None,
        "plan": final.to_dict(), **{f"at_cut_{k}": v for k, v in at_cut.items()},
        # the search's scoring, forward passes of the masked dense network (see rlal.train.compute)
        "search_forward_images": scoring.images, "search_macs": scoring.images * result.dense_macs,
        **latency_check(env.budget, final, model),
    })  # fmt: skip
    write_report(run_dir)
    return result


def run_agent(config: RunConfig) -> AgentConfig:
    """The run's agent settings with the agent seeded by the run's ``seed`` plus ``agent.seed``: runs of
    different seeds draw different exploration, networks and replay samples, as their weights differ."""
    return dataclasses.replace(config.agent, seed=config.seed + config.agent.seed)


def capped_warmup(cfg: AgentConfig, search: SearchConfig) -> AgentConfig:
    """``cfg`` with ``warmup_episodes`` at most half of the search's episodes: random warm-up episodes that
    outlasted the search would leave the agent's policy unused (the run's ``run.json`` records the value
    used)."""
    cap = search.search_epochs * search.episodes_per_epoch // 2
    return dataclasses.replace(cfg, warmup_episodes=min(cfg.warmup_episodes, cap))


def _model_name(arch: ArchSpec | None, model: nn.Module) -> str:
    if arch is None:
        return type(model).__name__
    return arch.model or arch.factory or type(model).__name__


def _small_model(
    structure: Structure, plan: Plan, runtime: Runtime, config: RunConfig, steps_per_epoch: int,
    weights: nn.Module | None = None, kept: dict[str, torch.Tensor] | None = None,
) -> tuple[nn.Module, torch.optim.Optimizer, Any]:
    """The cut model with a fresh optimiser whose schedule continues where the dense one stands: momentum
    restarts (the parameter shapes changed), the learning rate does not. ``weights`` is the cut model; when
    resuming it is rebuilt from the plan and its ``kept`` channels (the checkpoint then supplies its weights
    and optimiser state)."""
    small = place(weights if weights is not None else cut(structure, plan, kept=kept), runtime)
    optimizer = build_optimizer(small, config.optim)
    epoch_steps = _epoch_steps(config, steps_per_epoch)
    at_cut = sum(epoch_steps[:config.search.cut_epoch])
    scheduler = build_scheduler(optimizer, config.optim, epoch_steps, start_step=at_cut)
    return small, optimizer, scheduler


def _epoch_steps(config: RunConfig, steps_per_epoch: int) -> list[int]:
    """The steps each epoch of the run takes: the learning-rate schedule runs over the steps actually taken,
    so a shorter dense phase moves the cut earlier in it, and its warm-up is counted in those shorter
    epochs."""
    cut, dense = config.search.cut_epoch, config.search.dense_steps(steps_per_epoch)
    return [dense] * cut + [steps_per_epoch] * (config.train.epochs - cut)


def _scores(env: PruningEnv) -> dict[str, torch.Tensor] | None:
    """The channel scores the environment's episodes were scored with (this epoch's weights)."""
    return getattr(env.scorer, "scores", None)


def run_agent_episodes(
    env: PruningEnv, agent: Agent, context: EpochContext | None, t: int, episodes: int,
    *, dist: Dist | None = None, progress: bool = False, desc: str = "agent",
) -> list[Episode]:
    """P exploration episodes on the current weights, conditioned on epoch t's prior context (see
    :mod:`rlal.agent.context`); each is stored for learning.

    With several ranks (``dist``) the scoring, the whole cost, is split: see :func:`_split_episodes`."""
    env.set_epoch(t)  # importance rescored on the new weights; the previous epoch's rewards checked
    z = context.prior(t) if context is not None else None
    if dist is not None and dist.enabled and env.scorer is not None:
        # Every rank scored the uniform plan itself: the vs-uniform baseline must be the same number.
        dist.same(env.uniform_reward, f"the uniform plan's reward in search epoch {t}")
        return _split_episodes(env, agent, t, z, episodes, dist)
    done = []
    for _ in tqdm(range(episodes), desc=desc, leave=False, disable=None if progress else True):
        episode = run_episode(env, agent, t, z)
        agent.observe(episode)
        done.append(episode)
    return done


def _split_episodes(
    env: PruningEnv, agent: Agent, t: int, z: torch.Tensor | None, episodes: int, dist: Dist
) -> list[Episode]:
    """The epoch's episodes with their scoring split across ranks, ending every rank's agent and environment
    exactly where one process scoring them all would (same actions, rewards, replay buffer and RNG).

    An episode's actions never depend on the rewards of its own epoch (the policy changes only in
    ``agent.update``, after the episodes), so the plans are known before any is scored:

    1. every rank acts the P episodes on a snapshot of the agent, scoring nothing, and restores it;
    2. rank r scores plans r, r + R, r + 2R, ... (the scorer reads the weights, the reward split and the
       first training batches for BN re-estimation, all identical on every rank) and the accuracies are
       all-gathered;
    3. every rank runs the same P episodes again for real, the scorer answering from the gathered table.
    """
    scorer = env.scorer
    assert scorer is not None
    saved_agent = agent.state_dict()
    planned = _Planned()
    try:
        with env.off_the_record(planned):
            for _ in range(episodes):
                agent.observe(run_episode(env, agent, t, z))  # observed too: acting may count episodes seen
    finally:
        agent.load_state_dict(saved_agent)
    mine = {i: float(scorer.score(plan)) for i, plan in enumerate(planned.plans)
            if i % dist.world_size == dist.rank}
    accuracies: dict[int, float] = {}
    for part in dist.gather(mine):
        accuracies.update(part)
    env.scorer = _Planned(planned.plans, [accuracies[i] for i in range(episodes)])
    done = []
    try:
        for _ in range(episodes):
            episode = run_episode(env, agent, t, z)
            agent.observe(episode)
            done.append(episode)
    finally:
        env.scorer = scorer
    return done


class _Planned:
    """A stand-in scorer for :func:`_split_episodes`: records the plans it is asked about (scoring 0), or,
    given the plans and their accuracies, answers for each in turn, checking it is asked about that plan."""

    def __init__(self, plans: list[Plan] | None = None, accuracies: list[float] | None = None) -> None:
        self.plans: list[Plan] = [] if plans is None else plans
        self.accuracies = accuracies
        self.asked = 0

    def set_epoch(self, epoch: int) -> None:
        pass

    def score(self, plan: Plan) -> float:
        if self.accuracies is None:
            self.plans.append(copy.deepcopy(plan))
            return 0.0
        k, self.asked = self.asked, self.asked + 1
        if plan.keep != self.plans[k].keep:
            raise RuntimeError(f"episode {k} chose another plan when replayed than when planned (a bug)")
        return self.accuracies[k]


def select_plan(
    env: PruningEnv, agent: Agent, context: EpochContext | None, t: int, episodes: list[Episode],
    cfg: SearchConfig,
) -> Plan:
    """The plan the weights are aligned to this epoch (``search.align_to``)."""
    if cfg.align_to == "deterministic":
        return greedy_plan(env, agent, t, context.prior(t) if context is not None else None)
    return env.plan_of(_best(episodes))


def greedy_plan(env: PruningEnv, agent: Agent, t: int, z: torch.Tensor | None) -> Plan:
    """The agent's greedy plan on epoch t's context, neither scored nor recorded in ``env.history``: it is
    not an exploration episode, and after the last search epoch's training the environment's channel
    scores and uniform baseline are those of the weights before it, so a reward there would be measured
    against a stale baseline (the final choice scores its candidates itself)."""
    with env.off_the_record():
        return env.plan_of(run_episode(env, agent, t, z, deterministic=True))


def choose_final(
    env: PruningEnv, agent: Agent, context: EpochContext | None, cfg: SearchConfig, data: Data,
    runtime: Runtime, config: RunConfig, scores: dict[str, torch.Tensor],
) -> tuple[Plan, dict[str, Any]]:
    """The architecture that is cut (``search.final``), and a record of how it was chosen; ``scores`` are
    the channel scores on the current weights (the rescored plans keep those channels)."""
    last = cfg.search_epochs - 1
    z = context.prior(last) if context is not None else None
    if cfg.final == "deterministic":
        return greedy_plan(env, agent, last, z), {}
    recent = [e for e in env.history if e.epoch > last - cfg.final_window and math.isfinite(e.reward)]
    if cfg.final == "best-recent":
        return env.plan_of(_best(recent)), {}
    choice = rescore_final(env, agent, z, last, recent, cfg, data, runtime, config, scores)
    return choice.plan, choice.record()


def rescore_final(
    env: PruningEnv, agent: Agent, z: torch.Tensor | None, last: int, recent: list[Episode],
    cfg: SearchConfig, data: Data, runtime: Runtime, config: RunConfig, scores: dict[str, torch.Tensor],
) -> FinalChoice:
    """``search.final: rescored``: the best recent plans, the agent's deterministic plan and the uniform
    plan, scored again on the same (current) weights; see :mod:`rlal.train.choice`."""
    plans: list[Plan] = [env.uniform_plan]
    sources = ["uniform"]
    if isinstance(agent, SACAgent):  # the others have no policy to be greedy about
        greedy = greedy_plan(env, agent, last, z)
        if greedy.keep != env.uniform_plan.keep:
            plans.append(greedy)
            sources.append("greedy")
    added = 0
    # Named by its place in episodes.json: rewards on a few batches tie often, so epoch and reward do not
    # tell two episodes apart.
    number = {id(e): i for i, e in enumerate(env.history)}
    for e in sorted(recent, key=lambda e: e.reward, reverse=True):  # the best distinct recent plans
        plan = env.plan_of(e)
        if added == cfg.final_candidates:
            break
        if all(plan.keep != p.keep for p in plans):
            plans.append(plan)
            sources.append(f"episode {number[id(e)]} (e{e.epoch} r{e.reward:+.4f})")
            added += 1
    correct = score_plans(
        env.structure, plans, data.reward, data.train, runtime, criterion=config.env.criterion, scores=scores,
        bn_batches=max(1, config.env.bn_recalibration_batches), bn_sets=cfg.final_bn_sets,
    )
    return decide(correct, plans, sources, cfg.final_margin)


def cut_and_measure(
    model: nn.Module, structure: Structure, plan: Plan, align: AlignmentRegularizer, data: Data,
    runtime: Runtime, config: RunConfig,
) -> tuple[nn.Module, dict[str, Any]]:
    """Cut exactly the channels ``align`` pushed down (``plan``'s counts) out of the aligned dense model,
    measuring what the cut costs: test accuracy of the masked dense model vs the cut model (must agree),
    and how far alignment pulled the removed channels to zero.

    With ``env.bn_recalibration_batches`` > 0 the cut model is also tested with its BN statistics
    re-estimated on that many training batches, as the agent's rewards are: without it the statistics of
    the dense model no longer fit the sub-network, so the first figures mostly measure that mismatch. The
    re-estimate is put back afterwards, so it does not change the run. ``dense_test_acc`` is the dense
    model's own accuracy just before the cut, so the accuracy the cut loses is known."""
    kept = align.kept
    assert kept is not None
    masks = ChannelMasks(structure)
    masks.set_kept(kept)
    dense = evaluate(model, data.test, runtime)
    with masks:
        masked = evaluate(model, data.test, runtime)
    small = place(cut(structure, plan, kept=kept), runtime)
    cut_acc = evaluate(small, data.test, runtime)
    measured = {
        "dense_test_acc": dense.acc,
        "masked_test_acc": masked.acc,
        "cut_test_acc": cut_acc.acc,
        "removed_kept_norm_ratio": align.removed_kept_norm_ratio(model),
    }
    batches = config.env.bn_recalibration_batches
    if batches:
        with recalibrated_bn(small, first_batches(data.train, batches), runtime):
            measured["cut_test_acc_bn_recalibrated"] = evaluate(small, data.test, runtime).acc
    return small, measured


def _best(episodes: list[Episode]) -> Episode:
    scored = [e for e in episodes if math.isfinite(e.reward)]
    if not scored:
        raise RuntimeError("no episode has a finite reward to choose a plan from")
    return scored[int(np.argmax([e.reward for e in scored]))]


def _train_epoch(
    model: nn.Module, step: nn.Module, train: Loader, optimizer: torch.optim.Optimizer, scheduler: Any,
    runtime: Runtime, config: RunConfig, epoch: int, phase: str, regularizer: AlignmentRegularizer | None,
    subnets: SubnetTraining | None = None,
) -> tuple[EpochStats, list[str]]:
    """One epoch on this rank's ``train`` loader (``step`` runs the forward: ``model`` or its DDP wrapper),
    with ``subnets``' loss added to every step when given; an epoch before the cut takes
    ``search.dense_steps`` of its steps. The job's figures, and every rank's weight digest once the ranks are
    synchronised ([] alone)."""
    train.set_epoch(epoch)
    if subnets is not None:
        subnets.start_epoch(epoch)
    stats = train_one_epoch(
        model, train, optimizer, scheduler, runtime, label_smoothing=config.optim.label_smoothing,
        clip_grad_norm=config.optim.clip_grad_norm,
        regularizer=regularizer, progress=config.train.progress,
        desc=f"{phase} {epoch}/{config.train.epochs}", step_model=step, extra_loss=subnets,
        max_steps=config.search.dense_steps(len(train)) if epoch <= config.search.cut_epoch else None,
    )
    runtime.dist.sync_buffers(model)
    return runtime.dist.reduce_stats(stats), runtime.dist.check_in_sync(model)


def _subnet_record(stats: EpochStats) -> dict[str, Any]:
    """The epoch's mean sub-network loss (weighted), when sub-networks trained."""
    return {} if stats.extra_loss is None else {"subnet_loss": stats.extra_loss}


def _log(
    metrics: MetricsWriter, config: RunConfig, epoch: int, phase: str, stats: EpochStats,
    test: EpochStats | None, optimizer: torch.optim.Optimizer, synced: list[str],
    extra: dict[str, Any] | None = None,
) -> None:
    ranks = {"rank_state_sha256": synced} if synced else {}  # several ranks: each one's weights, compared
    metrics.write({**epoch_record(epoch, phase, stats, test, optimizer), **(extra or {}), **ranks})
    if config.train.progress and not isinstance(metrics, SilentMetrics):  # printed by rank 0 alone
        print(f"[{phase}] " + format_epoch(epoch, config.train.epochs, stats, test), flush=True)
