"""The command line: one-line errors with exit status 2, JSON outputs, and a real end-to-end smoke run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import rlal.train.joint
from rlal.cli import main


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_models_lists_the_zoo_as_json(capsys):
    code, out, _ = run_cli(capsys, "models", "--json")
    assert code == 0
    names = {m["name"] for m in json.loads(out)}
    assert {"resnet20", "resnet56", "resnet110", "resnet50", "mobilenetv2", "vgg16-bn"} <= names


def test_info_reports_params_and_macs_of_resnet56_on_cifar10(capsys):
    code, out, _ = run_cli(capsys, "info", "--model", "resnet56", "--dataset", "cifar10", "--json")
    assert code == 0
    info = json.loads(out)
    assert info["input_shape"] == [3, 32, 32]
    assert info["params"] == pytest.approx(0.85e6, rel=0.02)
    assert info["macs"] == pytest.approx(125e6, rel=0.02)


def test_info_lists_prunable_layers_and_skipped_groups(capsys):
    code, out, _ = run_cli(capsys, "info", "--model", "resnet56", "--dataset", "cifar10", "--json")
    assert code == 0
    info = json.loads(out)
    layers = info["prunable_layers"]
    assert len(layers) == 27  # one per basic block: the residual-coupled groups stay whole by default
    assert layers[0] == {"name": "layer1.0.conv1", "channels": 16, "macs": layers[0]["macs"]}
    assert all(layer["macs"] > 0 for layer in layers)
    assert info["skipped"] and all(item["reason"] for item in info["skipped"])

    code, out, _ = run_cli(capsys, "info", "--model", "resnet56", "--dataset", "cifar10", "--json",
                           "--policy", "all")
    assert len(json.loads(out)["prunable_layers"]) == 30


def test_info_on_fashion_mnist_uses_one_channel_28_pixels(capsys):
    code, out, _ = run_cli(capsys, "info", "--model", "resnet20", "--dataset", "fashion-mnist", "--json")
    assert code == 0
    assert json.loads(out)["input_shape"] == [1, 28, 28]


def test_info_on_a_user_factory_lists_its_skipped_layers_and_their_share_of_the_macs(
    capsys, tmp_path, monkeypatch
):
    (tmp_path / "mynets.py").write_text(
        "from torch import nn\n"
        "class Split(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.stem = nn.Conv2d(3, 16, 3, padding=1)\n"
        "        self.mid = nn.Conv2d(16, 16, 3, padding=1)\n"
        "        self.head = nn.Linear(8, 4)\n"
        "    def forward(self, x):\n"
        "        a, b = self.mid(self.stem(x).relu()).relu().split(8, 1)\n"
        "        return self.head((a + b).mean((2, 3)))\n"
        "def build():\n"
        "    return Split()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out, _ = run_cli(capsys, "info", "--model", "mynets:build", "--input-shape", "3,16,16", "--json")
    assert code == 0
    info = json.loads(out)
    assert info["input_shape"] == [3, 16, 16]
    assert [layer["name"] for layer in info["prunable_layers"]] == ["stem"]
    assert [item["module"] for item in info["skipped"]] == ["mid", "head"]  # head: the classifier
    assert 0 < info["skipped_macs_share"] < 1
    code, out, _ = run_cli(capsys, "info", "--model", "mynets:build", "--input-shape", "3,16,16")
    assert code == 0 and "skipped mid" in out and "% of the MACs" in out


@pytest.mark.parametrize("argv", [
    ["--model", "resnet20"],
    ["--model", "resnet20", "--dataset", "cifar10", "--input-shape", "3,32,32"],
    ["--model", "resnet20", "--input-shape", "3,32"],
])
def test_info_needs_exactly_one_valid_input_description(capsys, argv):
    code, _, err = run_cli(capsys, "info", *argv)
    assert_one_line_error(code, err)


def test_info_with_an_absurd_number_of_classes_is_refused_before_building(capsys, monkeypatch):
    def build(*args, **kwargs):
        raise AssertionError("the model was built")

    monkeypatch.setattr("rlal.models.create_model", build)
    code, _, err = run_cli(capsys, "info", "--model", "resnet20", "--dataset", "cifar10",
                           "--num-classes", str(10**12))
    assert_one_line_error(code, err, "num_classes=1,000,000,000,000 is larger")


def test_a_context_table_smaller_than_the_search_is_refused_before_data_is_read(
    capsys, tmp_path, monkeypatch
):
    import rlal.train.dense

    def read(*args, **kwargs):
        raise AssertionError("the data was read")

    monkeypatch.setattr(rlal.train.dense, "build_data", read)
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--config", "resnet20-fmnist", "--out", str(out),
                           "--set", "agent.context.max_epochs=1")
    assert_one_line_error(code, err, "agent.context.max_epochs (1)", "search.search_epochs")
    assert not out.exists()


def test_unknown_dataset_lists_the_valid_ones(capsys):
    code, _, err = run_cli(capsys, "info", "--model", "resnet20", "--dataset", "mnist")
    assert_one_line_error(code, err, "unknown dataset 'mnist'", "cifar10", "fashion-mnist", "imagefolder")


def test_unknown_model_lists_the_valid_ones(capsys):
    code, _, err = run_cli(capsys, "info", "--model", "resnet9", "--dataset", "cifar10")
    assert_one_line_error(code, err, "unknown model 'resnet9'", "resnet56")


def test_missing_required_flag_is_a_one_line_error(capsys):
    code, _, err = run_cli(capsys, "train", "--model", "resnet20")
    assert_one_line_error(code, err, "--out")


def test_bad_config_key_on_train_is_a_one_line_error(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--set", "train.epochs=x", "--out", str(tmp_path / "run"))
    assert_one_line_error(code, err, "train.epochs must be an integer")
    assert not (tmp_path / "run").exists()


def test_unknown_shipped_config_lists_the_shipped_ones(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--config", "nosuch", "--out", str(tmp_path / "run"))
    assert_one_line_error(code, err, "'nosuch'", "demo")


def test_missing_data_names_the_searched_paths_and_leaves_no_run_dir(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("RLAL_DATA", raising=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "run"
    code, _, err = run_cli(
        capsys, "train", "--dataset", "cifar10", "--data-dir", str(empty), "--out", str(out)
    )
    assert_one_line_error(code, err, str(empty))
    assert not out.exists()


def test_real_console_command_exits_2_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "rlal", "info", "--model", "nosuch", "--dataset", "cifar10"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: unknown model 'nosuch'")
    assert "Traceback" not in proc.stderr


# Bad data through the real command: one `error:` line naming the problem, exit status 2.

def _fmnist_files(folder, n_train=20, n_test=10):
    import numpy as np

    from rlal.data import write_idx

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, n, dtype=np.uint8))
    return folder


def test_data_command_reports_what_it_found(capsys, tmp_path):
    folder = _fmnist_files(tmp_path / "fm")
    code, out, _ = run_cli(capsys, "data", "--dataset", "fashion-mnist", "--data-dir", str(folder),
                           "--reward-size", "5", "--json")
    assert code == 0
    info = json.loads(out)
    assert (info["train"], info["reward"], info["test"]) == (15, 5, 10)
    assert info["source"].startswith(str(folder))
    assert info["input_shape"] == [1, 28, 28]


def test_data_command_sizes_the_reward_split_from_a_small_dataset(capsys, tmp_path):
    folder = _fmnist_files(tmp_path / "fm")  # 20 training images: the former fixed 5,000 refused them
    code, out, _ = run_cli(capsys, "data", "--dataset", "fashion-mnist", "--data-dir", str(folder), "--json")
    assert code == 0
    info = json.loads(out)
    assert (info["train"], info["reward"]) == (16, 4)  # a fifth of them, under the floor of 500


def test_data_command_does_not_require_a_reward_split_that_does_not_fit(capsys, tmp_path):
    folder = _fmnist_files(tmp_path / "fm")
    code, out, err = run_cli(capsys, "data", "--dataset", "fashion-mnist", "--data-dir", str(folder),
                             "--reward-size", "50", "--json")
    assert code == 0 and (json.loads(out)["train"], json.loads(out)["reward"]) == (20, 0)
    assert err.count("\n") == 1 and err.startswith("warning: data.reward_size (50)")


def test_data_command_on_a_corrupt_idx_file_names_the_file(capsys, tmp_path):
    import gzip

    folder = _fmnist_files(tmp_path / "fm")
    bad = folder / "train-images-idx3-ubyte.gz"
    bad.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 20))  # header cut short
    code, _, err = run_cli(capsys, "data", "--dataset", "fashion-mnist", "--data-dir", str(folder))
    assert_one_line_error(code, err, "train-images-idx3-ubyte.gz")


def test_data_command_on_a_wrong_magic_number_names_the_file(capsys, tmp_path):
    import gzip

    folder = _fmnist_files(tmp_path / "fm")
    bad = folder / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(b"\x12\x34\x08\x01" + (10).to_bytes(4, "big") + bytes(10)))
    code, _, err = run_cli(capsys, "data", "--dataset", "fashion-mnist", "--data-dir", str(folder))
    assert_one_line_error(code, err, "t10k-labels-idx1-ubyte.gz", "magic")


def test_data_command_on_missing_fashion_mnist_lists_the_searched_paths(capsys, tmp_path, monkeypatch):
    import rlal.data.fashion_mnist as fm

    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path / "no-system-copy")
    monkeypatch.delenv("RLAL_DATA", raising=False)
    monkeypatch.setenv("RLAL_CACHE", str(tmp_path / "cache"))
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    code, _, err = run_cli(
        capsys, "data", "--dataset", "fashion-mnist", "--data-dir", str(empty), "--no-download"
    )
    assert_one_line_error(code, err, str(empty), "never replaced by another copy")
    code, _, err = run_cli(capsys, "data", "--dataset", "fashion-mnist", "--no-download")
    assert_one_line_error(code, err, str(tmp_path / "no-system-copy"), "dataset-fashion-mnist")


def test_data_command_on_an_undecodable_image_names_the_file(capsys, tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            folder = tmp_path / "c10" / split / cls
            folder.mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (32, 32), (i * 40, 0, 0)).save(folder / f"{i}.png")
    broken = tmp_path / "c10" / "train" / "dog" / "1.png"
    broken.write_bytes(b"not an image at all")
    code, _, err = run_cli(capsys, "data", "--dataset", "cifar10", "--data-dir", str(tmp_path / "c10"),
                           "--cache-dir", str(tmp_path / "cache"))
    assert_one_line_error(code, err, "1.png")


def test_data_command_on_mismatched_train_and_test_classes_names_the_folder(capsys, tmp_path):
    from PIL import Image

    for split, classes in (("train", ("cat", "dog")), ("test", ("cat", "emu"))):
        for cls in classes:
            folder = tmp_path / "c10" / split / cls
            folder.mkdir(parents=True)
            Image.new("RGB", (32, 32)).save(folder / "0.png")
    code, _, err = run_cli(capsys, "data", "--dataset", "cifar10", "--data-dir", str(tmp_path / "c10"),
                           "--cache-dir", str(tmp_path / "cache"))
    assert_one_line_error(code, err, "c10")


# `rlal demo` refuses to replace an earlier run like `rlal train`; `make demo` asks it to.

def _earlier_run(out):
    out.mkdir(parents=True)
    (out / "metrics.jsonl").write_text('{"epoch": 1}\n')
    (out / "result.json").write_text('{"method": "rlal"}\n')
    return out


def test_demo_refuses_to_replace_an_earlier_run_without_overwrite(capsys, tmp_path):
    out = _earlier_run(tmp_path / "demo")
    code, _, err = run_cli(capsys, "demo", "--out", str(out), "--data-dir", str(tmp_path / "nowhere"),
                           "--set", "data.download=false")
    assert_one_line_error(code, err, f"run directory {out} already holds a run", "--overwrite")
    assert (out / "result.json").read_text() == '{"method": "rlal"}\n'


def test_demo_with_overwrite_replaces_the_earlier_run(capsys, tmp_path, monkeypatch):

    out = _earlier_run(tmp_path / "demo")
    calls = []

    def fake_fit_joint(config, run_dir, *, overwrite=False, resume=False):
        calls.append(overwrite)
        return SimpleNamespace(dense_macs=2e6, macs=1e6, dense_params=2e5, params=1e5, test_acc=50.0,
                               seconds=1.0, run_dir=run_dir)

    monkeypatch.setattr(rlal.train.joint, "fit_joint", fake_fit_joint)
    code, out_text, err = run_cli(capsys, "demo", "--out", str(out), "--overwrite")
    assert code == 0, err
    assert calls == [True] and "pruned model in" in out_text


def test_make_demo_passes_overwrite_so_it_runs_twice_in_a_row():
    makefile = (Path(__file__).resolve().parent.parent / "Makefile").read_text()
    recipe = makefile.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    assert "rlal demo --overwrite" in recipe
