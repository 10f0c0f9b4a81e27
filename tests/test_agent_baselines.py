"""The ablation agents: random and uniform keep ratios, with the agent API and no learning."""

from __future__ import annotations

import numpy as np
import pytest

from rlal.agent import AgentConfig, Episode, SyntheticEnv, make_agent, run_episode


def test_random_agent_draws_every_layer_independently_even_when_greedy():
    env = SyntheticEnv(min_keep=0.0)
    agent = make_agent(AgentConfig(kind="random", seed=1), env.state_dim, env.num_layers)
    episodes = [run_episode(env, agent, 0, deterministic=d) for d in (False, True) * 50]
    actions = np.concatenate([e.actions for e in episodes])
    assert actions.min() >= 0 and actions.max() <= 1
    assert 0.4 < actions.mean() < 0.6 and actions.std() > 0.25
    assert len(set(episodes[1].actions.tolist())) == env.num_layers
    assert agent.update(None) == {} and not agent.uses_context


def test_random_agent_is_seeded_and_round_trips():
    env = SyntheticEnv()
    a = make_agent(AgentConfig(kind="random", seed=4), env.state_dim, env.num_layers)
    b = make_agent(AgentConfig(kind="random", seed=9), env.state_dim, env.num_layers)
    run_episode(env, a, 0)
    b.load_state_dict(a.state_dict())
    assert np.array_equal(run_episode(env, a, 0).actions, run_episode(env, b, 0).actions)


def test_uniform_agent_searches_one_ratio_and_keeps_the_best_of_the_latest_epoch():
    env = SyntheticEnv(min_keep=0.0, noise=0.0)
    agent = make_agent(AgentConfig(kind="uniform", seed=0), env.state_dim, env.num_layers)
    assert run_episode(env, agent, 0, deterministic=True).actions.tolist() == [0.5] * env.num_layers
    episodes = [run_episode(env, agent, 0) for _ in range(6)]
    ratios = [float(e.actions[0]) for e in episodes]
    assert all(np.all(e.actions == e.actions[0]) for e in episodes)  # one ratio for every layer
    assert len(set(ratios)) == 6  # a new ratio per episode
    for episode in episodes:
        agent.observe(episode)
    best = ratios[int(np.argmax([e.reward for e in episodes]))]
    greedy = run_episode(env, agent, 0, deterministic=True)
    assert greedy.actions.tolist() == pytest.approx([best] * env.num_layers)

    # A later epoch replaces the record even with a worse reward: the rewards have drifted.
    env.set_epoch(3)
    later = run_episode(env, agent, 3)
    agent.observe(later)
    assert run_episode(env, agent, 3, deterministic=True).actions[0] == pytest.approx(later.actions[0])


def test_uniform_agent_pairs_observed_episodes_with_their_ratios_in_order():
    env = SyntheticEnv(min_keep=0.0, noise=0.0)
    agent = make_agent(AgentConfig(kind="uniform", seed=2), env.state_dim, env.num_layers)
    first, second = run_episode(env, agent, 0), run_episode(env, agent, 0)
    run_episode(env, agent, 0, deterministic=True)  # greedy episodes draw nothing
    agent.observe(first)
    agent.observe(second)
    expected = first if first.reward > second.reward else second
    assert agent.best == (0, expected.reward, pytest.approx(float(expected.actions[0])))
    with pytest.raises(ValueError, match="did not explore"):
        agent.observe(second)


def test_uniform_agent_with_a_fixed_ratio():
    env = SyntheticEnv()
    agent = make_agent(AgentConfig(kind="uniform", uniform_keep=0.3), env.state_dim, env.num_layers)
    for deterministic in (False, True):
        assert run_episode(env, agent, 0, deterministic=deterministic).actions.tolist() == pytest.approx(
            [0.3] * env.num_layers
        )
    agent.observe(Episode(0, np.zeros((1, 4)), np.ones(1), np.ones(1), 1.0))  # nothing to learn
    assert agent.update(None) == {}


def test_uniform_agent_round_trips_mid_search():
    env = SyntheticEnv()
    a = make_agent(AgentConfig(kind="uniform", seed=5), env.state_dim, env.num_layers)
    b = make_agent(AgentConfig(kind="uniform", seed=6), env.state_dim, env.num_layers)
    a.observe(run_episode(env, a, 0))
    pending = run_episode(env, a, 0)
    b.load_state_dict(a.state_dict())
    a.observe(pending)
    b.observe(pending)
    assert a.best == b.best
    assert np.array_equal(run_episode(env, a, 1).actions, run_episode(env, b, 1).actions)
