"""Prunable layers from the dependency graph: residual policy, skipped groups, features, bad models."""

from __future__ import annotations

import re

import pytest
import torch
from test_structure_nets import same_state, state_snapshot, zoo_structure
from torch import nn

from rlal.errors import RlalError
from rlal.models import create_model, list_models
from rlal.structure import describe_layers, find_layers

# Prunable layers per zoo model: (policy "internal", policy "all").
EXPECTED_COUNTS = {
    "mobilenetv2": (20, 25),
    "mobilenetv2-cifar": (20, 25),
    "resnet110": (54, 57),
    "resnet18": (8, 12),
    "resnet20": (9, 12),
    "resnet32": (15, 18),
    "resnet34": (16, 20),
    "resnet50": (33, 37),
    "resnet56": (27, 30),
    "vgg16-bn": (13, 13),
}


def test_resnet56_internal_policy_prunes_each_basic_blocks_first_conv_only() -> None:
    structure = zoo_structure("resnet56")
    expected = [f"layer{s}.{b}.conv1" for s in (1, 2, 3) for b in range(9)]
    assert structure.names == tuple(expected)
    assert [layer.index for layer in structure.layers] == list(range(27))
    residual = [s for s in structure.skipped if "residual" in s.reason]
    assert [s.module for s in residual] == ["conv1", "layer2.0.downsample.0", "layer3.0.downsample.0"]
    assert all("policy=internal" in s.reason for s in residual)
    assert "layer1.8.conv2" in residual[0].modules and "layer2.0.conv1" in residual[0].modules
    assert [(s.module, s.reason) for s in structure.skipped if s not in residual] == [
        ("fc", "classifier output (never pruned)")
    ]


def test_all_policy_adds_the_residual_groups_with_one_decision_each() -> None:
    internal, everything = zoo_structure("resnet56"), zoo_structure("resnet56", "all")
    assert len(everything) == 30 > len(internal)
    shared = everything.layer("conv1")
    assert shared.residual and shared.channels == 16
    writers = [m.module for m in shared.members if m.role == "out" and m.kind == "conv"]
    assert writers == ["conv1"] + [f"layer1.{b}.conv2" for b in range(9)]
    assert [s.module for s in everything.skipped] == ["fc"]


@pytest.mark.parametrize("name", list_models())
def test_every_zoo_model_has_the_expected_layers_under_both_policies(name: str) -> None:
    internal, everything = zoo_structure(name), zoo_structure(name, "all")
    assert (len(internal), len(everything)) == EXPECTED_COUNTS[name]
    assert set(internal.names) <= set(everything.names)
    assert all(not layer.residual for layer in internal.layers)
    assert "fc" not in everything.names  # the classifier output is never pruned
    for structure in (internal, everything):
        order = [structure.census.order[n] for n in structure.names]
        assert order == sorted(order)  # input -> output


def test_layer_features_describe_the_first_conv_and_its_coupling() -> None:
    mobilenet = zoo_structure("mobilenetv2-cifar")
    expansion = mobilenet.layer("blocks.3.expand.conv")
    assert expansion.depthwise and expansion.channels == 144 and expansion.in_channels == 24
    assert expansion.kernel_size == (1, 1) and expansion.stride == (1, 1)
    assert expansion.modules[:4] == (
        "blocks.3.expand.conv",
        "blocks.3.expand.bn",
        "blocks.3.depthwise.conv",
        "blocks.3.depthwise.bn",
    )
    # MACs owned: the expansion conv and the depthwise conv (16x16 after the stride-2 depthwise)
    assert expansion.macs == 32 * 32 * 144 * 24 + 16 * 16 * 144 * 9
    resnet = zoo_structure("resnet56").layer("layer2.0.conv1")
    assert (resnet.kernel_size, resnet.stride, resnet.in_channels, resnet.channels) == (
        (3, 3),
        (2, 2),
        16,
        32,
    )
    assert resnet.macs == 16 * 16 * 32 * 16 * 9 and not resnet.depthwise


def test_describe_layers_gives_plain_data_for_the_cli() -> None:
    info = describe_layers(zoo_structure("resnet20").model, (3, 32, 32))
    assert info["prunable_layers"][0] == {
        "name": "layer1.0.conv1",
        "channels": 16,
        "macs": 32 * 32 * 16 * 16 * 9,
    }
    skipped = {s["module"]: s for s in info["skipped"]}
    reason = "classifier output (never pruned)"
    assert skipped["fc"] == {"module": "fc", "reason": reason, "macs": 640, "macs_share": 640 / 40_813_184}
    # the stem conv writes the residual stream and reads the image: no plan reduces its MACs
    assert skipped["conv1"]["macs"] == 32 * 32 * 16 * 3 * 9
    assert info["skipped_macs_share"] == sum(s["macs"] for s in info["skipped"]) / 40_813_184
    assert info["policy"] == "internal" and info["dense_macs"] == 40_813_184


class GroupedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3)
        self.grouped = nn.Conv2d(16, 16, 3, groups=4)
        self.conv2 = nn.Conv2d(16, 8, 3)
        self.unused = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(torch.relu(self.grouped(torch.relu(self.conv1(x)))))
        return self.fc(x.mean((2, 3)))


def test_grouped_conv_layers_tie_the_same_position_in_every_group() -> None:
    structure = find_layers(GroupedNet(), (3, 16, 16))
    assert structure.names == ("conv1", "grouped", "conv2")
    into, out_of = structure.layer("conv1"), structure.layer("grouped")
    assert (into.channels, into.tied, into.out_channels) == (4, 4, 16)  # 4 sets of 4 channels, one per group
    assert (out_of.channels, out_of.tied) == (4, 4)
    writer = next(m for m in into.members if m.module == "conv1")
    assert writer.root == (0, 1, 2, 3) * 4  # channel g * 4 + j belongs to set j
    reader = next(m for m in into.members if m.module == "grouped")
    assert (reader.local, reader.root) == ((0, 1, 2, 3), (0, 1, 2, 3))  # the grouped conv's weight positions
    reasons = {s.module: s.reason for s in structure.skipped}
    assert reasons == {"unused": "not called by the forward pass", "fc": "classifier output (never pruned)"}


class MixedGroups(nn.Module):
    """A grouped conv reading the concatenation of two layers: each of its 2 groups holds one layer."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3)
        self.b = nn.Conv2d(3, 8, 3)
        self.grouped = nn.Conv2d(16, 8, 3, groups=2)
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.grouped(torch.relu(torch.cat([self.a(x), self.b(x)], 1)))
        return self.fc(torch.relu(x).mean((2, 3)))


def test_a_grouped_conv_whose_groups_mix_layers_is_skipped_with_a_reason() -> None:
    structure = find_layers(MixedGroups(), (3, 12, 12))
    reasons = {s.module: s.reason for s in structure.skipped}
    assert "grouped conv grouped (groups=2) mixes these channels" in reasons["a"]
    assert "grouped conv grouped (groups=2) mixes these channels" in reasons["b"]
    assert structure.names == ("grouped",)


class Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow
            x = x * 2
        return self.fc(self.conv(x).mean((2, 3)))


class Broken(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3)  # expects one input channel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (Branchy(), "Branchy runs different operations for different inputs"),
        (Broken(), r"Broken failed on an example input of shape \(1, 3, 8, 8\): RuntimeError"),
        (nn.Linear(4, 2), r"Linear has no prunable layer \(: classifier output"),
        (
            nn.Sequential(nn.Conv2d(3, 1, 3), nn.ReLU(), nn.Conv2d(1, 4, 3)),
            "Sequential has no prunable layer",
        ),
    ],
)
def test_untraceable_or_unprunable_models_are_errors_and_stay_unchanged(
    model: nn.Module, message: str
) -> None:
    model.train()
    snapshot = state_snapshot(model)
    shape = (4,) if isinstance(model, nn.Linear) else (3, 8, 8)
    with pytest.raises(RlalError, match=message) as info:
        find_layers(model, shape)
    assert "\n" not in str(info.value)
    assert same_state(model, snapshot)
    assert all(m.training for m in model.modules())  # train/eval flags restored
    assert all(not m._forward_hooks for m in model.modules())


def test_bad_policy_and_input_shape_are_errors() -> None:
    model = zoo_structure("resnet20").model
    with pytest.raises(RlalError, match=re.escape("residual policy must be one of ('internal', 'all')")):
        find_layers(model, (3, 32, 32), policy="some")  # type: ignore[arg-type]
    with pytest.raises(RlalError, match="input shape"):
        find_layers(model, (3, 0, 32))
    with pytest.raises(RlalError, match=re.escape("unknown layer 'layer1.0.conv2'")):
        zoo_structure("resnet20").layer("layer1.0.conv2")


def test_find_layers_restores_train_mode_and_runs_under_no_grad() -> None:
    model = create_model("resnet20").train()
    with torch.no_grad():
        structure = find_layers(model, (3, 32, 32))
    assert len(structure) == 9 and model.training and all(m.training for m in model.modules())
