"""The run report: widths.csv against the cost model, the figures, and report.md for joint and dense runs.

Run directories are written here in the real formats (the real config/run.json writer, the real metrics
writer, episodes and result.json as the joint loop writes them) around a real ResNet-20 structure, so no
training is needed.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from test_structure_nets import make_inception_net, make_separable_net
from zoo import SHAPE as ZOO_SHAPE
from zoo import ShuffleNet

from rlal.agent import Episode
from rlal.checkpoint import write_json
from rlal.config import load_config
from rlal.env.environment import episode_record
from rlal.errors import RlalError
from rlal.models import create_model
from rlal.report import plots
from rlal.report.markdown import write_report
from rlal.report.metrics import MetricsWriter
from rlal.report.widths import COLUMNS, OLD_COLUMNS, OTHER, TOTAL, layer_widths, read_widths, write_widths
from rlal.rundir import write_run_header
from rlal.structure import Plan, Structure, find_layers

pytestmark = pytest.mark.usefixtures("one_thread")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JOINT_PLOTS = {"accuracy.png", "macs.png", "rewards.png", "decoder_loss.png", "widths.png"}
WARMUP, SEARCH, FINE_TUNE, EPISODES = 1, 3, 2, 4


def resnet20_structure() -> Structure:
    model = create_model("resnet20", num_classes=10, in_channels=1, input_size=28)
    return find_layers(model, (1, 28, 28))


def training_record(epoch: int, phase: str, acc: float, test_acc: float | None) -> dict:
    return {"epoch": epoch, "phase": phase, "lr": 0.05, "train_loss": 2.0 - acc / 100, "train_acc": acc,
            "train_images": 1024, "train_seconds": 2.0, "train_images_per_s": 512.0,
            "grad_norm_median": 1.2, "grad_norm_max": 3.0,
            "test_loss": None if test_acc is None else 0.9, "test_acc": test_acc}


def make_joint_run(
    run_dir: Path,
    structure: Structure,
    *,
    cut: bool = True,
    widths: bool = True,
    align_loss: float | None = None,
    clip: float = 0.0,
    env: tuple[str, ...] = (),
    warmup_episodes: int | None = None,
    greedy: float | None = None,
) -> Plan:
    """A finished joint run's files, as fit_joint writes them (with one align epoch of training loss
    ``align_loss`` after the search when given, else none; ``warmup_episodes`` recorded in run.json when
    given; a rescored final choice listing a greedy plan ``greedy`` points from uniform when given);
    returns the final plan."""
    epochs = WARMUP + SEARCH + FINE_TUNE
    align_epochs = 0 if align_loss is None else 1
    config = load_config(None, [
        "method=rlal", "model.name=resnet20", "data.dataset=fashion-mnist", f"train.epochs={epochs}",
        f"search.warmup_epochs={WARMUP}", f"search.search_epochs={SEARCH}",
        f"search.align_epochs={align_epochs}", f"search.episodes_per_epoch={EPISODES}", "env.target_macs=0.5",
        f"optim.clip_grad_norm={clip}", *env,
    ])
    extra = {} if warmup_episodes is None else {"agent_warmup_episodes": warmup_episodes}
    write_run_header(run_dir, config, {"device": "cpu fp32 contiguous", "data_source": "synthetic", **extra})
    rng = np.random.default_rng(0)
    cost = structure.cost
    episodes, plans = [], []
    metrics = MetricsWriter(run_dir / "metrics.jsonl")
    metrics.write(training_record(1, "warm-up", 40.0, None))
    for t in range(SEARCH):
        low, high = structure.channels // 4, structure.channels // 2 + 1
        keep = rng.integers(low, high, size=(EPISODES, len(structure)))
        rewards = rng.uniform(0.3, 0.6, size=EPISODES).tolist()
        rewards[0] = math.nan if t == 0 else rewards[0]  # a NaN reward is stored as null
        macs = cost.macs(keep)
        plan = Plan.from_keep_counts(structure, keep[int(np.nanargmax(rewards))].tolist())
        plans.append(plan)
        for row, reward, m in zip(keep, rewards, macs, strict=True):
            episode = Episode(epoch=t, states=np.zeros((len(structure), 1)), actions=np.zeros(len(structure)),
                              keep=row / structure.channels, reward=reward, macs=int(m))
            episodes.append(episode_record(episode, structure))
        metrics.write({
            **training_record(WARMUP + 1 + t, "search", 50.0 + 5 * t, None),
            "align_lambda": 0.01 * t, "align_loss": 0.1 * t, "removed_kept_norm_ratio": 1.0 - 0.2 * t,
            "episode_rewards": rewards, "episode_macs": [int(m) for m in macs],
            "decoder_loss": 0.05 / (t + 1), "agent_alpha": 0.2, "agent_entropy": -1.0,
            "agent_qf1_loss": 0.01, "selected_plan": plan.to_dict(), "selected_macs": cost.of(plan)[0],
        })
    final = plans[-1]
    if greedy is not None:
        candidates = [{"source": "uniform", "accuracy": 50.0, "diff_vs_uniform": 0.0, "se": 0.0,
                       "plan": Plan.from_keep_ratios(structure, 0.5).to_dict()},
                      {"source": "greedy", "accuracy": 50.0 + greedy, "diff_vs_uniform": greedy, "se": 0.3,
                       "plan": final.to_dict()}]
        metrics.write({"phase": "final-choice", "epoch": WARMUP + SEARCH, "rule": "rescored",
                       "chosen": "uniform", "kept_uniform": True, "margin_se": 2.0, "candidates": candidates})
    cut_epoch = WARMUP + SEARCH + align_epochs  # the cut follows the last search or align epoch
    if align_loss is not None:
        metrics.write({**training_record(cut_epoch, "align", 60.0, None), "train_loss": align_loss,
                       "grad_norm_median": 2.5, "grad_norm_max": 21.4})
    at_cut = {"masked_test_acc": 61.5, "cut_test_acc": 61.5, "removed_kept_norm_ratio": 0.42}
    if cut:
        metrics.write({"phase": "cut", "epoch": cut_epoch, **at_cut})
    for epoch in range(cut_epoch + 1, epochs + 1):
        metrics.write(training_record(epoch, "fine-tune", 70.0 + epoch, 72.0 if epoch == epochs else None))
    write_json(run_dir / "episodes.json", episodes)
    if widths:
        write_widths(run_dir / "widths.csv", structure, final)
    macs, params = cost.of(final)
    write_json(run_dir / "result.json", {
        "method": "rlal", "model": "resnet20", "dataset": "fashion-mnist", "agent": "sac",
        "test_acc": 72.0, "test_images": 10000, "dense_macs": cost.dense_macs, "macs": macs,
        "macs_ratio": macs / cost.dense_macs, "dense_params": cost.dense_params, "params": params,
        "target_macs": 0.5, "epochs": epochs, "seconds": 31.5, "plan": final.to_dict(),
        **({f"at_cut_{k}": v for k, v in at_cut.items()} if cut else {}),
    })
    return final


def make_dense_run(run_dir: Path) -> None:
    """A finished dense run's files, as fit_dense writes them."""
    config = load_config(None, ["method=dense", "model.name=resnet20", "data.dataset=fashion-mnist",
                                "train.epochs=3"])
    write_run_header(run_dir, config, {"device": "cpu fp32 contiguous", "data_source": "synthetic"})
    metrics = MetricsWriter(run_dir / "metrics.jsonl")
    for epoch in (1, 2, 3):
        metrics.write(training_record(epoch, "dense", 50.0 + 10 * epoch, 83.95 if epoch == 3 else None))
    write_json(run_dir / "result.json", {
        "method": "dense", "model": "resnet20", "dataset": "fashion-mnist", "test_acc": 83.95,
        "test_images": 10000, "macs": 31021952, "params": 272186, "epochs": 3,
        "train_images_per_epoch": 10000, "seconds": 419.5, "device": "cpu fp32 contiguous",
    })


def is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC


# --- widths.csv -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "shape", "policy"),
    [
        (lambda: create_model("resnet20", in_channels=1, input_size=28), (1, 28, 28), "internal"),
        (make_separable_net, (3, 16, 16), "all"),  # depthwise convs and a pruned residual
        (make_inception_net, (3, 16, 16), "internal"),  # concatenations and a flattened map
    ],
    ids=["resnet20", "separable-all", "inception"],
)
def test_widths_have_a_row_per_layer_and_add_up_to_the_cost_model(build, shape, policy) -> None:
    structure = find_layers(build(), shape, policy=policy)
    rng = np.random.default_rng(0)
    for keep in (structure.channels, rng.integers(1, structure.channels + 1)):
        plan = Plan.from_keep_counts(structure, keep.tolist())
        rows = layer_widths(structure, plan)
        layers = [r for r in rows[:-2] if r["skipped"] is None]
        other, total = rows[-2], rows[-1]
        assert [r["layer"] for r in layers] == list(structure.names)
        assert [r["layer"] for r in rows[len(layers):-2]] == [s.module for s in structure.skipped]
        assert (other["layer"], total["layer"]) == (OTHER, TOTAL)
        for row, layer, kept in zip(layers, structure.layers, plan.keep, strict=True):
            assert (row["dense_channels"], row["kept_channels"]) == (layer.channels, kept)
            assert row["keep_ratio"] == kept / layer.channels
            assert row["macs_after"] <= row["macs_before"]
        assert total["macs_before"] == structure.cost.dense_macs
        assert total["macs_after"] == structure.cost.of(plan)[0]
        # every conv is listed under exactly one row, so the rows add up to the cost model's totals
        assert sum(r["macs_before"] for r in rows[:-1]) == total["macs_before"]
        assert sum(r["macs_after"] for r in rows[:-1]) == total["macs_after"]
        assert other["macs_after"] == other["macs_before"]  # no keep count reaches them


def test_resnet_block_macs_follow_the_inner_layer_on_both_convs() -> None:
    structure = resnet20_structure()
    layer = structure.layer("layer1.0.conv1")
    plan = Plan.from_keep_counts(structure, {layer.name: layer.channels // 2})
    row = next(r for r in layer_widths(structure, plan) if r["layer"] == layer.name)
    # conv1 (writes the channels) and conv2 (reads them) both halve; layer.macs counts conv1 alone
    assert row["macs_before"] == 2 * layer.macs
    assert row["macs_after"] == layer.macs


def test_widths_list_skipped_layers_with_their_reason_and_the_macs_no_plan_can_reduce() -> None:
    # ShuffleNet: the shuffled channels are skipped; the grouped 1x1 convs tie the other layers in threes
    structure = find_layers(ShuffleNet(), ZOO_SHAPE)
    plan = Plan.from_keep_counts(structure, [5, 2])
    rows = {r["layer"]: r for r in layer_widths(structure, plan)}
    for group in structure.skipped:
        row = rows[group.module]
        assert row["skipped"] == group.reason
        assert row["macs_before"] == row["macs_after"] == group.macs  # no plan reaches them
        assert row["dense_channels"] is None and row["keep_ratio"] is None
    assert "view" in rows["gconv1.0"]["skipped"] and rows["gconv1.0"]["macs_before"] > 0
    stem = rows["stem.0"]  # 8 sets of 3 channels, one per group of gconv1
    assert (stem["dense_channels"], stem["kept_channels"], stem["skipped"]) == (24, 15, None)
    assert rows[TOTAL]["kept_channels"] == 15 + 6
    listed = [r for r in rows.values() if r["layer"] != TOTAL]
    assert sum(r["macs_before"] for r in listed) == rows[TOTAL]["macs_before"]
    assert sum(r["macs_after"] for r in listed) == rows[TOTAL]["macs_after"]


def test_widths_csv_written_before_skipped_rows_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "widths.csv"
    path.write_text(",".join(OLD_COLUMNS) + "\nconv1,16,8,0.5,100,50\nother,,,,7,7\ntotal,16,8,0.5,107,57\n")
    rows = read_widths(path)
    assert rows[0] == {"layer": "conv1", "dense_channels": 16, "kept_channels": 8, "keep_ratio": 0.5,
                       "macs_before": 100, "macs_after": 50, "skipped": None}
    assert [r["layer"] for r in rows] == ["conv1", OTHER, TOTAL]


def test_widths_csv_round_trips_with_the_documented_columns(tmp_path: Path) -> None:
    structure = resnet20_structure()
    plan = Plan.from_keep_ratios(structure, 0.5)
    path = write_widths(tmp_path / "widths.csv", structure, plan)
    assert path.read_text().splitlines()[0] == ",".join(COLUMNS)
    assert read_widths(path) == layer_widths(structure, plan)


def test_widths_of_a_plan_for_another_model_is_an_error() -> None:
    structure = resnet20_structure()
    other = find_layers(make_separable_net(), (3, 16, 16))
    with pytest.raises(RlalError, match="plan"):
        layer_widths(structure, Plan.dense(other))


# --- report.md and figures ------------------------------------------------------------------------------


def test_joint_run_report_has_every_section_and_valid_png_figures(tmp_path: Path) -> None:
    structure = resnet20_structure()
    final = make_joint_run(tmp_path, structure)
    path = write_report(tmp_path)

    assert path == tmp_path / "report.md"
    assert {p.name for p in (tmp_path / "plots").iterdir()} == JOINT_PLOTS
    assert all(is_png(tmp_path / "plots" / name) for name in JOINT_PLOTS)
    text = path.read_text()
    for name in JOINT_PLOTS:
        assert f"](plots/{name})" in text  # relative links: the directory can move
    for heading in ("# Run report: resnet20 on fashion-mnist", "## Summary", "## At the cut", "## Search",
                    "## Per-layer widths", "## Figures"):
        assert heading in text
    macs, params = structure.cost.of(final)
    assert f"| MACs | {structure.cost.dense_macs:,} | {macs:,} |" in text
    assert f"| params | {structure.cost.dense_params:,} | {params:,} |" in text
    assert "| seed | 0 |" in text and "| device | cpu fp32 contiguous |" in text
    assert "| test accuracy (%) of the cut model | 61.50 |" in text
    assert "| removed / kept channel norm ratio | 0.42 |" in text
    assert "Wall-clock: 31.5 s" in text
    assert f"| `{structure.names[0]}` |" in text and "| **total** |" in text
    # the layers that could not be pruned, with their reasons and their share of the MACs
    assert "## Skipped layers" in text
    dense = structure.cost.dense_macs
    for group in structure.skipped:
        share = f"{100 * group.macs / dense:.1f} %"
        assert f"| `{group.module}` | {group.reason} | {group.macs:,} | {share} |" in text
    held = 100 * sum(group.macs for group in structure.skipped) / dense
    assert f"{len(structure.skipped)} layers could not be pruned; they hold {held:.1f} %" in text
    assert re.search(r"\bnan\b", text, re.IGNORECASE) is None  # a NaN reward never leaks into the page


@pytest.mark.parametrize("kind", ["sac", "sac-no-dynamics"])  # both learn a policy
def test_the_report_sets_the_policys_episodes_against_the_random_warm_ups(tmp_path: Path, kind: str) -> None:
    structure = resnet20_structure()
    plan = make_joint_run(tmp_path, structure, env=(f"agent.kind={kind}",), warmup_episodes=EPISODES,
                          greedy=-1.25)  # fmt: skip
    rewards = [e["reward"] for e in json.loads((tmp_path / "episodes.json").read_text())]
    # search epoch 0 is the warm-up; its first reward is NaN (null) and is not counted
    random = [100 * r for r in rewards[:EPISODES] if r is not None]
    policy = [100 * r for r in rewards[EPISODES:]]
    gain = np.mean(policy) - np.mean(random)
    se = math.sqrt(np.var(random, ddof=1) / len(random) + np.var(policy, ddof=1) / len(policy))
    uniform, final = Plan.from_keep_ratios(structure, 0.5).to_dict(), plan.to_dict()  # the greedy plan: final
    distance = np.mean([abs(final[name] / uniform[name] - 1) for name in uniform])
    text = write_report(tmp_path).read_text()
    expected = (
        f"Of the scored episodes, {len(random)} drew random actions (the agent's warm-up) and {len(policy)} "
        f"came from its policy. Mean reward against the uniform plan: random {np.mean(random):+.2f} points, "
        f"policy {np.mean(policy):+.2f}; policy − random **{gain:+.2f}** ± {se:.2f} (standard error). Its "
        "greedy plan, the allocation it rates best, scored -1.25 points against the uniform plan on the "
        f"whole reward split (final choice; 0 where it is the uniform plan), {distance:.2f} from it"
    )
    assert expected in text


@pytest.mark.parametrize("env", [(), ("env.reward=accuracy",), ("agent.kind=random",)])
def test_the_report_says_nothing_of_the_policy_where_the_run_cannot_tell(tmp_path: Path, env: tuple) -> None:
    # without the warm-up's count (runs before it was recorded), with rewards not set against uniform, or
    # with an agent that has no policy to learn
    make_joint_run(tmp_path, resnet20_structure(), env=env, warmup_episodes=EPISODES if env else None)
    text = write_report(tmp_path).read_text()
    assert "## Search" in text and "Did the policy learn?" not in text


def test_dense_run_report_has_only_the_accuracy_figure(tmp_path: Path) -> None:
    make_dense_run(tmp_path)
    text = write_report(tmp_path).read_text()
    assert [p.name for p in (tmp_path / "plots").iterdir()] == ["accuracy.png"]
    assert is_png(tmp_path / "plots" / "accuracy.png")
    assert "| MACs | 31,021,952 |" in text and "| test accuracy (%) | 83.95 |" in text
    for absent in ("## At the cut", "## Search", "## Per-layer widths", "missing"):
        assert absent not in text


@pytest.mark.parametrize(("align_loss", "warned"), [(1.2, False), (1.7, False), (1.8, True)])
def test_the_report_warns_when_the_align_epochs_training_loss_rose_past_a_quarter(
    tmp_path: Path, align_loss: float, warned: bool
) -> None:
    make_joint_run(tmp_path, resnet20_structure(), align_loss=align_loss)  # the epoch before it: loss 1.40
    text = write_report(tmp_path).read_text()
    assert ("**Warning:** the training loss rose from 1.400" in text) is warned
    if warned:
        assert f"to {align_loss:.3f} in the align epochs" in text and "optim.clip_grad_norm" in text
        assert "norm reached 21.4 in the align epochs against a median of 1.2 in the epoch before" in text
        assert "clipping the gradient (`optim.clip_grad_norm=5`" in text and "already clipped" not in text


def test_the_align_loss_warning_of_a_clipped_run_does_not_offer_clipping_as_the_cure(tmp_path: Path) -> None:
    make_joint_run(tmp_path, resnet20_structure(), align_loss=1.8, clip=5.0)
    text = write_report(tmp_path).read_text()
    assert "the training loss rose from 1.400 in the last epoch before alignment to 1.800" in text
    assert "The gradient was already clipped (`optim.clip_grad_norm=5`)." in text
    assert "kept this from happening" not in text
    assert "residual_floor" not in text  # under policy internal no residual width is pruned


@pytest.mark.parametrize(("floor", "offered"), [("min", True), ("uniform", False)])
def test_the_align_loss_warning_offers_the_residual_floor_only_where_residual_widths_are_free(
    tmp_path: Path, floor: str, offered: bool
) -> None:
    make_joint_run(tmp_path, resnet20_structure(), align_loss=1.8, clip=5.0,
                   env=("env.policy=all", f"env.residual_floor={floor}"))
    text = write_report(tmp_path).read_text()
    assert ("`env.residual_floor=uniform` keeps them at or above it" in text) is offered


def test_values_the_run_lacks_are_written_as_missing(tmp_path: Path) -> None:
    make_joint_run(tmp_path, resnet20_structure(), cut=False, widths=False)
    result = json.loads((tmp_path / "result.json").read_text())
    del result["seconds"], result["params"]
    write_json(tmp_path / "result.json", result)
    text = write_report(tmp_path).read_text()
    assert "| test accuracy (%) of the masked dense model | missing |" in text
    assert "| removed / kept channel norm ratio | missing |" in text
    assert "widths.csv: missing." in text
    assert "Wall-clock: missing s" in text
    assert "| params | " in text and "| missing | missing |" in text
    assert not (tmp_path / "plots" / "widths.png").exists()


@pytest.mark.parametrize("name", ["result.json", "metrics.jsonl"])
def test_a_missing_required_file_is_an_error_naming_it(tmp_path: Path, name: str) -> None:
    make_dense_run(tmp_path)
    (tmp_path / name).unlink()
    with pytest.raises(RlalError, match=name.replace(".", r"\.")):
        write_report(tmp_path)
    assert not (tmp_path / "report.md").exists()


def test_a_corrupt_metrics_line_is_an_error_naming_the_file_but_a_torn_last_line_is_skipped(
    tmp_path: Path,
) -> None:
    make_dense_run(tmp_path)
    metrics = tmp_path / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join(lines) + '\n{"epoch": 4, "pha')  # a crash mid-append
    assert "| test accuracy (%) | 83.95 |" in write_report(tmp_path).read_text()
    metrics.write_text("\n".join([lines[0], '{"epoch": 2, "pha', *lines[2:]]) + "\n")
    with pytest.raises(RlalError, match=r"metrics\.jsonl.*line 2"):
        write_report(tmp_path)


def test_plots_without_data_write_nothing(tmp_path: Path) -> None:
    out = tmp_path / "x.png"
    assert plots.plot_rewards({3: [None, math.nan]}, out) is None
    assert plots.plot_decoder_loss([2, 3], [None, None], out) is None
    assert plots.plot_macs([2], [None], out, dense_macs=100, target_macs=50) is None
    assert plots.plot_widths([], [], [], out) is None
    assert plots.plot_accuracy([], [], [], [], out) is None
    assert not out.exists()
