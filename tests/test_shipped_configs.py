"""Every config shipped in rlal/configs loads, builds its model at the dataset's input shape, and (for the
method) sets a MACs target the environment can meet. Structure and cost model only: no data, no training."""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

import pytest

from rlal.config import BASELINE_METHODS, RunConfig, load_config
from rlal.data import auto_reward_size, dataset_spec, reward_split
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
    for key in ("dataset", "batch_size", "input_size"):  # the same training images, batched alike
        assert getattr(joint.data, key) == getattr(dense.data, key), key
    n_train = TRAIN_IMAGES[joint.data.dataset]  # a size left unset is sized from the data: compare the result
    assert effective_reward_size(joint, n_train) == effective_reward_size(dense, n_train)


TRAIN_IMAGES = {"fashion-mnist": 60_000, "cifar10": 50_000, "imagefolder": 1_281_167}
"""Training images of each shipped config's dataset (ImageNet for the image-folder configs)."""


def effective_reward_size(config: RunConfig, n_train: int) -> int:
    return config.data.reward_size if config.data.reward_size is not None else auto_reward_size(n_train)


# The T1/T2 tracks (and every config that leaves data.reward_size unset) held out 5,000 images when that was
# the fixed default: the size now drawn from the data must give them exactly the same reward split. The
# digests are of the reward indices rlal drew before data.reward_size could be left unset.
FORMER_REWARD_SPLITS = {
    (60_000, 0): "9f104a7bac93a930", (60_000, 1): "3989cb6771b04e34", (60_000, 2): "5adcf3f153a60fd0",
    (50_000, 0): "01d0fac5b75e3b0d", (50_000, 1): "315f96f1191270a2", (50_000, 2): "af2f5a033afe2f93",
}


@pytest.mark.parametrize("name", [n for n in SHIPPED if "imagenet" not in n])
def test_a_shipped_config_holds_out_the_same_reward_images_as_with_the_former_fixed_5000(name):
    config = shipped(name)
    n_train = TRAIN_IMAGES[config.data.dataset]
    size = effective_reward_size(config, n_train)
    assert size == 5000
    for seed in (0, 1, 2):
        train, reward = reward_split(n_train, size, seed)
        digest = hashlib.sha256(reward.numpy().tobytes()).hexdigest()[:16]
        assert digest == FORMER_REWARD_SPLITS[n_train, seed]
        assert len(train) == n_train - 5000 and not set(train.tolist()) & set(reward.tolist())


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
