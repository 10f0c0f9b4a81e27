"""The epoch-context model: causal z per epoch, reward decoder, and its fit on held-out episodes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlal.agent import ContextConfig, Episode, EpochContext, SyntheticEnv
from rlal.errors import RlalError

pytestmark = pytest.mark.usefixtures("one_thread")


def random_episodes(
    env: SyntheticEnv, epochs: int, per_epoch: int, rng: np.random.Generator
) -> list[Episode]:
    """Episodes with uniform random keep vectors (a warm-up agent's), rewarded by ``env`` at each epoch."""
    episodes = []
    for epoch in range(epochs):
        for _ in range(per_epoch):
            keep = rng.uniform(env.min_keep, 1.0, env.num_layers).astype(np.float32)
            reward = env.reward_of(keep, epoch) + rng.normal(0.0, env.noise)
            states = np.zeros((env.num_layers, env.state_dim), dtype=np.float32)
            episodes.append(Episode(epoch, states, keep, keep, reward))
    return episodes


@pytest.mark.parametrize("rnn", ["gru", "lstm"])
def test_z_is_one_causal_pass_over_the_epochs(rnn):
    context = EpochContext(ContextConfig(z_dim=5, embed_dim=3, rnn=rnn, max_epochs=10), num_layers=4)
    with torch.no_grad():
        torch.nn.init.normal_(context.net.embeddings.weight)  # fitted embeddings are not all zero
        z_all = context.z_all(6)
        assert z_all.shape == (7, 5)
        assert torch.allclose(context.z_all(2), z_all[:3])  # z_t depends on epochs 0..t only
    assert torch.equal(context.z(4), z_all[4])
    assert not context.z(4).requires_grad
    assert context.predict(np.zeros((3, 4)), [0, 6, 2]).shape == (3,)


@pytest.mark.parametrize("rnn", ["gru", "lstm"])
def test_the_agents_prior_of_an_epoch_reads_the_epochs_before_it_and_a_blank_embedding_for_its_own(rnn):
    context = EpochContext(ContextConfig(z_dim=5, embed_dim=3, rnn=rnn, max_epochs=10), num_layers=4)
    embeddings = context.net.embeddings.weight
    with torch.no_grad():
        torch.nn.init.normal_(embeddings)
        priors = context.priors(6)
        assert priors.shape == (7, 5) and not priors.requires_grad
        for t in (0, 3, 6):
            fitted = embeddings[t].clone()
            embeddings[t] = 0.0  # as when the agent acts in epoch t: none of its rewards fitted yet
            assert torch.allclose(context.prior(t), context.z(t), atol=1e-6)
            assert torch.allclose(priors[t], context.z(t), atol=1e-6)
            embeddings[t] = fitted
        assert not torch.allclose(priors[3], context.z(3))  # z_3 itself reads the fitted e_3
        embeddings[3:] += 1.0  # fitting epoch 3 and later moves z_3, not the prior the agent acted on
        assert torch.allclose(context.priors(6)[:4], priors[:4], atol=1e-6)


def test_epoch_outside_the_table_names_the_setting():
    context = EpochContext(ContextConfig(max_epochs=4), num_layers=2)
    with pytest.raises(RlalError, match=r"agent\.context\.max_epochs=4"):
        context.z(4)


def test_fit_lowers_the_training_error():
    env = SyntheticEnv()
    episodes = random_episodes(env, epochs=3, per_epoch=16, rng=np.random.default_rng(0))
    context = EpochContext(ContextConfig(), num_layers=env.num_layers)
    first = context.fit(episodes, n_updates=1)
    assert context.fit(episodes, n_updates=200) < 0.2 * first
    assert np.isnan(context.fit([], n_updates=5))


def held_out_errors(seed: int) -> tuple[float, float, float]:
    """(held-out MSE, same decoder fitted blind to the epoch, held-out reward variance), fitted as the
    joint loop fits: after each epoch, on every episode so far, with the default 100 steps."""
    env = SyntheticEnv(seed=seed)
    epochs, per_epoch = 12, 48
    rng = np.random.default_rng(seed)
    train = random_episodes(env, epochs, per_epoch, rng)
    held_out = random_episodes(env, epochs, 16, rng)
    errors = []
    for blind in (False, True):
        context = EpochContext(ContextConfig(max_epochs=16), num_layers=env.num_layers, seed=seed)
        relabel = (lambda e: e._replace(epoch=0)) if blind else (lambda e: e)
        for epoch in range(epochs):
            context.fit([relabel(e) for e in train[: (epoch + 1) * per_epoch]])
        with torch.no_grad():
            keep = np.stack([e.keep for e in held_out])
            predicted = context.predict(keep, [relabel(e).epoch for e in held_out])
        rewards = np.array([e.reward for e in held_out])
        errors.append(float(np.mean((predicted.numpy() - rewards) ** 2)))
    return errors[0], errors[1], float(np.var([e.reward for e in held_out]))


def test_decoder_predicts_held_out_rewards_and_needs_the_epoch():
    """Measured (seeds 0, 1, 2): held-out MSE = 0.10, 0.09, 0.09 x the reward variance; the same decoder
    blind to the epoch: 0.69, 0.92, 0.80 x. Asserted: < 0.25 x the variance, and < half the blind error."""
    mse, blind_mse, variance = held_out_errors(seed=0)
    assert mse < 0.25 * variance, (mse, variance)
    assert mse < 0.5 * blind_mse, (mse, blind_mse)


def test_state_dict_round_trip_gives_the_same_z_and_the_same_next_fit():
    env = SyntheticEnv()
    episodes = random_episodes(env, epochs=3, per_epoch=8, rng=np.random.default_rng(1))
    source = EpochContext(ContextConfig(), num_layers=env.num_layers, seed=0)
    source.fit(episodes, n_updates=20)
    copy = EpochContext(ContextConfig(), num_layers=env.num_layers, seed=5)
    copy.load_state_dict(source.state_dict())
    assert torch.equal(copy.z_all(2), source.z_all(2))
    assert copy.fit(episodes, n_updates=7) == source.fit(episodes, n_updates=7)
    assert torch.equal(copy.z_all(2), source.z_all(2))
