"""The pruning environment without rewards: action -> keep count, the action wall (every episode meets the
budget), the state vector, infeasible targets, the episode record, the config."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache

import numpy as np
import pytest
import torch
from test_structure_nets import zoo_structure
from torch import nn

from rlal.config import EnvConfig
from rlal.env import STATE_FEATURES, Budget, PruningEnv
from rlal.errors import RlalError
from rlal.structure import Plan, Structure, find_layers

EPISODES = 2000
STATE_TOLERANCE = 1e-6


class PlainNet(nn.Module):
    """VGG-like, test-only: conv-BN-ReLU stacks and pools, then a flattened 2x2 map into a hidden linear
    layer. Every prunable layer's channels are both the output of one layer and the input of the next, so
    the cost is bilinear in neighbouring keep counts (never a per-layer sum)."""

    def __init__(self) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        self.features = nn.Sequential(
            *block(3, 16), *block(16, 24), nn.MaxPool2d(2), *block(24, 32), *block(32, 40), nn.MaxPool2d(2)
        )
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.hidden = nn.Linear(40 * 4, 48)
        self.fc = nn.Linear(48, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.pool(self.features(x)), 1)
        return self.fc(torch.relu(self.hidden(x)))


@cache
def plain_structure() -> Structure:
    torch.manual_seed(0)
    return find_layers(PlainNet(), (3, 16, 16))


WALL: dict[str, object] = {"action_mode": "wall", "min_keep_ratio": 0.1}
"""The paper's absolute actions with AMC's wall (most tests here are about the wall)."""

# (structure factory, EnvConfig overrides, target of the random-policy run)
MODELS: dict[str, tuple[Callable[[], Structure], dict[str, object]]] = {
    "resnet56": (lambda: zoo_structure("resnet56"), {**WALL, "target_macs": 0.5}),
    "mobilenetv2-cifar": (lambda: zoo_structure("mobilenetv2-cifar"),
                          {**WALL, "target_macs": 0.3, "round_to": 8}),
    "plain": (plain_structure, {**WALL, "target_macs": 0.4, "round_to": 4, "min_keep_ratio": 0.2}),
}


def run(env: PruningEnv, actions: Callable[[int], float]):
    """One episode with ``actions(layer)``; returns the finished episode."""
    env.reset()
    done = False
    t = 0
    while not done:
        _, done = env.step(actions(t))
        t += 1
    return env.finish()


# --- the budget -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MODELS))
def test_every_random_episode_meets_the_budget_and_states_stay_in_range(name: str) -> None:
    factory, overrides = MODELS[name]
    structure = factory()
    env = PruningEnv(structure, EnvConfig(**overrides))
    target = env.budget.target_macs
    rng = np.random.default_rng(0)
    for i in range(EPISODES):
        # Half uniform, half skewed towards keeping everything (so the wall binds at every depth).
        power = 1.0 if i % 2 == 0 else 0.15
        episode = run(env, lambda t, power=power: rng.random() ** power)
        assert episode.macs <= target
    macs = np.array([e.macs for e in env.history])
    assert len(macs) == EPISODES and macs.max() <= target
    assert macs.max() >= 0.98 * target  # the wall is tight, not conservative

    states = np.stack([e.states for e in env.history])
    assert states.shape == (EPISODES, len(structure), len(STATE_FEATURES)) == (EPISODES, env.num_layers, 12)
    assert states.dtype == np.float32
    assert states.min() >= -STATE_TOLERANCE and states.max() <= 1 + STATE_TOLERANCE
    actions = np.stack([e.actions for e in env.history])
    assert actions.min() >= 0 and actions.max() <= 1

    # The record prices what it says: plan -> cost model gives the recorded MACs; the keep counts are the
    # counts the applied actions map to.
    for episode in env.history[:20]:
        plan = env.plan_of(episode)
        assert structure.cost.of(plan)[0] == episode.macs
        mapped = [env.budget.count(t, a) for t, a in enumerate(episode.actions)]
        assert mapped == list(plan.keep)


@pytest.mark.parametrize("target", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("name", list(MODELS))
def test_keep_everything_policy_lands_just_below_the_target(name: str, target: float) -> None:
    factory, overrides = MODELS[name]
    env = PruningEnv(factory(), EnvConfig(**{**overrides, "target_macs": target}))
    episode = run(env, lambda t: 1.0)
    assert 0.98 * env.budget.target_macs <= episode.macs <= env.budget.target_macs
    assert episode.actions[0] == 1.0 and episode.actions.min() < 1.0  # clipped, and recorded as clipped


def test_wall_takes_the_largest_count_that_keeps_the_target_reachable() -> None:
    structure = plain_structure()
    env = PruningEnv(structure, EnvConfig(**WALL, target_macs=0.35, round_to=1))
    budget = env.budget
    rng = np.random.default_rng(1)
    clipped = 0
    for _ in range(100):
        raw = rng.random(len(structure)) ** 0.3
        episode = run(env, lambda t, raw=raw: float(raw[t]))
        keep = env.plan_of(episode).array()
        for t in range(len(structure)):
            wanted = budget.count(t, raw[t])
            assert keep[t] <= wanted
            if keep[t] == wanted:
                assert episode.actions[t] == pytest.approx(raw[t])  # unclipped: the agent's own action
                continue
            clipped += 1
            floor = np.concatenate([keep[: t + 1], budget.min_keep[t + 1 :]])
            one_more = floor.copy()
            one_more[t] = budget.allowed[t][np.searchsorted(budget.allowed[t], keep[t]) + 1]
            assert structure.cost.macs(floor) <= budget.target_macs < structure.cost.macs(one_more)
    assert clipped > 50


def test_action_maps_to_keep_counts_as_documented() -> None:
    structure = plain_structure()
    budget = Budget(structure, 0.5, min_keep_ratio=0.1, round_to=1)
    for t, layer in enumerate(structure.layers):
        assert budget.count(t, 0.0) == budget.min_keep[t] == max(1, round(0.1 * layer.channels))
        assert budget.count(t, 1.0) == layer.channels
        for a in np.linspace(0, 1, 41):
            ratio = 0.1 + a * 0.9
            assert budget.count(t, a) == Plan.from_keep_ratios([layer], [ratio]).keep[0]
            count = budget.count(t, a)
            assert budget.count(t, budget.action_of(t, count)) == count  # the recorded action round-trips
    rounded = Budget(structure, 0.5, min_keep_ratio=0.1, round_to=8)
    for t, layer in enumerate(structure.layers):
        counts = {rounded.count(t, a) for a in np.linspace(0, 1, 101)}
        assert all(c % 8 == 0 or c == layer.channels for c in counts)
        assert max(counts) == layer.channels and min(counts) >= 8


# --- relative actions (the default) ---------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MODELS))
def test_relative_episodes_land_on_the_budget_and_never_starve_a_layer(name: str) -> None:
    factory, overrides = MODELS[name]
    structure = factory()
    cfg = EnvConfig(**{**overrides, "action_mode": "relative", "min_keep_ratio": 0.2})
    env = PruningEnv(structure, cfg)
    budget, rng = env.budget, np.random.default_rng(3)
    floor = np.array([counts[0] for counts in budget.allowed])
    for i in range(40):
        power = 1.0 if i % 2 == 0 else 0.15  # some episodes ask to keep nearly everything
        episode = run(env, lambda t, power=power: rng.random() ** power)
        keep = env.plan_of(episode).array()
        assert episode.macs <= budget.target_macs
        assert np.all(keep >= floor)
    macs = np.array([e.macs for e in env.history])
    # every episode spends nearly the whole budget (the plain net's few, 4-rounded channels are coarse steps)
    assert macs.min() >= (0.8 if name == "plain" else 0.95) * budget.target_macs


@pytest.mark.parametrize("name", list(MODELS))
def test_relative_actions_at_one_half_propose_the_uniform_plan(name: str) -> None:
    factory, overrides = MODELS[name]
    env = PruningEnv(factory(), EnvConfig(**{**overrides, "action_mode": "relative", "min_keep_ratio": 0.2}))
    episode = run(env, lambda t: 0.5)
    assert env.plan_of(episode).keep == env.uniform_plan.keep
    np.testing.assert_array_equal(episode.actions, np.full(env.num_layers, 0.5, dtype=np.float32))


@pytest.mark.parametrize("mode", ["relative", "wall"])
def test_a_residual_floor_keeps_every_residual_width_at_or_above_the_uniform_plans(mode: str) -> None:
    structure = zoo_structure("resnet56", policy="all")
    settings = {"target_macs": 0.06, "min_keep_ratio": 0.1, "policy": "all", "action_mode": mode}
    free = PruningEnv(structure, EnvConfig(**settings))
    floored = PruningEnv(structure, EnvConfig(**settings, residual_floor="uniform"))
    residual = np.array([layer.residual for layer in structure.layers])
    uniform = floored.uniform_plan.array()
    assert residual.sum() == 3 and floored.uniform_plan.keep == free.uniform_plan.keep
    rng = np.random.default_rng(0)
    free_narrowed = floored_internal_below = 0
    for _ in range(60):
        actions = rng.random(len(structure))
        free_keep = free.plan_of(run(free, lambda t, a=actions: float(a[t]))).array()
        episode = run(floored, lambda t, a=actions: float(a[t]))
        keep = floored.plan_of(episode).array()
        assert episode.macs <= floored.budget.target_macs
        assert np.all(keep[residual] >= uniform[residual])
        free_narrowed += bool(np.any(free_keep[residual] < uniform[residual]))
        floored_internal_below += bool(np.any(keep[~residual] < uniform[~residual]))
    assert free_narrowed > 10  # without the floor the same actions narrow a residual stream
    assert floored_internal_below == 60  # the internal widths stay free below uniform's


def test_a_residual_floor_without_pruned_residual_layers_is_a_one_line_error() -> None:
    with pytest.raises(RlalError, match=r"^env\.residual_floor=uniform needs env\.policy=all"):
        EnvConfig(residual_floor="uniform").validate()
    assert EnvConfig(residual_floor="uniform", policy="all").validate().residual_floor == "uniform"


def test_relative_actions_tilt_layers_in_the_direction_asked() -> None:
    structure = zoo_structure("resnet56")
    env = PruningEnv(structure, EnvConfig(target_macs=0.5))
    first_half = len(structure) // 2
    episode = run(env, lambda t: 1.0 if t < first_half else 0.0)
    keep = env.plan_of(episode).array() / structure.channels
    assert keep[:first_half].mean() > env.uniform_ratio > keep[first_half:].mean()


class _Stub:
    """A scorer whose accuracy is the mean keep ratio of the plan (and counts its calls)."""

    def __init__(self, structure: Structure) -> None:
        self.channels, self.calls = structure.channels, 0

    def set_epoch(self, epoch: int) -> None:
        pass

    def score(self, plan) -> float:
        self.calls += 1
        return float(np.mean(plan.array() / self.channels))


def test_vs_uniform_reward_is_the_accuracy_minus_the_uniform_plans_on_the_same_weights() -> None:
    structure = plain_structure()
    stub = _Stub(structure)
    env = PruningEnv(structure, EnvConfig(target_macs=0.5), scorer=stub)
    env.set_epoch(0)
    uniform = stub.score(env.uniform_plan)
    assert env.uniform_reward == pytest.approx(uniform)
    episode = run(env, lambda t: 0.9 if t == 0 else 0.3)
    assert episode.reward == pytest.approx(stub.score(env.plan_of(episode)) - uniform)
    assert run(env, lambda t: 0.5).reward == pytest.approx(0.0)
    raw = PruningEnv(structure, EnvConfig(target_macs=0.5, reward="accuracy"), scorer=_Stub(structure))
    raw.set_epoch(0)
    assert run(raw, lambda t: 0.5).reward == pytest.approx(uniform)


# --- infeasible targets ---------------------------------------------------------------------------------


def test_infeasible_targets_fail_at_construction_with_the_feasible_range() -> None:
    structure = zoo_structure("resnet56")
    dense = structure.cost.dense_macs
    feasible = r"feasible targets lie in \[0\.1094, 1\) .* or in \[13,755,008, 125,747,840\) MACs"
    with pytest.raises(RlalError, match=feasible):
        PruningEnv(structure, EnvConfig(**WALL, target_macs=0.05))
    for target in (1.0, float(dense), 2.0 * dense):
        with pytest.raises(RlalError, match="nothing to prune"):
            PruningEnv(structure, EnvConfig(**WALL, target_macs=target))
    smallest = Budget(structure, 0.5).min_macs
    with pytest.raises(RlalError, match="below the smallest sub-network"):
        PruningEnv(structure, EnvConfig(**WALL, target_macs=float(smallest - 1)))
    env = PruningEnv(structure, EnvConfig(**WALL, target_macs=float(smallest)))  # the bound is feasible
    assert run(env, lambda t: 1.0).macs == smallest
    with pytest.raises(RlalError, match=r"min_keep_ratio=0\.5"):
        PruningEnv(structure, EnvConfig(**{**WALL, "target_macs": 0.3, "min_keep_ratio": 0.5}))
    with pytest.raises(RlalError, match="policy"):
        PruningEnv(structure, EnvConfig(**WALL, policy="all"))


# --- episodes, determinism, records ----------------------------------------------------------------------


def test_same_actions_give_the_same_episode() -> None:
    structure = plain_structure()
    actions = np.random.default_rng(2).random(len(structure))
    first = run(PruningEnv(structure, EnvConfig()), lambda t: float(actions[t]))
    again = PruningEnv(structure, EnvConfig())
    run(again, lambda t: 0.5)  # an earlier episode leaves nothing behind
    second = run(again, lambda t: float(actions[t]))
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    assert first.states[0, STATE_FEATURES.index("prev_action")] == 1.0
    np.testing.assert_array_equal(first.states[1:, STATE_FEATURES.index("prev_action")], first.actions[:-1])


def test_episode_protocol_misuse_and_records() -> None:
    structure = plain_structure()
    env = PruningEnv(structure, EnvConfig(**WALL, target_macs=0.5))
    with pytest.raises(RuntimeError):
        env.step(0.5)
    env.reset()
    with pytest.raises(RuntimeError):
        env.finish()
    with pytest.raises(ValueError):
        env.step(float("nan"))
    run(env, lambda t: 2.0)  # out of range: clipped to [0, 1]
    with pytest.raises(RuntimeError):
        env.finish()  # an episode is recorded once
    env.set_epoch(3)
    episode = run(env, lambda t: 0.0)
    assert episode.epoch == 3 and np.isnan(episode.reward)  # no scorer: budget only
    records = json.loads(json.dumps(env.history_records(), allow_nan=False))
    assert [r["epoch"] for r in records] == [0, 3]
    assert records[1]["reward"] is None
    assert records[1]["keep"] == env.plan_of(episode).to_dict()
    assert records[1]["macs"] == episode.macs == env.budget.min_macs
    assert records[1]["macs_ratio"] == pytest.approx(episode.macs / structure.cost.dense_macs)


# --- config -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("target_macs", 0.0),
        ("target_macs", float("nan")),
        ("min_keep_ratio", 0.0),
        ("min_keep_ratio", 1.5),
        ("round_to", 0),
        ("policy", "some"),
        ("residual_floor", "max"),
        ("criterion", "l3"),
        ("reward_batches", 0),
        ("bn_recalibration_batches", -1),
    ],
)
def test_config_validation_names_the_key(key: str, value: object) -> None:
    assert EnvConfig().validate() == EnvConfig()
    with pytest.raises(RlalError, match=rf"^env\.{key} "):
        EnvConfig(**{key: value}).validate()
