"""The honest final choice: a non-uniform plan is cut only when it beats the uniform plan by more than
the noise of a paired comparison on the same weights and images."""

from __future__ import annotations

import numpy as np
import pytest

from rlal.structure import Plan
from rlal.train.choice import decide

NAMES = ("a", "b")


def plans(n: int) -> list[Plan]:
    return [Plan(NAMES, (i + 1, 4)) for i in range(n)]


def correctness(rng: np.random.Generator, accuracy: float, sets: int = 3, images: int = 2000) -> np.ndarray:
    return (rng.random((sets, images)) < accuracy).astype(np.float64)


def test_a_candidate_within_the_noise_loses_to_uniform() -> None:
    rng = np.random.default_rng(0)
    shared = correctness(rng, 0.85)
    close = shared.copy()
    flip = rng.random(shared.shape) < 0.01  # 1% of the answers differ, in both directions
    close[flip] = 1 - close[flip]
    choice = decide(np.stack([shared, close]), plans(2), ["uniform", "episode"], margin=2.0)
    assert choice.candidates[choice.chosen].source == "uniform"
    assert choice.record()["kept_uniform"] is True
    assert choice.candidates[1].se > 0


def test_a_candidate_clearly_better_than_uniform_is_chosen_with_its_difference() -> None:
    rng = np.random.default_rng(1)
    uniform = correctness(rng, 0.80)
    better = np.maximum(uniform, (rng.random(uniform.shape) < 0.10))  # right on ~10% of uniform's misses too
    worse = uniform * (rng.random(uniform.shape) > 0.05)
    sources = ["uniform", "greedy", "episode"]
    choice = decide(np.stack([uniform, worse, better]), plans(3), sources, margin=2.0)
    assert choice.candidates[choice.chosen].source == "episode"
    best = choice.candidates[2]
    assert best.diff == pytest.approx(100 * (better - uniform).mean())
    assert best.diff > 2 * best.se
    assert choice.candidates[0].diff == 0.0 and choice.candidates[0].se == 0.0
    record = choice.record()
    assert record["chosen"] == "episode" and len(record["candidates"]) == 3


def test_the_margin_decides_a_borderline_candidate() -> None:
    rng = np.random.default_rng(2)
    uniform = correctness(rng, 0.8)
    slight = uniform.copy()
    wrong = np.flatnonzero(uniform[0] == 0)[:30]
    slight[:, wrong] = 1  # +1.5 points on every BN set
    diff = decide(np.stack([uniform, slight]), plans(2), ["uniform", "episode"], margin=0.0)
    assert diff.candidates[diff.chosen].source == "episode"
    strict = decide(np.stack([uniform, slight]), plans(2), ["uniform", "episode"], margin=1e6)
    assert strict.candidates[strict.chosen].source == "uniform"
