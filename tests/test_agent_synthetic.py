"""The synthetic drifting problem, and the proof on it that modelling the drift helps the agent.

Setting of the regret comparison (all four kinds alike): 8 layers, optimum drifting with period 6
epochs and a phase per layer, reward noise 0.02; 24 epochs x 16 episodes; SAC with 64 updates per epoch
(hidden 64x64, batch 128, 16 warm-up episodes), context fit with 30 steps per epoch; everything else
at its default. Regret = 1 - reward of the greedy episode after each epoch's learning, averaged over the
last 6 epochs (one period).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlal.agent import (
    AgentConfig,
    ContextConfig,
    SyntheticEnv,
    make_agent,
    make_context,
    run_episode,
    run_epoch,
    train_synthetic,
)

SEEDS = (0, 1, 2)
KINDS = ("sac", "sac-no-dynamics", "random", "uniform")


pytestmark = pytest.mark.usefixtures("one_thread")


def comparison_config(kind: str, seed: int) -> AgentConfig:
    return AgentConfig(
        kind=kind, seed=seed, hidden_sizes=[64, 64], updates_per_epoch=64, warmup_episodes=16,
        gamma=1.0,  # AMC's credit: these figures were measured with it (gamma 0 does better, see AgentConfig)
        context=ContextConfig(embed_dim=8, updates_per_epoch=30, max_epochs=32),
    )


def test_optimum_drifts_and_scores_one():
    env = SyntheticEnv()
    optima = np.stack([env.optimum(t) for t in range(7)])
    assert np.allclose(optima[0], optima[6])  # periodic
    assert np.abs(optima[3] - optima[0]).max() > 0.3  # and it moves a lot within a period
    assert all(env.reward_of(env.optimum(t), t) == pytest.approx(1.0) for t in range(6))
    assert env.reward_of(env.optimum(0), 3) < 0.9


def test_state_reveals_the_layer_but_not_the_epoch_and_actions_are_clipped():
    env = SyntheticEnv(noise=0.0, min_keep=0.1)
    agent = make_agent(AgentConfig(kind="uniform", uniform_keep=0.0), env.state_dim, env.num_layers)
    episodes = []
    for epoch in (0, 2):
        env.set_epoch(epoch)
        episodes.append(run_episode(env, agent, epoch))
    first, second = episodes
    assert (first.epoch, second.epoch) == (0, 2)
    assert first.states.shape == (env.num_layers, env.state_dim)
    assert np.array_equal(first.states, second.states)  # nothing in the state tells the epochs apart
    assert np.allclose(first.actions, 0.1) and np.array_equal(first.keep, first.actions)  # as applied
    assert first.reward != second.reward


def test_the_forecast_regret_is_the_greedy_episodes_before_the_epoch_is_learnt():
    cfg = comparison_config("sac", 4)
    runs = []
    for forecast in (False, True):
        env = SyntheticEnv(seed=4)
        agent, context = make_agent(cfg, env.state_dim, env.num_layers), make_context(cfg, env.num_layers)
        history = []
        runs.append([run_epoch(env, agent, context, history, t, 8, forecast=forecast) for t in range(3)])
        if forecast:  # the agent's greedy plan on the next epoch's context, before that epoch is run
            env.set_epoch(3)
            greedy = run_episode(env, agent, 3, context.prior(3), deterministic=True)
            ahead = 1.0 - env.reward_of(greedy.keep, 3)
            assert run_epoch(env, agent, context, history, 3, 8, forecast=True).forecast_regret == ahead
    plain, forecast = runs
    assert all(np.isnan(r.forecast_regret) for r in plain)
    assert all(np.isfinite(r.forecast_regret) for r in forecast)
    # a greedy episode is acted and scored before the exploration: the agent's choices are those of the
    # plain run until the first update; the reward noise each draws is one episode further on
    assert forecast[0].episodes[0].keep.tolist() == plain[0].episodes[0].keep.tolist()
    assert forecast[0].episodes[0].reward != plain[0].episodes[0].reward


def test_same_seed_same_run_and_another_seed_another():
    seeds = (5, 5, 6)
    runs = [train_synthetic(comparison_config("sac", seed), SyntheticEnv(seed=seed), 3, 8) for seed in seeds]
    assert np.array_equal(runs[0].regret, runs[1].regret)
    assert np.array_equal(runs[0].context_mse, runs[1].context_mse)
    assert all(np.array_equal(a.actions, b.actions) for a, b in zip(runs[0].episodes, runs[1].episodes,
                                                                  strict=True))
    assert not np.array_equal(runs[0].regret, runs[2].regret)


@pytest.fixture(scope="module")
def final_regret() -> dict[str, np.ndarray]:
    """Mean regret over the last 6 epochs, per kind, one entry per seed."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    table = {}
    for kind in KINDS:
        table[kind] = np.array([
            train_synthetic(comparison_config(kind, seed), SyntheticEnv(seed=seed), 24, 16).regret[-6:].mean()
            for seed in SEEDS
        ])
    torch.set_num_threads(before)
    return table


def test_modelling_the_drift_tracks_the_optimum_better_than_ignoring_it(final_regret):
    """Measured (seeds 0, 1, 2; the agent acting on and learning from the forecast prior, 2026-12-05):
    sac 0.076, 0.096, 0.076 (mean 0.083, sd 0.012); sac-no-dynamics 0.158, 0.155, 0.148 (mean 0.154, sd
    0.005). With the earlier context (learning from z_t refitted) sac was 0.114, 0.100, 0.088.
    Asserted: better on every seed by 0.02, and on the mean by 0.03."""
    sac, blind = final_regret["sac"], final_regret["sac-no-dynamics"]
    assert np.all(sac < blind - 0.02), (sac, blind)
    assert sac.mean() < blind.mean() - 0.03, (sac, blind)


def test_both_learning_agents_beat_random_and_the_uniform_search(final_regret):
    """Measured: random 0.444, 0.517, 0.526; uniform (best single ratio of the epoch) 0.186, 0.170, 0.184.
    Asserted: SAC with or without the drift model beats random by 0.2 on every seed; the full method
    also beats the uniform search on every seed."""
    for kind in ("sac", "sac-no-dynamics"):
        assert np.all(final_regret[kind] < final_regret["random"] - 0.2), (kind, final_regret)
    assert np.all(final_regret["sac"] < final_regret["uniform"]), final_regret
