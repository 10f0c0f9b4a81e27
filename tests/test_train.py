"""Dense training end to end on small generated Fashion-MNIST files in the real IDX format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from rlal.checkpoint import load_weights, state_equal
from rlal.cli import main
from rlal.config import load_config
from rlal.data import write_idx
from rlal.models import create_model
from rlal.report.metrics import read_metrics
from rlal.train.dense import fit_dense
from rlal.train.runtime import resolve_runtime


def learnable_images(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Noisy images whose class k is a bright band at rows 2k+3..2k+5: easy, but it must be learned."""
    labels = rng.integers(0, 10, size=n)
    images = rng.integers(0, 60, size=(n, 28, 28))
    for i, k in enumerate(labels):
        images[i, 2 * k + 3 : 2 * k + 6, 4:24] = 230
    return images.astype(np.uint8), labels.astype(np.uint8)


@pytest.fixture(scope="module")
def fmnist_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fashion-mnist")
    rng = np.random.default_rng(0)
    for split, n in (("train", 700), ("t10k", 200)):
        images, labels = learnable_images(n, rng)
        write_idx(root / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{split}-labels-idx1-ubyte.gz", labels)
    return root


def small_config(data_dir: Path, *extra: str):
    return load_config(
        None,
        [
            "model.name=resnet20", "data.dataset=fashion-mnist", f"data.data_dir={data_dir}",
            "data.reward_size=100", "data.batch_size=64", "data.download=false",
            "train.epochs=2", "train.device=cpu", "train.progress=false", "optim.lr=0.05", *extra,
        ],
    )


def test_dense_run_writes_config_metrics_weights_and_result(fmnist_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code = main([
        "train", "--method", "dense", "--model", "resnet20", "--dataset", "fashion-mnist",
        "--data-dir", str(fmnist_dir), "--epochs", "2", "--out", str(out),
        "--set", "data.reward_size=100", "--set", "data.batch_size=50", "--set", "train.progress=false",
    ])
    assert code == 0, capsys.readouterr().err
    assert "test accuracy" in capsys.readouterr().out

    assert load_config(out / "config.yaml").train.epochs == 2
    records = read_metrics(out / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(r["phase"] == "dense" and r["train_images"] == 600 for r in records)
    result = json.loads((out / "result.json").read_text())
    assert result["test_images"] == 200
    assert result["test_acc"] == records[-1]["test_acc"]
    assert result["macs"] > 0 and result["params"] > 0
    run = json.loads((out / "run.json").read_text())
    assert run["seed"] == 0 and run["code_version"]

    spec = json.loads((out / "model.json").read_text())
    model = create_model(spec["model"], num_classes=spec["num_classes"], in_channels=spec["in_channels"],
                         input_size=spec["input_size"])
    load_weights(model, out / "model.safetensors")


def test_training_learns_a_learnable_problem(fmnist_dir, tmp_path):
    # No augmentation: a 2-pixel crop shift would move one class's band onto its neighbour's rows.
    result = fit_dense(small_config(fmnist_dir, "train.epochs=4", "data.augment=false"), tmp_path / "run")
    assert result.test_acc >= 90.0


def test_same_seed_gives_bit_identical_weights_on_cpu(fmnist_dir, tmp_path):
    quick = ("train.epochs=1", "data.train_subset=192")
    a = fit_dense(small_config(fmnist_dir, *quick), tmp_path / "a")
    b = fit_dense(small_config(fmnist_dir, *quick), tmp_path / "b")
    c = fit_dense(small_config(fmnist_dir, *quick, "seed=1"), tmp_path / "c")
    assert state_equal(a.model, b.model)
    assert a.test_acc == b.test_acc
    assert not state_equal(a.model, c.model)


def test_a_run_directory_is_not_overwritten_without_the_flag(fmnist_dir, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--data-dir", str(fmnist_dir), "--epochs", "1", "--out", str(out),
            "--set", "data.reward_size=100", "--set", "data.train_subset=128",
            "--set", "train.progress=false"]
    assert main(args) == 0
    before = (out / "result.json").read_text()
    capsys.readouterr()

    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: run directory") and "--overwrite" in err
    assert (out / "result.json").read_text() == before

    assert main([*args, "--overwrite", "--set", "seed=4"]) == 0
    assert len(read_metrics(out / "metrics.jsonl")) == 1  # the old run's lines are gone, not mixed in
    assert yaml.safe_load((out / "config.yaml").read_text())["seed"] == 4


def test_auto_means_fp32_channels_last_on_the_cpu_and_off_means_contiguous():
    auto = resolve_runtime(load_config(None, ["train.device=cpu"]).train)
    off = resolve_runtime(load_config(None, ["train.device=cpu", "train.channels_last=off"]).train)
    assert (auto.amp_dtype, auto.channels_last, off.channels_last) == (None, True, False)
    assert auto.describe() == "cpu fp32 channels-last" and off.describe() == "cpu fp32 contiguous"


def test_bf16_autocast_and_channels_last_train_and_evaluate(fmnist_dir, tmp_path):
    # The GPU settings (bf16 autocast, channels-last) also run on the CPU, so the path is tested here.
    config = small_config(
        fmnist_dir, "train.epochs=1", "data.train_subset=128", "train.amp=bf16", "train.channels_last=on"
    )
    result = fit_dense(config, tmp_path / "run")
    record = read_metrics(tmp_path / "run" / "metrics.jsonl")[0]
    assert record["train_loss"] > 0 and 0 <= result.test_acc <= 100
    assert json.loads((tmp_path / "run" / "run.json").read_text())["device"] == "cpu bf16 channels-last"
    assert all(p.dtype == torch.float32 for p in result.model.parameters())  # autocast keeps fp32 weights
