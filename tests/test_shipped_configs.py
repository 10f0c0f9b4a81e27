"""Every config shipped in rlal/configs loads, builds its model at the dataset's input shape, and (for the
method) sets a MACs target the environment can meet. Structure and cost model only: no data, no training."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from rlal.config import BASELINE_METHODS, RunConfig, load_config
from rlal.data import dataset_spec
from rlal.env import Budget
from rlal.models import create_model
from rlal.structure import find_layers

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG_DIR = Path(str(resources.files("rlal") / "configs"))
SHIPPED = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
JOINT = [name for name in SHIPPED if load_config(CONFIG_DIR / f"{name}.yaml").method == "rlal"]
ABLATIONS = ["agent.kind=random", "agent.kind=sac-no-dynamics", "search.align.lam=0"]


def shipped(name: str, *overrides: str) -> RunConfig:
    return load_config(CONFIG_DIR / f"{name}.yaml", list(overrides))


def test_the_issue_5_configs_are_shipped_with_their_dense_references():
    for name in ("resnet56-cifar10", "resnet110-cifar10", "mobilenetv2-cifar10", "resnet50-imagenet",
                 "mobilenetv2-imagenet"):
        assert name in JOINT and f"dense-{name}" in SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_config_builds_its_model_and_a_joint_target_is_feasible(name):
    config = shipped(name)
    spec = dataset_spec(config.data.dataset)
    shape = (spec.in_channels, spec.input_size, spec.input_size)
    model = create_model(config.model.name, num_classes=spec.num_classes, in_channels=spec.in_channels,
                         input_size=spec.input_size)
    if config.method != "rlal":
        return
    structure = find_layers(model, shape, policy=config.env.policy)
    env = config.env
    budget = Budget(structure, env.target_macs, env.min_keep_ratio, env.round_to)  # raises if infeasible
    assert budget.min_macs <= budget.target_macs < budget.dense_macs
    assert config.agent.context.max_epochs > config.search.search_epochs  # one embedding per search epoch


# The demo and the benchmark track have no twin: the benchmark harness derives every method from its config.
@pytest.mark.parametrize("name", [n for n in JOINT if n != "demo" and not n.startswith("bench-")])
def test_a_joint_config_has_a_dense_twin_at_the_same_training_budget(name):
    joint, dense = shipped(name), shipped(f"dense-{name}")
    assert dense.method == "dense"
    assert (joint.model, joint.optim, joint.train.epochs) == (dense.model, dense.optim, dense.train.epochs)
    for key in ("dataset", "batch_size", "reward_size"):  # the same training images, batched alike
        assert getattr(joint.data, key) == getattr(dense.data, key), key


@pytest.mark.parametrize("name", JOINT)
def test_the_ablations_and_baselines_of_a_joint_config_validate(name):
    for override in ABLATIONS:
        assert shipped(name, override).method == "rlal"
    assert shipped(name, "search.align.lam=0").search.align.lam == 0
    for method in BASELINE_METHODS:
        config = shipped(name, f"method={method}")
        pretrain, finetune = config.baseline.resolved_epochs(config.train.epochs)
        assert pretrain >= 1 and finetune >= 1


@pytest.mark.parametrize("name", [n for n in SHIPPED if "imagenet" in n])
def test_imagenet_configs_say_how_to_point_at_the_imagenet_folder(name):
    config = shipped(name)
    assert config.data.dataset == "imagefolder" and config.data.data_dir is None
    text = (CONFIG_DIR / f"{name}.yaml").read_text()
    assert "--data-dir /path/to/imagenet" in text and "data.data_dir=" in text
    assert "batch_size / 256" in text  # the learning-rate scale rule
