"""The Python API: a user's own CNN and in-memory images through the whole joint method."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_cli import assert_one_line_error, run_cli
from test_train import learnable_images
from torch import nn

import rlal
from rlal.config import load_config
from rlal.data import data_from_tensors
from rlal.errors import DataError, RlalError

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = [
    "data.reward_size=100", "data.batch_size=64", "data.eval_batch_size=100", "train.device=cpu",
    "train.progress=false", "optim.lr=0.05", "search.warmup_epochs=1", "search.search_epochs=2",
    "search.episodes_per_epoch=3", "search.final_window=2", "env.reward_batches=1", "agent.warmup_episodes=2",
    "agent.updates_per_epoch=4", "agent.batch_size=16", "agent.context.updates_per_epoch=4",
    "search.align.lam=0.01", "search.align_epochs=0",
]


class UserNet(nn.Module):
    """Not in the zoo: a plain conv stack with a residual block, as a user might write it."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.block = nn.Sequential(
            nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16),
        )
        self.head = nn.Sequential(
            nn.Conv2d(16, 48, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(48), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(48, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.head(torch.relu(x + self.block(x)))


def tensors(n_train: int = 600, n_test: int = 200):
    rng = np.random.default_rng(0)
    train_x, train_y = learnable_images(n_train, rng)
    test_x, test_y = learnable_images(n_test, rng)
    as_nchw = lambda x: torch.from_numpy(x)[:, None]  # noqa: E731
    return (as_nchw(train_x), torch.from_numpy(train_y)), (as_nchw(test_x), torch.from_numpy(test_y))


def test_joint_pruner_prunes_a_user_cnn_on_in_memory_images(tmp_path, capsys):
    train, test = tensors()
    torch.manual_seed(0)
    pruner = rlal.JointPruner(UserNet(), (train, test), target_macs=0.5, epochs=4, out=tmp_path / "run",
                              overrides=TINY)
    result = pruner.fit()
    assert result.macs <= 0.5 * result.dense_macs
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["model"] == "UserNet" and saved["dataset"] == "tensors"
    assert (tmp_path / "run" / "report.md").exists() and (tmp_path / "run" / "widths.csv").exists()

    with pytest.raises(RlalError, match="pass the dense model"):
        rlal.load_pruned(tmp_path / "run" / "pruned")
    config = load_config(tmp_path / "run" / "config.yaml")
    assert config.model.name == "<instance of test_api.UserNet>" and config.data.dataset == "tensors"
    code, _, err = run_cli(capsys, "eval", str(tmp_path / "run"))
    assert_one_line_error(code, err, "saved from an instance of test_api.UserNet given to the Python API",
                          "model=YourNet(...)")
    loaded = rlal.load_pruned(tmp_path / "run" / "pruned", model=UserNet())
    x = torch.randn(4, 1, 28, 28)
    assert torch.allclose(loaded(x), result.model.eval()(x), atol=1e-5)


def test_data_from_tensors_holds_out_the_reward_split_and_normalises_by_the_training_images():
    train, test = tensors(300, 50)
    data = data_from_tensors(train, test, cfg=load_config(None, ["data.reward_size=100"]).data)
    assert data.train.num_samples == 200 and data.reward.num_samples == 100 and data.test.num_samples == 50
    assert data.spec.in_channels == 1 and data.spec.input_size == 28 and data.spec.num_classes == 10
    pixels = torch.cat([x for x, _ in data.test]).mean()
    assert abs(float(pixels)) < 0.3  # roughly centred by the training images' own statistics


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ((torch.zeros(10, 1, 28, 28), torch.zeros(10, dtype=torch.int64)), "uint8"),
        ((torch.zeros(10, 1, 28, 20, dtype=torch.uint8), torch.zeros(10, dtype=torch.int64)), "square"),
        ((torch.zeros(10, 1, 28, 28, dtype=torch.uint8), torch.zeros(9, dtype=torch.int64)), "one integer"),
    ],
)
def test_data_from_tensors_rejects_bad_images_with_one_line(train, message):
    test = (torch.zeros(5, 1, 28, 28, dtype=torch.uint8), torch.zeros(5, dtype=torch.int64))
    with pytest.raises(DataError, match=message):
        data_from_tensors(train, test)


def test_joint_pruner_rejects_what_is_not_a_model_or_data():
    with pytest.raises(RlalError, match=r"nn\.Module"):
        rlal.JointPruner("resnet20", "fashion-mnist")
    with pytest.raises(RlalError, match=r"\(train_images, train_labels\)"):
        rlal.JointPruner(UserNet(), [1, 2, 3])
    with pytest.raises(RlalError, match="unknown config key"):
        rlal.JointPruner(UserNet(), "fashion-mnist", overrides=["train.epoch=3"])


def build_user_net(num_classes: int = 10) -> UserNet:
    """A factory the API can record (``test_api:build_user_net``)."""
    return UserNet(num_classes)


def test_an_api_run_records_its_model_and_data_so_eval_export_and_bench_work_on_it(tmp_path, capsys):
    train, test = tensors(300, 100)
    torch.manual_seed(0)
    run = tmp_path / "run"
    rlal.JointPruner(build_user_net(), (train, test), target_macs=0.5, epochs=4, out=run, overrides=TINY,
                     factory="test_api:build_user_net", factory_kwargs={"num_classes": 10}).fit()
    config = load_config(run / "config.yaml")
    assert config.model.name == "test_api:build_user_net"
    assert (config.data.dataset, config.data.in_channels, config.data.input_size) == ("tensors", 1, 28)
    assert config.data.classes == [str(k) for k in range(10)]

    code, out, err = run_cli(capsys, "eval", str(run), "--trust-factory", "--json", "--runs", "1", "--warmup",
                             "0")
    assert code == 0, err
    info = json.loads(out)
    result = json.loads((run / "result.json").read_text())
    assert info["test_recorded"] and info["test_acc"] == result["test_acc"]
    assert info["input_shape"] == [1, 28, 28]
    assert info["macs"] == result["macs"] and info["dense_macs"] == result["dense_macs"]
    code, _, err = run_cli(capsys, "export", str(run), "--onnx", str(tmp_path / "m.onnx"), "--trust-factory")
    assert code == 0 and (tmp_path / "m.onnx").stat().st_size > 0, err
    code, out, err = run_cli(capsys, "bench", "latency", str(run), "--trust-factory", "--batch", "1",
                             "--runs", "1", "--warmup", "0", "--no-cuda", "--json")
    assert code == 0 and json.loads(out)["models"][0]["macs"] == result["macs"], err


def test_a_model_with_fewer_outputs_than_the_data_has_classes_is_refused_before_training(tmp_path):
    train, test = tensors(300, 50)
    with pytest.raises(RlalError, match=r"the model has 5 outputs but the data has 10 classes"):
        rlal.JointPruner(UserNet(num_classes=5), (train, test), epochs=4, out=tmp_path / "run",
                         overrides=TINY).fit()
    assert not (tmp_path / "run").exists()
