"""Does the search's reward predict how a plan ends after training? Per-plan JSON lines, then a summary.

The joint method chooses an architecture by the accuracy of its masked sub-network on the weights of the
search (the reward split, BN statistics re-estimated). What matters is how that architecture ends after the
rest of the epoch budget. This bench measures both for the same plans, from the same weights:

1. ``prefix``: the dense model trains for the track's warm-up + search epochs (the run's own schedule),
   as the joint method's weights have when the final plan is chosen; the weights are saved in OUT.
2. ``screen``: many plans on the budget, drawn as the search draws them (relative actions at
   ``env.action_range``, and at a narrower range), are scored on a few reward batches, as an episode is.
   The plans kept for training span that score: the best, the worst and some in between, the uniform plan
   among them (twice: the second copy trains on another data order, so the noise of training is known).
3. ``train``: for each kept plan (``--only`` splits them between processes), the score on the whole
   reward split (the final choice's measure); the score after a short fine-tune of the cut model
   (``--proxy-steps``, at the schedule's learning rate, BN statistics from those steps), a candidate
   reward that tracks trainability; then the cut model trains for the rest of the epochs (the joint
   method's fine-tune schedule) and is scored on the reward split and the test set.
   ``scratch`` (optional, needs only ``screen`` or ``given``): each kept plan's architecture trained from
   scratch for all the epochs, as the ``uniform`` baseline trains: the architecture's own quality, with no
   weights inherited from the search. ``--seed`` trains it again from another initialisation and data
   order, so that a plan's lead over uniform can be told from the noise of one seed.
4. ``noise`` (optional, needs only ``screen``): how much of the search's reward is the noise of its BN
   re-estimate. Each kept plan's reward (points against the uniform plan, on the same images and the same
   BN batches, as an episode scores it) on ``--bn-sets`` disjoint sets of training batches, for each BN
   batch count in ``--bn-counts``; the spread over the sets is that noise, next to the reward's spread
   over the plans (what the search has to tell apart). Also on more reward batches (``--eval-batches``).
``given`` (instead of ``prefix`` and ``screen``, for ``scratch`` only): plans chosen, not drawn: the
   uniform plan (twice, as above), allocations tilted by what a channel costs (``--tilts``: layer ``l``'s
   preference is uniform's ratio times ``(m_l / m)^-alpha``, ``m_l`` the MACs one more channel of ``l``
   adds at the uniform plan and ``m`` their geometric mean, scaled onto the budget as the search's relative
   actions are; alpha > 0 widens the layers where channels are cheap), and every distinct plan the methods
   of a quality table chose (``--records``). Does any allocation train better than uniform from scratch?
5. ``summary``: rank correlations of each score with the final accuracies, the spread of the final
   accuracies against the noise of training, and each plan's from-scratch difference to the uniform plan,
   paired over the seeds both trained with.

    python bench/reward_fidelity.py prefix  --config bench-t2-fmnist-resnet56.yaml --seed 7 --out DIR
    python bench/reward_fidelity.py screen  --out DIR [--screen 24] [--keep 7] [--set env.target_macs=0.15]
    python bench/reward_fidelity.py train   --out DIR --only 0,2,4,6
    python bench/reward_fidelity.py scratch --out DIR --only 1,3,5,7
    python bench/reward_fidelity.py scratch --out DIR --only 0,4 --seed 8
    python bench/reward_fidelity.py noise   --out DIR [--bn-counts 2,8] [--bn-sets 4] [--eval-batches 6]
    python bench/reward_fidelity.py given   --config bench-t2-fmnist-mobilenetv2.yaml --out DIR \
        --set env.target_macs=0.1 --tilts 0.5,1,-0.5 --records docs/results/t2-fmnist-mobilenetv2-10pct.json
    python bench/reward_fidelity.py summary --out DIR

Each stage reads what the one before wrote in OUT (the config is saved there by ``prefix``). Another budget
on the same dense weights: copy ``config.yaml`` and ``prefix.safetensors`` to a new OUT and screen there with
``--set env.target_macs=...`` (env keys only). Use seeds that no table reports: this is for choosing a
reward, not for reporting a result. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlal.checkpoint import load_weights, save_weights, write_json
from rlal.config import RunConfig, load_config, resolve_config_path, save_config
from rlal.data import Data
from rlal.env import PruningEnv
from rlal.env.budget import Budget
from rlal.env.reward import first_batches
from rlal.errors import RlalError
from rlal.machine import cpu_name
from rlal.report.stats import summarize_paired
from rlal.structure import Plan, Structure, channel_importance, cut, find_layers
from rlal.train.choice import score_plans
from rlal.train.dense import build_model, input_shape, place, setup
from rlal.train.epoch import evaluate, train_one_epoch
from rlal.train.optim import build_optimizer, build_scheduler
from rlal.train.runtime import Runtime, seed_everything

SCRATCH = "records-scratch.jsonl"
NARROW_RANGE = 1.25  # the near-uniform search of the t2-fmnist-resnet56-local experiment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    stages = ("prefix", "given", "screen", "train", "scratch", "noise", "summary")
    parser.add_argument("stage", choices=stages)
    parser.add_argument("--out", type=Path, required=True, help="the bench's directory")
    parser.add_argument("--config", help="prefix, given: a run config (shipped name or path)")
    parser.add_argument("--seed", type=int, default=None,
                        help="prefix: the run's seed, 7 if not given (report none of these); "
                             "scratch: train with this seed instead of the run's")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="prefix, given: overrides; screen: env.* overrides (another budget on the same "
                             "prefix)")
    parser.add_argument("--screen", type=int, default=24, help="screen: random plans drawn and scored")
    parser.add_argument("--keep", type=int, default=7, help="screen: plans kept for training besides uniform")
    parser.add_argument("--tilts", default="", help="given: cost tilts alpha, comma-separated")
    parser.add_argument("--records", type=Path, default=None,
                        help="given: a quality table's records (<name>.json); the plans its methods chose")
    parser.add_argument("--only", default="", help="train, scratch: plan indices, comma-separated (all)")
    parser.add_argument("--proxy-steps", default="25,100", help="train: fine-tune steps of the proxy scores")
    parser.add_argument("--bn-counts", default="2,8", help="noise: BN re-estimate sizes, in training batches")
    parser.add_argument("--bn-sets", type=int, default=4, help="noise: disjoint BN batch sets per size")
    parser.add_argument("--eval-batches", type=int, default=6, help="noise: the larger reward sample")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    needs = {"screen": ("config.yaml", "prefix.safetensors"), "train": ("plans.json", "prefix.safetensors"),
             "scratch": ("plans.json",), "noise": ("plans.json", "prefix.safetensors"),
             "summary": ("plans.json",)}
    missing = [name for name in needs.get(args.stage, ()) if not (args.out / name).is_file()]
    if missing:  # a stage run before the one that writes its input
        print(f"error: {args.out / missing[0]} is missing: run the stages in order (--help)", file=sys.stderr)
        return 2
    try:
        _run(args, parser)
    except RlalError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    if args.stage in ("prefix", "given"):
        if args.config is None:
            parser.error(f"{args.stage} needs --config")
        overrides = [f"seed={7 if args.seed is None else args.seed}", "method=rlal", *args.set]
        config = load_config(resolve_config_path(args.config), overrides)
        if args.stage == "prefix":
            prefix(config, args.out)
        else:
            tilts = [float(a) for a in args.tilts.split(",") if a.strip()]
            given(config, args.out, tilts, args.records)
    elif args.stage == "screen":
        if args.set:
            _rebudget(args.out, args.set)
        screen(_config(args.out), args.out, args.screen, args.keep)
    elif args.stage in ("train", "scratch"):
        only = [int(i) for i in args.only.split(",") if i.strip()] or None
        steps = [int(s) for s in args.proxy_steps.split(",") if s.strip()]
        if args.stage == "train":
            train(_config(args.out), args.out, only, steps, args.threads)
        else:
            scratch(_config(args.out), args.out, only, args.threads, args.seed)
    elif args.stage == "noise":
        counts = [int(c) for c in args.bn_counts.split(",") if c.strip()]
        if not counts or min(counts) < 1 or args.bn_sets < 2 or args.eval_batches < 1:
            raise RlalError("noise needs --bn-counts >= 1, --bn-sets >= 2 and --eval-batches >= 1")
        noise(_config(args.out), args.out, counts, args.bn_sets, args.eval_batches, args.threads)
    else:
        summary(args.out)


def _rebudget(out: Path, overrides: list[str]) -> None:
    """Apply env.* overrides to OUT's config before a first screen: another budget on the same dense weights
    (the env section does not touch the prefix's training), e.g. in a copy of another bench's prefix."""
    if any(not item.startswith("env.") for item in overrides):
        raise RlalError(f"screen --set takes env.* keys only (the prefix trained with the rest): {overrides}")
    if (out / "plans.json").exists():
        raise RlalError(f"{out / 'plans.json'} exists: screen another budget into a copy of config.yaml and "
                        "prefix.safetensors in a new directory")
    save_config(load_config(out / "config.yaml", overrides), out / "config.yaml")


def _config(out: Path) -> RunConfig:
    return load_config(out / "config.yaml")


def prefix_epochs(config: RunConfig) -> int:
    """The epochs the dense weights train before the final plan is chosen."""
    return config.search.warmup_epochs + config.search.search_epochs


def prefix(config: RunConfig, out: Path) -> None:
    """Train the dense model for the search's epochs on the run's schedule; save its weights."""
    runtime, data, model = setup(config)
    # the budget is checked now, not by the screen after minutes of training (an infeasible one raises)
    Budget(find_layers(model, input_shape(data), policy=config.env.policy), config.env.target_macs,
           config.env.min_keep_ratio, config.env.round_to)
    save_config(config, out / "config.yaml")
    optimizer = build_optimizer(model, config.optim)
    steps = len(data.train)
    scheduler = build_scheduler(optimizer, config.optim, [steps] * config.train.epochs)
    for epoch in range(1, prefix_epochs(config) + 1):
        data.train.set_epoch(epoch)
        stats = train_one_epoch(model, data.train, optimizer, scheduler, runtime,
                                label_smoothing=config.optim.label_smoothing)
        print(json.dumps({"stage": "prefix", "epoch": epoch, "train_loss": round(stats.loss, 4)}), flush=True)
    save_weights(model, out / "prefix.safetensors")


def given(config: RunConfig, out: Path, tilts: list[float], records: Path | None) -> None:
    """Write the chosen plans (uniform twice, the cost tilts, a table's choices) for the scratch stage."""
    if (out / "plans.json").exists():
        raise RlalError(f"{out / 'plans.json'} exists: give the plans into a new directory")
    if records is not None and not records.is_file():
        raise RlalError(f"--records {records}: no such file (a quality table's <name>.json)")
    _, data, model = setup(config)
    structure = find_layers(model, input_shape(data), policy=config.env.policy)
    env = PruningEnv(structure, config.env)  # budget only
    uniform = env.uniform_plan
    chosen = [{"index": 0, "source": "uniform", "screen_reward": 0.0, "keep": uniform.to_dict()},
              {"index": 1, "source": "uniform (second data order)", "screen_reward": 0.0,
               "keep": uniform.to_dict(), "data_seed_offset": 1000}]
    seen = {tuple(uniform.array())}

    def add(source: str, plan: Plan) -> None:
        if tuple(plan.array()) in seen:
            return
        seen.add(tuple(plan.array()))
        macs, params = structure.cost.of(plan)
        chosen.append({"index": len(chosen), "source": source, "screen_reward": None,
                       "keep": plan.to_dict(), "macs": macs, "params": params})

    for alpha in tilts:
        add(f"cost tilt {alpha:g}", cost_tilt(env, alpha))
    for r in json.loads(records.read_text()) if records is not None else []:
        if r.get("plan") and r["method"] != "uniform":
            add(f"{r['method']} seed {r['seed']}", Plan.from_keep_counts(structure, r["plan"]))
    save_config(config, out / "config.yaml")
    write_json(out / "plans.json", {"given": True, "uniform_params": structure.cost.of(uniform)[1],
                                    "plans": chosen})
    for c in chosen:
        print(json.dumps({k: v for k, v in c.items() if k != "keep"}), flush=True)


def cost_tilt(env: PruningEnv, alpha: float) -> Plan:
    """The plan on the budget whose layers lean away from uniform by what a channel costs: preference
    ``u * (m_l / m)^-alpha`` (``m_l`` from :func:`marginal_macs` at the uniform plan, ``m`` their geometric
    mean), scaled onto the budget as relative actions are."""
    marginal = marginal_macs(env.structure, env.uniform_plan.array())
    preference = env.uniform_ratio * (marginal / np.exp(np.log(marginal).mean())) ** -alpha
    return env.plan_of(env.budget.on_budget(preference))


def marginal_macs(structure: Structure, keep: np.ndarray) -> np.ndarray:
    """Per layer, the MACs one more kept channel adds to the sub-network ``keep`` (one fewer where the
    layer is whole)."""
    moved = keep + np.diag(np.where(keep < structure.channels, 1, -1))  # row t: layer t moved by one
    return np.maximum(np.abs(structure.cost.macs(moved) - structure.cost.macs(keep)), 1).astype(np.float64)


def _loaded(config: RunConfig, out: Path) -> tuple[Runtime, Data, Structure]:
    """The run's runtime and data, and the layers of the dense model with the prefix's weights."""
    runtime, data, model = setup(config)
    load_weights(model, out / "prefix.safetensors")
    structure = find_layers(model, input_shape(data), policy=config.env.policy)
    return runtime, data, structure


def screen(config: RunConfig, out: Path, draws: int, keep: int) -> None:
    """Draw plans as the search does, score each on the search's few reward batches, keep a spread."""
    runtime, data, structure = _loaded(config, out)
    scores = channel_importance(structure, config.env.criterion)
    rng = np.random.default_rng(config.seed)
    plans: list[Plan] = []
    sources: list[str] = []
    for i in range(draws):
        action_range = config.env.action_range if i % 2 == 0 else NARROW_RANGE
        env = PruningEnv(structure, _with_range(config, action_range).env)  # budget only
        env.reset()
        for _ in range(env.num_layers):
            env.step(float(rng.random()))
        plans.append(env.plan_of(env.finish()))
        sources.append(f"random-{i} range {action_range:g}")
    uniform = PruningEnv(structure, config.env).uniform_plan
    batches = list(first_batches(data.reward, config.env.reward_batches))
    correct = score_plans(structure, [uniform, *plans], batches, data.train, runtime,
                          criterion=config.env.criterion, scores=scores,
                          bn_batches=max(1, config.env.bn_recalibration_batches), bn_sets=1)
    acc = 100 * correct.mean(axis=(1, 2))
    reward = acc[1:] - acc[0]  # the search's vs-uniform reward
    order = list(np.argsort(-reward))
    picked = _spread(order, keep)
    chosen = [{"index": 0, "source": "uniform", "screen_reward": 0.0, "keep": uniform.to_dict()},
              {"index": 1, "source": "uniform (second data order)", "screen_reward": 0.0,
               "keep": uniform.to_dict(), "data_seed_offset": 1000}]
    for j, i in enumerate(picked):
        chosen.append({"index": j + 2, "source": sources[i], "screen_reward": round(float(reward[i]), 3),
                       "keep": plans[i].to_dict()})
    write_json(out / "plans.json", {"screened": [{"source": s, "screen_reward": round(float(r), 3)}
                                                 for s, r in zip(sources, reward, strict=True)],
                                    "uniform_screen_acc": float(acc[0]), "plans": chosen})
    for c in chosen:
        print(json.dumps({k: v for k, v in c.items() if k != "keep"}), flush=True)


def noise(config: RunConfig, out: Path, counts: list[int], sets: int, eval_batches: int,
          threads: int) -> None:
    """Each kept plan's reward against uniform on ``sets`` disjoint BN batch sets, per BN size in
    ``counts``: on the search's reward batches and on ``eval_batches`` of them (one JSON line per size)."""
    plans = [p for p in json.loads((out / "plans.json").read_text())["plans"] if p["index"] != 1]
    runtime, data, structure = _loaded(config, out)
    scores = channel_importance(structure, config.env.criterion)
    uniform, others = plans[0], plans[1:]
    if uniform["source"] != "uniform":
        raise RlalError(f"{out / 'plans.json'} does not start with the uniform plan")
    built = [Plan.from_keep_counts(structure, p["keep"]) for p in plans]
    search_images = sum(len(y) for _, y in first_batches(data.reward, config.env.reward_batches))
    # the search's reward batches first, then more up to eval_batches (a search on the whole split: all of it)
    wanted = None if config.env.reward_batches is None else max(eval_batches, config.env.reward_batches)
    batches = list(first_batches(data.reward, wanted))
    for count in counts:
        t0 = time.perf_counter()
        # (plans, sets, images): the BN sets are the training loader's first count * sets batches, in turn
        correct = score_plans(structure, built, batches, data.train, runtime, criterion=config.env.criterion,
                              scores=scores, bn_batches=count, bn_sets=sets)
        record: dict[str, Any] = {"bn_batches": count, "bn_sets": sets, "search_images": search_images,
                                  "eval_images": int(correct.shape[2]),
                                  "search": reward_noise(correct[:, :, :search_images]),
                                  "eval": reward_noise(correct)}
        record.update(plans=[p["source"] for p in others], seconds=round(time.perf_counter() - t0, 1),
                      threads=threads, cpu=cpu_name(), torch=torch.__version__)
        with open(out / "noise.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)


def reward_noise(correct: np.ndarray) -> dict[str, Any]:
    """From (plans, BN sets, images) correctness, plan 0 the uniform plan: each plan's reward (points
    against uniform on the same BN set and images, as an episode scores it), its spread over the BN sets
    (the noise of one episode's reward) and the spread of the mean rewards over the plans (what the search
    has to tell apart through that noise)."""
    acc = 100 * correct.mean(axis=2)  # (plans, sets)
    reward = acc[1:] - acc[0]
    over_sets = reward.std(axis=1, ddof=1)
    return {
        "uniform_acc_mean": round(float(acc[0].mean()), 2),
        "uniform_acc_std_over_sets": round(float(acc[0].std(ddof=1)), 2),
        "reward_mean": [round(float(v), 2) for v in reward.mean(axis=1)],
        "reward_std_over_sets": [round(float(v), 2) for v in over_sets],
        "mean_reward_std_over_sets": round(float(over_sets.mean()), 2),
        "reward_std_over_plans": round(float(reward.mean(axis=1).std(ddof=1)), 2),
    }


def _with_range(config: RunConfig, action_range: float) -> RunConfig:
    changed = copy.deepcopy(config)
    changed.env.action_range = action_range
    return changed


def _spread(order: list[int], keep: int) -> list[int]:
    """``keep`` positions of a ranking: its two ends and evenly spaced ones between, best first."""
    if keep >= len(order):
        return order
    positions = np.unique(np.round(np.linspace(0, len(order) - 1, keep)).astype(int))
    return [order[p] for p in positions]


def train(config: RunConfig, out: Path, only: list[int] | None, proxy_steps: list[int], threads: int) -> None:
    """For each kept plan: its reward-split score, its proxy scores, then its accuracy after training."""
    plans = json.loads((out / "plans.json").read_text())["plans"]
    runtime, data, structure = _loaded(config, out)
    scores = channel_importance(structure, config.env.criterion)
    done = _records(out)
    start_epoch = prefix_epochs(config)
    bn = max(1, config.env.bn_recalibration_batches)
    for entry in plans:
        if (only is not None and entry["index"] not in only) or entry["index"] in done:
            continue
        t0 = time.perf_counter()
        plan = Plan.from_keep_counts(structure, entry["keep"])
        record: dict[str, Any] = {"index": entry["index"], "source": entry["source"],
                                  "screen_reward": entry["screen_reward"]}
        correct = score_plans(structure, [plan], data.reward, data.train, runtime,
                              criterion=config.env.criterion, scores=scores, bn_batches=bn, bn_sets=2)
        record["reward_split_acc"] = 100 * float(correct.mean())
        small = place(cut(structure, plan, scores=scores), runtime)
        for steps in proxy_steps:
            record[f"proxy_{steps}_acc"] = _proxy(small, data, runtime, config, start_epoch, steps)
        data.train.seed = config.seed + entry.get("data_seed_offset", 0)
        record.update(_finish(small, data, runtime, config, start_epoch))
        data.train.seed = config.seed
        record.update(macs=int(structure.cost.of(plan)[0]), seconds=round(time.perf_counter() - t0, 1),
                      threads=threads, cpu=cpu_name(), torch=torch.__version__)
        with open(out / "records.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)


def scratch(config: RunConfig, out: Path, only: list[int] | None, threads: int,
            seed: int | None = None) -> None:
    """For each kept plan: its architecture trained from scratch for all the epochs, as ``uniform`` trains
    (the architecture's own quality, with no inherited weights), with ``seed`` (the run's if None)."""
    plans = json.loads((out / "plans.json").read_text())["plans"]
    if seed is not None:
        config = copy.deepcopy(config)
        config.seed = seed
    runtime, data, _ = setup(config)
    done = {(r["index"], r["seed"]) for r in _scratch_records(out, config)}
    for entry in plans:
        if (only is not None and entry["index"] not in only) or (entry["index"], config.seed) in done:
            continue
        t0 = time.perf_counter()
        seed_everything(config.seed)
        model = place(build_model(config, data), runtime)
        structure = find_layers(model, input_shape(data), policy=config.env.policy)
        plan = Plan.from_keep_counts(structure, entry["keep"])
        small = place(cut(structure, plan, criterion=config.env.criterion), runtime)
        data.train.seed = config.seed + entry.get("data_seed_offset", 0)
        finished = _finish(small, data, runtime, config, 0)
        data.train.seed = config.seed
        record = {"index": entry["index"], "seed": config.seed, "source": entry["source"],
                  **{f"scratch_{k}": v for k, v in finished.items()},
                  "seconds": round(time.perf_counter() - t0, 1), "threads": threads}
        with open(out / SCRATCH, "a") as f:
            f.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)


def _schedule(model: torch.nn.Module, config: RunConfig, start_epoch: int,
              steps_per_epoch: int) -> tuple[torch.optim.Optimizer, Any]:
    """A fresh optimiser whose schedule stands where the dense one did after ``start_epoch`` epochs (as the
    joint method's small model gets)."""
    optimizer = build_optimizer(model, config.optim)
    return optimizer, build_scheduler(optimizer, config.optim, [steps_per_epoch] * config.train.epochs,
                                      start_step=start_epoch * steps_per_epoch)


def _proxy(small: torch.nn.Module, data: Data, runtime: Runtime, config: RunConfig, start_epoch: int,
           steps: int) -> float:
    """Reward-split accuracy of a copy of the cut model after ``steps`` training steps (train-mode BN)."""
    model = copy.deepcopy(small)
    optimizer, scheduler = _schedule(model, config, start_epoch, len(data.train))
    data.train.set_epoch(start_epoch + 1)
    batches = itertools.islice(iter(data.train), steps)
    train_one_epoch(model, list(batches), optimizer, scheduler, runtime,
                    label_smoothing=config.optim.label_smoothing)
    return evaluate(model, data.reward, runtime).acc


def _finish(small: torch.nn.Module, data: Data, runtime: Runtime, config: RunConfig,
            start_epoch: int) -> dict[str, Any]:
    """Train the cut model for the rest of the epochs; its reward-split and test accuracies."""
    optimizer, scheduler = _schedule(small, config, start_epoch, len(data.train))
    losses = []
    for epoch in range(start_epoch + 1, config.train.epochs + 1):
        data.train.set_epoch(epoch)
        stats = train_one_epoch(small, data.train, optimizer, scheduler, runtime,
                                label_smoothing=config.optim.label_smoothing)
        losses.append(round(stats.loss, 4))
    return {"train_losses": losses, "final_reward_split_acc": evaluate(small, data.reward, runtime).acc,
            "final_test_acc": evaluate(small, data.test, runtime).acc}


def _scratch_records(out: Path, config: RunConfig) -> list[dict[str, Any]]:
    """The from-scratch records, each with its seed (records written before ``--seed`` existed ran with
    the run's own)."""
    return [{"seed": config.seed, **r} for r in _json_lines(out / SCRATCH)]


def _records(out: Path) -> dict[int, dict[str, Any]]:
    """The ``train`` stage's records by plan index."""
    return {r["index"]: r for r in _json_lines(out / "records.jsonl")}


def _json_lines(path: Path) -> list[dict[str, Any]]:
    """One dict per non-empty line of a JSON-lines file; none if it does not exist yet."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    ra, rb = _ranks(np.asarray(a, float)), _ranks(np.asarray(b, float))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=float)
    for value in np.unique(x):  # ties share their mean rank
        ranks[x == value] = ranks[x == value].mean()
    return ranks


def summary(out: Path) -> None:
    """Rank correlations of every score with the final accuracies; the training noise from the replicate;
    each plan's from-scratch difference to uniform, paired over seeds."""
    config = _config(out)
    all_scratch = _scratch_records(out, config)
    result: dict[str, Any] = {}
    run_seed = {r["index"]: r for r in all_scratch if r["seed"] == config.seed}
    written = json.loads((out / "plans.json").read_text())
    if (out / "records.jsonl").exists():
        result.update(_correlations(out, run_seed))
    elif written.get("given") and all_scratch:  # no score at a choice to correlate: the differences say it
        pass
    elif all_scratch:  # only the scratch stage ran: the screen reward is the one score to correlate
        plans = written["plans"]
        scored = {p["index"]: {k: p[k] for k in ("index", "source", "screen_reward")} for p in plans}
        result.update(_correlations(out, run_seed, scored))
    else:
        raise RlalError(f"{out} holds no trained plans: run the train or scratch stage first")
    if all_scratch:  # the reward split is the one a choice between architectures could be made on
        result["scratch test minus uniform, paired over seeds"] = paired_over_seeds(all_scratch)
        result["scratch reward split minus uniform, paired over seeds"] = paired_over_seeds(
            all_scratch, "scratch_final_reward_split_acc")
    print(json.dumps(result, indent=1))


def paired_over_seeds(records: list[dict[str, Any]], key: str = "scratch_final_test_acc") -> dict[str, Any]:
    """Each plan's ``key`` minus the uniform plan's (index 0) on the same seed: per seed, mean, sample std,
    standard error and 95% t interval (None from one seed). Seeds on which either did not train are left out
    of that plan's pairs."""
    uniform = {r["seed"]: r[key] for r in records if r["index"] == 0}
    by_plan: dict[str, dict[int, float]] = {}
    for r in sorted(records, key=lambda r: (r["index"], r["seed"])):
        if r["index"] != 0 and r["seed"] in uniform:
            by_plan.setdefault(r["source"], {})[r["seed"]] = round(r[key] - uniform[r["seed"]], 2)
    result = {}
    for source, diffs in by_plan.items():
        s = summarize_paired(list(diffs.values()))
        result[source] = {"seeds": list(diffs), "differences": list(diffs.values()), "mean": round(s.mean, 2),
                          "std": _rounded(s.std), "se": _rounded(s.se),
                          "interval_95": [round(v, 2) for v in s.ci] if s.ci is not None else None}
    return result


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _correlations(out: Path, scratch_records: dict[int, dict[str, Any]],
                  scored: dict[int, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Spearman correlations of each score at the choice with each final accuracy (one seed)."""
    if scored is None:
        records = sorted(_records(out).values(), key=lambda r: r["index"])
    else:  # scratch only: a plan's final accuracy is its from-scratch one
        records = sorted((dict(scored[i]) for i in scratch_records), key=lambda r: r["index"])
    for r in records:  # the same plan trained from scratch, where that ran
        r.update({k: v for k, v in scratch_records.get(r["index"], {}).items() if k.startswith("scratch_")})
    if len(records) < 3:
        raise RlalError(f"{out} holds {len(records)} trained plans on the run's seed; the summary needs 3")
    rows = [r for r in records if r["index"] != 1]  # one uniform copy in the correlations
    measures = ["screen_reward", *(["reward_split_acc"] if scored is None else []),
                *sorted(k for k in rows[0] if k.startswith("proxy_"))]
    result: dict[str, Any] = {"plans": len(rows)}
    targets = ["final_reward_split_acc", "final_test_acc"] if scored is None else []
    if all("scratch_final_test_acc" in r for r in rows):
        targets += ["scratch_final_reward_split_acc", "scratch_final_test_acc"]
    for target in targets:
        for m in measures:
            rho = spearman([r[m] for r in rows], [r[target] for r in rows])
            result[f"spearman {m} ~ {target}"] = round(rho, 3)
    by_index = {r["index"]: r for r in records}
    if 0 in by_index and 1 in by_index:
        for target in targets:
            result[f"uniform replicate difference, {target}"] = round(
                by_index[1][target] - by_index[0][target], 2)
    u = by_index.get(0)
    if u is not None:
        others = [r for r in rows if r["index"] != 0]
        for key in (*measures[1:], *targets):
            result[f"{key} minus uniform"] = {r["source"]: round(r[key] - u[key], 2) for r in others}
    return result


if __name__ == "__main__":
    sys.exit(main())
