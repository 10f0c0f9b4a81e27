"""The joint method end to end on a tiny model and tiny data: warm-up, search with the real SAC, context
model and alignment, cut, fine-tune."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_train import fmnist_dir, small_config  # noqa: F401  (fixture re-used)

from rlal.cli import main
from rlal.env.reward import SubnetScorer
from rlal.errors import RlalError
from rlal.report.metrics import read_metrics
from rlal.structure import Plan, load_pruned
from rlal.train.align import AlignmentRegularizer
from rlal.train.joint import fit_joint


def joint_config(data_dir, *extra: str):
    return small_config(
        data_dir, "method=rlal", "train.epochs=5", "search.warmup_epochs=1", "search.search_epochs=2",
        "search.episodes_per_epoch=4", "search.final_window=2", "env.target_macs=0.5",
        "env.reward_batches=1", "data.eval_batch_size=100", "agent.warmup_episodes=2",
        "agent.updates_per_epoch=8", "agent.batch_size=16", "agent.context.updates_per_epoch=8",
        "search.align.lam=0.01", "search.align.schedule=constant", "data.augment=false", *extra,
    )


pytestmark = pytest.mark.usefixtures("one_thread")


def test_joint_run_meets_the_target_and_the_cut_equals_the_masked_model(fmnist_dir, tmp_path):  # noqa: F811
    result = fit_joint(joint_config(fmnist_dir, "env.bn_recalibration_batches=1"), tmp_path / "run")
    assert result.macs <= 0.5 * result.dense_macs
    assert result.params < result.dense_params

    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    phases = ["warm-up", "search", "search", "final-choice", "align", "cut", "fine-tune"]
    assert [r["phase"] for r in records] == phases
    search = [r for r in records if r["phase"] == "search"]
    assert all(len(r["episode_rewards"]) == 4 for r in search)
    assert all(r["selected_macs"] <= 0.5 * result.dense_macs for r in search)
    assert all(r["align_loss"] > 0 for r in search)  # the first search epoch is aligned too
    assert all(r["decoder_loss"] is not None and r["decoder_heldout_mse"] is not None for r in search)
    choice = next(r for r in records if r["phase"] == "final-choice")
    sources = [c["source"] for c in choice["candidates"]]
    assert sources[0] == "uniform" and choice["chosen"] in sources
    chosen = next(c for c in choice["candidates"] if c["source"] == choice["chosen"])
    assert chosen["plan"] == result.plan.to_dict()
    assert len(set(sources)) == len(sources)  # unique names, though rewards on a few batches tie often
    episodes = json.loads((tmp_path / "run" / "episodes.json").read_text())
    # the exploration episodes alone: the greedy candidate of the final choice is neither scored nor recorded
    assert len(episodes) == 2 * 4 and "greedy" in sources
    named = [c for c in choice["candidates"] if c["source"].startswith("episode ")]
    assert named and all(episodes[int(c["source"].split()[1])]["keep"] == c["plan"] for c in named)
    align = next(r for r in records if r["phase"] == "align")
    at_cut = next(r for r in records if r["phase"] == "cut")
    assert abs(at_cut["masked_test_acc"] - at_cut["cut_test_acc"]) <= 0.1
    assert at_cut["removed_kept_norm_ratio"] == align["removed_kept_norm_ratio"] < 0.9  # pulled down
    assert 0 <= at_cut["cut_test_acc_bn_recalibrated"] <= 100

    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["macs"] == result.macs and saved["test_acc"] == result.test_acc
    small = load_pruned(tmp_path / "run" / "pruned")
    x = torch.randn(3, 1, 28, 28)
    assert torch.allclose(small(x), result.model.eval()(x), atol=1e-5)

    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Final choice" in report and "## At the cut" in report
    for plot in ("accuracy", "rewards", "decoder_loss", "macs", "widths"):
        png = tmp_path / "run" / "plots" / f"{plot}.png"
        assert png.read_bytes()[:4] == b"\x89PNG" and f"plots/{plot}.png" in report
    widths = (tmp_path / "run" / "widths.csv").read_text().splitlines()
    assert widths[0].startswith("layer,dense_channels,kept_channels") and widths[-1].startswith("total,")


def test_greedy_plans_are_neither_scored_nor_recorded_as_episodes(
    fmnist_dir, tmp_path, monkeypatch  # noqa: F811
):
    scored: list[Plan] = []
    score = SubnetScorer.score
    monkeypatch.setattr(SubnetScorer, "score", lambda self, plan: scored.append(plan) or score(self, plan))
    config = joint_config(fmnist_dir, "search.align_to=deterministic", "search.final=deterministic")
    result = fit_joint(config, tmp_path / "run")
    assert len(scored) == 2 * (1 + 4)  # per search epoch the uniform plan and the 4 episodes, no greedy plan
    episodes = json.loads((tmp_path / "run" / "episodes.json").read_text())
    assert [e["epoch"] for e in episodes] == [0] * 4 + [1] * 4  # each epoch's exploration episodes only
    assert all(math.isfinite(e["reward"]) for e in episodes)
    search = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["phase"] == "search"]
    assert all(r["selected_macs"] <= 0.5 * result.dense_macs for r in search)


def test_proximal_alignment_steps_after_every_aligned_step_and_reaches_the_target(
    fmnist_dir, tmp_path, monkeypatch  # noqa: F811
):
    calls: list[float] = []
    penalties = []
    step, penalty = AlignmentRegularizer.prox_step, AlignmentRegularizer.__call__

    def spy_step(self, model, lr):
        calls.append(lr)
        step(self, model, lr)

    def spy_penalty(self, model):
        penalties.append(1)
        return penalty(self, model)

    monkeypatch.setattr(AlignmentRegularizer, "prox_step", spy_step)
    monkeypatch.setattr(AlignmentRegularizer, "__call__", spy_penalty)
    fit_joint(joint_config(fmnist_dir, "search.align.step=proximal"), tmp_path / "run")
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert len(calls) == len(penalties) > 0 and all(lr > 0 for lr in calls)  # one after every aligned step
    at_cut = next(r for r in records if r["phase"] == "cut")
    assert at_cut["removed_kept_norm_ratio"] <= 0.03
    assert at_cut["masked_test_acc"] == at_cut["cut_test_acc"]
    search = [r for r in records if r["phase"] == "search"]
    assert all(r["align_loss"] > 0 for r in search)  # reported, though it is no longer in the loss


@pytest.mark.parametrize("kind", ["random", "sac-no-dynamics"])
def test_agents_without_the_context_model_run_the_whole_loop_and_rescore_with_uniform(
    fmnist_dir, tmp_path, kind  # noqa: F811
):
    result = fit_joint(joint_config(fmnist_dir, f"agent.kind={kind}"), tmp_path / "run")
    assert result.macs <= 0.5 * result.dense_macs
    choice = next(r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["phase"] == "final-choice")
    sources = [c["source"] for c in choice["candidates"]]
    assert sources[0] == "uniform" and ("greedy" in sources) == (kind != "random")


def test_same_seed_gives_the_same_joint_run_on_cpu(fmnist_dir, tmp_path):  # noqa: F811
    config = joint_config(fmnist_dir, "search.search_epochs=1", "train.epochs=4", "search.final_window=1")
    a = fit_joint(config, tmp_path / "a")
    b = fit_joint(config, tmp_path / "b")
    assert a.plan == b.plan and a.test_acc == b.test_acc


def test_runs_of_different_seeds_search_with_different_agent_randomness(fmnist_dir, tmp_path):  # noqa: F811
    keeps, agent_seeds = {}, {}
    for seed in (0, 1):
        config = joint_config(fmnist_dir, "agent.kind=random", f"seed={seed}", "search.search_epochs=1",
                              "train.epochs=4", "search.final_window=1")
        fit_joint(config, tmp_path / f"seed-{seed}")
        episodes = json.loads((tmp_path / f"seed-{seed}" / "episodes.json").read_text())
        keeps[seed] = [episode["keep"] for episode in episodes]
        agent_seeds[seed] = json.loads((tmp_path / f"seed-{seed}" / "run.json").read_text())["agent_seed"]
    # the random agent's plans depend on its draws alone: one agent seed for every run seed gave equal plans
    assert len(keeps[0]) == len(keeps[1]) == 4 and keeps[0] != keeps[1]
    assert agent_seeds == {0: 0, 1: 1}


def test_the_agent_seed_is_the_run_seed_plus_the_configured_offset() -> None:
    from rlal.config import load_config
    from rlal.train.joint import run_agent

    assert run_agent(load_config(None, ["seed=3"])).seed == 3
    assert run_agent(load_config(None, ["seed=3", "agent.seed=100"])).seed == 103


def test_an_infeasible_target_fails_before_training_with_the_feasible_range(fmnist_dir, tmp_path, capsys):  # noqa: F811
    with pytest.raises(RlalError, match="feasible"):
        fit_joint(joint_config(fmnist_dir, "env.target_macs=0.001"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_train_command_runs_the_method(fmnist_dir, tmp_path, capsys):  # noqa: F811
    code = main(["train", "--method", "rlal", "--data-dir", str(fmnist_dir), "--out", str(tmp_path / "run"),
                 "--set", "data.reward_size=100", "--set", "train.progress=false", "--set", "train.epochs=3",
                 "--set", "search.warmup_epochs=1", "--set", "search.search_epochs=1",
                 "--set", "search.episodes_per_epoch=2", "--set", "env.reward_batches=1",
                 "--set", "data.train_subset=128", "--set", "agent.updates_per_epoch=2",
                 "--set", "search.align_epochs=0"])
    assert code == 0, capsys.readouterr().err
    assert "of the dense MACs" in capsys.readouterr().out


def test_demo_prunes_and_prints_dense_vs_pruned(fmnist_dir, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "demo"
    code = main(["demo", "--data-dir", str(fmnist_dir), "--out", str(out),
                 "--set", "data.reward_size=100", "--set", "data.train_subset=128", "--set", "train.epochs=4",
                 "--set", "search.warmup_epochs=1", "--set", "search.search_epochs=1",
                 "--set", "search.final_window=1", "--set", "search.episodes_per_epoch=2",
                 "--set", "env.reward_batches=1", "--set", "env.bn_recalibration_batches=1",
                 "--set", "agent.updates_per_epoch=2", "--set", "train.progress=false"])
    printed = capsys.readouterr().out
    assert code == 0
    for row in ("MACs", "params", "test accuracy", "dense", "pruned", "rlal.load_pruned"):
        assert row in printed
    result = json.loads((out / "result.json").read_text())
    assert result["method"] == "rlal" and result["macs_ratio"] <= 0.5
    assert f"{result['test_acc']:.2f}%" in printed
    load_pruned(out / "pruned")


def test_random_warm_up_episodes_never_outlast_half_the_search() -> None:
    from rlal.config import load_config
    from rlal.train.joint import capped_warmup

    short = load_config(None, ["search.search_epochs=1", "search.episodes_per_epoch=10",
                               "agent.warmup_episodes=20"])
    assert capped_warmup(short.agent, short.search).warmup_episodes == 5  # the policy acts in 5 of 10
    long = load_config(None, ["search.search_epochs=10", "search.episodes_per_epoch=10",
                              "agent.warmup_episodes=20"])
    assert capped_warmup(long.agent, long.search).warmup_episodes == 20
    assert long.agent.warmup_episodes == 20  # the configured value is left alone
