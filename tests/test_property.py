"""Property test (issue 12): random small CNNs (plain, residual, concatenating, depthwise), random MACs
targets, budget settings and actions go through the environment, the cost model, the masks and the cut.
Whatever hypothesis draws, no episode may breach its budget, the analytic cost must be the cut model's
counted cost, the cut must never fail on a shape, and the masked dense model must compute what the cut
model computes. An infeasible target may only be refused with one RlalError line."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from test_structure_nets import realistic
from torch import nn

from rlal.config import EnvConfig
from rlal.env import PruningEnv
from rlal.env.budget import allowed_counts
from rlal.errors import RlalError
from rlal.models import count_macs_params
from rlal.structure import ChannelMasks, cut, find_layers

pytest.importorskip("hypothesis")  # in the dev extras; an older environment skips this file
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.usefixtures("one_thread")

TOLERANCE = 1e-4
KINDS = ("plain", "residual", "concat", "depthwise")


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
    return [conv, nn.BatchNorm2d(cout), nn.ReLU()]


class Head(nn.Module):
    def __init__(self, cin: int, classes: int) -> None:
        super().__init__()
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(x), 1))


class PlainNet(nn.Module):
    """A conv stack; every second layer halves the resolution."""

    def __init__(self, cin: int, widths: list[int]) -> None:
        super().__init__()
        layers, last = [], cin
        for i, width in enumerate(widths):
            layers += conv_bn(last, width, stride=2 if i % 2 else 1)
            last = width
        self.features, self.head = nn.Sequential(*layers), Head(last, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ResidualBlock(nn.Module):
    def __init__(self, width: int, inner: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*conv_bn(width, inner), *conv_bn(inner, width)[:2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


class ResidualNet(nn.Module):
    """A stem and residual blocks around one stream (block-internal widths vary)."""

    def __init__(self, cin: int, widths: list[int]) -> None:
        super().__init__()
        stream, *inner = widths
        self.stem = nn.Sequential(*conv_bn(cin, stream))
        self.blocks = nn.Sequential(*(ResidualBlock(stream, w) for w in inner or [stream]))
        self.head = Head(stream, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


class ConcatNet(nn.Module):
    """Parallel branches of different widths and kernels, concatenated, then a conv that reads them all."""

    def __init__(self, cin: int, widths: list[int]) -> None:
        super().__init__()
        stem, *branches = widths
        branches = branches or [stem]
        self.stem = nn.Sequential(*conv_bn(cin, stem))
        self.branches = nn.ModuleList(
            nn.Sequential(*conv_bn(stem, w, k=1 + 2 * (i % 2))) for i, w in enumerate(branches)
        )
        self.mix = nn.Sequential(*conv_bn(sum(branches), stem))
        self.head = Head(stem, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.head(self.mix(torch.cat([branch(x) for branch in self.branches], 1)))


class DepthwiseBlock(nn.Module):
    """MobileNetV2's inverted residual: expand 1x1, depthwise 3x3, project 1x1 (residual when it fits)."""

    def __init__(self, cin: int, cout: int, expanded: int) -> None:
        super().__init__()
        self.residual = cin == cout
        self.body = nn.Sequential(
            *conv_bn(cin, expanded, k=1), *conv_bn(expanded, expanded, groups=expanded),
            *conv_bn(expanded, cout, k=1)[:2],
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


class DepthwiseNet(nn.Module):
    def __init__(self, cin: int, widths: list[int]) -> None:
        super().__init__()
        stream, *expanded = widths
        self.stem = nn.Sequential(*conv_bn(cin, stream))
        blocks, last = [], stream
        for i, width in enumerate(expanded or [2 * stream]):
            out = stream if i % 2 == 0 else stream + 4
            blocks.append(DepthwiseBlock(last, out, width))
            last = out
        self.blocks, self.head = nn.Sequential(*blocks), Head(last, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


NETS = {"plain": PlainNet, "residual": ResidualNet, "concat": ConcatNet, "depthwise": DepthwiseNet}


@dataclass(frozen=True)
class Case:
    kind: str
    in_channels: int
    size: int
    widths: tuple[int, ...]
    policy: str
    seed: int


cases = st.builds(
    Case,
    kind=st.sampled_from(KINDS),
    in_channels=st.integers(1, 3),
    size=st.sampled_from([8, 12, 16]),
    widths=st.lists(st.integers(3, 20), min_size=1, max_size=4).map(tuple),
    policy=st.sampled_from(["internal", "all"]),
    seed=st.integers(0, 2**16),
)
budgets = st.fixed_dictionaries({
    "min_keep_ratio": st.sampled_from([0.05, 0.1, 0.2, 0.5]),
    "round_to": st.sampled_from([1, 2, 4, 8]),
    "action_mode": st.sampled_from(["relative", "wall"]),
})
targets = st.one_of(
    st.tuples(st.just("feasible"), st.floats(0.0, 0.999)),  # a point between the smallest plan and dense
    st.tuples(st.just("any"), st.floats(0.01, 1.0)),  # anything, infeasible included
)


def target_macs(structure, budget: dict, target: tuple[str, float]) -> float:
    """``target`` as env.target_macs: ``("any", f)`` is the fraction f; ``("feasible", u)`` lies the share u
    of the way from the smallest sub-network the settings allow to the dense model (the fraction 1 when
    every layer's smallest count is its full width: an infeasible target again)."""
    kind, value = target
    if kind == "any":
        return value
    floor = np.array([allowed_counts(c, budget["min_keep_ratio"], budget["round_to"])[0]
                      for c in structure.channels])
    smallest, dense = int(structure.cost.macs(floor)), structure.cost.dense_macs
    return (smallest + value * (dense - smallest)) / dense


def structure_of(case: Case):
    torch.manual_seed(case.seed)
    shape = (case.in_channels, case.size, case.size)
    model = realistic(NETS[case.kind](case.in_channels, list(case.widths)), shape, seed=case.seed)
    return find_layers(model, shape, policy=case.policy)


def assert_masked_equals_cut(structure, plan) -> None:
    x = torch.randn(2, *structure.input_shape, generator=torch.Generator().manual_seed(1))
    small = cut(structure, plan)
    with torch.no_grad():
        with ChannelMasks(structure).applied(plan):
            masked = structure.model(x)
        pruned = small.eval()(x)
    assert pruned.shape == masked.shape
    assert (masked - pruned).abs().max().item() <= TOLERANCE
    macs, params = structure.cost.of(plan)
    assert (macs, params) == count_macs_params(small, structure.input_shape)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(case=cases, budget=budgets, target=targets,
       actions=st.lists(st.floats(0.0, 1.0), min_size=12, max_size=12))
def test_random_cnns_budgets_and_actions_never_breach_the_budget_or_mismatch_the_cut(
    case, budget, target, actions
):
    structure = structure_of(case)
    if len(structure) == 0:
        event("nothing prunable")
        return  # e.g. a residual stream alone under "internal": nothing to check
    try:
        target_fraction = target_macs(structure, budget, target)
        env = PruningEnv(structure, EnvConfig(**budget, target_macs=target_fraction, policy=case.policy))
    except RlalError as exc:  # an infeasible target: refused in one line, never another exception
        assert "\n" not in str(exc) and "env." in str(exc)
        event("infeasible target refused")
        return
    event(f"checked: {case.kind}")
    env.reset()
    done, t = False, 0
    while not done:
        _, done = env.step(actions[t % len(actions)])
        t += 1
    episode = env.finish()
    plan = env.plan_of(episode)
    keep = plan.array()
    macs, _ = structure.cost.of(plan)
    assert macs == episode.macs <= env.budget.target_macs
    assert np.all(keep >= env.budget.min_keep) and np.all(keep <= structure.channels)
    assert all(k % budget["round_to"] == 0 or k == c for k, c in zip(keep, structure.channels, strict=True))
    assert_masked_equals_cut(structure, plan)
    assert_masked_equals_cut(structure, env.uniform_plan)
