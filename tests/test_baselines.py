"""Same-budget baselines (issue 6): uniform from scratch, magnitude and DepGraph three-stage, on tiny data."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torch_pruning as tp
from test_train import fmnist_dir, small_config  # noqa: F401  (fixture re-used)

from rlal.config import load_config
from rlal.data import build_data
from rlal.env import Budget
from rlal.errors import RlalError
from rlal.models import count_macs_params, create_model
from rlal.report.metrics import read_metrics
from rlal.structure import cut, find_layers, load_pruned
from rlal.structure.trace import COUNTED_TYPES
from rlal.train.baselines import depgraph_plan, fit_baseline, fit_depgraph, fit_magnitude, uniform_plan
from rlal.train.dense import fit_dense
from rlal.train.epoch import evaluate
from rlal.train.runtime import resolve_runtime

pytestmark = pytest.mark.usefixtures("one_thread")

JOINT_RESULT_KEYS = {
    "method", "model", "dataset", "test_acc", "test_images", "dense_macs", "macs", "macs_ratio",
    "dense_params", "params", "target_macs", "epochs", "seconds", "plan",
}
THREE_STAGE = ("baseline.pretrain_epochs=1", "baseline.finetune_epochs=1")


def baseline_config(data_dir, method: str, *extra: str):
    return small_config(
        data_dir, f"method={method}", "data.train_subset=256", "data.eval_batch_size=100",
        "data.augment=false", "env.target_macs=0.5", *extra,
    )


@pytest.fixture(scope="module")
def runs(fmnist_dir, tmp_path_factory):  # noqa: F811
    """One run of each baseline, shared by the tests that only read results (one torch thread)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("baselines")
    try:
        return {
            method: fit_baseline(baseline_config(fmnist_dir, method, *extra), root / method)
            for method, extra in (("uniform", ()), ("magnitude", THREE_STAGE), ("depgraph", THREE_STAGE))
        }
    finally:
        torch.set_num_threads(before)


def sized(model, x=(1, 28, 28)):
    return count_macs_params(model, x)


@pytest.mark.parametrize("method", ["uniform", "magnitude", "depgraph"])
def test_each_baseline_meets_the_target_and_its_saved_model_reloads_to_the_recorded_accuracy(
    runs, fmnist_dir, method  # noqa: F811
):
    result = runs[method]
    assert result.macs <= 0.5 * result.dense_macs
    assert sized(result.model) == (result.macs, result.params)  # our counter agrees with our cost model
    assert result.params < result.dense_params

    saved = json.loads((result.run_dir / "result.json").read_text())
    assert set(saved) >= JOINT_RESULT_KEYS
    assert saved["method"] == method and saved["macs"] == result.macs and saved["epochs"] == result.epochs
    assert saved["plan"] == result.plan.to_dict()

    config = baseline_config(fmnist_dir, method)
    runtime = resolve_runtime(config.train)
    data = build_data(config.data, runtime.device, seed=config.seed)
    small = load_pruned(result.run_dir / "pruned")
    assert sized(small) == (result.macs, result.params)
    assert evaluate(small, data.test, runtime).acc == pytest.approx(result.test_acc, abs=1e-9)
    assert saved["test_images"] == data.test.num_samples


def test_uniform_trains_the_small_model_for_train_epochs_on_the_filled_common_ratio(runs, fmnist_dir):  # noqa: F811
    result = runs["uniform"]
    records = read_metrics(result.run_dir / "metrics.jsonl")
    assert [r["phase"] for r in records] == ["prune", "train", "train"]
    assert result.epochs == 2 and records[-1]["test_acc"] == result.test_acc
    ratio = json.loads((result.run_dir / "result.json").read_text())["keep_ratio"]
    structure = find_layers(create_model("resnet20", in_channels=1, input_size=28), (1, 28, 28))
    for layer, keep in zip(structure.layers, result.plan.keep, strict=True):  # the fill adds, a step or so
        assert -0.5 - 1e-9 <= keep - ratio * layer.channels <= 2
    config = baseline_config(fmnist_dir, "uniform")
    assert result.plan == Budget(structure, config.env.target_macs, config.env.min_keep_ratio,
                                 config.env.round_to).uniform_plan()[0]


@pytest.mark.parametrize("method", ["magnitude", "depgraph"])
def test_three_stage_baselines_record_pretrain_plus_finetune_epochs(runs, method):
    result = runs[method]
    assert result.epochs == 2
    records = read_metrics(result.run_dir / "metrics.jsonl")
    assert [(r["phase"], r["epoch"]) for r in records] == [("pretrain", 1), ("prune", 1), ("fine-tune", 2)]
    prune = records[1]
    assert prune["macs"] == result.macs and prune["pretrained_test_acc"] == records[0]["test_acc"]
    saved = json.loads((result.run_dir / "result.json").read_text())
    assert (saved["pretrain_epochs"], saved["finetune_epochs"]) == (1, 1)
    assert saved["finetune_lr"] == pytest.approx(0.005)  # optim.lr / 10


def test_uniform_plan_is_the_largest_common_keep_ratio_that_fits():
    structure = find_layers(create_model("resnet56"), (3, 32, 32))
    for target, round_to in ((0.5, 1), (0.3, 4)):
        budget = Budget(structure, target, 0.1, round_to, fill_budget=False)
        selection = uniform_plan(structure, budget)
        assert structure.cost.of(selection.plan)[0] <= budget.target_macs
        for layer, keep in zip(structure.layers, selection.plan.keep, strict=True):
            assert keep % round_to == 0 or keep == layer.channels
            assert abs(keep - selection.searched * layer.channels) <= round_to / 2 + 1e-9
        bigger = uniform_plan(structure, Budget(structure, target + 0.05, 0.1, round_to, fill_budget=False))
        assert bigger.searched > selection.searched


@pytest.mark.parametrize(("name", "shape", "round_to"),
                         [("resnet56", (3, 32, 32), 8), ("resnet20", (1, 28, 28), 1),
                          ("mobilenetv2-cifar", (3, 32, 32), 8)])
def test_filled_uniform_plan_spends_the_budget_its_rounding_leaves(name, shape, round_to):
    structure = find_layers(create_model(name, in_channels=shape[0], input_size=shape[1]), shape)
    common, ratio = Budget(structure, 0.5, 0.2, round_to, fill_budget=False).uniform_plan()
    budget = Budget(structure, 0.5, 0.2, round_to)
    filled, filled_ratio = budget.uniform_plan()
    keep, start = filled.array(), common.array()
    assert filled_ratio == ratio  # the common ratio is reported as searched; the fill only adds
    assert budget.fits(keep) and (keep >= start).all()
    assert structure.cost.of(filled)[0] >= structure.cost.of(common)[0]
    for t, counts in enumerate(budget.allowed):  # no layer can take one step more
        above = counts[counts > keep[t]]
        if len(above):
            one_more = keep.copy()
            one_more[t] = above[0]
            assert not budget.fits(one_more)
    for t, layer in enumerate(structure.layers):
        assert keep[t] % round_to == 0 or keep[t] == layer.channels


def test_fill_grows_the_thinnest_layers_first():
    structure = find_layers(create_model("resnet56"), (3, 32, 32))
    budget = Budget(structure, 0.5, 0.2, 8)
    common = Budget(structure, 0.5, 0.2, 8, fill_budget=False).uniform_plan()[0].array()
    filled = budget.uniform_plan()[0].array()
    ratios, grown = common / structure.channels, filled > common
    assert grown.any()
    assert ratios[grown].max() <= ratios[~grown].min()  # only the thinnest layers took the spare budget
    spent = structure.cost.macs(np.stack([filled, common])) / budget.dense_macs
    assert spent[0] > 0.49 > spent[1]


def trained_like(name="resnet20", shape=(1, 28, 28), seed=0):
    """A model whose channels differ in magnitude, as after training (BN scales spread out)."""
    torch.manual_seed(seed)
    model = create_model(name, in_channels=shape[0], input_size=shape[1])
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.05, 2.0)
    return model


def test_depgraph_selection_is_torch_prunings_own_global_pruning_at_the_searched_ratio():
    model = trained_like()
    structure = find_layers(model, (1, 28, 28))
    selection = depgraph_plan(structure, Budget(structure, 0.5, 0.1, 1))
    assert structure.cost.of(selection.plan)[0] <= structure.cost.dense_macs // 2

    # Torch-Pruning on its own, pruning for real, with the layers our structure leaves whole ignored.
    reference = copy.deepcopy(model).eval()
    owners = {m.module for layer in structure.layers for m in layer.members if m.role == "out"}
    ignored = [m for n, m in reference.named_modules() if isinstance(m, COUNTED_TYPES) and n not in owners]
    pruner = tp.pruner.MetaPruner(
        reference, torch.zeros(1, 1, 28, 28), importance=tp.importance.GroupMagnitudeImportance(p=2),
        global_pruning=True, pruning_ratio=selection.searched, ignored_layers=ignored,
    )
    pruner.step()
    modules = dict(reference.named_modules())
    assert {name: modules[name].out_channels for name in structure.names} == selection.plan.to_dict()
    small = cut(structure, selection.plan, kept=selection.kept)
    x = torch.randn(2, 1, 28, 28)
    assert torch.allclose(small.eval()(x), reference(x), atol=1e-5)  # the same channels, not just counts


@pytest.mark.parametrize("policy", ["internal", "all"])
def test_depgraph_prunes_only_the_structures_layers_and_keeps_the_minimum_widths(policy):
    model = trained_like("resnet56", (3, 32, 32))
    structure = find_layers(model, (3, 32, 32), policy=policy)
    budget = Budget(structure, 0.15, 0.1, 1)  # low: under "internal" the ranking would over-prune layers
    selection = depgraph_plan(structure, budget)
    assert structure.cost.of(selection.plan)[0] <= budget.target_macs
    assert all(k >= m for k, m in zip(selection.plan.keep, budget.min_keep, strict=True))
    if policy == "internal":
        assert any(k == m for k, m in zip(selection.plan.keep, budget.min_keep, strict=True))
    assert len(set(selection.plan.keep_ratios(structure).values())) > 1  # global: layers differ
    small = cut(structure, selection.plan, kept=selection.kept)
    dense, cut_modules = dict(model.named_modules()), dict(small.named_modules())
    assert cut_modules["fc"].out_features == dense["fc"].out_features
    if policy == "internal":  # residual-tied channels stay whole
        assert all(cut_modules[f"layer{s}.0.conv2"].out_channels == dense[f"layer{s}.0.conv2"].out_channels
                   for s in (1, 2, 3))
    else:
        assert cut_modules["layer1.0.conv2"].out_channels < dense["layer1.0.conv2"].out_channels


def test_magnitude_prunes_a_finished_dense_run_and_counts_its_epochs(fmnist_dir, tmp_path):  # noqa: F811
    dense = fit_dense(small_config(fmnist_dir, "train.epochs=1", "data.train_subset=256"), tmp_path / "dense")
    config = baseline_config(fmnist_dir, "magnitude", "baseline.finetune_epochs=1",
                             f"baseline.dense_run={dense.run_dir}")
    result = fit_magnitude(config, tmp_path / "magnitude")
    assert result.epochs == 2 and result.macs <= 0.5 * result.dense_macs
    records = read_metrics(result.run_dir / "metrics.jsonl")
    assert [r["phase"] for r in records] == ["prune", "fine-tune"]
    assert records[0]["pretrained_test_acc"] == pytest.approx(dense.test_acc)

    wrong = baseline_config(
        fmnist_dir, "depgraph", "model.name=resnet32", f"baseline.dense_run={dense.run_dir}"
    )
    with pytest.raises(RlalError, match="holds model='resnet20', this run needs 'resnet32'"):
        fit_depgraph(wrong, tmp_path / "wrong")
    assert not (tmp_path / "wrong").exists()


def test_an_infeasible_target_fails_before_the_run_directory(fmnist_dir, tmp_path):  # noqa: F811
    for method in ("uniform", "magnitude", "depgraph"):
        with pytest.raises(RlalError, match="feasible"):
            fit_baseline(baseline_config(fmnist_dir, method, "env.target_macs=0.01"), tmp_path / method)
        assert not (tmp_path / method).exists()
    joint = baseline_config(fmnist_dir, "uniform")
    joint.method = "rlal"
    with pytest.raises(RlalError, match="not a baseline"):
        fit_baseline(joint, tmp_path / "rlal")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("baseline.pretrain_epochs=0", "baseline.pretrain_epochs must be >= 1"),
        ("baseline.finetune_epochs=-2", "baseline.finetune_epochs must be >= 1"),
        ("baseline.finetune_epochs=1.5", "baseline.finetune_epochs must be an integer, got 1.5"),
        ("baseline.finetune_lr=0", "baseline.finetune_lr must be > 0"),
        ("baseline.criterion=l3", "baseline.criterion must be one of l2, l1, bn_scale, random, got 'l3'"),
        ("baseline.dense_run=' '", "baseline.dense_run must be a run directory"),
        ("baseline.epochs=3", "unknown config key 'baseline.epochs'"),
        ("method=prune", "method must be one of dense, rlal, uniform, magnitude, depgraph, got 'prune'"),
    ],
)
def test_bad_baseline_values_give_one_line_errors(override, message):
    with pytest.raises(RlalError) as info:
        load_config(None, ["method=magnitude", override])
    assert message in str(info.value) and "\n" not in str(info.value)


def test_baseline_defaults_follow_the_training_budget():
    config = load_config(None, ["method=depgraph", "train.epochs=40"])
    assert config.baseline.resolved_epochs(config.train.epochs) == (40, 20)
    config = load_config(
        None, ["method=magnitude", "baseline.pretrain_epochs=3", "baseline.finetune_epochs=7"]
    )
    assert config.baseline.resolved_epochs(config.train.epochs) == (3, 7)
    assert config.baseline.resolved_epochs(config.train.epochs, dense_epochs=11) == (11, 7)
