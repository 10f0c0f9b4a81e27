"""The analytic cost model agrees with a real counter run on the physically cut model."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch_pruning as tp
from test_structure_nets import TEST_NETS, zoo_structure

from rlal.errors import RlalError
from rlal.models import count_macs_params, list_models
from rlal.structure import CostModel, Plan, Structure, cut, find_layers

RELATIVE_TOLERANCE = 0.005  # the contract; the model is in fact exact
VECTORS = {"resnet20": 20, "resnet56": 12, "mobilenetv2-cifar": 10}  # more vectors for the cheap models
DEFAULT_VECTORS = 5


def random_keep(structure: Structure, n: int, seed: int) -> np.ndarray:
    """n random keep-count vectors, the first one keeping a single channel everywhere."""
    rng = np.random.default_rng(seed)
    channels = structure.channels
    keep = rng.integers(1, channels + 1, size=(n, len(channels)))
    keep[0] = 1
    return keep


def worst_relative_error(structure: Structure, keep: np.ndarray) -> float:
    """Largest relative MACs/params error over the keep vectors against count_macs_params on cut models
    (first channels kept: which ones does not change the cost)."""
    macs, params = structure.cost.evaluate(keep)
    worst = 0.0
    for row, m, p in zip(keep, macs, params, strict=True):
        small = cut(
            structure, kept={name: range(k) for name, k in zip(structure.names, row.tolist(), strict=True)}
        )
        true_macs, true_params = count_macs_params(small, structure.input_shape)
        worst = max(worst, abs(m - true_macs) / true_macs, abs(p - true_params) / true_params)
    return worst


@pytest.mark.parametrize("name", list_models())
def test_analytic_cost_matches_the_counter_on_cut_models_for_every_zoo_model(name: str) -> None:
    structure = zoo_structure(name)
    assert (structure.cost.dense_macs, structure.cost.dense_params) == count_macs_params(
        structure.model, structure.input_shape
    )
    keep = random_keep(structure, VECTORS.get(name, DEFAULT_VECTORS), seed=0)
    assert worst_relative_error(structure, keep) <= RELATIVE_TOLERANCE


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2-cifar", "vgg16-bn"])
def test_analytic_cost_matches_the_counter_when_residual_groups_are_pruned(name: str) -> None:
    structure = zoo_structure(name, "all")
    assert worst_relative_error(structure, random_keep(structure, 6, seed=1)) <= RELATIVE_TOLERANCE


@pytest.mark.parametrize("net", sorted(TEST_NETS))
@pytest.mark.parametrize("policy", ["internal", "all"])
def test_analytic_cost_accounts_for_concatenation_flatten_and_depthwise_coupling(
    net: str, policy: str
) -> None:
    structure = find_layers(TEST_NETS[net](), (3, 16, 16), policy=policy)
    assert (structure.cost.dense_macs, structure.cost.dense_params) == count_macs_params(
        structure.model, (3, 16, 16)
    )
    assert worst_relative_error(structure, random_keep(structure, 10, seed=2)) == 0.0


def test_analytic_macs_agree_with_torch_pruning_counter_up_to_its_extra_element_wise_ops() -> None:
    structure = zoo_structure("vgg16-bn")
    plan = Plan.from_keep_ratios(structure, 0.5)
    small = cut(structure, plan)
    tp_ops, tp_params = tp.utils.count_ops_and_params(small, torch.randn(1, *structure.input_shape))
    macs, params = structure.cost.of(plan)
    assert params == tp_params
    assert macs <= tp_ops <= macs * 1.02  # Torch-Pruning also counts BN, ReLU and pooling elements


def test_evaluate_is_vectorised_and_fast() -> None:
    structure = zoo_structure("resnet56")
    keep = random_keep(structure, 10_000, seed=3)
    start = time.perf_counter()
    macs, params = structure.cost.evaluate(keep)
    elapsed = time.perf_counter() - start
    assert macs.shape == params.shape == (10_000,) and macs.dtype == np.int64
    one_macs, one_params = structure.cost.evaluate(keep[7])
    assert (int(one_macs), int(one_params)) == (macs[7], params[7])
    assert elapsed < 1.0


def test_cost_of_a_plan_is_ints_and_dense_plan_costs_the_dense_model() -> None:
    structure = zoo_structure("resnet20")
    cost = CostModel(structure)
    assert cost.of(Plan.dense(structure)) == (cost.dense_macs, cost.dense_params)
    macs, params = cost.of(Plan.from_keep_ratios(structure, 0.5))
    assert isinstance(macs, int) and isinstance(params, int)
    assert macs < cost.dense_macs and params < cost.dense_params


@pytest.mark.parametrize("bad", ["zero", "above", "fraction"])
def test_keep_counts_outside_the_layer_are_rejected_by_the_cost_model(bad: str) -> None:
    structure = zoo_structure("resnet20")
    keep = structure.channels.astype(float)
    keep[3] = {"zero": 0, "above": keep[3] + 1, "fraction": 2.5}[bad]
    with pytest.raises(RlalError, match=structure.names[3]):
        structure.cost.evaluate(keep)


def test_keep_vectors_of_the_wrong_length_are_rejected_by_the_cost_model() -> None:
    with pytest.raises(RlalError, match="shape"):
        zoo_structure("resnet20").cost.evaluate(np.ones((2, 3)))
