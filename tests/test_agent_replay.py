"""Replay buffer: ring capacity, typed batches, seeded sampling, state round-trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlal.agent import Batch, ReplayBuffer


def filled(capacity: int, n: int, seed: int = 0) -> ReplayBuffer:
    buffer = ReplayBuffer(capacity, state_dim=3, seed=seed)
    for i in range(n):
        state = np.full(3, i, dtype=np.float32)
        buffer.add(state, i / 100, float(i), state + 1, done=i % 4 == 3, epoch=i // 4)
    return buffer


def test_batch_is_typed_and_shaped():
    batch = filled(16, 10).sample(5)
    assert isinstance(batch, Batch)
    assert batch.states.shape == (5, 3) and batch.next_states.shape == (5, 3)
    for field in (batch.actions, batch.rewards, batch.dones, batch.epochs):
        assert field.shape == (5,)
    assert batch.states.dtype == torch.float32 and batch.epochs.dtype == torch.int64
    # Each row is one stored transition, its fields kept together.
    assert torch.equal(batch.states[:, 0], batch.rewards)
    assert torch.equal(batch.epochs, (batch.rewards // 4).long())


def test_capacity_wraps_overwriting_the_oldest():
    buffer = filled(5, 7)
    assert len(buffer) == 5 and buffer.pos == 2
    assert sorted(buffer.rewards.tolist()) == [2.0, 3.0, 4.0, 5.0, 6.0]  # transitions 0 and 1 overwritten
    assert buffer.max_epoch() == 1
    drawn = set(buffer.sample(200).rewards.tolist())
    assert drawn == {2.0, 3.0, 4.0, 5.0, 6.0}


def test_sampling_draws_only_filled_slots_and_is_seeded():
    buffer = filled(100, 3)
    assert set(buffer.sample(50).rewards.tolist()) <= {0.0, 1.0, 2.0}
    a, b, c = filled(100, 30, seed=1), filled(100, 30, seed=1), filled(100, 30, seed=2)
    assert torch.equal(a.sample(8).rewards, b.sample(8).rewards)
    assert not torch.equal(a.sample(8).rewards, c.sample(8).rewards)


def test_empty_buffer_refuses_to_sample():
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(4, 3).sample(1)


def test_state_dict_round_trip_continues_the_same_sample_stream():
    source = filled(8, 11, seed=3)
    source.sample(4)
    copy = ReplayBuffer(8, 3, seed=99)
    copy.load_state_dict(source.state_dict())
    assert (copy.pos, len(copy)) == (source.pos, len(source))
    for _ in range(3):
        assert all(torch.equal(x, y) for x, y in zip(copy.sample(6), source.sample(6), strict=True))
    # Adding after the restore overwrites the same slot in both.
    for buffer in (copy, source):
        buffer.add(np.zeros(3), 0.5, -1.0, np.zeros(3), True, 9)
    assert torch.equal(copy.rewards, source.rewards)
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(9, 3).load_state_dict(source.state_dict())
