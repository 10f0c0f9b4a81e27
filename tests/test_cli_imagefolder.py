"""A small PNG image folder, not a shipped dataset, through the whole command line: ``rlal data``, ``rlal
train`` (dense and the method), ``rlal eval`` and ``rlal export``, at the images' own 16x16 size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_cli import run_cli

pytestmark = pytest.mark.usefixtures("one_thread")

SIDE, CLASSES, PER_CLASS = 16, ("circle", "square", "stripes"), 16
TINY = [
    "data.batch_size=8", "data.eval_batch_size=16", "data.workers=0", "train.device=cpu",
    "train.progress=false", "model.name=resnet20", "optim.lr=0.05", "search.warmup_epochs=0",
    "search.search_epochs=1", "search.align_epochs=0", "search.episodes_per_epoch=2", "search.final_window=1",
    "search.final_bn_sets=1", "env.reward_batches=1", "agent.warmup_episodes=1", "agent.updates_per_epoch=2",
    "agent.batch_size=4", "agent.context.updates_per_epoch=2",
]


def shape_image(label: int, rng: np.random.Generator) -> np.ndarray:
    """A noisy ``SIDE`` x ``SIDE`` RGB picture whose class shows in its pixels."""
    yy, xx = np.mgrid[:SIDE, :SIDE]
    masks = [(yy - 8) ** 2 + (xx - 8) ** 2 < 25, (abs(yy - 8) < 5) & (abs(xx - 8) < 5), xx % 4 < 2]
    image = rng.integers(0, 60, (SIDE, SIDE, 3))
    image[masks[label]] += 160
    return image.astype(np.uint8)


@pytest.fixture(scope="module")
def pngs(tmp_path_factory) -> Path:
    """``pets/train/<class>/*.png`` and ``pets/valid/<class>/*.png`` (``valid``: not the ImageNet name)."""
    root = tmp_path_factory.mktemp("data") / "pets"
    rng = np.random.default_rng(0)
    for split, n in (("train", PER_CLASS), ("valid", 4)):
        for label, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(shape_image(label, rng)).save(root / split / name / f"{i}.png")
    return root


def test_data_reads_a_small_png_folder_at_its_own_size(capsys, pngs):
    code, out, err = run_cli(capsys, "data", "--dataset", "imagefolder", "--data-dir", str(pngs), "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["input_shape"] == [3, SIDE, SIDE] and info["classes"] == list(CLASSES)
    assert (info["train"], info["reward"], info["test"]) == (39, 9, 12)  # the reward split sized from 48
    assert "pad-crop-flip" in info["source"]


def test_a_png_folder_trains_dense_and_pruned_then_evaluates_and_exports(capsys, pngs, tmp_path):
    common = ["--dataset", "imagefolder", "--data-dir", str(pngs)]
    for item in TINY:
        common += ["--set", item]
    code, out, err = run_cli(capsys, "train", "--method", "dense", "--epochs", "1", "--out",
                             str(tmp_path / "dense"), *common)
    assert code == 0, err
    assert json.loads((tmp_path / "dense" / "model.json").read_text())["input_size"] == SIDE

    run = tmp_path / "rlal"
    code, out, err = run_cli(capsys, "train", "--method", "rlal", "--epochs", "2", "--out", str(run), *common)
    assert code == 0, err
    result = json.loads((run / "result.json").read_text())
    assert result["macs"] <= 0.5 * result["dense_macs"] and result["dataset"] == "imagefolder"
    assert (run / "report.md").read_text().startswith("# Run report: resnet20 on pets (image folder)")

    code, out, err = run_cli(capsys, "eval", str(run), "--json", "--device", "cpu", "--runs", "1",
                             "--warmup", "0")
    assert code == 0, err
    info = json.loads(out)
    assert info["input_shape"] == [3, SIDE, SIDE] and info["test_images"] == 12
    assert info["test_acc"] == pytest.approx(result["test_acc"])  # the run's own test pass, read again

    code, out, err = run_cli(capsys, "export", str(run), "--onnx", str(tmp_path / "pets.onnx"))
    assert code == 0, err
    assert f"[batch, 3, {SIDE}, {SIDE}]" in out and (tmp_path / "pets.onnx").stat().st_size > 0


def test_a_user_model_named_by_its_factory_trains_prunes_and_loads_with_trust(capsys, pngs, tmp_path,
                                                                                monkeypatch):
    (tmp_path / "petnets.py").write_text(
        "from torch import nn\n"
        "def build(num_classes, in_channels=3):\n"
        "    def block(i, o):\n"
        "        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU())\n"
        "    return nn.Sequential(block(in_channels, 16), block(16, 32), nn.AdaptiveAvgPool2d(1),\n"
        "                         nn.Flatten(), nn.Linear(32, num_classes))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    common = ["--dataset", "imagefolder", "--data-dir", str(pngs), "--model", "petnets:build"]
    for item in TINY:
        if not item.startswith("model.name="):
            common += ["--set", item]
    run = tmp_path / "rlal"
    code, _, err = run_cli(capsys, "train", "--method", "rlal", "--epochs", "2", "--out", str(run), *common)
    assert code == 0, err
    spec = json.loads((run / "pruned" / "spec.json").read_text())
    assert spec["arch"] == {"factory": "petnets:build", "kwargs": {"num_classes": 3, "in_channels": 3}}
    code, _, err = run_cli(capsys, "eval", str(run), "--json", "--device", "cpu", "--runs", "1",
                           "--warmup", "0")
    assert code == 2 and "--trust-factory" in err  # loading it runs the factory: an opt-in
    code, out, err = run_cli(capsys, "eval", str(run), "--json", "--device", "cpu", "--runs", "1",
                             "--warmup", "0", "--trust-factory")
    assert code == 0, err
    recorded = json.loads((run / "result.json").read_text())["test_acc"]
    assert json.loads(out)["test_acc"] == pytest.approx(recorded)
