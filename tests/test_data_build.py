"""build_data: the three loaders, their sizes, the reward split and the subsets, on tiny Fashion-MNIST."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

import rlal.data.fashion_mnist as fm
from rlal.config import DataConfig
from rlal.data import DATASETS, Data, DatasetSpec, DeviceLoader, build_data, write_idx
from rlal.errors import DataError

N_TRAIN, N_TEST = 60, 20


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    for name in ("RLAL_DATA", "RLAL_FASHION_MNIST_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RLAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path / "system")


@pytest.fixture
def folder(tmp_path) -> Path:
    """Tiny Fashion-MNIST whose image k has the value k in its top-left pixel (to identify it)."""
    def split(n, offset):
        images = np.zeros((n, 28, 28), dtype=np.uint8)
        images[:, 0, 0] = np.arange(n) + offset
        return images, (np.arange(n) % 10).astype(np.uint8)

    (train_x, train_y), (test_x, test_y) = split(N_TRAIN, 0), split(N_TEST, 100)
    d = tmp_path / "fmnist"
    d.mkdir()
    write_idx(d / "train-images-idx3-ubyte.gz", train_x)
    write_idx(d / "train-labels-idx1-ubyte.gz", train_y)
    write_idx(d / "t10k-images-idx3-ubyte.gz", test_x)
    write_idx(d / "t10k-labels-idx1-ubyte.gz", test_y)
    return d


def cfg(folder: Path, **kwargs) -> DataConfig:
    kwargs = {"reward_size": 10, "batch_size": 8, "eval_batch_size": 16, "download": False, **kwargs}
    return DataConfig(dataset="fashion-mnist", data_dir=str(folder), **kwargs)


def ids(loader) -> list[int]:
    """Which images a loader yields, read back from the top-left pixel (normalisation undone)."""
    out = []
    for x, _ in loader:
        out += (x[:, 0, 0, 0] * 0.3530 + 0.2860).mul(255).round().long().tolist()
    return out


def test_specs_are_the_three_datasets():
    assert set(DATASETS) == {"fashion-mnist", "cifar10", "imagefolder"}
    assert DATASETS["fashion-mnist"] == DatasetSpec("fashion-mnist", 10, 1, 28, (0.2860,), (0.3530,))
    assert DATASETS["imagefolder"].input_size == 224 and DATASETS["imagefolder"].num_classes == 1000
    with pytest.raises(dataclasses.FrozenInstanceError):
        DATASETS["cifar10"].num_classes = 3  # type: ignore[misc]


def test_build_data_gives_train_reward_and_test_loaders(folder):
    data = build_data(cfg(folder), torch.device("cpu"), seed=0)
    assert isinstance(data, Data) and isinstance(data.train, DeviceLoader)
    assert data.spec == DATASETS["fashion-mnist"] and data.classes[0] == "T-shirt/top"
    assert data.source == str(folder)
    assert (data.train.num_samples, data.reward.num_samples, data.test.num_samples) == (50, 10, 20)
    assert (len(data.train), len(data.reward), len(data.test)) == (6, 1, 2)  # 50 // 8: last batch dropped
    x, y = next(iter(data.train))
    assert x.shape == (8, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64


def test_reward_split_is_held_out_of_training_and_the_test_set_untouched(folder):
    data = build_data(cfg(folder, augment=False, batch_size=50), torch.device("cpu"), seed=0)
    train, reward, test = ids(data.train), ids(data.reward), ids(data.test)
    assert len(train) == 50 and len(reward) == 10
    assert not set(train) & set(reward) and sorted(train + reward) == list(range(N_TRAIN))
    assert reward != sorted(reward)  # a fixed shuffled order: its first batches sample every class
    again = build_data(cfg(folder, augment=False, batch_size=50), torch.device("cpu"), seed=0)
    assert ids(again.reward) == reward  # and fixed
    assert test == list(range(100, 100 + N_TEST))


def test_same_seed_same_split_and_batches_different_seed_different_split(folder):
    a = build_data(cfg(folder), torch.device("cpu"), seed=1)
    b = build_data(cfg(folder), torch.device("cpu"), seed=1)
    c = build_data(cfg(folder), torch.device("cpu"), seed=2)
    assert ids(a.reward) == ids(b.reward) != ids(c.reward)
    for epoch in (1, 2):
        a.train.set_epoch(epoch)
        b.train.set_epoch(epoch)
        for (xa, ya), (xb, yb) in zip(a.train, b.train, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_train_subset_is_a_seeded_sample_of_the_remaining_training_images(folder):
    data = build_data(cfg(folder, train_subset=16, augment=False), torch.device("cpu"), seed=0)
    full = build_data(cfg(folder, augment=False, batch_size=50), torch.device("cpu"), seed=0)
    assert data.train.num_samples == 16 and len(data.train) == 2
    assert set(ids(data.train)) <= set(ids(full.train))


def test_test_subset_is_the_same_whatever_the_seed(folder):
    a = build_data(cfg(folder, test_subset=7), torch.device("cpu"), seed=0)
    b = build_data(cfg(folder, test_subset=7), torch.device("cpu"), seed=5)
    assert a.test.num_samples == 7 and ids(a.test) == ids(b.test) == sorted(ids(a.test))


def test_reward_size_zero_gives_an_empty_reward_loader(folder):
    data = build_data(cfg(folder, reward_size=0), torch.device("cpu"), seed=0)
    assert len(data.reward) == 0 and data.reward.num_samples == 0 and list(data.reward) == []
    assert data.train.num_samples == N_TRAIN


def test_reward_size_covering_the_training_set_names_the_key(folder):
    with pytest.raises(DataError, match=r"data\.reward_size \(60\)"):
        build_data(cfg(folder, reward_size=60), torch.device("cpu"), seed=0)


def test_channels_last_is_applied_when_asked(folder):
    data = build_data(cfg(folder), torch.device("cpu"), seed=0, channels_last=True)
    x, _ = next(iter(data.test))
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_missing_dataset_fails_before_anything_else(tmp_path):
    with pytest.raises(DataError, match="Fashion-MNIST not found"):
        build_data(cfg(tmp_path / "nowhere"), torch.device("cpu"), seed=0)


def test_a_one_class_training_set_is_warned_about(folder, caplog):
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.full(N_TRAIN, 4, dtype=np.uint8))
    with caplog.at_level("WARNING", logger="rlal"):
        data = build_data(cfg(folder), torch.device("cpu"), seed=0)
    assert data.train.num_samples == N_TRAIN - 10
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "same class (Coat)" in warnings[0] and str(folder) in warnings[0]


def test_a_one_class_training_set_is_a_warning_line_on_the_command_line(folder, capsys):
    from rlal.cli import main

    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(N_TRAIN, dtype=np.uint8))
    code = main(["data", "--dataset", "fashion-mnist", "--data-dir", str(folder), "--reward-size", "5"])
    err = capsys.readouterr().err
    assert code == 0 and err.startswith("warning: ") and err.count("\n") == 1 and "T-shirt/top" in err


def test_two_classes_are_not_warned_about(folder, caplog):
    with caplog.at_level("WARNING", logger="rlal"):
        build_data(cfg(folder), torch.device("cpu"), seed=0)
    assert not caplog.records


def test_a_reward_split_that_does_not_fit_is_dropped_with_a_warning_where_it_is_not_needed(folder, caplog):
    data = build_data(cfg(folder, reward_size=60), torch.device("cpu"), seed=0, need_reward=False)
    assert (data.train.num_samples, data.reward.num_samples) == (N_TRAIN, 0)
    assert "data.reward_size (60)" in caplog.text


def test_an_unset_reward_size_is_sized_from_the_data(folder):
    data = build_data(cfg(folder, reward_size=None), torch.device("cpu"), seed=0)
    assert (data.train.num_samples, data.reward.num_samples) == (48, 12)  # a fifth of 60, under the floor


def test_input_size_is_refused_for_a_dataset_of_fixed_size(folder):
    with pytest.raises(DataError, match=r"data\.input_size \(32\) applies to image folders only"):
        build_data(cfg(folder, input_size=32), torch.device("cpu"), seed=0)


def test_labels_beyond_the_classes_are_refused_when_the_data_is_built():
    from rlal.data import ArrayDataset
    from rlal.data.build import in_memory_data

    images = torch.zeros(6, 1, 8, 8, dtype=torch.uint8)
    train = ArrayDataset(images, torch.tensor([0, 1, 2, 0, 1, 5]), ("a", "b", "c"))
    test = ArrayDataset(images, torch.tensor([0, 1, 2, 0, 1, 2]), ("a", "b", "c"))
    spec = DatasetSpec("tensors", 3, 1, 8, (0.5,), (0.5,))
    with pytest.raises(DataError, match=r"train has the label 5, outside the 3 classes 0\.\.2"):
        in_memory_data(spec, train, test, "mine", DataConfig(reward_size=1), torch.device("cpu"), 0, None)


def test_recorded_classes_that_differ_from_the_data_are_refused(folder):
    with pytest.raises(DataError, match=r"data\.classes"):
        build_data(cfg(folder, classes=["x", "y"]), torch.device("cpu"), seed=0)
