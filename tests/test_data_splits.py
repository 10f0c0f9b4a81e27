"""Reward split and seeded subsets: deterministic, disjoint, the right sizes."""

from __future__ import annotations

import pytest
import torch

from rlal.data import auto_reward_size, derive_seed, reward_split, seeded_subset
from rlal.errors import DataError


def test_reward_split_is_deterministic_for_a_seed():
    a = reward_split(1000, 100, seed=3)
    b = reward_split(1000, 100, seed=3)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_reward_split_is_disjoint_complete_and_sized_with_train_sorted():
    train, reward = reward_split(1000, 100, seed=0)
    assert len(reward) == 100 and len(train) == 900
    assert train.dtype == reward.dtype == torch.int64
    assert not set(train.tolist()) & set(reward.tolist())
    assert sorted(train.tolist() + reward.tolist()) == list(range(1000))
    assert torch.equal(train, train.sort().values)


def test_first_reward_images_sample_every_class_of_class_sorted_data():
    labels = torch.arange(10).repeat_interleave(500)  # 5,000 images stored class by class
    _, reward = reward_split(5000, 1000, seed=0)
    first_batch = labels[reward[:128]]
    assert set(first_batch.tolist()) == set(range(10))


def test_reward_split_differs_between_seeds():
    assert not torch.equal(reward_split(1000, 100, 0)[1], reward_split(1000, 100, 1)[1])


def test_reward_split_of_zero_is_empty():
    train, reward = reward_split(10, 0, seed=0)
    assert reward.numel() == 0 and train.tolist() == list(range(10))


@pytest.mark.parametrize("size", [10, 11])
def test_reward_split_leaving_no_training_image_names_the_key(size):
    with pytest.raises(DataError, match=r"data\.reward_size \(" + str(size) + r"\).*training images \(10\)"):
        reward_split(10, size, seed=0)


def test_seeded_subset_is_a_deterministic_sorted_sample():
    pool = torch.arange(100, 200)
    a = seeded_subset(pool, 10, 0, "train_subset")
    assert len(a) == 10 and set(a.tolist()) <= set(pool.tolist())
    assert torch.equal(a, seeded_subset(pool, 10, 0, "train_subset"))
    assert torch.equal(a, a.sort().values)
    assert not torch.equal(a, seeded_subset(pool, 10, 1, "train_subset"))


def test_seeded_subset_larger_than_pool_keeps_all():
    pool = torch.arange(5)
    assert seeded_subset(pool, 50, 0, "x") is pool and seeded_subset(pool, None, 0, "x") is pool


def test_derive_seed_is_stable_across_processes():
    # Pinned: Python's hash() of a string would change with PYTHONHASHSEED; splits must not.
    assert derive_seed(1, "a") == 8415240736594023236
    assert derive_seed(0, "reward") != derive_seed(1, "reward")
    assert 0 <= derive_seed(12345, "train", 7) < 2**63


@pytest.mark.parametrize(
    ("n_train", "size"),
    [(60_000, 5000), (50_000, 5000), (1_281_167, 5000), (20_000, 2000), (3_000, 500), (1_000, 200),
     (100, 20), (20, 4), (2, 1), (1, 0)],
)
def test_an_unset_reward_size_is_a_tenth_of_the_training_images_with_a_floor_and_a_cap(n_train, size):
    assert auto_reward_size(n_train) == size
