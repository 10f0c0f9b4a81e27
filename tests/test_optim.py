"""The learning-rate schedule: warm-up, cosine to zero, multi-step decays at the milestones; gradient
clipping."""

from __future__ import annotations

import itertools

import pytest
import torch
from test_joint import joint_config
from test_train import fmnist_dir, small_config  # noqa: F401  (fixture re-used)
from torch import nn

from rlal.config import OptimConfig, RunConfig
from rlal.errors import RlalError
from rlal.report.metrics import read_metrics
from rlal.train.epoch import train_one_epoch
from rlal.train.optim import build_optimizer, build_scheduler, lr_factor, warmup_steps
from rlal.train.run import fit
from rlal.train.runtime import Runtime


def test_cosine_starts_at_one_and_ends_near_zero():
    cfg = OptimConfig(schedule="cosine")
    assert lr_factor(cfg, 0, 100, 0) == pytest.approx(1.0)
    assert lr_factor(cfg, 50, 100, 0) == pytest.approx(0.5)
    assert lr_factor(cfg, 99, 100, 0) < 0.001


def test_warmup_rises_linearly_to_the_base_rate():
    cfg = OptimConfig(schedule="constant", warmup_epochs=1)
    factors = [lr_factor(cfg, s, 100, warmup_steps(cfg.warmup_epochs, [10] * 10)) for s in range(12)]
    assert factors[0] == pytest.approx(0.1)
    assert factors[9] == pytest.approx(1.0)
    assert factors[10:] == [1.0, 1.0]
    assert all(a < b for a, b in itertools.pairwise(factors[:10]))


def test_warmup_is_counted_in_the_steps_of_the_epochs_it_covers():
    assert warmup_steps(0.3, [10] * 5) == 3
    assert warmup_steps(0.3, [5] * 2 + [10] * 3) == 2  # 0.3 of a half-length first epoch, not of a whole one
    assert warmup_steps(1.5, [4, 4, 10, 10]) == 6  # all of the first epoch, half of the second
    assert warmup_steps(0.0, [10] * 5) == 0
    assert warmup_steps(9.0, [10] * 5) == 50  # longer than the run: all of it


def test_multistep_multiplies_by_gamma_at_each_milestone():
    cfg = OptimConfig(schedule="multistep", milestones=[0.5, 0.75], gamma=0.1)
    assert lr_factor(cfg, 49, 100, 0) == pytest.approx(1.0)
    assert lr_factor(cfg, 50, 100, 0) == pytest.approx(0.1)
    assert lr_factor(cfg, 75, 100, 0) == pytest.approx(0.01)


def _lrs(optimizer: torch.optim.Optimizer, scheduler, steps: int) -> list[float]:
    """The learning rate of each of ``steps`` optimiser steps, the scheduler stepped after each."""
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_scheduler_steps_per_batch_over_all_epochs():
    model = torch.nn.Linear(2, 2)
    cfg = OptimConfig(lr=0.2, schedule="cosine")
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, [5, 5])
    lrs = _lrs(optimizer, scheduler, 10)
    assert lrs[0] == pytest.approx(0.2)
    assert lrs[5] == pytest.approx(0.1)
    assert lrs == sorted(lrs, reverse=True)


def test_a_scheduler_built_at_a_start_step_continues_the_full_schedule_from_there():
    cfg = OptimConfig(lr=0.2, schedule="cosine", warmup_epochs=0.4)
    full = build_optimizer(torch.nn.Linear(2, 2), cfg)
    expected = _lrs(full, build_scheduler(full, cfg, [5] * 4), 20)
    later = build_optimizer(torch.nn.Linear(2, 2), cfg)
    lrs = _lrs(later, build_scheduler(later, cfg, [5] * 4, start_step=10), 10)
    assert lrs == pytest.approx(expected[10:])


def _one_step(clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One plain-SGD step (lr 1, no momentum) of a linear layer on a batch whose gradient is large, through
    ``train_one_epoch``: the parameter change, and the step plain SGD takes there (minus the gradient)."""
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    x, y = 100 * torch.randn(8, 4), torch.randint(0, 3, (8,))
    grads = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x), y), list(model.parameters()))
    plain = -torch.cat([g.flatten() for g in grads])
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    runtime = Runtime(device=torch.device("cpu"), amp_dtype=None, channels_last=False)
    stats = train_one_epoch(model, [(x, y)], opt, None, runtime, clip_grad_norm=clip)
    # the epoch records the gradient's norm before clipping, and whether it was clipped
    assert stats.grad_norm_median == stats.grad_norm_max == pytest.approx(plain.norm().item(), rel=1e-5)
    assert stats.clipped_steps == (None if clip == 0 else int(plain.norm() > clip))
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    return after - before, plain


def test_clip_grad_norm_scales_a_large_step_down_to_the_norm_and_zero_leaves_it_unclipped():
    free, plain = _one_step(0.0)
    clipped, _ = _one_step(0.5)
    assert plain.norm() > 0.5  # the batch's gradient is larger than the clip
    assert torch.allclose(free, plain, atol=1e-5)  # 0 = off: the plain SGD step
    assert clipped.norm() == pytest.approx(0.5, rel=1e-4)
    # same direction: clipping only rescales the step
    assert torch.allclose(clipped, plain * (0.5 / plain.norm()), atol=1e-5)


def test_a_negative_clip_grad_norm_is_refused_by_the_config():
    config = RunConfig()
    config.optim.clip_grad_norm = -1.0
    with pytest.raises(RlalError, match=r"optim\.clip_grad_norm"):
        config.validate()


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("method", ["dense", "uniform", "rlal"])
def test_clip_grad_norm_in_the_config_clips_every_training_step_of_each_loop(
    method, fmnist_dir, tmp_path, monkeypatch  # noqa: F811
):
    """The option travels from the config to the optimiser step in the dense, the baselines' and the joint
    loop: every step of the run is clipped at the configured norm, and with 0 none is; each epoch records
    the steps it clipped."""
    norms: list[float] = []
    before: list[float] = []  # each step's total norm before clipping
    clip = nn.utils.clip_grad_norm_

    def spy(parameters, max_norm, *args, **kwargs):
        norms.append(max_norm)
        total = clip(parameters, max_norm, *args, **kwargs)
        before.append(total.item())
        return total

    monkeypatch.setattr(nn.utils, "clip_grad_norm_", spy)
    tiny = ("data.train_subset=128", "train.epochs=4", "data.eval_batch_size=100")
    if method == "rlal":  # warm-up, search, align, then the cut model
        config = joint_config(fmnist_dir, *tiny, "search.search_epochs=1", "search.final_window=1")
    else:
        config = small_config(fmnist_dir, f"method={method}", "env.target_macs=0.5", *tiny)
    steps = 4 * 2  # four epochs of 128 images in batches of 64
    for value, expected in ((0.0, []), (0.9, [0.9] * steps)):  # norms here: 0.7-1.1
        norms.clear()
        before.clear()
        config.optim.clip_grad_norm = value
        fit(config, tmp_path / f"{method}-{value}")
        assert norms == expected
        # each epoch's record counts the steps it clipped (none recorded when clipping is off)
        records = read_metrics(tmp_path / f"{method}-{value}" / "metrics.jsonl")
        records = [r for r in records if "train_loss" in r]
        assert all(0 < r["grad_norm_median"] <= r["grad_norm_max"] for r in records)
        if value == 0:
            assert all("clipped_steps" not in r for r in records)
        else:
            # two steps an epoch: the recorded median is the lower of its two norms (torch's median)
            epochs = [before[i:i + 2] for i in range(0, steps, 2)]
            medians, maxima = [r["grad_norm_median"] for r in records], [r["grad_norm_max"] for r in records]
            assert medians == pytest.approx([min(e) for e in epochs], rel=1e-5)
            assert maxima == pytest.approx([max(e) for e in epochs], rel=1e-5)
            assert 0 < sum(r["clipped_steps"] for r in records) == sum(n > value for n in before) < steps
