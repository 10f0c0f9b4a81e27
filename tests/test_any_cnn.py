"""Any CNN (issue 13): every net of the test-only zoo (tests/zoo.py) either prunes with the masked dense
model equal to the cut model, reloads exactly and exports to ONNX with the same outputs, or has the layers
it cannot prune skipped (or the whole net refused) up front, with a reason naming the layer."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from test_structure_nets import realistic
from torch import nn
from zoo import CLASSES, SHAPE, ZOO, ChunkNet, SENet, ShuffleNet, SplitNet, build

from rlal.errors import RlalError
from rlal.models import count_macs_params
from rlal.structure import (
    ArchSpec,
    ChannelMasks,
    Plan,
    Structure,
    cut,
    describe_lines,
    find_layers,
    load_pruned,
    save_pruned,
)

pytestmark = pytest.mark.usefixtures("one_thread")

TOLERANCE = 1e-4
PRUNABLE = [name for name, entry in ZOO.items() if entry.refused is None]


@cache
def zoo_structure(name: str, policy: str) -> Structure:
    """The net with realistic weights and BN statistics, and its layers (built once per session)."""
    return find_layers(realistic(build(name), SHAPE), SHAPE, policy=policy)


def random_plan(structure: Structure, seed: int) -> Plan:
    rng = np.random.default_rng(seed)
    return Plan.from_keep_counts(structure, [int(rng.integers(1, c)) for c in structure.channels])


def outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def test_the_zoo_has_every_kind_of_net_the_issue_names() -> None:
    assert len(ZOO) >= 10
    for kind in ("resnext", "split", "chunk", "shuffle", "densenet", "branches", "unet", "squeeze-excite",
                 "separable", "flatten-head", "mobilev3"):
        assert kind in ZOO


@pytest.mark.parametrize("policy", ["internal", "all"])
@pytest.mark.parametrize("name", list(ZOO))
def test_every_zoo_net_prunes_exactly_or_skips_layers_with_a_reason_naming_them(
    name: str, policy: str
) -> None:
    entry = ZOO[name]
    if entry.refused is not None:
        with pytest.raises(RlalError, match=re.escape(entry.refused)):
            zoo_structure(name, policy)
        return
    structure = zoo_structure(name, policy)
    reasons = {s.module: s.reason for s in structure.skipped}
    for layer, fragment in entry.skipped.items():
        assert fragment in reasons.get(layer, ""), (layer, reasons)
    if policy == "all":
        assert set(entry.prunable) <= set(structure.names)
    x = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(1))
    dense = outputs(structure.model, x)
    for seed in range(2):
        plan = random_plan(structure, seed)
        small = cut(structure, plan)
        with torch.no_grad(), ChannelMasks(structure).applied(plan):
            masked = structure.model(x)
        assert (masked - outputs(small, x)).abs().max().item() <= TOLERANCE
        assert (masked - dense).abs().max().item() > 1e-3  # the plan really changed the function
        # the analytic cost model counts the cut model exactly, grouped convs included
        assert structure.cost.of(plan) == count_macs_params(small, SHAPE)


@pytest.mark.parametrize("name", PRUNABLE)
def test_pruned_zoo_nets_reload_exactly_and_export_to_onnx_with_the_same_outputs(
    name: str, tmp_path: Path
) -> None:
    structure = zoo_structure(name, "all")
    plan = random_plan(structure, 2)
    small = cut(structure, plan).eval()
    directory = save_pruned(tmp_path / name, small, arch=None, plan=plan, input_shape=SHAPE, policy="all")
    again = load_pruned(directory, model=build(name, seed=5))  # any weights: the saved ones overwrite them
    x = torch.randn(3, *SHAPE, generator=torch.Generator().manual_seed(2))
    expected = outputs(small, x)
    assert torch.equal(outputs(again, x), expected)

    pytest.importorskip("onnxruntime")
    from rlal.export import export_onnx, onnx_runner

    run = onnx_runner(export_onnx(small, SHAPE, tmp_path / f"{name}.onnx"))
    assert np.abs(run(x) - expected.numpy()).max() <= TOLERANCE


def test_a_zoo_net_reloads_from_a_trusted_factory(tmp_path: Path) -> None:
    structure = zoo_structure("resnext", "internal")
    plan = random_plan(structure, 3)
    small = cut(structure, plan).eval()
    arch = ArchSpec.from_factory("zoo:build", name="resnext")
    directory = save_pruned(tmp_path / "resnext", small, arch=arch, plan=plan, input_shape=SHAPE)
    x = torch.randn(2, *SHAPE)
    assert torch.equal(outputs(load_pruned(directory, trust_factory=True), x), outputs(small, x))


# --- issue 13, item 1: channel operations in forward -----------------------------------------------------


@pytest.mark.parametrize(
    ("net", "layer", "operation"),
    [(SplitNet, "stem.0", "split"), (ChunkNet, "stem.0", "chunk"), (ShuffleNet, "gconv1.0", "view")],
)
def test_layers_whose_channels_are_split_or_shuffled_in_forward_are_skipped_when_found(
    net: type[nn.Module], layer: str, operation: str
) -> None:
    # Before issue 13 these layers were accepted: the cut failed at the end of training (split, chunk) or,
    # for the shuffle, silently returned a model that was not the masked sub-network.
    structure = find_layers(realistic(net(), SHAPE), SHAPE, policy="all")
    assert layer not in structure.names
    reason = next(s.reason for s in structure.skipped if s.module == layer)
    assert reason.startswith(f"its channels pass through {operation}")


def test_the_contract_check_judges_the_architecture_not_the_weights() -> None:
    # GatherNet's channel reversal is caught only by cutting a copy: with all-zero weights the model's own
    # outputs could not tell masked from cut, the check's random weights can.
    model = ZOO["gather"].build()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    structure = find_layers(model, SHAPE)
    assert "stem.0" not in structure.names
    assert any(s.module == "stem.0" and "computes something else" in s.reason for s in structure.skipped)
    assert all(torch.count_nonzero(p) == 0 for p in model.parameters())  # the model itself is untouched


def test_a_squeeze_excitation_gate_is_not_a_residual_stream() -> None:
    # the gate multiplies conv.0's channels by se.fc2's outputs: two writers, but no addition
    structure = zoo_structure("squeeze-excite", "internal")
    layer = structure.layer("conv.0")
    assert not layer.residual
    assert {"se.fc1", "se.fc2", "out.0"} <= set(layer.modules)
    assert isinstance(build("squeeze-excite"), SENet)


# --- issue 13, item 2: grouped convolutions --------------------------------------------------------------


def test_resnext_grouped_convs_prune_the_same_positions_in_every_group() -> None:
    structure = zoo_structure("resnext", "internal")
    assert structure.names == (
        "blocks.0.reduce.0", "blocks.0.grouped.0", "blocks.1.reduce.0", "blocks.1.grouped.0"
    )
    assert [(layer.channels, layer.tied) for layer in structure.layers] == [(4, 4), (4, 4), (3, 8), (3, 8)]
    plan = Plan.from_keep_counts(structure, [3, 2, 1, 2])
    small = cut(structure, plan)
    grouped = small.blocks[0].grouped[0]
    assert (grouped.in_channels, grouped.out_channels, grouped.groups) == (12, 8, 4)
    assert small.blocks[1].grouped[0].out_channels == 16 and small.blocks[1].grouped[0].groups == 8


# --- issue 13, item 8: what was skipped, and how much of the model it holds -------------------------------


def test_info_lists_skipped_layers_with_their_reason_and_share_of_the_macs() -> None:
    structure = zoo_structure("spatial-attention", "internal")
    info = structure.describe()
    dense = info["dense_macs"]
    body = next(s for s in info["skipped"] if s["module"] == "body.0")
    # body.0's channels are averaged across by the attention, and it reads the prunable stem: its MACs are
    # listed with the stem; what no plan can reach is the attention conv it writes into
    assert body["reason"].startswith("its channels pass through mean across the channels")
    assert body["macs"] == 16 * 16 * 1 * 2 * 49 and body["macs_share"] == body["macs"] / dense
    assert info["skipped_macs_share"] == sum(s["macs"] for s in info["skipped"]) / dense
    lines = describe_lines(info)
    assert lines[0] == "2 prunable layers (policy internal); a keep ratio counts channels:"
    share = f"{body['macs_share']:.1%}"
    assert f"  skipped body.0 ({share} of the MACs): {body['reason']}" in lines
    assert any(line.startswith("2 skipped, holding ") for line in lines)
    tied = describe_lines(zoo_structure("resnext", "internal").describe())
    assert any("blocks.0.reduce.0" in line and "16 channels" in line and "tied in sets of 4" in line
               for line in tied)


def test_finding_the_layers_leaves_the_global_random_stream_alone() -> None:
    # the check calibrates a copy in train mode, where FlattenHead's dropout draws random numbers
    model = build("flatten-head")
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    find_layers(model, SHAPE)
    assert torch.equal(torch.rand(3), expected)


class SigmoidBetween(nn.Module):
    """A sigmoid between a layer's BN and the next conv: a masked channel reaches that conv as 0.5."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.Sigmoid())
        self.conv2 = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.fc = nn.Linear(16, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv2(self.conv1(x)).mean((2, 3)))


def test_a_layer_the_masks_cannot_score_is_skipped_before_training() -> None:
    structure = find_layers(SigmoidBetween(), SHAPE)
    assert structure.names == ("conv2.0",)
    reason = next(s.reason for s in structure.skipped if s.module == "conv1.0")
    assert reason.startswith("its cut computes something else than its masked sub-network")


@pytest.mark.parametrize("name", PRUNABLE)
def test_depgraph_selects_a_plan_on_the_budget_for_every_prunable_zoo_net(name: str) -> None:
    from rlal.env import Budget
    from rlal.train.baselines import depgraph_plan

    structure = zoo_structure(name, "all")
    budget = Budget(structure, 0.7, min_keep_ratio=0.2)
    selection = depgraph_plan(structure, budget)
    assert structure.cost.of(selection.plan)[0] <= budget.target_macs
