"""bench/reward_fidelity.py's statistics: the rank correlation it reports, the plans it keeps and the noise of
the reward over BN batch sets."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "reward_fidelity.py"
spec = importlib.util.spec_from_file_location("reward_fidelity", SCRIPT)
assert spec is not None and spec.loader is not None
rf = importlib.util.module_from_spec(spec)
sys.modules["reward_fidelity"] = rf
spec.loader.exec_module(rf)


def test_spearman_is_one_for_any_increasing_relation_and_minus_one_for_a_decreasing_one():
    x = [0.1, 0.5, 0.2, 3.0, 1.0]
    assert rf.spearman(x, [v**3 + 7 for v in x]) == pytest.approx(1.0)
    assert rf.spearman(x, [-v for v in x]) == pytest.approx(-1.0)


def test_spearman_gives_tied_values_their_mean_rank():
    # ranks of a: 0.5, 0.5, 2, 3 (the tie shares 0 and 1); b's ranks 0, 1, 2, 3
    a, b = [1.0, 1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0]
    ra = [0.5, 0.5, 2.0, 3.0]
    mean = sum(ra) / 4
    cov = sum((r - mean) * (s - 1.5) for r, s in zip(ra, [0, 1, 2, 3], strict=True))
    var_a = sum((r - mean) ** 2 for r in ra)
    var_b = sum((s - 1.5) ** 2 for s in [0, 1, 2, 3])
    assert rf.spearman(a, b) == pytest.approx(cov / (var_a * var_b) ** 0.5)


def test_spearman_of_a_constant_is_undefined():
    assert rf.spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) != rf.spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])


def test_spread_keeps_both_ends_of_the_ranking_and_evenly_spaced_plans_between():
    order = [9, 4, 7, 1, 0, 3, 8, 2, 6, 5]
    kept = rf._spread(order, 4)
    assert kept[0] == 9 and kept[-1] == 5 and len(kept) == 4
    assert kept == [order[p] for p in (0, 3, 6, 9)]
    assert rf._spread(order[:3], 5) == order[:3]


def _record(index: int, seed: int, acc: float, source: str = "") -> dict:
    return {"index": index, "seed": seed, "source": source or f"plan-{index}", "scratch_final_test_acc": acc}


def test_paired_over_seeds_subtracts_uniform_of_the_same_seed_and_skips_seeds_uniform_lacks():
    records = [_record(0, 7, 88.0, "uniform"), _record(0, 8, 89.0, "uniform"),
               _record(2, 7, 88.5), _record(2, 8, 88.0), _record(2, 9, 95.0),  # no uniform on seed 9
               _record(3, 8, 89.25)]
    paired = rf.paired_over_seeds(records)
    assert set(paired) == {"plan-2", "plan-3"}
    assert paired["plan-2"]["seeds"] == [7, 8]
    assert paired["plan-2"]["differences"] == [0.5, -1.0]
    assert paired["plan-2"]["mean"] == pytest.approx(-0.25)
    assert paired["plan-2"]["std"] == pytest.approx(round((2 * 0.75**2) ** 0.5, 2))
    assert paired["plan-2"]["se"] == pytest.approx(0.75)  # std / sqrt(2)
    assert paired["plan-2"]["interval_95"] == pytest.approx([-0.25 - 12.706 * 0.75, -0.25 + 12.706 * 0.75],
                                                            abs=0.01)  # t(0.975, 1 df) = 12.706
    assert paired["plan-3"] == {"seeds": [8], "differences": [0.25], "mean": 0.25, "std": None, "se": None,
                                "interval_95": None}


def test_scratch_records_written_without_a_seed_count_as_the_runs_own(tmp_path):
    (tmp_path / rf.SCRATCH).write_text('{"index": 0, "scratch_final_test_acc": 88.0}\n'
                                       '{"index": 0, "seed": 8, "scratch_final_test_acc": 89.0}\n')
    records = rf._scratch_records(tmp_path, SimpleNamespace(seed=7))
    assert [r["seed"] for r in records] == [7, 8]


def test_screen_set_changes_only_the_budget_and_refuses_other_keys_or_a_screened_directory(tmp_path):
    from rlal.config import load_config, resolve_config_path, save_config
    from rlal.errors import RlalError

    save_config(load_config(resolve_config_path("bench-t2-fmnist-resnet56")), tmp_path / "config.yaml")
    rf._rebudget(tmp_path, ["env.target_macs=0.2", "env.policy=all"])
    config = load_config(tmp_path / "config.yaml")
    assert (config.env.target_macs, config.env.policy, config.train.epochs) == (0.2, "all", 10)
    with pytest.raises(RlalError, match="env"):
        rf._rebudget(tmp_path, ["train.epochs=3"])
    (tmp_path / "plans.json").write_text("{}")
    with pytest.raises(RlalError, match=r"plans\.json exists"):
        rf._rebudget(tmp_path, ["env.target_macs=0.3"])
    assert load_config(tmp_path / "config.yaml").env.target_macs == 0.2


def test_reward_noise_pairs_each_plan_with_uniform_on_the_same_bn_set():
    # 3 plans (uniform first) x 2 BN sets x 4 images. Uniform scores 2/4 then 1/4; plan 1 always 1 image more
    # than uniform on the same set (reward +25 on both: no noise), plan 2 3/4 on both sets (+25, then +50).
    correct = np.array([
        [[1, 1, 0, 0], [1, 0, 0, 0]],
        [[1, 1, 1, 0], [1, 1, 0, 0]],
        [[1, 1, 1, 0], [1, 1, 1, 0]],
    ], dtype=np.float64)
    noise = rf.reward_noise(correct)
    assert noise["uniform_acc_mean"] == 37.5
    assert noise["uniform_acc_std_over_sets"] == pytest.approx(round(25 / 2**0.5, 2))
    assert noise["reward_mean"] == [25.0, 37.5]
    assert noise["reward_std_over_sets"] == [0.0, pytest.approx(round(25 / 2**0.5, 2))]
    assert noise["reward_std_over_plans"] == pytest.approx(round(12.5 / 2**0.5, 2))


def test_the_noise_stage_refuses_a_single_bn_set_with_a_one_line_error(tmp_path, capsys):
    (tmp_path / "plans.json").write_text("{}")
    (tmp_path / "prefix.safetensors").write_bytes(b"")
    assert rf.main(["noise", "--out", str(tmp_path), "--bn-sets", "1"]) == 2
    assert "--bn-sets >= 2" in capsys.readouterr().err


def _chain() -> torch.nn.Module:
    """conv 3->8 at 16x16, conv 8->16 with stride 2 (8x8), pooled linear head: channels of the first conv
    cost more MACs than the second's."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1, bias=False), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10))


def test_marginal_macs_is_what_one_more_channel_adds_to_the_cut_network():
    from rlal.models import count_macs_params
    from rlal.structure import cut, find_layers

    structure = find_layers(_chain(), (3, 16, 16))
    keep = np.array([4, 8])
    marginal = rf.marginal_macs(structure, keep)

    def real(counts: list[int]) -> int:
        kept = {name: range(k) for name, k in zip(structure.names, counts, strict=True)}
        return count_macs_params(cut(structure, kept=kept), (3, 16, 16))[0]

    assert marginal[0] == real([5, 8]) - real([4, 8])
    assert marginal[1] == real([4, 9]) - real([4, 8])
    assert marginal[0] > marginal[1]  # a full-resolution channel feeding 8 outputs against a stride-2 one
    whole = rf.marginal_macs(structure, structure.channels.copy())  # a whole layer: one channel fewer
    assert whole[1] == real([8, 16]) - real([8, 15])


def test_a_positive_cost_tilt_widens_the_cheap_layer_on_the_same_budget_and_a_negative_one_the_dear_one():
    from rlal.config import EnvConfig
    from rlal.env import PruningEnv
    from rlal.structure import find_layers

    structure = find_layers(_chain(), (3, 16, 16))
    env = PruningEnv(structure, EnvConfig(target_macs=0.4, min_keep_ratio=0.1))
    uniform = env.uniform_plan.array() / structure.channels
    toward_cheap = rf.cost_tilt(env, 1.0).array() / structure.channels
    toward_dear = rf.cost_tilt(env, -1.0).array() / structure.channels
    assert toward_cheap[1] > uniform[1] and toward_cheap[0] < uniform[0]
    assert toward_dear[0] > uniform[0] and toward_dear[1] < uniform[1]
    for plan in (rf.cost_tilt(env, 1.0), rf.cost_tilt(env, -1.0)):
        assert env.budget.fits(plan.array())


def test_the_given_stage_refuses_a_missing_records_file_with_a_one_line_error(tmp_path, capsys):
    missing = tmp_path / "nope.json"
    code = rf.main(["given", "--config", "bench-t2-fmnist-mobilenetv2", "--out", str(tmp_path / "out"),
                    "--records", str(missing)])
    assert code == 2
    err = capsys.readouterr().err
    assert "nope.json" in err and len(err.strip().splitlines()) == 1


def test_stages_that_score_on_the_prefix_weights_refuse_a_directory_of_given_plans(tmp_path, capsys):
    (tmp_path / "plans.json").write_text('{"given": true, "plans": []}')
    for stage in ("train", "noise"):
        assert rf.main([stage, "--out", str(tmp_path)]) == 2
        assert "prefix.safetensors is missing" in capsys.readouterr().err
