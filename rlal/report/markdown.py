"""``report.md``: a run directory's files turned into one readable page with its figures.

:func:`write_report` reads ``config.yaml``, ``run.json``, ``metrics.jsonl``, ``result.json`` and, when the
run has them, ``episodes.json`` and ``widths.csv``; draws the figures into ``plots/`` and writes
``report.md`` next to them, linking them relatively so the directory can be moved or published as is.
Every figure in the page is read from those files; a value they lack is written as ``missing``.
Only ``metrics.jsonl`` and ``result.json`` are required: a dense run has no episodes, cut or widths.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rlal.checkpoint import write_text
from rlal.env.budget import resolve_target
from rlal.errors import RlalError
from rlal.report import plots
from rlal.report.policy import policy_episodes
from rlal.report.widths import OTHER, TOTAL, WIDTHS_FILE, read_widths

REPORT_FILE = "report.md"
PLOTS_DIR = "plots"
MISSING = "missing"


@dataclass(frozen=True)
class RunFiles:
    """The contents of a run directory as plain data (``{}``/``None`` for an optional file it lacks)."""

    run_dir: Path
    config: dict[str, Any]
    run: dict[str, Any]
    metrics: list[dict[str, Any]]
    result: dict[str, Any]
    episodes: list[dict[str, Any]] | None
    widths: list[dict[str, Any]] | None

    @property
    def training(self) -> list[dict[str, Any]]:
        """Training-epoch records (every phase but the cut and the final choice), by epoch."""
        epochs = [r for r in self.metrics if r.get("phase") not in ("cut", "final-choice")]
        return sorted(epochs, key=lambda r: r.get("epoch", 0))

    @property
    def search(self) -> list[dict[str, Any]]:
        """Search-epoch records, by epoch: the i-th is search epoch t = i."""
        return [r for r in self.training if r.get("phase") == "search"]

    @property
    def final_choice(self) -> dict[str, Any] | None:
        """The record of the final choice (``search.final: rescored``), else None."""
        return next((r for r in self.metrics if r.get("phase") == "final-choice"), None)

    @property
    def cut(self) -> dict[str, Any] | None:
        """The record written at the cut, else the ``at_cut_*`` figures of ``result.json``, else None."""
        record = next((r for r in self.metrics if r.get("phase") == "cut"), None)
        if record is not None:
            return record
        at_cut = {k.removeprefix("at_cut_"): v for k, v in self.result.items() if k.startswith("at_cut_")}
        return at_cut or None

    @property
    def method(self) -> str | None:
        return self.result.get("method") or self.config.get("method")

    @property
    def pruned(self) -> bool:
        """Whether the run pruned (has a dense and a pruned model) rather than trained a dense model."""
        return self.method not in (None, "dense") or "dense_macs" in self.result


def read_run(run_dir: Path) -> RunFiles:
    """Read a run directory. Raises :class:`RlalError` naming the file when ``metrics.jsonl`` or
    ``result.json`` is absent, or when any file present cannot be parsed."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RlalError(f"no run directory at {run_dir}")
    for required in ("metrics.jsonl", "result.json"):
        if not (run_dir / required).is_file():
            raise RlalError(f"cannot write the report: {run_dir / required} is missing")
    widths = run_dir / WIDTHS_FILE
    return RunFiles(
        run_dir=run_dir,
        config=_read(run_dir / "config.yaml", _yaml_mapping) or {},
        run=_read(run_dir / "run.json", _json_object) or {},
        metrics=_read(run_dir / "metrics.jsonl", _json_lines),
        result=_read(run_dir / "result.json", _json_object),
        episodes=_read(run_dir / "episodes.json", _json_list),
        widths=read_widths(widths) if widths.is_file() else None,
    )


def write_report(run_dir: Path) -> Path:
    """Write ``run_dir/report.md`` and its figures in ``run_dir/plots/`` from the run's files; returns the
    report's path. Raises :class:`RlalError` naming the file when ``metrics.jsonl`` or ``result.json`` is
    missing (or a file cannot be parsed)."""
    files = read_run(run_dir)
    figures = draw_figures(files, files.run_dir / PLOTS_DIR)
    path = files.run_dir / REPORT_FILE
    write_text(path, render(files, figures))
    return path


def draw_figures(files: RunFiles, out: Path) -> list[tuple[Path, str]]:
    """Draw every figure the run has data for into ``out``; returns ``(path, caption)`` pairs in report
    order (figures without data are left out)."""
    train, search, cut = files.training, files.search, files.cut
    figures: list[tuple[Path | None, str]] = []  # the file name stem serves as the image's alt text

    cut_mark = None
    if cut is not None and isinstance(cut.get("epoch"), int):
        cut_mark = (cut["epoch"], cut.get("masked_test_acc"), cut.get("cut_test_acc"))
    figures.append((
        plots.plot_accuracy([r.get("epoch") for r in train], [str(r.get("phase")) for r in train],
                            [r.get("train_acc") for r in train], [r.get("test_acc") for r in train],
                            out / "accuracy.png", cut=cut_mark),
        "Train and test accuracy (%) per epoch; shading marks the phases"
        + ("; the dashed line is the cut (square: masked dense model, cross: cut model)."
           if cut_mark else "."),
    ))

    epochs = [r.get("epoch") for r in search]
    figures.append((
        plots.plot_macs(epochs, [r.get("selected_macs") for r in search], out / "macs.png",
                        dense_macs=files.result.get("dense_macs"), target_macs=_target(files),
                        episode_macs=[r.get("episode_macs") for r in search]),
        "MACs of the architecture selected at each search epoch (grey dots: that epoch's episodes), "
        "with the MACs target (dashed) and the dense model.",
    ))

    rewards, xlabel = _rewards(files)
    figures.append((
        plots.plot_rewards(rewards, out / "rewards.png", xlabel=xlabel),
        "Distribution of the episode rewards (accuracy on the reward split) of each search epoch.",
    ))
    figures.append((
        plots.plot_decoder_loss(epochs, [r.get("decoder_loss") for r in search], out / "decoder_loss.png"),
        "Decoder loss of the epoch-context model (MSE on the rewards observed so far) per search epoch.",
    ))

    layers = [r for r in files.widths or [] if r["layer"] not in (OTHER, TOTAL) and r.get("skipped") is None]
    figures.append((
        plots.plot_widths([r["layer"] for r in layers], [r["dense_channels"] for r in layers],
                          [r["kept_channels"] for r in layers], out / "widths.png"),
        f"Channels of each prunable layer, dense (light) and kept (dark), from {WIDTHS_FILE}.",
    ))
    return [(path, caption) for path, caption in figures if path is not None]


def _dataset_name(dataset: Any, source: Any) -> Any:
    """An image folder named after its own directory (``pets (image folder)``), not the loader's name."""
    marker = " (image folder"
    if dataset != "imagefolder" or not isinstance(source, str) or marker not in source:
        return dataset
    return f"{Path(source.split(marker)[0]).name} (image folder)"


def render(files: RunFiles, figures: Sequence[tuple[Path, str]]) -> str:
    """The text of ``report.md``."""
    result, run, config = files.result, files.run, files.config
    model = result.get("model") or _get(config, "model", "name")
    dataset = _dataset_name(result.get("dataset") or _get(config, "data", "dataset"), run.get("data_source"))
    lines = [f"# Run report: {_text(model)} on {_text(dataset)}", ""]

    header = [
        ("method", files.method), ("model", model), ("dataset", dataset),
        ("seed", _first(run.get("seed"), config.get("seed"))),
        ("device", run.get("device") or result.get("device")),
        ("epochs", _first(result.get("epochs"), _get(config, "train", "epochs"))),
    ]
    if files.pruned:
        header += [("agent", result.get("agent") or _get(config, "agent", "kind")),
                   ("MACs target", _macs_target_text(result, config))]
    header += [("code version", run.get("code_version")), ("torch", run.get("torch_version")),
               ("started at", run.get("started_at")), ("data source", run.get("data_source"))]
    lines += [*_table(["run", ""], [[name, _text(value)] for name, value in header]), ""]

    lines += ["## Summary", "", *_summary(files), ""]
    if files.pruned:
        if files.final_choice is not None:
            lines += ["## Final choice", "", *_final_choice(files.final_choice), ""]
        if files.method == "rlal" or files.cut is not None:  # baselines that train a small model cut nothing
            lines += ["## At the cut", "", *_at_cut(files), ""]
        if files.search:
            lines += ["## Search", "", *_search(files), "", *_policy(files)]
        lines += ["## Per-layer widths", "", *_widths(files), ""]
        skipped = _skipped(files)
        if skipped:
            lines += ["## Skipped layers", "", *skipped, ""]
    if figures:
        lines += ["## Figures", ""]
        for path, caption in figures:
            link = path.relative_to(files.run_dir).as_posix()
            lines += [f"![{path.stem.replace('_', ' ')}]({link})", "", f"*{caption}*", ""]
    return "\n".join(lines).rstrip() + "\n"


# --- sections -------------------------------------------------------------------------------------------


def _summary(files: RunFiles) -> list[str]:
    r = files.result
    if files.pruned:
        rows = [
            ["MACs", _int(r.get("dense_macs")), _int(r.get("macs")),
             _ratio(r.get("macs"), r.get("dense_macs"))],
            ["params", _int(r.get("dense_params")), _int(r.get("params")),
             _ratio(r.get("params"), r.get("dense_params"))],
            ["test accuracy (%)", "not measured in this run", _num(r.get("test_acc"), ".2f"), ""],
        ]
        lines = _table(["", "dense", "pruned", "pruned / dense"], rows)
        target = _target(files)
        if target is not None:
            met = "missing" if not _is_number(r.get("macs")) else ("yes" if r["macs"] <= target else "NO")
            given = r["target_macs"]
            share = f"{given:g} of the dense MACs" if given <= 1 else f"given as {_int(given)} MACs"
            lines += ["", f"MACs target: {_int(target)} MACs ({share}); met: {met}."]
        elif files.result.get("target_macs", 0) is None:
            lines += ["", "MACs target: none (a latency budget only)."]
        lines += _latency_budget(r.get("latency"))
    else:
        rows = [["MACs", _int(r.get("macs"))], ["params", _int(r.get("params"))],
                ["test accuracy (%)", _num(r.get("test_acc"), ".2f")]]
        lines = _table(["", "dense"], rows)
    train = files.training
    seconds = [t.get("train_seconds") for t in train]
    images = [t.get("train_images") for t in train]
    if train and all(_is_number(s) for s in seconds):
        total = sum(seconds)
        counted = all(_is_number(i) for i in images) and total > 0
        speed = f", {sum(images) / total:,.0f} images/s" if counted else ""
        training = f"{total:.1f} s in {len(train)} training epochs{speed}"
    else:
        training = MISSING
    lines += ["", f"Wall-clock: {_num(r.get('seconds'), '.1f')} s for the whole run; training: {training}."]
    return lines


def _final_choice(record: dict[str, Any]) -> list[str]:
    rows = [
        [f"`{c.get('source')}`", _num(c.get("accuracy"), ".2f"), _num(c.get("diff_vs_uniform"), "+.2f"),
         _num(c.get("se"), ".2f"), "chosen" if c.get("source") == record.get("chosen") else ""]
        for c in record.get("candidates") or []
    ]
    verdict = (
        "no candidate beat the uniform plan by the margin, so the uniform plan was cut"
        if record.get("kept_uniform") else f"`{record.get('chosen')}` beat the uniform plan by the margin"
    )
    return [
        *_table(["candidate", "reward-split acc. (%)", "vs uniform (points)", "std. error", ""], rows),
        "",
        f"Every candidate was scored again on the same weights; a non-uniform plan is kept only if it beats "
        f"the uniform plan by more than {_num(record.get('margin_se'), 'g')} standard errors: {verdict}.",
    ]


def _at_cut(files: RunFiles) -> list[str]:
    cut = files.cut or {}
    masked, after = cut.get("masked_test_acc"), cut.get("cut_test_acc")
    diff = _num(after - masked, "+.2f") if _is_number(masked) and _is_number(after) else MISSING
    rows = [
        *([["test accuracy (%) of the dense model just before the cut", _num(cut["dense_test_acc"], ".2f")]]
          if "dense_test_acc" in cut else []),
        ["test accuracy (%) of the masked dense model", _num(masked, ".2f")],
        ["test accuracy (%) of the cut model", _num(after, ".2f")],
        ["cut - masked (points)", diff],
        ["removed / kept channel norm ratio", _num(cut.get("removed_kept_norm_ratio"), ".4g")],
    ]
    if "cut_test_acc_bn_recalibrated" in cut:
        rows.insert(2, ["test accuracy (%) of the cut model, BN statistics re-estimated",
                        _num(cut["cut_test_acc_bn_recalibrated"], ".2f")])
    return [
        *_table(["check", "value"], rows),
        "",
        "The masked and the cut model are the same sub-network, so their accuracies must agree. The norm "
        "ratio (mean norm of the removed channels over that of the kept ones) shows how far alignment pulled "
        "the removed channels towards zero before they were cut.",
        *_align_loss_rise(files),
    ]


ALIGN_LOSS_RISE = 1.25
"""Flag align epochs whose training loss exceeds the last epoch before them by this factor. On the T2 track
(docs/benchmarks.md) healthy runs stayed at or below 1.08; the one collapsed run reached 1.63. At 6% MACs
(two align epochs, clipped) seven runs rose 1.18-1.22 and three 1.27-1.38, two of those the worst results."""


def _align_loss_rise(files: RunFiles) -> list[str]:
    """A warning when the training loss rose in the align epochs: the network lost its footing while its
    removed channels were driven to zero, and the cut model starts from a damaged one."""
    before = [r for r in files.training
              if r.get("phase") in ("warm-up", "search") and _is_number(r.get("train_loss"))]
    align = [r for r in files.training if r.get("phase") == "align" and _is_number(r.get("train_loss"))]
    if not before or not align:
        return []
    last, worst = before[-1]["train_loss"], max(r["train_loss"] for r in align)
    if worst <= ALIGN_LOSS_RISE * last:
        return []
    usual, spikes = before[-1].get("grad_norm_median"), [r.get("grad_norm_max") for r in align]
    norms = ""
    if _is_number(usual) and all(_is_number(v) for v in spikes):
        norms = (f" The gradient's norm reached {max(spikes):.3g} in the align epochs against a median of "
                 f"{usual:.3g} in the epoch before (`grad_norm_*` in metrics.jsonl).")
    clip = files.config.get("optim", {}).get("clip_grad_norm") or 0
    if clip > 0:  # clipping is no cure here: the run had it
        advice = (f" The gradient was already clipped (`optim.clip_grad_norm={clip:g}`). At 6% MACs on T2 "
                  "(rlal's docs/benchmarks.md) the largest such rises came with plans that narrowed the "
                  "shared residual widths below the uniform plan's.")
        env = files.config.get("env", {})
        if env.get("policy") == "all" and env.get("residual_floor", "min") != "uniform":
            advice += (" `env.residual_floor=uniform` keeps them at or above it (there it removed the "
                       "largest rises, not the gap to uniform).")
    else:
        advice = (" On T2 (rlal's docs/benchmarks.md) clipping the gradient (`optim.clip_grad_norm=5`, about "
                  "four times its median norm there) kept this from happening.")
    return [
        "",
        f"**Warning:** the training loss rose from {last:.3f} in the last epoch before alignment to "
        f"{worst:.3f} in the align epochs: the network lost accuracy while its removed channels were "
        f"driven to zero.{norms}{advice}",
    ]


def _search(files: RunFiles) -> list[str]:
    search = files.search
    agent_keys = [k for k in ("agent_alpha", "agent_entropy") if any(k in r for r in search)]
    header = ["epoch", "align λ", "align loss", "removed / kept norm", "reward median [min, max]",
              "decoder loss", *(k.removeprefix("agent_") for k in agent_keys), "selected MACs (% dense)"]
    dense = files.result.get("dense_macs")
    rows = []
    for r in search:
        rewards = [v for v in r.get("episode_rewards") or [] if _is_number(v)]
        spread = (f"{statistics.median(rewards):.4f} [{min(rewards):.4f}, {max(rewards):.4f}]"
                  if rewards else MISSING)
        selected = r.get("selected_macs")
        share = f" ({_ratio(selected, dense)})" if _is_number(selected) and _is_number(dense) else ""
        rows.append([
            _text(r.get("epoch")), _num(r.get("align_lambda"), ".3g"), _num(r.get("align_loss"), ".4g"),
            _num(r.get("removed_kept_norm_ratio"), ".4g"), spread, _num(r.get("decoder_loss"), ".4g"),
            *(_num(r.get(k), ".4g") for k in agent_keys), _int(selected) + share,
        ])
    return _table(header, rows)


def _policy(files: RunFiles) -> list[str]:
    """Whether the agent's policy earned more than its random warm-up (see :mod:`rlal.report.policy`);
    nothing where the run cannot tell."""
    try:
        split = policy_episodes(files.config, files.run, files.metrics, files.episodes)
    except ValueError:
        return []
    se = "" if split.gain_se is None else f" ± {split.gain_se:.2f} (standard error)"
    random, policy = split.random.mean, split.policy.mean
    text = (
        f"**Did the policy learn?** Of the scored episodes, {len(split.random.rewards)} drew random actions "
        f"(the agent's warm-up) and {len(split.policy.rewards)} came from its policy. Mean reward against "
        f"the uniform plan: random {random:+.2f} points, policy {policy:+.2f}; policy − random "
        f"**{split.gain:+.2f}**{se}."
    )
    if split.greedy_vs_uniform is not None:
        distance = "" if split.greedy_distance is None else (
            f", {split.greedy_distance:.2f} from it (the mean over the layers of |kept / uniform's − 1|)")
        text += (
            f" Its greedy plan, the allocation it rates best, scored {split.greedy_vs_uniform:+.2f} points "
            f"against the uniform plan on the whole reward split (final choice; 0 where it is the uniform "
            f"plan){distance}."
        )
    text += (
        " A policy that learnt an allocation earns more than its random episodes did; a greedy plan below "
        "the uniform plan has found nothing better than it."
    )
    return [text, ""]


def _widths(files: RunFiles) -> list[str]:
    if files.widths is None:
        return [f"{WIDTHS_FILE}: {MISSING}."]
    rows = []
    for r in files.widths:
        if r.get("skipped") is not None:
            continue  # in their own section
        if r["layer"] == OTHER:  # no channels of its own: blank, not missing
            rows.append(["**other**", "", "", "", _int(r["macs_before"]), _int(r["macs_after"])])
            continue
        name = "**total**" if r["layer"] == TOTAL else f"`{r['layer']}`"
        rows.append([name, _int(r["dense_channels"]), _int(r["kept_channels"]), _num(r["keep_ratio"], ".3f"),
                     _int(r["macs_before"]), _int(r["macs_after"])])
    note = (f"From {WIDTHS_FILE}. A layer's MACs are those of the convs writing its channels, else of the "
            "convs reading them (both sides shrink); the skipped layers below hold the convs no plan can "
            "change, `other` the convs no layer touches.")
    return [note, "", *_table(["layer", "dense channels", "kept channels", "keep ratio", "MACs before",
                               "MACs after"], rows)]


def _skipped(files: RunFiles) -> list[str]:
    """The layers that could not be pruned, with their reasons and their share of the dense MACs."""
    widths = files.widths or []
    skipped = [r for r in widths if r.get("skipped") is not None]
    total = next((r["macs_before"] for r in widths if r["layer"] == TOTAL), None)
    if not skipped:
        return []
    rows = [[f"`{r['layer']}`", r["skipped"], _int(r["macs_before"]), _ratio(r["macs_before"], total)]
            for r in skipped]
    held = sum(r["macs_before"] for r in skipped if _is_number(r["macs_before"]))
    note = (f"{len(skipped)} layers could not be pruned; they hold {_ratio(held, total)} of the dense MACs "
            "(their convs' MACs, which no plan can reduce).")
    return [note, "", *_table(["layer", "reason", "MACs", "share of the dense MACs"], rows)]


# --- data -----------------------------------------------------------------------------------------------


def _rewards(files: RunFiles) -> tuple[dict[int, list[float | None]], str]:
    """Episode rewards per search epoch, keyed by training epoch; episodes.json keys its episodes by the
    search-epoch index t, which is the position of the search record in metrics.jsonl."""
    search_epochs = [r.get("epoch") for r in files.search]
    if files.episodes is None:  # fall back on the exploration episodes logged with each search epoch
        return {r["epoch"]: list(r.get("episode_rewards") or []) for r in files.search}, "epoch"
    by_t: dict[int, list[float | None]] = defaultdict(list)
    for e in files.episodes:
        if isinstance(e.get("epoch"), int):
            by_t[e["epoch"]].append(e.get("reward"))
    if all(0 <= t < len(search_epochs) for t in by_t):
        return {search_epochs[t]: values for t, values in by_t.items()}, "epoch"
    # metrics.jsonl lacks some search epochs: keep the episodes' own key rather than guess an epoch
    return dict(by_t), "search epoch index t"


def _macs_target_text(result: dict[str, Any], config: dict[str, Any]) -> Any:
    """The header's MACs target: the value given, or "none" for a latency budget alone."""
    given = result["target_macs"] if "target_macs" in result else _get(config, "env", "target_macs")
    return "none" if given is None and (result or config) else given


def _latency_budget(latency: Any) -> list[str]:
    """The latency budget's lines (runs with one): target, predicted and measured latency, whether met."""
    if not isinstance(latency, dict):
        return []
    yes = lambda ok: "missing" if ok is None else ("yes" if ok else "NO")  # noqa: E731
    rows = [
        ["target", _num(latency.get("target_ms"), ".3f"), _num(latency.get("target_ratio"), ".3f"), ""],
        ["predicted by the table", _num(latency.get("predicted_ms"), ".3f"),
         _num(latency.get("predicted_ratio"), ".3f"), yes(latency.get("met_predicted"))],
        ["measured after the run", _num(latency.get("measured_ms"), ".3f"),
         _num(latency.get("measured_ratio"), ".3f"), yes(latency.get("met_measured"))],
    ]
    error = latency.get("predicted_error")
    error = 100 * error if _is_number(error) else None
    where = (f"{_text(latency.get('backend'))}, batch {_text(latency.get('batch'))}, "
             f"{_text(latency.get('threads'))} thread(s)")
    return ["", f"Latency budget ({where}; ms per batch, and the fraction of the dense model's):", "",
            *_table(["", "ms", "of dense", "met"], rows), "",
            f"Measured speed-up {_num(latency.get('speedup'), '.2f')}x (dense "
            f"{_num(latency.get('measured_dense_ms'), '.3f')} ms timed alongside); the table's prediction "
            f"was off by {_num(error, '+.1f')}%."]


def _target(files: RunFiles) -> int | None:
    """The MACs target in MACs (``target_macs`` may be a fraction of the dense MACs)."""
    target, dense = files.result.get("target_macs"), files.result.get("dense_macs")
    if not _is_number(target) or not _is_number(dense):
        return None
    try:
        return resolve_target(float(target), int(dense))
    except RlalError:
        return None


def _read(path: Path, parse: Callable[[str], Any]) -> Any:
    """Parse an optional file; None when it is absent, :class:`RlalError` naming it when it is corrupt."""
    if not path.is_file():
        return None
    try:
        return parse(path.read_text())
    except (ValueError, yaml.YAMLError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RlalError(f"cannot read {path}: {detail}") from None


def _json_lines(text: str) -> list[dict[str, Any]]:
    lines = [(number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    records = []
    for i, (number, line) in enumerate(lines):
        try:
            records.append(_json_object(line, f"line {number}"))
        except json.JSONDecodeError as exc:
            if i < len(lines) - 1:
                raise ValueError(f"line {number}: {exc.msg}") from None
            # the last line torn by a crash is not a record (as rlal.report.metrics.read_metrics reads it)
    return records


def _json_object(text: str, where: str = "the file") -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"{where} is not a JSON object")
    return value


def _json_list(text: str) -> list[dict[str, Any]]:
    value = json.loads(text)
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ValueError("not a JSON list of objects")
    return value


def _yaml_mapping(text: str) -> dict[str, Any]:
    value = yaml.safe_load(text)
    if value is not None and not isinstance(value, dict):
        raise ValueError("not a YAML mapping")
    return value or {}


def _get(d: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


# --- formatting -----------------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _text(value: Any) -> str:
    return MISSING if value is None or value == "" else str(value)


def _int(value: Any) -> str:
    return f"{int(value):,}" if _is_number(value) else MISSING


def _num(value: Any, spec: str) -> str:
    return format(value, spec) if _is_number(value) else MISSING


def _ratio(part: Any, whole: Any) -> str:
    return f"{100 * part / whole:.1f} %" if _is_number(part) and _is_number(whole) and whole else MISSING


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
