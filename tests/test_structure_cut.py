"""Masks and surgery: the masked dense model computes what the physically cut model computes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch_pruning as tp
from test_structure_nets import (
    TEST_NETS,
    realistic,
    same_state,
    state_snapshot,
    zoo_input_shape,
    zoo_structure,
)

from rlal.errors import RlalError
from rlal.models import create_model, list_models
from rlal.structure import (
    ChannelMasks,
    Plan,
    Structure,
    channel_importance,
    cut,
    find_layers,
    select_channels,
)

TOLERANCE = 1e-4


def random_plan(structure: Structure, seed: int) -> Plan:
    rng = np.random.default_rng(seed)
    return Plan.from_keep_ratios(structure, rng.uniform(0.05, 1.0, len(structure)).tolist())


def assert_masked_equals_cut(structure: Structure, plan: Plan, batch: int = 2, **selection: object) -> None:
    model = structure.model
    x = torch.randn(batch, *structure.input_shape, generator=torch.Generator().manual_seed(1))
    small = cut(structure, plan, **selection)
    with torch.no_grad():
        dense = model(x)
        with ChannelMasks(structure).applied(plan, **selection):
            masked = model(x)
        pruned = small.eval()(x)
    assert pruned.shape == masked.shape
    assert (masked - pruned).abs().max().item() <= TOLERANCE
    assert (masked - dense).abs().max().item() > 1e-3  # the plan really changed the function


@pytest.mark.parametrize("name", list_models())
def test_masked_dense_model_equals_cut_model_for_every_zoo_model(name: str) -> None:
    structure = zoo_structure(name)
    snapshot = state_snapshot(structure.model)
    assert_masked_equals_cut(structure, random_plan(structure, seed=0))
    assert same_state(structure.model, snapshot)  # the input model is left unchanged


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2-cifar"])
def test_masked_equals_cut_when_residual_groups_are_pruned_too(name: str) -> None:
    structure = zoo_structure(name, "all")
    assert any(layer.residual for layer in structure.layers)
    for seed in range(2):
        assert_masked_equals_cut(structure, random_plan(structure, seed))


@pytest.mark.parametrize("net", sorted(TEST_NETS))
@pytest.mark.parametrize("policy", ["internal", "all"])
def test_masked_equals_cut_for_concatenating_and_depthwise_separable_user_models(
    net: str, policy: str
) -> None:
    model = realistic(TEST_NETS[net](), (3, 16, 16))
    structure = find_layers(model, (3, 16, 16), policy=policy)
    for seed in range(3):
        assert_masked_equals_cut(structure, random_plan(structure, seed), batch=4)


@pytest.mark.parametrize("criterion", ["l1", "bn_scale", "random"])
def test_masked_equals_cut_under_every_criterion(criterion: str) -> None:
    assert_masked_equals_cut(
        zoo_structure("resnet20"), random_plan(zoo_structure("resnet20"), 3), criterion=criterion
    )


def test_masked_equals_cut_with_explicit_kept_channels() -> None:
    structure = zoo_structure("mobilenetv2-cifar")
    rng = np.random.default_rng(0)
    kept = {
        layer.name: rng.choice(layer.channels, size=max(1, layer.channels // 3), replace=False).tolist()
        for layer in structure.layers
    }
    plan = Plan.from_keep_counts(structure, {name: len(idx) for name, idx in kept.items()})
    x = torch.randn(2, *structure.input_shape)
    masks = ChannelMasks(structure)
    masks.set_kept(kept)
    with torch.no_grad(), masks:
        masked = structure.model(x)
    pruned = cut(structure, plan, kept=kept).eval()
    with torch.no_grad():
        assert (masked - pruned(x)).abs().max().item() <= TOLERANCE


def test_cut_model_has_the_planned_widths_and_is_an_ordinary_module() -> None:
    structure = zoo_structure("resnet56")
    plan = Plan.from_keep_ratios(structure, 0.5)
    small = cut(structure, plan)
    modules = dict(small.named_modules())
    for name, keep in plan.items():
        assert modules[name].out_channels == keep == 8 * 2 ** (int(name[5]) - 1)
    assert all(not m._forward_hooks for m in small.modules())
    assert small.layer1[0].bn1.running_mean.shape == (8,)


def fresh_zoo_model(name: str) -> torch.nn.Module:
    shape = zoo_input_shape(name)
    return realistic(create_model(name, input_size=shape[1]), shape)


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2-cifar"])
def test_cutting_channels_whose_weights_are_zero_changes_nothing(name: str) -> None:
    structure = find_layers(fresh_zoo_model(name), zoo_input_shape(name))
    plan = random_plan(structure, seed=5)
    kept = select_channels(structure, plan)
    modules = dict(structure.model.named_modules())
    with torch.no_grad():  # zero the filters, biases and BN of every channel outside the top-k
        for layer in structure.layers:
            dropped = torch.ones(layer.channels, dtype=torch.bool)
            dropped[kept[layer.name]] = False
            for member in layer.members:
                if member.role == "out":
                    local = torch.tensor(member.local)[dropped[torch.tensor(member.root)]]
                    module = modules[member.module]
                    module.weight[local] = 0
                    if module.bias is not None:
                        module.bias[local] = 0
    # the zeroed channels score lowest, so the criterion drops exactly them again
    assert all(torch.equal(select_channels(structure, plan)[n], kept[n]) for n in kept)
    x = torch.randn(3, *structure.input_shape)
    small = cut(structure, plan).eval()
    with torch.no_grad():
        assert (structure.model(x) - small(x)).abs().max().item() <= TOLERANCE


def test_masks_switch_off_exactly_and_never_touch_parameters() -> None:
    structure = zoo_structure("mobilenetv2-cifar")
    model = structure.model
    x = torch.randn(2, *structure.input_shape)
    snapshot = state_snapshot(model)
    masks = ChannelMasks(structure)
    with torch.no_grad():
        dense = model(x)
        masks.set_plan(random_plan(structure, 1))
        masks.enable()
        masked = model(x)
        masks.set_plan(random_plan(structure, 2))  # a new plan takes effect while enabled
        masked_again = model(x)
        masks.disable()
        after = model(x)
    assert not masks.enabled
    assert not torch.equal(masked, dense) and not torch.equal(masked_again, masked)
    assert torch.equal(after, dense)
    assert same_state(model, snapshot)
    assert all(not m._forward_hooks for m in model.modules())


def test_applied_restores_the_previous_state_even_on_error() -> None:
    structure = zoo_structure("resnet20")
    masks = ChannelMasks(structure)
    with pytest.raises(RuntimeError), masks.applied(random_plan(structure, 0)):
        assert masks.enabled
        raise RuntimeError("boom")
    assert not masks.enabled


def test_enabling_masks_without_a_plan_is_an_error() -> None:
    with pytest.raises(RlalError, match="no plan"):
        ChannelMasks(zoo_structure("resnet20")).enable()


def test_a_deep_copy_of_a_masked_model_is_dense() -> None:
    import copy

    structure = zoo_structure("resnet20")
    x = torch.randn(2, *structure.input_shape)
    with torch.no_grad():
        dense = structure.model(x)
        with ChannelMasks(structure).applied(random_plan(structure, 0)):
            clone = copy.deepcopy(structure.model)
        assert torch.equal(clone(x), dense)


def test_l2_ranking_matches_torch_pruning_group_magnitude_importance() -> None:
    structure = zoo_structure("resnet20")
    ours = channel_importance(structure, "l2")
    model = structure.model
    graph = tp.DependencyGraph().build_dependency(
        model, example_inputs=(torch.randn(1, 3, 32, 32),), verbose=False
    )
    model.eval()
    modules = dict(model.named_modules())
    scorer = tp.importance.GroupMagnitudeImportance(p=2)
    for layer in structure.layers:
        group = graph.get_pruning_group(
            modules[layer.name], tp.prune_conv_out_channels, list(range(layer.channels))
        )
        theirs = scorer(group).double()
        assert torch.equal(
            torch.argsort(theirs, descending=True, stable=True),
            torch.argsort(ours[layer.name] ** 2, descending=True, stable=True),
        )


def test_random_criterion_is_seeded() -> None:
    structure = zoo_structure("resnet20")
    a = channel_importance(structure, "random", seed=1)
    b = channel_importance(structure, "random", seed=1)
    c = channel_importance(structure, "random", seed=2)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not all(torch.equal(a[n], c[n]) for n in a)


def test_unknown_criterion_and_bn_scale_without_batchnorm_are_errors() -> None:
    with pytest.raises(RlalError, match="unknown channel criterion 'l3'"):
        channel_importance(zoo_structure("resnet20"), "l3")  # type: ignore[arg-type]
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3))
    with pytest.raises(RlalError, match=r"bn_scale.*layer 0"):
        channel_importance(find_layers(net, (3, 8, 8)), "bn_scale")


@pytest.mark.parametrize(
    ("kept", "message"),
    [
        ({"layer1.0.conv1": torch.tensor([], dtype=torch.int64)}, "layer1.0.conv1 keeps no channel"),
        ({"layer1.0.conv1": [0, 0]}, "layer1.0.conv1 repeat"),
        ({"layer1.0.conv1": [16]}, r"layer1.0.conv1 must lie in \[0, 16\)"),
        ({"nope": [0]}, "unknown layer 'nope'"),
    ],
)
def test_bad_kept_channels_are_rejected_and_the_model_is_unchanged(kept: dict, message: str) -> None:
    structure = zoo_structure("resnet20")
    snapshot = state_snapshot(structure.model)
    with pytest.raises(RlalError, match=message):
        cut(structure, kept=kept)
    with pytest.raises(RlalError, match=message):
        ChannelMasks(structure).set_kept(kept)
    assert same_state(structure.model, snapshot)
