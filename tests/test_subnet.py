"""Sub-network training (``search.subnet_weight``): the plans it draws, the BN statistics it leaves alone,
where its gradient goes, and a joint run with it (logged, reproducible, resumable)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_env import PlainNet
from test_joint import joint_config
from test_resume import interrupt_after, untimed
from test_train import fmnist_dir  # noqa: F401  (fixture re-used)
from torch import nn

import rlal.train.joint
from rlal.config import EnvConfig
from rlal.env import PruningEnv
from rlal.errors import RlalError, RunInterrupted
from rlal.report.metrics import read_metrics
from rlal.structure import find_layers
from rlal.train.distributed import Dist
from rlal.train.joint import fit_joint, train_and_prune
from rlal.train.runtime import Runtime
from rlal.train.subnet import SubnetTraining, frozen_bn_statistics

pytestmark = pytest.mark.usefixtures("one_thread")

RANGE = 2.0


def training(weight: float = 1.0, seed: int = 0) -> SubnetTraining:
    torch.manual_seed(0)
    structure = find_layers(PlainNet(), (3, 16, 16))
    env = PruningEnv(structure, EnvConfig(target_macs=0.4, action_mode="relative", min_keep_ratio=0.2,
                                          action_range=RANGE))
    return SubnetTraining(env, weight, "l2", seed=seed)


def test_drawn_plans_meet_the_budget_vary_around_uniform_and_repeat_per_epoch():
    subnets = training()
    subnets.start_epoch(1)
    plans = [subnets.sample() for _ in range(60)]
    budget, channels = subnets.env.budget, subnets.env.structure.channels
    assert all(bool(budget.fits(p.array())) for p in plans)
    assert len({p.keep for p in plans}) > 30
    for p in plans:  # a preference spread of at most RANGE^2; clipping only narrows it, rounding widens a bit
        ratios = p.array() / channels
        assert ratios.max() / ratios.min() <= RANGE**2 * 1.25
    # Near the budget, not far under it: the common scale is the largest that fits.
    assert min(budget.cost.macs(p.array()) for p in plans) >= 0.8 * budget.target_macs

    subnets.start_epoch(1)
    assert [subnets.sample().keep for _ in range(60)] == [p.keep for p in plans]  # a resumed epoch
    subnets.start_epoch(2)
    assert [subnets.sample().keep for _ in range(60)] != [p.keep for p in plans]


def test_frozen_bn_statistics_normalise_with_the_batch_and_leave_the_running_statistics_alone():
    bn = nn.BatchNorm2d(3).train()
    x = torch.randn(8, 3, 5, 5) * 4 + 2
    with frozen_bn_statistics(bn):
        y = bn(x)
    assert torch.allclose(y.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)  # the batch's statistics
    assert torch.equal(bn.running_mean, torch.zeros(3)) and torch.equal(bn.running_var, torch.ones(3))
    assert int(bn.num_batches_tracked) == 0 and bn.momentum == 0.1
    bn(x)  # outside the block the running statistics move again
    assert not torch.equal(bn.running_mean, torch.zeros(3))


def test_the_sub_network_loss_is_the_masked_models_weighted_loss_and_reaches_only_its_kept_channels():
    subnets = training(weight=0.5)
    model = subnets.env.structure.model.train()
    running = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    subnets.start_epoch(1)
    loss = subnets(model, x, y, 0.0)
    loss.backward()
    assert not subnets.masks.enabled  # the hooks are gone: the model is dense again
    assert all(torch.equal(model.state_dict()[k], v) for k, v in running.items())

    with subnets.masks:  # the same plan and channels, applied by hand
        expected = 0.5 * F.cross_entropy(model(x), y)
    assert torch.allclose(loss, expected, atol=1e-6)
    first = subnets.env.structure.layers[0]
    kept = subnets.masks.kept[first.name]
    removed = torch.ones(first.channels, dtype=torch.bool)
    removed[kept] = False
    assert removed.any()
    grad = model.features[0].weight.grad
    assert torch.count_nonzero(grad[removed]) == 0 and torch.count_nonzero(grad[~removed]) > 0


def subnet_config(data_dir, weight: float = 1.0):
    return joint_config(data_dir, f"search.subnet_weight={weight}", "search.search_epochs=1",
                        "train.epochs=4", "search.final_window=1", "train.threads=1")


@pytest.fixture(scope="module")
def reference(fmnist_dir, tmp_path_factory):  # noqa: F811
    """An uninterrupted joint run with sub-network training."""
    out = tmp_path_factory.mktemp("subnet") / "run"
    return fit_joint(subnet_config(fmnist_dir), out), out


def test_a_joint_run_trains_sub_networks_until_the_choice_and_only_then(fmnist_dir, reference, tmp_path):  # noqa: F811
    result, out = reference
    assert result.macs <= 0.5 * result.dense_macs
    trained = {r["phase"]: r for r in read_metrics(out / "metrics.jsonl") if "train_loss" in r}
    assert trained["warm-up"]["subnet_loss"] > 0 and trained["search"]["subnet_loss"] > 0
    assert "subnet_loss" not in trained["align"] and "subnet_loss" not in trained["fine-tune"]

    fit_joint(subnet_config(fmnist_dir, 0.0), tmp_path / "plain")
    without = {r["phase"]: r for r in read_metrics(tmp_path / "plain" / "metrics.jsonl") if "train_loss" in r}
    assert "subnet_loss" not in without["warm-up"]
    assert without["warm-up"]["train_loss"] != trained["warm-up"]["train_loss"]  # it changed the training


def test_a_joint_run_with_sub_networks_stopped_in_the_warm_up_resumes_to_the_same_result(
    fmnist_dir, reference, tmp_path, monkeypatch  # noqa: F811
):
    result, out = reference
    config = subnet_config(fmnist_dir)
    with monkeypatch.context() as patch:
        interrupt_after(patch, rlal.train.joint, 1)
        with pytest.raises(RunInterrupted):
            fit_joint(config, tmp_path / "run")
    resumed = fit_joint(config, tmp_path / "run", resume=True)
    assert resumed.plan == result.plan and resumed.test_acc == result.test_acc
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert untimed(records) == untimed(read_metrics(out / "metrics.jsonl"))


def test_sub_network_training_under_torchrun_is_refused_in_one_line_before_the_run_directory(
    fmnist_dir, tmp_path  # noqa: F811
):
    runtime = Runtime(torch.device("cpu"), None, False, Dist(rank=0, world_size=2))
    with pytest.raises(RlalError, match=r"^search\.subnet_weight > 0 runs in a single process only"):
        train_and_prune(subnet_config(fmnist_dir), runtime, None, None, None, tmp_path / "run")
    assert not (tmp_path / "run").exists()
