"""Saving a pruned model as spec JSON + safetensors weights, and loading it back exactly."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from test_structure_nets import make_inception_net, realistic, zoo_structure

from rlal.errors import RlalError, UntrustedFactory
from rlal.models import create_model
from rlal.structure import ArchSpec, Plan, cut, find_layers, load_pruned, save_pruned


def random_plan(structure, seed: int = 0) -> Plan:
    rng = np.random.default_rng(seed)
    return Plan.from_keep_ratios(structure, rng.uniform(0.1, 1.0, len(structure)).tolist())


def assert_same_outputs(a: torch.nn.Module, b: torch.nn.Module, shape: tuple[int, ...]) -> None:
    x = torch.randn(3, *shape)
    with torch.no_grad():
        assert torch.equal(a.eval()(x), b.eval()(x))


def test_zoo_model_round_trip_is_exact(tmp_path: Path) -> None:
    structure = zoo_structure("mobilenetv2-cifar")
    plan = random_plan(structure)
    small = cut(structure, plan)
    arch = ArchSpec.zoo("mobilenetv2-cifar", num_classes=10, in_channels=3, input_size=32)
    save_pruned(
        tmp_path, small, arch=arch, plan=plan, input_shape=(3, 32, 32), classes=[str(i) for i in range(10)]
    )
    spec = json.loads((tmp_path / "spec.json").read_text())
    assert spec["arch"] == {
        "model": "mobilenetv2-cifar",
        "kwargs": {"num_classes": 10, "in_channels": 3, "input_size": 32},
    }
    assert (
        spec["keep"] == plan.to_dict() and spec["input_shape"] == [3, 32, 32] and len(spec["classes"]) == 10
    )
    loaded = load_pruned(tmp_path)
    assert not loaded.training
    assert_same_outputs(small, loaded, (3, 32, 32))


def test_user_factory_model_round_trip_is_exact(tmp_path: Path) -> None:
    model = realistic(make_inception_net(num_classes=5), (3, 16, 16))
    structure = find_layers(model, (3, 16, 16), policy="all")
    plan = random_plan(structure, seed=1)
    small = cut(structure, plan)
    arch = ArchSpec.from_factory("test_structure_nets:make_inception_net", num_classes=5)
    save_pruned(tmp_path / "net", small, arch=arch, plan=plan, input_shape=(3, 16, 16), policy="all")
    loaded = load_pruned(tmp_path / "net", trust_factory=True)  # the opt-in: this factory is ours
    assert_same_outputs(small, loaded, (3, 16, 16))


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    structure = zoo_structure("resnet20")
    plan = random_plan(structure, seed=2)
    arch = ArchSpec.zoo("resnet20")
    return save_pruned(tmp_path, cut(structure, plan), arch=arch, plan=plan, input_shape=(3, 32, 32))


def test_missing_files_are_errors_naming_the_file(saved: Path) -> None:
    (saved / "weights.safetensors").unlink()
    with pytest.raises(RlalError, match=re.escape(f"{saved / 'weights.safetensors'}: no such file")):
        load_pruned(saved)
    (saved / "spec.json").unlink()
    with pytest.raises(RlalError, match=re.escape(f"{saved / 'spec.json'}: no such file")):
        load_pruned(saved)


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda s: "{not json", "not a readable JSON spec"),
        (lambda s: json.dumps({**s, "format": "other"}), "not a pruned-model spec"),
        (lambda s: json.dumps({**s, "arch": {"model": "resnet99"}}), "unknown model 'resnet99'"),
        (lambda s: json.dumps({**s, "arch": {"factory": "no_such_module:f"}}), "trust_factory=True"),
        (lambda s: json.dumps({**s, "arch": {"factory": "../evil:f"}}), "must look like 'package.module"),
        (lambda s: json.dumps({**s, "policy": "none"}), "'policy' must be one of"),
        (
            lambda s: json.dumps({**s, "keep": {**s["keep"], "layer1.0.conv1": 0}}),
            "would remove every channel",
        ),
        (lambda s: json.dumps({**s, "keep": {**s["keep"], "layer1.0.conv1": 99}}), "exceeds its 16 channels"),
        (
            lambda s: json.dumps({**s, "keep": {"layer1.0.conv1": 3}}),
            "no keep count for layer layer1.1.conv1",
        ),
    ],
)
def test_corrupt_specs_are_errors_naming_the_spec_file(saved: Path, corrupt, message: str) -> None:
    spec_path = saved / "spec.json"
    spec_path.write_text(corrupt(json.loads(spec_path.read_text())))
    with pytest.raises(RlalError, match=re.escape(str(spec_path)) + ".*" + message):
        load_pruned(saved)


def test_corrupt_weights_or_other_widths_are_errors_naming_the_weights_file(saved: Path) -> None:
    weights = saved / "weights.safetensors"
    spec_path = saved / "spec.json"
    good = weights.read_bytes()
    weights.write_bytes(good[:100])
    with pytest.raises(RlalError, match=re.escape(f"{weights}: not a readable safetensors file")):
        load_pruned(saved)
    weights.write_bytes(good)
    spec = json.loads(spec_path.read_text())
    spec["keep"]["layer1.0.conv1"] = 16 if spec["keep"]["layer1.0.conv1"] != 16 else 15
    spec_path.write_text(json.dumps(spec))
    with pytest.raises(RlalError, match=re.escape(f"{weights}: layer1.0.conv1.weight has shape")):
        load_pruned(saved)


# Loading never runs code the caller did not name: a factory in a spec needs an explicit opt-in.


def _spec_naming(saved: Path, factory: str, **kwargs) -> None:
    spec_path = saved / "spec.json"
    spec = json.loads(spec_path.read_text())
    spec["arch"] = {"factory": factory, "kwargs": kwargs}
    spec_path.write_text(json.dumps(spec))


def test_a_malicious_factory_spec_is_refused_without_the_opt_in_and_runs_nothing(saved: Path, tmp_path):
    marker = tmp_path / "pwned"
    _spec_naming(saved, "os:system", command=f"touch {marker}")
    with pytest.raises(UntrustedFactory, match=r"spec\.json: .*'os:system'.*trust_factory=True") as caught:
        load_pruned(saved)
    assert "\n" not in str(caught.value)
    assert not marker.exists()


def test_an_untrusted_factory_module_is_not_even_imported(saved: Path, tmp_path, monkeypatch):
    (tmp_path / "evil_factory_mod.py").write_text(f"open({str(tmp_path / 'imported')!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    _spec_naming(saved, "evil_factory_mod:build")
    with pytest.raises(UntrustedFactory):
        load_pruned(saved)
    assert not (tmp_path / "imported").exists()


def test_passing_the_dense_model_loads_a_factory_spec_without_importing_the_factory(saved: Path, tmp_path):
    marker = tmp_path / "pwned"
    reference = load_pruned(saved)
    _spec_naming(saved, "os:system", command=f"touch {marker}")
    loaded = load_pruned(saved, model=create_model("resnet20"))
    assert_same_outputs(reference, loaded, (3, 32, 32))
    assert not marker.exists()


def test_a_trusted_factory_inside_the_pruned_directory_is_refused_and_not_imported(tmp_path, monkeypatch):
    model = realistic(make_inception_net(num_classes=5), (3, 16, 16))
    structure = find_layers(model, (3, 16, 16), policy="all")
    plan = random_plan(structure, seed=3)
    arch = ArchSpec.from_factory("shipped_factory_mod:build", num_classes=5)
    net = save_pruned(tmp_path / "net", cut(structure, plan), arch=arch, plan=plan, input_shape=(3, 16, 16),
                      policy="all")
    marker = tmp_path / "imported"
    (net / "shipped_factory_mod.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nfrom test_structure_nets import make_inception_net as build\n"
    )
    monkeypatch.syspath_prepend(str(net))  # as if Python were started in the pruned directory
    with pytest.raises(UntrustedFactory, match="inside the pruned model's own directory"):
        load_pruned(net, trust_factory=True)
    assert not marker.exists()


# A spec is untrusted input: sizes that would allocate terabytes are refused before anything is built.


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        ({"input_shape": [3, 1_000_000, 1_000_000]}, "'input_shape' [3, 1000000, 1000000] is larger"),
        ({"input_shape": [3, 4000, 4000]}, "'input_shape' [3, 4000, 4000] is larger"),
        ({"input_shape": [100_000, 32, 32]}, "'input_shape' [100000, 32, 32] is larger"),
        ({"arch": {"model": "resnet20", "kwargs": {"num_classes": 10**12}}},
         "num_classes=1,000,000,000,000 is larger"),
        ({"arch": {"model": "resnet20", "kwargs": {"input_size": 10**6}}}, "input_size=1,000,000 is larger"),
    ],
)
def test_a_spec_with_absurd_sizes_is_refused_before_anything_is_built(
    saved: Path, monkeypatch, edit, fragment
) -> None:
    def build(*args, **kwargs):
        raise AssertionError("a model was built from the absurd spec")

    monkeypatch.setattr("rlal.models.create_model", build)
    monkeypatch.setattr("rlal.structure.io.find_layers", build)
    spec_path = saved / "spec.json"
    spec_path.write_text(json.dumps({**json.loads(spec_path.read_text()), **edit}))
    with pytest.raises(RlalError) as caught:
        load_pruned(saved)
    message = str(caught.value)
    assert message.startswith(f"{spec_path}: ") and fragment in message and "\n" not in message


def test_the_size_limits_admit_real_models_and_stop_one_past_them() -> None:
    from rlal.structure.io import MAX_CLASSES, check_input_size, check_zoo_sizes

    check_input_size([3, 224, 224])
    check_input_size([1, 4096, 4096])  # 16.7 M values: the limit itself
    check_zoo_sizes({"num_classes": 21_841, "in_channels": 3, "input_size": 224})  # ImageNet-21k
    with pytest.raises(RlalError):
        check_input_size([1, 4096, 4097])
    with pytest.raises(RlalError):
        check_zoo_sizes({"num_classes": MAX_CLASSES + 1})
