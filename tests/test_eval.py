"""`rlal eval` and `rlal bench latency` on saved pruned models, with tiny generated Fashion-MNIST files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_cli import assert_one_line_error, run_cli
from test_structure_nets import realistic

from rlal.config import load_config, save_config
from rlal.data import build_data, write_idx
from rlal.models import count_macs_params, create_model
from rlal.structure import ArchSpec, Plan, cut, find_layers, load_pruned, save_pruned
from rlal.train.epoch import evaluate
from rlal.train.runtime import Runtime

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (1, 28, 28)
QUICK = ["--runs", "2", "--warmup", "1"]
EVAL_KEYS = {
    "path", "model", "dataset", "data_source", "input_shape", "test_acc", "test_loss", "test_images",
    "device", "test_recorded", "macs", "params", "dense_macs", "dense_params", "macs_ratio", "latency_cpu",
}


@pytest.fixture(scope="module")
def fmnist_dir(tmp_path_factory) -> Path:
    """Fashion-MNIST in its real IDX gzip format: 120 training and 90 test images of random pixels."""
    root = tmp_path_factory.mktemp("fashion-mnist")
    rng = np.random.default_rng(0)
    for split, n in (("train", 120), ("t10k", 90)):
        write_idx(root / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(root / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, n, dtype=np.uint8))
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, fmnist_dir: Path) -> Path:
    """A run directory as a joint run leaves it: config.yaml and pruned/ (a ResNet-20 cut to about half)."""
    run = tmp_path_factory.mktemp("run")
    config = load_config(None, ["data.dataset=fashion-mnist", f"data.data_dir={fmnist_dir}",
                                "data.download=false", "data.reward_size=20", "data.eval_batch_size=32"])
    save_config(config, run / "config.yaml")
    dense = realistic(create_model("resnet20", num_classes=10, in_channels=1, input_size=28), SHAPE)
    structure = find_layers(dense, SHAPE)
    plan = Plan.from_keep_ratios(structure, 0.5)
    arch = ArchSpec.zoo("resnet20", num_classes=10, in_channels=1, input_size=28)
    save_pruned(run / "pruned", cut(structure, plan), arch=arch, plan=plan, input_shape=SHAPE)
    return run


def test_eval_json_has_the_right_keys_and_the_accuracy_of_evaluate(run_dir, capsys):
    code, out, err = run_cli(capsys, "eval", str(run_dir), "--json", "--device", "cpu", *QUICK)
    assert code == 0, err
    info = json.loads(out)
    assert set(info) == EVAL_KEYS
    assert info["dataset"] == "fashion-mnist" and info["test_images"] == 90 and info["device"] == "cpu"

    model = load_pruned(run_dir / "pruned")
    data = build_data(load_config(run_dir / "config.yaml").data, torch.device("cpu"), seed=0)
    expected = evaluate(model, data.test, Runtime(torch.device("cpu"), None, False))
    assert info["test_acc"] == expected.acc
    assert (info["macs"], info["params"]) == count_macs_params(model, SHAPE)
    assert info["macs_ratio"] == pytest.approx(info["macs"] / info["dense_macs"]) and info["macs_ratio"] < 0.7
    assert [f["batch"] for f in info["latency_cpu"]] == [1, 64]
    assert all(f["median_ms"] > 0 and f["runs"] == 2 for f in info["latency_cpu"])


def test_eval_of_the_pruned_directory_itself_reads_the_run_config_next_to_it(run_dir, capsys):
    code, out, _ = run_cli(capsys, "eval", str(run_dir / "pruned"), *QUICK)
    assert code == 0
    assert "fashion-mnist" in out and "test accuracy" in out and "CPU latency" in out


def test_eval_without_a_run_config_asks_for_the_dataset(run_dir, fmnist_dir, tmp_path, capsys):
    lone = tmp_path / "lone"
    lone.mkdir()
    for name in ("spec.json", "weights.safetensors"):
        (lone / name).write_bytes((run_dir / "pruned" / name).read_bytes())
    code, _, err = run_cli(capsys, "eval", str(lone), *QUICK)
    assert_one_line_error(code, err, str(lone), "pass --dataset")
    code, out, err = run_cli(capsys, "eval", str(lone), "--dataset", "fashion-mnist", "--data-dir",
                             str(fmnist_dir), "--json", *QUICK)
    assert code == 0, err
    assert json.loads(out)["test_images"] == 90


def test_eval_on_a_dataset_of_another_input_shape_is_an_error(run_dir, capsys):
    code, _, err = run_cli(capsys, "eval", str(run_dir), "--dataset", "cifar10", *QUICK)
    assert_one_line_error(code, err, "[1, 28, 28]", "cifar10", "[3, 32, 32]")


def _corrupt_spec(run: Path) -> None:
    (run / "pruned" / "spec.json").write_text("{not json")


def _corrupt_weights(run: Path) -> None:
    (run / "pruned" / "weights.safetensors").write_bytes(b"\x00" * 16)


def _dense_run(run: Path) -> None:
    (run / "pruned" / "spec.json").unlink()
    (run / "model.safetensors").write_bytes(b"")


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (None, "no such file or directory"),
        (_corrupt_spec, "not a readable JSON spec"),
        (_corrupt_weights, "not a readable safetensors file"),
        (_dense_run, "a dense run"),
    ],
)
def test_eval_of_a_bad_path_is_a_one_line_error(run_dir, tmp_path, damage, fragment, capsys):
    path = tmp_path / "missing"
    if damage is not None:
        path = tmp_path / "run"
        (path / "pruned").mkdir(parents=True)
        for name in ("config.yaml", "pruned/spec.json", "pruned/weights.safetensors"):
            (path / name).write_bytes((run_dir / name).read_bytes())
        damage(path)
    code, _, err = run_cli(capsys, "eval", str(path), *QUICK)
    assert_one_line_error(code, err, fragment)


def test_eval_of_a_file_or_an_empty_directory_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    code, _, err = run_cli(capsys, "eval", str(tmp_path / "file"))
    assert_one_line_error(code, err, "not a directory")
    code, _, err = run_cli(capsys, "eval", str(tmp_path))
    assert_one_line_error(code, err, "neither a pruned model")


def test_bench_latency_compares_dense_and_pruned_against_the_macs_ratio(run_dir, capsys):
    args = ["bench", "latency", str(run_dir), "--batch", "1,2", "--json", *QUICK]
    if _has_onnxruntime():
        args.append("--onnx")
    code, out, err = run_cli(capsys, *args, "--no-cuda")
    assert code == 0, err
    report = json.loads(out)
    assert report["threads"] == 1 and report["runs"] == 2
    (model,) = report["models"]
    assert model["ideal_speedup"] == pytest.approx(model["dense_macs"] / model["macs"])
    backends = ["torch-cpu", "onnxruntime-cpu"] if _has_onnxruntime() else ["torch-cpu"]
    expected = [(backend, batch) for backend in backends for batch in (1, 2)]
    assert [(r["backend"], r["batch"]) for r in model["latency"]] == expected
    for row in model["latency"]:
        assert row["dense"]["median_ms"] > 0 and row["pruned"]["median_ms"] > 0
        assert row["of_ideal"] == pytest.approx(row["speedup"] / model["ideal_speedup"])


def test_bench_latency_prints_a_table(run_dir, capsys):
    code, out, _ = run_cli(capsys, "bench", "latency", str(run_dir / "pruned"), "--batch", "1", "--no-cuda",
                           *QUICK)
    assert code == 0
    assert "ideal speed-up" in out and "torch-cpu" in out and "of ideal" in out


@pytest.mark.parametrize("batch", ["1,x", "0", ""])
def test_bench_latency_with_bad_batch_sizes_is_a_one_line_error(run_dir, batch, capsys):
    code, _, err = run_cli(capsys, "bench", "latency", str(run_dir), "--batch", batch)
    assert_one_line_error(code, err, "--batch")


def test_bench_without_a_benchmark_prints_its_help(capsys):
    code, out, _ = run_cli(capsys, "bench")
    assert code == 2 and "latency" in out


def _has_onnxruntime() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


# A spec naming a factory: never imported without --trust-factory, and never from the working directory.


def resnet20_factory(**kwargs) -> torch.nn.Module:
    """A user factory, as a legitimate spec would name it (``test_eval:resnet20_factory``)."""
    return create_model("resnet20", **kwargs)


def _with_factory(run_dir: Path, tmp_path: Path, factory: str, **kwargs) -> Path:
    """A copy of the run directory whose pruned model's spec names ``factory``."""
    copy = Path(shutil.copytree(run_dir, tmp_path / "run"))
    spec_path = copy / "pruned" / "spec.json"
    spec = json.loads(spec_path.read_text())
    spec["arch"] = {"factory": factory, "kwargs": kwargs}
    spec_path.write_text(json.dumps(spec))
    return copy


def test_eval_export_and_bench_refuse_an_untrusted_factory_and_run_nothing(run_dir, tmp_path, capsys):
    marker = tmp_path / "pwned"
    run = _with_factory(run_dir, tmp_path, "os:system", command=f"touch {marker}")
    code, _, err = run_cli(capsys, "eval", str(run), *QUICK)
    assert_one_line_error(code, err, "'os:system'", "--trust-factory")
    code, _, err = run_cli(capsys, "export", str(run), "--onnx", str(tmp_path / "out.onnx"))
    assert_one_line_error(code, err, "'os:system'", "--trust-factory")
    code, _, err = run_cli(capsys, "bench", "latency", str(run), "--runs", "1", "--warmup", "0", "--no-cuda")
    assert_one_line_error(code, err, "'os:system'", "--trust-factory")
    assert not marker.exists() and not (tmp_path / "out.onnx").exists()


def test_eval_with_trust_factory_loads_a_user_factory(run_dir, tmp_path, capsys):
    run = _with_factory(run_dir, tmp_path, "test_eval:resnet20_factory", num_classes=10, in_channels=1,
                        input_size=28)
    code, out, err = run_cli(capsys, "eval", str(run), "--json", "--device", "cpu", "--trust-factory", *QUICK)
    assert code == 0, err
    info = json.loads(out)
    assert info["model"] == "test_eval:resnet20_factory" and info["test_images"] == 90
    assert info["macs"] == count_macs_params(load_pruned(run_dir / "pruned"), SHAPE)[0]


def test_python_m_rlal_never_imports_a_factory_module_from_the_working_directory(run_dir, tmp_path):
    run = _with_factory(run_dir, tmp_path, "cwd_factory_mod:build")
    work = tmp_path / "work"
    work.mkdir()
    marker = tmp_path / "imported"
    (work / "cwd_factory_mod.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    proc = subprocess.run(
        [sys.executable, "-m", "rlal", "eval", str(run), "--trust-factory", "--device", "cpu", *QUICK],
        cwd=work, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    assert "cannot import factory cwd_factory_mod:build" in proc.stderr
    assert not marker.exists()
