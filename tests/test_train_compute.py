"""Training compute counted from a run's schedule (which network trains in which epoch, on how many images),
and the search's scoring passes counted as a joint run makes them."""

from __future__ import annotations

import json

import pytest
from test_resume import joint_overrides
from test_train import fmnist_dir  # noqa: F401  (fixture re-used)

from rlal.benchmark import METHODS, method_config
from rlal.config import load_config, resolve_config_path
from rlal.errors import RlalError
from rlal.report.metrics import read_metrics
from rlal.train.compute import images_per_epoch, matched_epochs, training_macs
from rlal.train.joint import fit_joint
from rlal.train.optim import lr_factor

DENSE, SMALL = 1000, 400


def _config(method: str, *overrides: str):
    base = load_config(None, ["data.train_subset=1000", "data.batch_size=128", "train.epochs=12",
                              "search.warmup_epochs=1", "search.search_epochs=2", "search.align_epochs=1",
                              *overrides])
    return method_config(base, [f"method={method}"])


def test_an_epoch_steps_on_whole_batches_only():
    assert images_per_epoch(_config("uniform")) == 896  # 7 batches of 128; the last 104 images are dropped
    assert images_per_epoch(_config("uniform", "data.train_subset=100")) == 100  # under one batch: kept
    assert images_per_epoch(load_config(None, [])) is None  # the whole split: its size is the data's
    assert images_per_epoch(load_config(None, []), split_images=45_000) == 44_928  # as a run recorded it
    assert images_per_epoch(_config("uniform"), split_images=45_000) == 896  # the subset is what trains


def test_each_method_is_charged_for_the_network_it_trains_in_each_epoch():
    step = 3 * 896  # forward + backward, per image of an epoch
    assert training_macs(_config("dense"), 12, DENSE, DENSE) == step * 12 * DENSE
    assert training_macs(_config("uniform"), 12, DENSE, SMALL) == step * 12 * SMALL
    # the joint method: dense until its cut (warm-up 1 + search 2 + align 1), the small network after
    assert training_macs(_config("rlal"), 12, DENSE, SMALL) == step * (4 * DENSE + 8 * SMALL)
    # three-stage baselines: the dense run (or their own pre-training), then fine-tuning
    depgraph = _config("depgraph", "baseline.finetune_epochs=3")
    assert training_macs(depgraph, 15, DENSE, SMALL) == step * (12 * DENSE + 3 * SMALL)
    magnitude = _config("magnitude")  # fine-tuning defaults to half the pre-training
    assert training_macs(magnitude, 18, DENSE, SMALL) == step * (12 * DENSE + 6 * SMALL)


def test_a_shorter_dense_phase_is_charged_for_the_steps_its_epochs_take():
    half = _config("rlal", "search.dense_epoch_fraction=0.5")
    # 7 steps of 128 an epoch; half of them rounds up to 4 before the cut
    assert training_macs(half, 12, DENSE, SMALL) == 3 * (4 * 4 * 128 * DENSE + 8 * 896 * SMALL)
    # at 50% MACs the dense network costs two small-network epochs: half-epochs before the cut make
    # the joint run's training compute that of uniform on the same epochs' budget
    assert matched_epochs(half, 12, 2 * SMALL, SMALL) == 12
    assert matched_epochs(_config("rlal"), 12, 2 * SMALL, SMALL) == 16


def test_the_dense_phase_share_must_be_in_the_unit_interval():
    for bad in ("0", "-0.5", "1.5"):
        with pytest.raises(RlalError, match=r"search.dense_epoch_fraction must be in \(0, 1\]"):
            _config("rlal", f"search.dense_epoch_fraction={bad}")


def test_schedules_it_cannot_count_are_none_not_a_guess():
    assert training_macs(_config("rlal", "search.subnet_weight=1"), 12, DENSE, SMALL) is None
    whole = method_config(load_config(None, []), ["method=uniform"])  # the whole split, its size unknown
    assert training_macs(whole, 12, DENSE, SMALL) is None
    assert training_macs(whole, 12, DENSE, SMALL, split_images=45_000) == 3 * 44_928 * 12 * SMALL


def test_matched_epochs_spend_the_compute_to_the_nearest_epoch():
    assert matched_epochs(_config("uniform"), 12, DENSE, SMALL) == 12
    assert matched_epochs(_config("rlal"), 12, DENSE, SMALL) == 18  # 4 x 2.5 + 8 small-network epochs
    assert matched_epochs(_config("rlal"), 12, DENSE, 510) == 16  # 4 x 1.96 + 8 = 15.84
    assert matched_epochs(_config("rlal"), 12, DENSE, 540) == 15  # 4 x 1.85 + 8 = 15.41
    assert matched_epochs(_config("dense"), 3, DENSE, 1_000_000) == 1  # never below one epoch
    # the whole training split (no train_subset): images per epoch cancel, so it is still matched
    whole = load_config(None, ["method=rlal", "train.epochs=12", "search.warmup_epochs=1",
                               "search.search_epochs=2", "search.align_epochs=1"])
    assert whole.data.train_subset is None and matched_epochs(whole, 12, DENSE, SMALL) == 18
    assert matched_epochs(_config("rlal", "search.subnet_weight=1"), 12, DENSE, SMALL) is None


@pytest.mark.parametrize("track", ["bench-t1-fmnist-resnet20", "bench-cpu-cifar10-resnet20"])
def test_on_the_cpu_tracks_rlal_costs_what_uniform_spends_in_16_epochs(track):
    # MACs of the tracks' dense ResNet-20 and uniform plan with round_to 8, as their tables record them
    dense, small = {"bench-t1-fmnist-resnet20": (31_021_952, 15_216_512),
                    "bench-cpu-cifar10-resnet20": (40_813_184, 20_169_344)}[track]
    base = load_config(resolve_config_path(track), ["env.round_to=8"])
    rlal = method_config(base, METHODS["rlal"])
    uniform = method_config(base, METHODS["uniform"])
    compute = training_macs(rlal, rlal.train.epochs, dense, small)
    spent = training_macs(uniform, uniform.train.epochs, dense, small)
    assert compute / spent == pytest.approx(1.35, abs=0.01)
    assert matched_epochs(rlal, rlal.train.epochs, dense, small) == 16


def test_a_joint_run_counts_every_image_its_search_scores(fmnist_dir, tmp_path):  # noqa: F811
    # in the search, BN statistics not re-estimated: each scoring is one pass over the 100 reward images
    config = load_config(None, [*joint_overrides(fmnist_dir), "env.bn_recalibration_batches=0",
                                "search.final_bn_sets=2"])
    fit_joint(config, tmp_path / "run")
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    episodes = json.loads((tmp_path / "run" / "episodes.json").read_text())
    choice = next(r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["phase"] == "final-choice")
    uniform = next(c["plan"] for c in choice["candidates"] if c["source"] == "uniform")
    # a plan is scored once per epoch (repeats are answered from the epoch's record), the uniform plan too
    plans_per_epoch = [
        {tuple(sorted(e["keep"].items())) for e in episodes if e["epoch"] == epoch}
        | {tuple(sorted(uniform.items()))}
        for epoch in sorted({e["epoch"] for e in episodes})
    ]
    # the final choice scores each candidate on 2 BN sets, each re-estimated on one batch of 64 first
    images = 100 * sum(len(p) for p in plans_per_epoch) + len(choice["candidates"]) * 2 * (64 + 100)
    assert result["search_forward_images"] == images
    assert result["search_macs"] == images * result["dense_macs"]
    assert result["train_images_per_epoch"] == 256  # data.train_subset


def test_a_joint_run_with_half_epochs_before_the_cut_takes_half_the_steps_and_ends_its_schedule(
    fmnist_dir, tmp_path  # noqa: F811
):
    # 256 training images in batches of 64: 4 steps an epoch, 2 before the cut (warm-up 1, search 3, align 1)
    config = load_config(None, [*joint_overrides(fmnist_dir), "search.dense_epoch_fraction=0.5",
                                "optim.warmup_epochs=1"])
    fit_joint(config, tmp_path / "run")
    epochs = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "train_images" in r]
    assert [r["train_images"] for r in epochs] == [128] * 5 + [256] * 2
    # the learning-rate schedule runs over the 18 steps taken (5 x 2 + 2 x 4): its warm-up of one epoch is the
    # first epoch's 2 steps (so that epoch ends at the base rate), the small model's schedule picks it up at
    # step 10, and the cosine ends at zero with the run
    assert epochs[0]["lr"] == pytest.approx(config.optim.lr, abs=1e-12)
    lrs = [config.optim.lr * lr_factor(config.optim, step, 18, 2) for step in (2, 10, 14, 18)]
    assert [epochs[i]["lr"] for i in (0, 4, 5, 6)] == pytest.approx(lrs, abs=1e-12)
    assert lrs[2] > 0 and lrs[3] == pytest.approx(0.0, abs=1e-12)
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["epochs"] == 7
    # training compute counts the steps the run took, on the network each took them on
    trained = 3 * (5 * 128 * result["dense_macs"] + 2 * 256 * result["macs"])
    assert training_macs(config, 7, result["dense_macs"], result["macs"]) == trained
