"""Plans: keep counts from ratios, rounding, validation, JSON form."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
from test_structure_nets import same_state, state_snapshot, zoo_structure

from rlal.errors import RlalError
from rlal.structure import Plan, check_plan


@pytest.fixture
def structure():
    return zoo_structure("resnet56")  # 27 layers of 16, 32 and 64 channels


def test_keep_ratios_become_rounded_channel_counts(structure) -> None:
    plan = Plan.from_keep_ratios(structure, 0.5)
    assert plan.names == structure.names
    assert plan["layer1.0.conv1"] == 8 and plan["layer2.0.conv1"] == 16 and plan["layer3.8.conv1"] == 32
    assert Plan.from_keep_ratios(structure, 0.3)["layer1.0.conv1"] == 5  # 4.8 -> 5
    assert Plan.from_keep_ratios(structure, 1.0) == Plan.dense(structure)
    assert plan.keep_ratios(structure)["layer3.0.conv1"] == 0.5


def test_ratios_by_name_leave_other_layers_whole_and_sequences_go_in_layer_order(structure) -> None:
    plan = Plan.from_keep_ratios(structure, {"layer2.3.conv1": 0.25})
    assert plan["layer2.3.conv1"] == 8
    assert sum(plan.keep) == sum(structure.channels) - 24
    ratios = np.linspace(0.1, 1.0, len(structure))
    by_order = Plan.from_keep_ratios(structure, ratios)
    assert by_order.keep[0] == 2 and by_order.keep[-1] == 64


def test_min_keep_is_respected(structure) -> None:
    assert min(Plan.from_keep_ratios(structure, 0.01).keep) == 1  # never below one channel
    plan = Plan.from_keep_ratios(structure, 0.01, min_keep=6)
    assert min(plan.keep) == 6
    assert Plan.from_keep_ratios(structure, 0.01, min_keep=100).keep == Plan.dense(structure).keep


def test_round_to_gives_multiples_never_above_the_layer(structure) -> None:
    plan = Plan.from_keep_ratios(structure, 0.3, round_to=8)
    assert all(k % 8 == 0 for k in plan.keep)
    assert plan["layer1.0.conv1"] == 8 and plan["layer2.0.conv1"] == 8 and plan["layer3.0.conv1"] == 16
    assert min(Plan.from_keep_ratios(structure, 0.01, round_to=8).keep) == 8  # at least one multiple
    assert Plan.from_keep_ratios(structure, 0.01, min_keep=9, round_to=8)["layer1.0.conv1"] == 16
    mobilenet = zoo_structure("mobilenetv2-cifar")
    capped = Plan.from_keep_ratios(mobilenet, 0.99, round_to=64)
    assert all(k <= layer.channels for k, layer in zip(capped.keep, mobilenet.layers, strict=True))
    assert capped["blocks.0.project.conv"] == 16  # 16 channels: the only count >= 64 allowed is all of them


@pytest.mark.parametrize("ratio", [0, 0.0, -0.5, 1.5, float("nan")])
def test_keep_ratio_outside_zero_one_is_an_error_naming_the_layer(structure, ratio: float) -> None:
    snapshot = state_snapshot(structure.model)
    with pytest.raises(RlalError, match=re.escape("keep ratio for layer layer1.1.conv1 must be in")):
        Plan.from_keep_ratios(structure, {"layer1.1.conv1": ratio})
    assert same_state(structure.model, snapshot)


def test_keep_counts_of_zero_too_many_or_unknown_layers_are_errors(structure) -> None:
    snapshot = state_snapshot(structure.model)
    with pytest.raises(
        RlalError, match=re.escape("keep count 0 for layer layer1.0.conv1 would remove every channel")
    ):
        Plan.from_keep_counts(structure, {"layer1.0.conv1": 0})
    with pytest.raises(
        RlalError, match=re.escape("keep count 17 for layer layer1.0.conv1 exceeds its 16 channels")
    ):
        Plan.from_keep_counts(structure, {"layer1.0.conv1": 17})
    with pytest.raises(RlalError, match=re.escape("unknown layer 'layer9.conv'")):
        Plan.from_keep_counts(structure, {"layer9.conv": 3})
    with pytest.raises(RlalError, match="unknown layer 'fc'"):
        Plan.from_keep_ratios(structure, {"fc": 0.5})
    with pytest.raises(RlalError, match="one value per layer"):
        Plan.from_keep_counts(structure, [4, 4])
    with pytest.raises(RlalError, match="must be an integer"):
        Plan.from_keep_counts(structure, {"layer1.0.conv1": 2.5})
    with pytest.raises(RlalError, match="min_keep"):
        Plan.from_keep_ratios(structure, 0.5, min_keep=0)
    with pytest.raises(RlalError, match="round_to"):
        Plan.from_keep_ratios(structure, 0.5, round_to=0)
    assert same_state(structure.model, snapshot)


def test_plan_is_immutable_and_round_trips_through_json(structure) -> None:
    plan = Plan.from_keep_ratios(structure, 0.7, round_to=4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.keep = ()  # type: ignore[misc]
    text = json.dumps(plan.to_dict())
    assert list(json.loads(text)) == list(structure.names)  # ordered input -> output
    assert Plan.from_dict(structure, json.loads(text)) == plan
    assert hash(plan) == hash(Plan.from_dict(structure, json.loads(text)))
    assert np.array_equal(plan.array(), np.array(plan.keep))


def test_a_plan_for_another_model_is_rejected(structure) -> None:
    other = Plan.dense(zoo_structure("resnet20"))
    with pytest.raises(RlalError, match=r"unknown layer|no keep count for layer layer1\.3\.conv1"):
        check_plan(structure, other)
    with pytest.raises(RlalError, match="would remove every channel"):
        Plan(("a",), (0,))
