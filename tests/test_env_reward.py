"""The reward: masked sub-network accuracy on the reward split equals the cut model's, scoring leaves the
training model untouched, importance once per epoch, warnings for NaN or constant rewards, make_env."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_structure_nets import realistic
from torch import nn

from rlal.agent import Episode
from rlal.config import EnvConfig
from rlal.data import Data, dataset_spec
from rlal.env import PruningEnv, SubnetScorer, make_env, recalibrated_bn
from rlal.errors import RlalError
from rlal.models import create_model
from rlal.structure import Plan, Structure, cut, find_layers
from rlal.train.epoch import evaluate, train_one_epoch
from rlal.train.runtime import Runtime

CPU = Runtime(device=torch.device("cpu"), amp_dtype=None, channels_last=False)
SHAPE = (3, 32, 32)


pytestmark = pytest.mark.usefixtures("one_thread")


class ListLoader:
    """A :class:`rlal.data.Loader` over fixed batches."""

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.batches = batches
        self.num_samples = sum(len(y) for _, y in batches)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return iter(self.batches)

    def set_epoch(self, epoch: int) -> None:
        pass


def random_batches(n: int, size: int, seed: int, shape: tuple[int, ...] = SHAPE) -> ListLoader:
    g = torch.Generator().manual_seed(seed)
    return ListLoader(
        [(torch.randn(size, *shape, generator=g), torch.zeros(size, dtype=torch.long)) for _ in range(n)]
    )


def resnet20() -> Structure:
    return find_layers(realistic(create_model("resnet20"), SHAPE), SHAPE)


def random_episode(env: PruningEnv, seed: int) -> Episode:
    rng = np.random.default_rng(seed)
    env.reset()
    done = False
    while not done:
        _, done = env.step(rng.random())
    return env.finish()


def predictions(model: nn.Module, loader: ListLoader) -> list[torch.Tensor]:
    with torch.no_grad():
        return [model.eval()(x).argmax(1) for x, _ in loader]


@pytest.mark.parametrize("recalibrate", [0, 2])
def test_masked_reward_equals_the_cut_model_accuracy_on_the_same_batches(recalibrate: int) -> None:
    structure = resnet20()
    train = random_batches(3, 16, seed=1)
    scored = random_batches(2, 16, seed=2)
    budget_only = PruningEnv(structure, EnvConfig(target_macs=0.5))
    plan = budget_only.plan_of(random_episode(budget_only, seed=0))
    small = cut(structure, plan)  # top-k by l2 on the current weights, as the scorer chooses

    def calibrated() -> contextlib.AbstractContextManager:
        return (
            recalibrated_bn(small, list(train)[:recalibrate], CPU)
            if recalibrate
            else contextlib.nullcontext()
        )

    with calibrated():
        labels = predictions(small, scored)
    # Labels = the cut model's predictions, every third one made wrong: the rewards below equal the cut
    # model's accuracy only if the two networks agree on every image.
    labels = [torch.where(torch.arange(len(y)) % 3 == 0, (y + 1) % 10, y) for y in labels]
    reward = ListLoader([(x, y) for (x, _), y in zip(scored, labels, strict=True)])
    model = structure.model.train()
    for reward_batches in (2, None):
        scorer = SubnetScorer(
            structure, reward, CPU, reward_batches=reward_batches, train=train,
            bn_recalibration_batches=recalibrate,
        )  # fmt: skip
        with calibrated():
            expected = evaluate(small, scorer.batches, CPU).acc / 100
        assert scorer.score(plan) == expected
        assert model.training  # the training model is handed back in train mode
    assert 0.5 < expected < 0.8
    assert scorer.score(Plan.dense(structure)) != expected  # the plan matters: the dense model differs


def test_reward_batches_are_the_same_first_batches_of_the_split_for_every_episode() -> None:
    # The data layer holds the reward split out in a shuffled order, so its first batches are a fair sample.
    split = ListLoader([(torch.full((16, 3, 4, 4), float(k)), torch.full((16,), k)) for k in range(8)])
    scorer = SubnetScorer(find_layers(TinyNet(), (3, 16, 16)), split, CPU, reward_batches=2, seed=0)
    for _ in range(2):  # re-iterable: every episode sees the same images
        assert [y[0].item() for _, y in scorer.batches] == [0, 1]
    everything = SubnetScorer(find_layers(TinyNet(), (3, 16, 16)), split, CPU, reward_batches=50).batches
    assert torch.equal(torch.cat([y for _, y in everything]), torch.cat([y for _, y in split]))


def test_scoring_leaves_the_training_model_exactly_as_it_was() -> None:
    structure = resnet20()
    model = structure.model.train()
    model.bn1.eval()  # a frozen BN: a mixed train/eval state must survive too
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.grad.clone() for p in model.parameters()]
    modes = {name: m.training for name, m in model.named_modules()}
    momenta = {name: m.momentum for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}

    train = random_batches(2, 8, seed=3)
    env = PruningEnv(
        structure,
        EnvConfig(target_macs=0.5, reward="accuracy"),
        SubnetScorer(structure, random_batches(1, 8, seed=4), CPU, train=train, bn_recalibration_batches=2),
    )
    rewards = [random_episode(env, seed).reward for seed in range(3)]
    assert all(0.0 <= r <= 1.0 for r in rewards)

    after = model.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads, strict=True))
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert {name: m.momentum for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)} == momenta
    assert not [h for m in model.modules() for h in m._forward_hooks.values()]  # masks switched off


def test_recalibration_really_reestimates_and_then_restores() -> None:
    structure = resnet20()
    model = structure.model.train()
    bn = model.bn1
    mean = bn.running_mean.clone()
    with recalibrated_bn(model, list(random_batches(2, 8, seed=5, shape=SHAPE)), CPU):
        assert not torch.equal(bn.running_mean, mean)
        assert bn.num_batches_tracked.item() == 2
        assert not model.training and not bn.training  # the recalibrated statistics are in use
    assert torch.equal(bn.running_mean, mean)
    assert model.training and bn.training


def test_importance_is_scored_once_per_epoch() -> None:
    structure = resnet20()
    scorer = SubnetScorer(structure, random_batches(1, 4, seed=6), CPU)
    env = PruningEnv(structure, EnvConfig(target_macs=0.5, reward="accuracy"), scorer)
    scores = scorer.scores
    random_episode(env, 0)
    random_episode(env, 1)
    assert scorer.scores is scores  # not recomputed between the episodes of an epoch
    layer = structure.layers[0]
    conv = dict(structure.model.named_modules())[layer.name]
    with torch.no_grad():  # a training step's worth of change
        conv.weight.mul_(torch.linspace(0.1, 2.0, layer.channels).view(-1, 1, 1, 1))
    env.set_epoch(1)
    assert scorer.epoch == 1 and env.epoch == 1
    assert not torch.equal(scorer.scores[layer.name], scores[layer.name])


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 24, 3, padding=1, stride=2, bias=False), nn.BatchNorm2d(24), nn.ReLU(),
        )  # fmt: skip
        self.fc = nn.Linear(24, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(self.body(x), 1).flatten(1))


COLOURS = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [-1.0, -1.0, -1.0]])


def colour_batches(n: int, size: int, seed: int) -> ListLoader:
    """Noise images tinted by their class's colour: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n):
        y = torch.randint(0, 4, (size,), generator=g)
        x = torch.randn(size, 3, 16, 16, generator=g) + COLOURS[y].view(size, 3, 1, 1)
        batches.append((x, y))
    return ListLoader(batches)


def test_reward_of_a_briefly_trained_model_is_an_accuracy_in_unit_interval() -> None:
    torch.manual_seed(0)
    model = TinyNet()
    train, reward = colour_batches(12, 32, seed=7), colour_batches(2, 64, seed=8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train_one_epoch(model, train, optimizer, None, CPU)
    structure = find_layers(model, (3, 16, 16))
    cfg = EnvConfig(target_macs=0.6, bn_recalibration_batches=2, reward_batches=None, reward="accuracy")
    test = ListLoader([])  # make_env must never touch the test split
    data = Data(dataset_spec("cifar10"), ("a", "b", "c", "d"), "generated", train, reward, test)
    env = make_env(structure, cfg, data, CPU)
    env.set_epoch(0)
    rewards = [random_episode(env, seed).reward for seed in range(4)]
    dense = SubnetScorer(structure, reward, CPU).score(Plan.dense(structure))
    assert all(0.0 <= r <= 1.0 for r in rewards)
    assert dense > 0.5  # trained: well above the 0.25 of chance
    assert max(rewards) > 0.25


class CountingLoader(ListLoader):
    """A ListLoader that counts the passes over it (one per evaluated sub-network)."""

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        super().__init__(batches)
        self.passes = 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.passes += 1
        return super().__iter__()


def test_a_plan_scored_again_in_the_same_epoch_is_answered_without_evaluating_it_again() -> None:
    structure = resnet20()
    reward = CountingLoader(random_batches(2, 8, seed=4).batches)
    cfg = EnvConfig(target_macs=0.5, reward="accuracy")
    env = PruningEnv(structure, cfg, SubnetScorer(structure, reward, CPU))
    env.set_epoch(0)
    plan = env.plan_of(random_episode(env, seed=0))
    assert reward.passes == 1
    first = env.score(plan)
    assert env.score(plan) == first and reward.passes == 1  # the repeat is not evaluated
    assert first == SubnetScorer(structure, ListLoader(reward.batches), CPU).score(plan)  # the same number
    env.score(env.uniform_plan)
    assert reward.passes == 2  # another plan is
    with torch.no_grad():  # the weights change between epochs: the next epoch evaluates every plan anew
        structure.model.fc.weight.neg_()
    env.set_epoch(1)
    again = env.score(plan)
    assert reward.passes == 3
    assert again == SubnetScorer(structure, ListLoader(reward.batches), CPU).score(plan)


def test_scorer_errors_come_before_training() -> None:
    structure = resnet20()
    with pytest.raises(RlalError, match="reward split is empty"):
        SubnetScorer(structure, ListLoader([]), CPU)
    with pytest.raises(RlalError, match="bn_recalibration_batches"):
        SubnetScorer(structure, random_batches(1, 2, seed=0), CPU, bn_recalibration_batches=1)
    no_bn = find_layers(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3)), (3, 8, 8))
    with pytest.raises(RlalError, match="bn_scale"):
        SubnetScorer(no_bn, random_batches(1, 2, seed=0, shape=(3, 8, 8)), CPU, criterion="bn_scale")


class FixedScorer:
    def __init__(self, rewards: list[float]) -> None:
        self.rewards = iter(rewards)

    def set_epoch(self, epoch: int) -> None:
        pass

    def score(self, plan: Plan) -> float:
        return next(self.rewards)


def test_nan_or_constant_rewards_are_logged_as_warnings(caplog: pytest.LogCaptureFixture) -> None:
    structure = find_layers(TinyNet(), (3, 16, 16))
    nan = float("nan")
    env = PruningEnv(
        structure, EnvConfig(target_macs=0.6, reward="accuracy"),
        FixedScorer([0.3, 0.5, 0.4, 0.7, 0.7, 0.7, nan, 0.2]),
    )
    caplog.set_level(logging.WARNING, logger="rlal.env")
    for epoch, episodes in enumerate([3, 3, 2]):
        env.set_epoch(epoch)
        for seed in range(episodes):
            random_episode(env, seed)
    messages = [r.getMessage() for r in caplog.records if r.name == "rlal.env"]
    assert len(messages) == 1 and "epoch 1" in messages[0] and "constant" in messages[0]  # epoch 0 varied
    assert env.check_epoch_rewards(2) == ["epoch 2: 1 of 2 episode rewards are NaN"]
    assert "NaN" in caplog.records[-1].getMessage()
    assert PruningEnv(structure, EnvConfig(target_macs=0.6)).check_epoch_rewards(0) == []  # no scorer


def test_episodes_that_all_cut_one_plan_may_share_a_reward_without_a_warning() -> None:
    structure = find_layers(TinyNet(), (3, 16, 16))
    env = PruningEnv(structure, EnvConfig(target_macs=0.6, reward="accuracy"), FixedScorer([0.5] * 6))
    env.set_epoch(0)
    same = [random_episode(env, seed=4) for _ in range(3)]  # one plan, as a fixed uniform agent's
    assert len({env.plan_of(e).keep for e in same}) == 1
    assert env.check_epoch_rewards(0) == []
    env.set_epoch(1)
    differ = [random_episode(env, seed) for seed in range(3)]
    assert len({env.plan_of(e).keep for e in differ}) >= 2
    assert "constant" in env.check_epoch_rewards(1)[0]  # different plans, one reward: flagged
