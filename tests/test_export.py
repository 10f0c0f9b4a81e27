"""ONNX export of pruned models (ONNX Runtime gives the PyTorch outputs) and latency measurement."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from test_structure_nets import realistic
from torch import nn

from rlal.cli import main
from rlal.errors import RlalError
from rlal.export import compare_latency, export_onnx, measure_latency, onnx_runner
from rlal.models import create_model
from rlal.structure import ArchSpec, Plan, cut, find_layers, save_pruned

pytestmark = pytest.mark.usefixtures("one_thread")

CASES = {  # a ResNet on the Fashion-MNIST shape, a MobileNetV2 (depthwise convs, ReLU6) on CIFAR's
    "resnet20": (1, 28, 28),
    "mobilenetv2-cifar": (3, 32, 32),
}


def pruned_pair(name: str, shape: tuple[int, int, int], seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """(dense, pruned) with realistic BN statistics, cut to random keep ratios (odd widths included)."""
    dense = realistic(create_model(name, num_classes=10, in_channels=shape[0], input_size=shape[1]), shape)
    structure = find_layers(dense, shape)
    ratios = np.random.default_rng(seed).uniform(0.2, 0.9, len(structure)).tolist()
    return dense, cut(structure, Plan.from_keep_ratios(structure, ratios)).eval()


def torch_logits(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(x).numpy()


@pytest.mark.parametrize("name", list(CASES))
def test_onnx_runtime_outputs_equal_torch_outputs_of_a_pruned_model(name: str, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    shape = CASES[name]
    _, small = pruned_pair(name, shape)
    path = export_onnx(small, shape, tmp_path / f"{name}.onnx")
    run = onnx_runner(path)
    for batch in (1, 5):  # the batch axis is dynamic: not the export's example batch of 2
        x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(batch))
        expected = torch_logits(small, x)
        assert np.abs(expected).max() > 0.1  # realistic activations, not a vacuous comparison of zeros
        assert np.abs(run(x) - expected).max() <= 1e-4


def test_opset_18_uses_the_dynamo_exporter_and_still_matches_torch(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    shape = CASES["resnet20"]
    _, small = pruned_pair("resnet20", shape)
    path = export_onnx(small, shape, tmp_path / "r20.onnx", opset=18)
    assert [o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx")] == [18]
    x = torch.randn(3, *shape)
    assert np.abs(onnx_runner(path)(x) - torch_logits(small, x)).max() <= 1e-4


def test_export_records_the_opset_leaves_no_temporary_file_and_keeps_the_model_mode(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    shape = CASES["resnet20"]
    _, small = pruned_pair("resnet20", shape)
    small.train()
    path = export_onnx(small, shape, tmp_path / "out" / "r20.onnx", opset=17)
    assert small.training
    proto = onnx.load(str(path))
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert [i.name for i in proto.graph.input] == ["input"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert os.listdir(tmp_path / "out") == ["r20.onnx"]
    assert (path.stat().st_mode & 0o044) == (0o644 & ~_umask() & 0o044)  # readable like any other file


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_dynamo_exporter_below_opset_18_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    _, small = pruned_pair("resnet20", CASES["resnet20"])
    with pytest.raises(RlalError, match="opset >= 18"):
        export_onnx(small, CASES["resnet20"], tmp_path / "x.onnx", opset=17, exporter="dynamo")
    assert not (tmp_path / "x.onnx").exists()


def test_latency_of_a_model_has_positive_ordered_figures() -> None:
    _, small = pruned_pair("resnet20", CASES["resnet20"])
    result = measure_latency(small, CASES["resnet20"], 4, device="cpu", warmup=1, runs=5)
    assert result["batch"] == 4 and result["runs"] == 5 and result["threads"] == 1
    assert 0 < result["p10_ms"] <= result["median_ms"] <= result["p90_ms"]
    assert result["images_per_s"] == pytest.approx(4 / result["median_ms"] * 1e3)


def test_latency_of_a_plain_function_and_of_an_onnx_session(tmp_path: Path) -> None:
    calls = []
    result = measure_latency(lambda x: calls.append(x.shape), (1, 2, 2), 3, warmup=2, runs=4)
    assert len(calls) == 6 and calls[0] == (3, 1, 2, 2) and result["median_ms"] > 0
    pytest.importorskip("onnxruntime")
    _, small = pruned_pair("resnet20", CASES["resnet20"])
    run = onnx_runner(export_onnx(small, CASES["resnet20"], tmp_path / "r20.onnx"))
    assert measure_latency(run, CASES["resnet20"], 2, warmup=1, runs=3)["median_ms"] > 0


def test_bad_latency_arguments_are_errors() -> None:
    with pytest.raises(RlalError, match="runs >= 1"):
        measure_latency(lambda x: x, (1, 2, 2), 1, runs=0)


def test_compare_latency_times_dense_and_pruned_on_each_backend() -> None:
    pytest.importorskip("onnxruntime")
    dense, small = pruned_pair("resnet20", CASES["resnet20"])
    rows = compare_latency(dense, small, CASES["resnet20"], batches=(1, 2),
                           backends=["torch-cpu", "onnxruntime-cpu"], warmup=1, runs=3)
    assert [(r["backend"], r["batch"]) for r in rows] == [
        ("torch-cpu", 1), ("torch-cpu", 2), ("onnxruntime-cpu", 1), ("onnxruntime-cpu", 2)]
    for row in rows:
        assert row["dense"]["median_ms"] > 0 and row["pruned"]["median_ms"] > 0
        assert row["speedup"] == pytest.approx(row["dense"]["median_ms"] / row["pruned"]["median_ms"])


def test_export_command_writes_an_onnx_file_of_a_saved_pruned_model(tmp_path: Path, capsys) -> None:
    pytest.importorskip("onnxruntime")
    shape = CASES["resnet20"]
    dense = realistic(create_model("resnet20", in_channels=1, input_size=28), shape)
    structure = find_layers(dense, shape)
    plan = Plan.from_keep_ratios(structure, 0.5)
    small = cut(structure, plan)
    arch = ArchSpec.zoo("resnet20", num_classes=10, in_channels=1, input_size=28)
    save_pruned(tmp_path / "run" / "pruned", small, arch=arch, plan=plan, input_shape=shape)
    out = tmp_path / "r20.onnx"
    assert main(["export", str(tmp_path / "run"), "--onnx", str(out)]) == 0
    assert "opset 17" in capsys.readouterr().out
    x = torch.randn(2, *shape)
    assert np.abs(onnx_runner(out)(x) - torch_logits(small.eval(), x)).max() <= 1e-4


def test_export_command_with_a_bad_path_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    code = main(["export", str(tmp_path / "nothing"), "--onnx", str(tmp_path / "x.onnx")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert "no such file or directory" in err


def test_models_compared_together_are_timed_in_alternating_turns() -> None:
    from rlal.export import INTERLEAVE_BLOCK, _measure_interleaved

    calls: list[str] = []
    fns = {name: (lambda x, name=name: calls.append(name)) for name in ("dense", "pruned")}
    figures = _measure_interleaved(fns, (1, 2, 2), 1, device="cpu", warmup=1, runs=2 * INTERLEAVE_BLOCK)
    timed = calls[2:]  # one warm-up call each, first
    block = INTERLEAVE_BLOCK
    assert timed == (["dense"] * block + ["pruned"] * block) * 2
    assert figures["dense"]["runs"] == figures["pruned"]["runs"] == 2 * block
