"""SAC conditioned on the epoch context: squashed actions, twin critics with Polyak targets, temperature
tuning, AMC-style credit, z looked up from the current context model, and an exact state round-trip."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from torch.distributions import AffineTransform, Normal, TanhTransform, TransformedDistribution

from rlal.agent import AgentConfig, ContextConfig, Episode, SyntheticEnv, make_agent, make_context, run_epoch
from rlal.agent.sac import ACTION_BIAS, ACTION_SCALE, SACAgent

pytestmark = pytest.mark.usefixtures("one_thread")


def small_config(kind: str = "sac", **changes) -> AgentConfig:
    settings = dict(
        kind=kind, hidden_sizes=[16, 16], batch_size=32, warmup_episodes=0, updates_per_epoch=5,
        context=ContextConfig(z_dim=4, embed_dim=3, decoder_hidden=[16], updates_per_epoch=5, max_epochs=16),
    )
    settings.update(changes)
    return AgentConfig(**settings)


def trained(cfg: AgentConfig, epochs: int = 2, num_layers: int = 4):
    """An agent, its context model (or None) and the environment, after ``epochs`` loop epochs."""
    env = SyntheticEnv(num_layers=num_layers, seed=cfg.seed)
    agent = make_agent(cfg, env.state_dim, env.num_layers)
    context = make_context(cfg, env.num_layers)
    history: list[Episode] = []
    for epoch in range(epochs):
        run_epoch(env, agent, context, history, epoch, episodes_per_epoch=8)
    return agent, context, env, history


def test_actions_are_keep_ratios_in_the_unit_interval():
    agent, context, env, _ = trained(small_config())
    z = context.prior(1)
    states = np.random.default_rng(0).normal(0, 5, size=(200, env.state_dim)).astype(np.float32)
    actions = [agent.act(s, z, deterministic=d) for s in states for d in (False, True)]
    assert all(0.0 <= a <= 1.0 for a in actions)
    # Saturated means still map inside [0, 1], with a finite log-probability.
    with torch.no_grad():
        agent.actor.fc_mean.bias.fill_(50.0)
        action, log_pi = agent.actor.sample(torch.zeros(3, env.state_dim + 4), agent.generator)
    assert torch.all((action >= 0) & (action <= 1)) and torch.all(torch.isfinite(log_pi))


def test_warmup_actions_are_uniform_random_then_the_policy_acts():
    cfg = small_config(warmup_episodes=3)
    agent = make_agent(cfg, state_dim=4, num_layers=4)
    state, z = np.zeros(4, dtype=np.float32), torch.zeros(4)
    warmup = [agent.act(state, z) for _ in range(400)]
    assert 0.2 < np.mean(warmup) < 0.8 and min(warmup) < 0.05 and max(warmup) > 0.95
    agent.episodes_seen = 3
    policy = [agent.act(state, z) for _ in range(50)]
    assert np.std(policy) < np.std(warmup)  # a Gaussian around one mean, not the whole interval


def test_log_prob_matches_torch_tanh_transformed_normal():
    agent = make_agent(small_config(kind="sac-no-dynamics"), state_dim=4, num_layers=4)
    obs = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    action, log_pi = agent.actor.sample(obs, torch.Generator().manual_seed(1))
    mean, log_std = agent.actor(obs)
    reference = TransformedDistribution(
        Normal(mean, log_std.exp()), [TanhTransform(), AffineTransform(ACTION_BIAS, ACTION_SCALE)]
    )
    assert torch.allclose(log_pi, reference.log_prob(action), atol=1e-3)


def test_greedy_action_is_the_squashed_mean_and_draws_no_noise():
    agent, context, env, _ = trained(small_config())
    z, state = context.prior(1), env.reset()
    before = agent.generator.get_state()
    greedy = agent.act(state, z, deterministic=True)
    assert torch.equal(agent.generator.get_state(), before)
    obs = torch.cat([torch.as_tensor(state).unsqueeze(0), z.unsqueeze(0)], dim=1)
    with torch.no_grad():
        mean, _ = agent.actor(obs)
    assert greedy == pytest.approx(torch.tanh(mean).item() * 0.5 + 0.5, abs=1e-6)


def test_terminal_credit_pays_the_reward_at_the_last_layer_only():
    agent = make_agent(small_config(credit="terminal"), state_dim=2, num_layers=3)
    states = np.arange(6, dtype=np.float32).reshape(3, 2)
    agent.observe(Episode(4, states, np.array([0.1, 0.2, 0.3]), np.array([0.1, 0.2, 0.3]), 0.7))
    assert agent.replay.rewards[:3].tolist() == pytest.approx([0.0, 0.0, 0.7])
    assert agent.replay.dones[:3].tolist() == [0.0, 0.0, 1.0]


def test_every_step_credit_pays_every_layer_the_final_reward_and_only_the_last_is_done():
    agent = make_agent(small_config(), state_dim=2, num_layers=3)  # the default credit
    states = np.arange(6, dtype=np.float32).reshape(3, 2)
    agent.observe(Episode(4, states, np.array([0.1, 0.2, 0.3]), np.array([0.1, 0.2, 0.3]), 0.7))
    buffer = agent.replay
    assert len(buffer) == 3
    assert buffer.rewards[:3].tolist() == pytest.approx([0.7] * 3)
    assert buffer.dones[:3].tolist() == [0.0, 0.0, 1.0]
    assert torch.equal(buffer.next_states[:2], buffer.states[1:3])
    assert torch.equal(buffer.next_states[2], torch.zeros(2))
    assert buffer.epochs[:3].tolist() == [4, 4, 4]
    assert buffer.actions[:3].tolist() == pytest.approx([0.1, 0.2, 0.3])


def test_moving_average_baseline_is_subtracted_at_push_time():
    agent = make_agent(small_config(reward_baseline="moving-average", baseline_rate=0.5), 2, 1)
    for reward in (1.0, 3.0, 3.0):
        agent.observe(Episode(0, np.zeros((1, 2)), np.ones(1), np.ones(1), reward))
    # baseline: starts at the first reward (1), then 1 -> 2 -> 2.5; each reward minus the level before it
    assert agent.replay.rewards[:3].tolist() == pytest.approx([0.0, 2.0, 1.0])
    assert agent.baseline == pytest.approx(2.5)


@pytest.mark.parametrize(("scale", "invariant"), [("std", True), ("none", False)])
def test_the_std_reward_scale_makes_learning_independent_of_the_rewards_units(scale: str, invariant: bool):
    rng = np.random.default_rng(0)
    episodes = [
        (rng.normal(size=(3, 2)).astype(np.float32), rng.uniform(size=3), float(rng.normal(0.02, 0.03)))
        for _ in range(8)
    ]
    agents = []
    for unit in (1.0, 100.0):  # accuracy as a fraction, and in points
        agent = make_agent(small_config("sac-no-dynamics", reward_scale=scale, updates_per_epoch=100), 2, 3)
        for states, actions, reward in episodes:
            agent.observe(Episode(0, states, actions, actions, reward * unit))
        agent.update(None)
        agents.append(agent)
    pairs = zip(agents[0].actor.parameters(), agents[1].actor.parameters(), strict=True)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in pairs) is invariant
    if invariant:
        spread = np.std([reward for _, _, reward in episodes], ddof=1)
        assert agents[0].reward_scale() == pytest.approx(1 / spread, rel=1e-5)
        assert agents[1].reward_scale() == pytest.approx(1 / (100 * spread), rel=1e-5)


def test_the_std_reward_scale_is_one_until_two_episodes_are_stored():
    agent = make_agent(small_config("sac-no-dynamics", reward_scale="std"), 2, 3)
    assert agent.reward_scale() == 1.0
    agent.observe(Episode(0, np.zeros((3, 2)), np.ones(3), np.ones(3), 0.5))
    assert agent.reward_scale() == 1.0  # one reward has no spread; three transitions hold it
    agent.observe(Episode(0, np.zeros((3, 2)), np.ones(3), np.ones(3), 0.7))
    assert agent.reward_scale() == pytest.approx(1 / np.std([0.5, 0.7], ddof=1))


def test_target_critics_move_by_polyak_averaging():
    agent, context, _, _ = trained(small_config(tau=0.3))
    target_before = [p.clone() for p in agent.qf1_target.parameters()]
    batch = agent.replay.sample(32)
    z = context.priors(agent.replay.max_epoch())[batch.epochs]
    agent.sac_step(batch, z)
    for before, online, after in zip(target_before, agent.qf1.parameters(), agent.qf1_target.parameters(),
                                     strict=True):
        assert torch.allclose(after, 0.7 * before + 0.3 * online, atol=1e-6)
        assert not torch.equal(after, online)


@pytest.mark.parametrize(("target_entropy", "direction"), [(-20.0, -1), (5.0, +1)])
def test_alpha_falls_when_entropy_is_above_target_and_rises_when_below(target_entropy, direction):
    agent, context, _, _ = trained(small_config(target_entropy=target_entropy))
    alpha_before = agent.alpha
    stats = agent.update(context, n_updates=3)
    entropy_above_target = stats["entropy"] > target_entropy
    assert entropy_above_target == (direction < 0)
    assert math.copysign(1, agent.alpha - alpha_before) == direction


def test_fixed_alpha_when_autotune_is_off():
    agent, context, _, _ = trained(small_config(autotune_alpha=False, init_alpha=0.3))
    agent.update(context, n_updates=3)
    assert agent.alpha == pytest.approx(0.3)


def test_critic_sees_the_current_prior_context_of_each_transitions_epoch():
    agent, context, env, _ = trained(small_config(updates_per_epoch=0), epochs=3)
    seen: list[torch.Tensor] = []
    agent.qf1.register_forward_pre_hook(lambda module, args: seen.append(args[0][:, env.state_dim:].clone()))
    replay_state = agent.replay.generator.get_state()

    agent.update(context, n_updates=1)
    batch_epochs = _first_batch_epochs(agent, replay_state)
    assert torch.equal(seen[0], context.priors(2)[batch_epochs])  # what the agent acted on, not z_t refitted
    assert not torch.allclose(seen[0], context.z_all(2).detach()[batch_epochs])
    z_before = context.priors(2).clone()

    # Change the context model (as the next fit would): the critic must see the new z, not a stored one.
    with torch.no_grad():
        context.net.embeddings.weight[:3] += 1.0
    seen.clear()
    agent.update(context, n_updates=1)
    batch_epochs = _first_batch_epochs(agent, _advance(replay_state, agent))
    assert torch.equal(seen[0], context.priors(2)[batch_epochs])
    later = batch_epochs > 0  # epoch 0's prior reads no embedding at all
    assert later.any() and not torch.allclose(seen[0][later], z_before[batch_epochs][later])


def _first_batch_epochs(agent: SACAgent, generator_state: torch.Tensor) -> torch.Tensor:
    generator = torch.Generator()
    generator.set_state(generator_state)
    idx = torch.randint(0, len(agent.replay), (agent.cfg.batch_size,), generator=generator)
    return agent.replay.epochs[idx]


def _advance(generator_state: torch.Tensor, agent: SACAgent) -> torch.Tensor:
    generator = torch.Generator()
    generator.set_state(generator_state)
    torch.randint(0, len(agent.replay), (agent.cfg.batch_size,), generator=generator)
    return generator.get_state()


def test_agent_update_never_moves_the_context_model():
    agent, context, _, _ = trained(small_config())
    before = {k: v.clone() for k, v in context.net.state_dict().items()}
    agent.update(context, n_updates=4)
    assert all(torch.equal(before[k], v) for k, v in context.net.state_dict().items())


def test_the_method_needs_z_and_the_ablation_ignores_it():
    agent, _, env, _ = trained(small_config())
    with pytest.raises(ValueError, match="context"):
        agent.act(env.reset(), None)
    with pytest.raises(ValueError, match="context"):
        agent.update(None, n_updates=1)
    ablation, none_context, env, _ = trained(small_config(kind="sac-no-dynamics"))
    assert none_context is None
    state = env.reset()
    assert ablation.act(state, None, True) == ablation.act(state, torch.ones(4), True)
    assert ablation.update(None, n_updates=1)["qf1_loss"] >= 0


def test_update_learns_from_fewer_transitions_than_a_batch_but_not_from_none():
    agent = make_agent(small_config(kind="sac-no-dynamics", batch_size=64), state_dim=4, num_layers=4)
    assert agent.update(None, n_updates=3) == {}
    agent.observe(Episode(0, np.zeros((4, 4)), np.ones(4) / 2, np.ones(4) / 2, 0.5))
    before = [p.clone() for p in agent.qf1.parameters()]
    stats = agent.update(None, n_updates=3)
    assert stats and any(not torch.equal(a, b) for a, b in zip(before, agent.qf1.parameters(), strict=True))


def test_state_round_trip_of_agent_buffer_and_context_gives_identical_continuation():
    """Checkpoint mid-run (through torch.save, weights_only load), restore into fresh objects built
    with another seed, and continue: actions, losses, alpha and fits must match bit for bit."""
    cfg = small_config(seed=3)
    agent, context, env, history = trained(cfg, epochs=3)
    buffer = io.BytesIO()
    torch.save({"agent": agent.state_dict(), "context": context.state_dict()}, buffer)
    checkpoint_env, checkpoint_history = _copy_env(env), list(history)

    original = [run_epoch(env, agent, context, history, epoch, 8) for epoch in (3, 4)]

    other = small_config(seed=11)
    restored_agent = make_agent(other, env.state_dim, env.num_layers)
    restored_context = make_context(other, env.num_layers)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    restored_agent.load_state_dict(state["agent"])
    restored_context.load_state_dict(state["context"])
    resumed = [
        run_epoch(checkpoint_env, restored_agent, restored_context, checkpoint_history, epoch, 8)
        for epoch in (3, 4)
    ]
    for a, b in zip(original, resumed, strict=True):
        assert a.agent_stats == b.agent_stats and a.agent_stats
        assert a.context_mse == b.context_mse and a.regret == b.regret
        for ea, eb in zip(a.episodes, b.episodes, strict=True):
            assert np.array_equal(ea.actions, eb.actions) and ea.reward == eb.reward
    assert restored_agent.alpha == agent.alpha
    assert torch.equal(restored_agent.replay.rewards, agent.replay.rewards)


def _copy_env(env: SyntheticEnv) -> SyntheticEnv:
    copy = SyntheticEnv(num_layers=env.num_layers, seed=0)
    copy.rng.bit_generator.state = env.rng.bit_generator.state
    return copy


def test_kind_mismatch_on_load_is_refused():
    sac = make_agent(small_config(), 4, 4)
    with pytest.raises(ValueError, match="sac-no-dynamics"):
        make_agent(small_config(kind="sac-no-dynamics"), 4, 4).load_state_dict(sac.state_dict())
