"""The quality benchmark: every method on the same data, model, MACs target and epoch budget, side by side.

    rlal bench quality --config bench-fmnist-resnet20 --methods dense,uniform,magnitude,rlal --seeds 0,1

Each (method, seed) is an ordinary run directory under ``RUNS/<name>/<method>/seed-<s>``; a finished one
(``result.json``) is reused, a stopped dense or rlal run is resumed from its checkpoint, anything else
starts again. So seeds and methods can be added later without rerunning the rest. The table
(``docs/results/<name>.md``) holds only figures read from those ``result.json`` files; each row links to a
copy of its runs' resolved configs (``docs/results/<name>/``), which ``rlal train --config`` reproduces.
Runs that the table's records (``<name>.json``) hold but this machine's runs directory does not (a session
whose machine is gone) are carried over as recorded and not run again, so that a table grows across
machines; ``--no-run`` runs nothing and only writes the table from what is there.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import shutil
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlal.checkpoint import write_json, write_text
from rlal.config import RunConfig, load_config, set_value
from rlal.errors import RlalError
from rlal.machine import host
from rlal.report.stats import summarize_paired
from rlal.train.compute import matched_epochs, training_macs

METHODS: dict[str, tuple[str, ...]] = {
    "dense": ("method=dense",),
    "uniform": ("method=uniform",),
    "magnitude": ("method=magnitude",),
    "depgraph": ("method=depgraph",),
    "rlal": ("method=rlal",),
    "random-search": ("method=rlal", "agent.kind=random"),
    "sac-no-dynamics": ("method=rlal", "agent.kind=sac-no-dynamics"),
    "no-align": ("method=rlal", "search.align.lam=0"),
    "rlal-paper": ("method=rlal", "env.action_mode=wall", "env.reward=accuracy", "env.min_keep_ratio=0.1",
                   "agent.gamma=1", "search.final=best-recent", "search.align_epochs=0",
                   "search.align.step=subgradient"),
    "rlal-residual-floor": ("method=rlal", "env.residual_floor=uniform"),
    "rlal-subnet": ("method=rlal", "search.subnet_weight=1"),
    "rlal-half-dense": ("method=rlal", "search.dense_epoch_fraction=0.5"),
    "uniform-matched": ("method=uniform",),  # and the epochs of rlal's training compute: see matched_epochs
}
"""Each benchmark row: the settings that turn the benchmark's config into that method."""

DESCRIPTIONS = {
    "dense": "unpruned model, same total epochs",
    "uniform": "same keep ratio in every layer, trained from scratch",
    "magnitude": "train dense, prune by L1 filter norm (uniform ratios), fine-tune",
    "depgraph": "train dense, Torch-Pruning group-norm global pruning, fine-tune",
    "rlal": "the method: SAC + epoch-context model + alignment, joint",
    "random-search": "the joint pipeline with a random agent",
    "sac-no-dynamics": "ablation: SAC without the epoch-context model",
    "no-align": "ablation: no alignment regulariser (λ = 0)",
    "rlal-paper": "the paper's literal form: absolute actions + wall, raw accuracy reward, best episode cut, "
                  "subgradient alignment",
    "rlal-residual-floor": "the method, its residual widths never below uniform's (needs env.policy=all)",
    "rlal-subnet": "the method with a drawn sub-network trained beside the dense model until the choice",
    "rlal-half-dense": "the method, each epoch before the cut taking half an epoch's steps (at 50% MACs, "
                       "about uniform's training compute)",
    "uniform-matched": "uniform, trained for the epochs that rlal's training compute buys it",
}


@dataclass(frozen=True)
class RunRecord:
    """One finished (method, seed) run, as its ``result.json`` has it."""

    method: str
    seed: int
    run_dir: Path | None
    """None for a run carried over from the table's records, its folder not on this machine."""
    result: dict[str, Any]
    seconds: float
    """Wall-clock of the method, including the dense run a three-stage baseline pruned."""
    epochs: int
    choice: str | None = None
    """Where a joint run's final plan came from (None for runs without a cut)."""
    train_macs: float | None = None
    """Training compute (:mod:`rlal.train.compute`), None when it cannot be counted from the schedule."""


def parse_methods(text: str) -> list[str]:
    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        bad = unknown[0] if unknown else text
        raise RlalError(f"unknown method {bad!r} (choose from {', '.join(METHODS)})")
    return list(dict.fromkeys(names))


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise RlalError(f"--seeds {text!r} is not a comma-separated list of integers") from None
    if not seeds:
        raise RlalError("--seeds needs at least one seed")
    return list(dict.fromkeys(seeds))


def run_quality_bench(
    config_path: Path, name: str, methods: Sequence[str], seeds: Sequence[int], runs_dir: Path,
    results_dir: Path, overrides: Sequence[str] = (), log: Callable[[str], None] = print, note: str = "",
    run: bool = True,
) -> Path:
    """Run every (method, seed) that is neither finished here nor in the table's records (none if not
    ``run``) and write the table; returns the table's path."""
    base = load_config(config_path, list(overrides))
    if base.method != "rlal":
        raise RlalError("the benchmark's config must be an rlal config (with the env and search sections)")
    records = results_dir / f"{name}.json"
    present = collect(name, runs_dir)
    elsewhere = {(r.method, r.seed) for r in carried_over(records, present)}
    ran = False
    matched: int | None = None  # uniform-matched's epochs, the same for every seed: worked out once
    # Three-stage baselines prune the dense run of their seed when there is one: that training is paid once.
    order = sorted(methods, key=lambda m: m != "dense")
    for method in order:
        for seed in seeds:
            run_dir = runs_dir / name / method / f"seed-{seed}"
            if (run_dir / "result.json").exists():
                log(f"{method} seed {seed}: done ({run_dir})")
                continue
            if (method, seed) in elsewhere:  # a committed figure is never silently replaced by a new run
                log(f"{method} seed {seed}: done on another machine (recorded in {records}); not run again")
                continue
            if not run:
                log(f"{method} seed {seed}: not run (--no-run)")
                continue
            settings = [*METHODS[method], f"seed={seed}"]
            if method == "uniform-matched":
                matched = matched or matched_uniform_epochs(base, name, runs_dir, records)
                settings.append(f"train.epochs={matched}")
            dense_dir = runs_dir / name / "dense" / f"seed-{seed}"
            if method in ("magnitude", "depgraph") and (dense_dir / "result.json").exists():
                settings.append(f"baseline.dense_run={dense_dir}")
            config = method_config(base, settings)
            log(f"{method} seed {seed}: running -> {run_dir}")
            _run_one(config, run_dir)
            ran = True
    if not present and not ran and elsewhere:  # nothing here to add: the table stays as it was written
        log(f"no run of {name} on this machine: {results_dir / name}.md left as it was")
        return results_dir / f"{name}.md"
    return write_results(name, config_path, base, runs_dir, results_dir, note)


def matched_uniform_epochs(base: RunConfig, name: str, runs_dir: Path, records: Path) -> int:
    """The epochs at which uniform's small network spends the training compute of an rlal run of ``base``
    (:mod:`rlal.train.compute`), rlal's cut network counted at the uniform plan's MACs (it is on the same
    budget; the tracks' filled plans differ from uniform's by under 1% of the MACs). The same for every seed,
    so the matched runs pair with the others seed by seed."""
    present = collect(name, runs_dir)
    uniform = [r for r in [*present, *carried_over(records, present)] if r.method == "uniform"]
    if uniform:  # as a uniform run of the table measured them
        dense_macs, macs = int(uniform[0].result["dense_macs"]), int(uniform[0].result["macs"])
    else:
        dense_macs, macs = uniform_plan_macs(base)
    rlal = method_config(base, METHODS["rlal"])
    epochs = matched_epochs(rlal, rlal.train.epochs, dense_macs, macs)
    if epochs is None:
        raise RlalError("uniform-matched cannot be matched to rlal's schedule with search.subnet_weight > 0 "
                        "(its sub-network training is not counted)")
    return epochs


def uniform_plan_macs(base: RunConfig) -> tuple[int, int]:
    """``(dense MACs, MACs of the uniform plan)`` of ``base``'s zoo model on its dataset's input size, with
    no data read: what a uniform run of ``base`` would cut."""
    from rlal.data.specs import dataset_spec
    from rlal.env import make_budget
    from rlal.structure import find_layers
    from rlal.structure.io import ArchSpec

    spec = dataset_spec(base.data.dataset)
    if ":" in base.model.name or spec.name == "imagefolder" or base.env.latency_budget:
        raise RlalError("uniform-matched needs a finished uniform run in the table (its MACs set the epochs) "
                        "unless the track is a zoo model on fashion-mnist or cifar10 under a MACs budget: "
                        "list uniform before it in --methods")
    model = ArchSpec.zoo(base.model.name, num_classes=spec.num_classes, in_channels=spec.in_channels,
                         input_size=spec.input_size).build()
    shape = (spec.in_channels, spec.input_size, spec.input_size)
    structure = find_layers(model, shape, policy=base.env.policy)
    plan, _ = make_budget(structure, base.env).uniform_plan()
    return int(structure.cost.dense_macs), int(structure.cost.of(plan)[0])


def method_config(base: RunConfig, settings: Sequence[str]) -> RunConfig:
    """``base`` with one method's settings applied (a copy; validated)."""
    config = copy.deepcopy(base)
    for item in settings:
        key, _, value = item.partition("=")
        set_value(config, key, value)
    return config.validate()


def _run_one(config: RunConfig, run_dir: Path) -> None:
    from rlal.checkpoint import load_checkpoint
    from rlal.train.run import RESUMABLE, fit

    resumable = config.method in RESUMABLE and load_checkpoint(run_dir) is not None
    fit(config, run_dir, overwrite=True, resume=resumable)


def collect(name: str, runs_dir: Path) -> list[RunRecord]:
    """Every finished run of the table (any method, any seed, also from earlier invocations), with the
    three-stage baselines charged for the dense run they pruned."""
    records = []
    for method in METHODS:
        seed_dirs = sorted((runs_dir / name / method).glob("seed-*"), key=lambda d: int(d.name[5:]))
        for run_dir in seed_dirs:
            path = run_dir / "result.json"
            if not path.exists():
                continue
            result = json.loads(path.read_text())
            seconds = float(result["seconds"])
            seed = int(run_dir.name[5:])
            if result.get("dense_run"):
                seconds += float(_dense_result(result["dense_run"], runs_dir / name / "dense" / run_dir.name,
                                               run_dir)["seconds"])
            choice = final_choice(run_dir) if "at_cut_cut_test_acc" in result else None
            compute = run_compute(run_dir / "config.yaml", result, int(result["epochs"]))
            records.append(RunRecord(method, seed, run_dir, result, seconds, int(result["epochs"]), choice,
                                     compute))
    return records


def run_compute(config_path: Path, result: dict[str, Any], epochs: int) -> float | None:
    """The training compute of the run whose resolved config is at ``config_path`` (None when the file is
    missing or the schedule is not countable)."""
    if not config_path.is_file():
        return None
    macs = int(result["macs"])
    return training_macs(load_config(config_path), epochs, int(result.get("dense_macs") or macs), macs,
                         result.get("train_images_per_epoch"))


def _dense_result(recorded: str, beside: Path, run_dir: Path) -> dict[str, Any]:
    """The result of the dense run a three-stage run pruned: at the path it recorded, else (runs moved from
    the machine that made them) the dense run of the same seed in the same table."""
    for folder in (Path(recorded), beside):
        if (folder / "result.json").is_file():
            return json.loads((folder / "result.json").read_text())
    raise RlalError(f"{run_dir} pruned the dense run {recorded}, which is neither there nor at {beside}")


def carried_over(path: Path, present: Sequence[RunRecord]) -> list[RunRecord]:
    """The runs that the table's records at ``path`` hold and ``present`` lacks, rebuilt from the records.

    Run folders do not outlive the machine that made them, while the records are committed: without this
    a table re-written on a new machine would lose every run of the earlier ones.
    """
    if not path.exists():
        return []
    have = {(r.method, r.seed) for r in present}
    carried = []
    try:
        for saved in json.loads(path.read_text()):
            if saved["method"] not in METHODS:  # before its other fields: the likeliest stray record
                raise ValueError(f"unknown method {saved['method']!r}")
            run = from_record(saved)
            if (run.method, run.seed) not in have:  # else the run folder on this machine is the source
                carried.append(run)
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise RlalError(f"{path} is not a table's records ({error}); move it away to write the table "
                        "afresh") from None
    return carried


def write_results(
    name: str, config_path: Path, base: RunConfig, runs_dir: Path, results_dir: Path, note: str = "",
    machine: str | None = None,
) -> Path:
    """Write ``results_dir/<name>.md`` (the table), ``<name>.png`` (accuracy against MACs) and
    ``results_dir/<name>/`` (the runs' configs). The table names ``machine``, else the machine the runs
    recorded (``run.json``'s ``host``), else this one."""
    present = collect(name, runs_dir)
    if not present:
        raise RlalError(f"no finished run under {runs_dir / name}: nothing to tabulate")
    carried = [r if r.train_macs is not None else dataclasses.replace(
        r, train_macs=run_compute(results_dir / name / f"{r.method}-seed{r.seed}.yaml", r.result, r.epochs))
        for r in carried_over(results_dir / f"{name}.json", present)]
    order = list(METHODS)
    records = sorted([*present, *carried], key=lambda r: (order.index(r.method), r.seed))
    methods = list(dict.fromkeys(r.method for r in records))
    seeds = sorted({r.seed for r in records})
    config_dir = results_dir / name
    config_dir.mkdir(parents=True, exist_ok=True)
    for r in present:
        shutil.copyfile(r.run_dir / "config.yaml", config_dir / f"{r.method}-seed{r.seed}.yaml")
    plot = _plot(records, results_dir / f"{name}.png")
    first = present[0].result
    headers = [json.loads((r.run_dir / "run.json").read_text()) for r in present]
    device = headers[0].get("device", "missing")
    if machine is None:  # runs from before ``host`` was recorded: this machine, as tables always said
        hosts = [h.get("host") for h in headers]
        machine = " and ".join(dict.fromkeys(hosts)) if all(hosts) else host()
    lines = [
        f"# Quality benchmark: {name}",
        "",
        f"Produced by `rlal bench quality --config {config_path.name} --methods {','.join(methods)} "
        f"--seeds {','.join(map(str, seeds))}` on {machine} ({device}). Every figure is read from the "
        "runs' `result.json`; a method without a finished run has no row.",
        "",
        f"- Track: {first.get('model')} on {first.get('dataset')}, "
        f"{_train_images(base)} training images, test on {_count(first.get('test_images'))} images, "
        f"budget {base.env.describe_budget()}, {base.train.epochs} epochs per from-scratch run "
        f"(rlal: {base.search.warmup_epochs} warm-up + {base.search.search_epochs} search + "
        f"{base.search.align_epochs} align + {base.train.epochs - base.search.cut_epoch} fine-tune; "
        f"{base.search.episodes_per_epoch} episodes per search epoch"
        f"{_dense_share(base.search.dense_epoch_fraction)}). "
        "Three-stage baselines (magnitude, depgraph) prune the dense run of the same seed and fine-tune, so "
        "their epochs and wall-clock include that dense run.",
        "- Test accuracy is mean ± standard deviation over the seeds listed (a single seed has no ±).",
        *([f"- {note}"] if note else []),
        *([f"- Carried over as recorded from this table's earlier `{name}.json` (run folders not on this "
           f"machine; they may come from another one): {_runs(carried)}."] if carried else []),
        "- Training compute: 3 × images per epoch × (epochs on the dense network × its MACs + epochs on the "
        "small one × its MACs), from each run's schedule (`rlal/train/compute.py`); in parentheses, as a "
        "multiple of uniform's. The joint method's scoring of sub-networks (forward passes of the masked "
        "dense network) is not in it; where its runs counted them, they follow as \"+ … T scoring\".",
        "",
        "| method | what it is | seeds | test acc. (%) | MACs | params | MACs reduction | epochs | "
        "training compute | wall-clock | configs |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    uniform_compute = _mean_compute([r for r in records if r.method == "uniform"])
    for method in methods:
        rows = [r for r in records if r.method == method]
        if not rows:
            continue
        accs = [float(r.result["test_acc"]) for r in rows]
        acc = f"{accs[0]:.2f}"
        if len(accs) > 1:
            acc = f"{statistics.mean(accs):.2f} ± {statistics.stdev(accs):.2f}"
        dense_macs = rows[0].result.get("dense_macs", rows[0].result["macs"])
        macs = statistics.mean(float(r.result["macs"]) for r in rows)
        params = statistics.mean(float(r.result["params"]) for r in rows)
        seconds = statistics.mean(r.seconds for r in rows)
        links = " ".join(f"[s{r.seed}]({name}/{r.method}-seed{r.seed}.yaml)" for r in rows)
        lines.append(
            f"| `{method}` | {DESCRIPTIONS[method]} | {','.join(str(r.seed) for r in rows)} | {acc} | "
            f"{macs / 1e6:.2f} M | {params / 1e6:.3f} M | {1 - macs / dense_macs:.1%} | "
            f"{statistics.mean(r.epochs for r in rows):g} | {_compute_text(rows, uniform_compute)} | "
            f"{seconds:.0f} s | {links} |"
        )
    lines += _paired_lines(records) + _cut_lines(records)
    if plot is not None:
        lines += ["", f"![test accuracy against MACs]({plot.name})", ""]
    write_json(results_dir / f"{name}.json", [run_record(r) for r in records])
    path = results_dir / f"{name}.md"
    write_text(path, "\n".join(lines) + "\n")
    return path


def _mean_compute(rows: Sequence[RunRecord]) -> float | None:
    """The rows' mean training compute; None when any of them has none."""
    values = [r.train_macs for r in rows if r.train_macs is not None]
    return statistics.mean(values) if values and len(values) == len(rows) else None


def _compute_text(rows: Sequence[RunRecord], uniform: float | None) -> str:
    """``18.4 T MACs (1.35×) + 2.1 T scoring``: the rows' mean training compute, as a multiple of uniform's,
    and the joint runs' scoring passes where their runs counted them."""
    mean = _mean_compute(rows)
    if mean is None:
        return "missing"
    ratio = f" ({mean / uniform:.2f}×)" if uniform else ""
    scoring = [r.result.get("search_macs") for r in rows]
    extra = f" + {statistics.mean(scoring) / 1e12:.1f} T scoring" if None not in scoring else ""
    return f"{mean / 1e12:.1f} T MACs{ratio}{extra}"


PAIRS: tuple[tuple[str, str], ...] = (
    ("rlal", "uniform"), ("rlal", "random-search"), ("rlal", "dense"), ("uniform", "dense"),
    ("random-search", "uniform"), ("rlal-paper", "uniform"), ("no-align", "uniform"),
    ("sac-no-dynamics", "uniform"), ("rlal-residual-floor", "uniform"), ("rlal-residual-floor", "rlal"),
    ("rlal", "uniform-matched"), ("random-search", "uniform-matched"), ("uniform-matched", "uniform"),
    ("rlal-half-dense", "uniform"), ("rlal-half-dense", "rlal"),
)
"""The paired differences the table reports (when both methods have a run of a common seed)."""


def paired(records: Sequence[RunRecord], a: str, b: str) -> tuple[list[int], list[float]]:
    """Seeds that both methods ran, and the test-accuracy difference ``a - b`` on each (points)."""
    acc = {(r.method, r.seed): float(r.result["test_acc"]) for r in records}
    seeds = sorted(s for (m, s) in acc if m == a and (b, s) in acc)
    return seeds, [acc[(a, s)] - acc[(b, s)] for s in seeds]


def _paired_lines(records: Sequence[RunRecord]) -> list[str]:
    rows = []
    for a, b in PAIRS:
        seeds, diffs = paired(records, a, b)
        if not seeds:
            continue
        s = summarize_paired(diffs)
        spread = f" ± {s.std:.2f}" if s.std is not None else ""
        se = f"{s.se:.2f}" if s.se is not None else "–"
        ci = s.interval_text() or "–"
        each = ", ".join(f"{d:+.2f}" for d in diffs)
        seeds_text = ",".join(map(str, seeds))
        rows.append(f"| `{a}` − `{b}` | {seeds_text} | {s.mean:+.2f}{spread} | {se} | {ci} | {each} |")
    if not rows:
        return []
    return ["", "**Paired differences** of test accuracy over the same seeds (same data sample and test "
            "images), mean ± standard deviation, in points, with the standard error of the mean and its 95% "
            "interval (Student's t, seeds − 1 degrees of freedom; an interval that holds 0 does not separate "
            "the methods):", "",
            "| difference | seeds | mean | SE | 95% interval | per seed |",
            "| --- | --- | --- | --- | --- | --- |", *rows]  # fmt: skip


def _cut_lines(records: Sequence[RunRecord]) -> list[str]:
    rows = []
    for r in records:
        res = r.result
        if "at_cut_cut_test_acc" not in res:
            continue
        dense, after = res.get("at_cut_dense_test_acc"), res.get("at_cut_cut_test_acc")
        recal = res.get("at_cut_cut_test_acc_bn_recalibrated")
        lost = f"{dense - after:+.2f}" if dense is not None and after is not None else "missing"
        rows.append(
            f"| `{r.method}` | {r.seed} | {_f(res.get('at_cut_removed_kept_norm_ratio'), 3)} | {_f(dense)} | "
            f"{_f(res.get('at_cut_masked_test_acc'))} | {_f(res.get('at_cut_cut_test_acc'))} | {_f(recal)} | "
            f"{lost} | {r.choice or 'missing'} |"
        )
    if not rows:
        return []
    return ["", "**The cut** (test accuracy, %, of the dense model just before the cut, of the masked model, "
            "of the cut model as is and with its BN statistics re-estimated; lost = dense − cut, both with "
            "the training run's BN statistics; the final plan's source):", "",
            "| method | seed | removed/kept norm | dense | masked | cut | cut, BN re-est. | lost | final "
            "plan |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |", *rows]  # fmt: skip


def final_choice(run_dir: Path) -> str:
    """Where the run's final plan came from (``search.final: rescored`` logs it), else the rule."""
    path = run_dir / "metrics.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record.get("phase") == "final-choice":
                return str(record.get("chosen", record.get("rule", "missing")))
    return "missing"


def run_record(r: RunRecord) -> dict[str, Any]:
    """One run as plain data, for ``<name>.json`` (re-checking the table by script)."""
    res = r.result
    return {
        "method": r.method, "seed": r.seed, "test_acc": res["test_acc"], "macs": res["macs"],
        "dense_macs": res.get("dense_macs"), "params": res["params"], "epochs": r.epochs,
        "seconds": r.seconds,
        "cut": {k.removeprefix("at_cut_"): v for k, v in res.items() if k.startswith("at_cut_")} or None,
        "final_choice": r.choice,
        "plan": res.get("plan"),
        "train_macs": r.train_macs,
        "search_macs": res.get("search_macs"),
    }  # fmt: skip


def from_record(saved: dict[str, Any]) -> RunRecord:
    """The run a :func:`run_record` describes, without its folder: the inverse of ``run_record`` (the two
    change together; a missing key raises KeyError)."""
    result = {key: saved[key] for key in ("test_acc", "macs", "params", "plan")}
    for key in ("dense_macs", "search_macs"):
        if saved.get(key) is not None:
            result[key] = saved[key]
    result |= {f"at_cut_{key}": value for key, value in (saved.get("cut") or {}).items()}
    return RunRecord(str(saved["method"]), int(saved["seed"]), None, result, float(saved["seconds"]),
                     int(saved["epochs"]), saved.get("final_choice"), saved.get("train_macs"))


def _runs(records: Sequence[RunRecord]) -> str:
    """``uniform seeds 0,1; rlal seed 0``."""
    by_method: dict[str, list[int]] = {}
    for r in records:
        by_method.setdefault(r.method, []).append(r.seed)
    return "; ".join(f"{m} seed{'s' if len(s) > 1 else ''} {','.join(map(str, s))}"
                     for m, s in by_method.items())


def _f(value: Any, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) and math.isfinite(value) else "missing"


def _count(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) else "missing"


def _dense_share(fraction: float) -> str:
    """How much of an epoch the joint method's epochs before the cut take, when not all of it."""
    return "" if fraction == 1 else f"; each epoch before the cut takes {fraction:g} of an epoch's steps"


def _train_images(base: RunConfig) -> str:
    return f"{base.data.train_subset:,}" if base.data.train_subset else "all"


def _plot(records: list[RunRecord], path: Path) -> Path | None:
    from matplotlib.figure import Figure

    from rlal.checkpoint import atomic_write

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for method in dict.fromkeys(r.method for r in records):
        rows = [r for r in records if r.method == method]
        xs = [r.result["macs"] / 1e6 for r in rows]
        ys = [r.result["test_acc"] for r in rows]
        star = method == "rlal"
        ax.scatter(xs, ys, label=method, marker="*" if star else "o", s=80 if star else 30)
    ax.set_xlabel("MACs (M)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    if not all(math.isfinite(r.result["test_acc"]) for r in records):
        return None
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    return path
