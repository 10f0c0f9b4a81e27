"""The quality benchmark harness: every method through the same config, a table read from the runs, and
runs that are already finished are reused."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from test_resume import joint_overrides
from test_train import fmnist_dir  # noqa: F401  (fixture re-used)

from rlal.benchmark import (
    METHODS,
    RunRecord,
    from_record,
    matched_uniform_epochs,
    method_config,
    parse_methods,
    parse_seeds,
    run_quality_bench,
    run_record,
    uniform_plan_macs,
    write_results,
)
from rlal.config import load_config, resolve_config_path
from rlal.errors import RlalError
from rlal.machine import cpu_name
from rlal.report.stats import summarize_paired

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_harness_runs_each_method_and_tabulates_only_what_the_runs_wrote(fmnist_dir, tmp_path):  # noqa: F811
    config = tmp_path / "track.yaml"
    config.write_text("method: rlal\n")
    overrides = [*joint_overrides(fmnist_dir), "train.epochs=5", "search.search_epochs=2",
                 "baseline.finetune_epochs=1"]
    runs, results = tmp_path / "runs", tmp_path / "results"
    log: list[str] = []
    table = run_quality_bench(config, "tiny", ["dense", "uniform", "magnitude", "rlal", "no-align"], [0],
                              runs, results, overrides, log=log.append)

    text = table.read_text()
    main_table = text.split("| method | what it is")[1].split("\n\n")[0]
    rows = [line for line in main_table.splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == ["dense", "uniform", "magnitude", "rlal", "no-align"]
    for row in rows:
        method = row.split("`")[1]
        result = json.loads((runs / "tiny" / method / "seed-0" / "result.json").read_text())
        assert f"{result['test_acc']:.2f}" in row
        assert (results / "tiny" / f"{method}-seed0.yaml").is_file()
    magnitude = json.loads((runs / "tiny" / "magnitude" / "seed-0" / "result.json").read_text())
    assert magnitude["dense_run"] == str(runs / "tiny" / "dense" / "seed-0")  # pruned the table's dense run
    assert magnitude["epochs"] == 5 + 1
    assert load_config(runs / "tiny" / "no-align" / "seed-0" / "config.yaml").search.align.lam == 0
    assert (results / "tiny.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # beside the table: one record per run, the cut check of the joint runs, the paired differences
    records = json.loads((results / "tiny.json").read_text())
    methods = ["dense", "uniform", "magnitude", "rlal", "no-align"]
    assert sorted(r["method"] for r in records) == sorted(methods)
    rlal = next(r for r in records if r["method"] == "rlal")
    uniform = next(r for r in records if r["method"] == "uniform")
    assert rlal["cut"]["removed_kept_norm_ratio"] >= 0 and rlal["final_choice"]
    assert uniform["cut"] is None
    assert f"| `rlal` − `uniform` | 0 | {rlal['test_acc'] - uniform['test_acc']:+.2f} |" in text
    cut_rows = [line for line in text.splitlines() if line.startswith("| `rlal` | 0 |")]
    assert len(cut_rows) == 1 and rlal["final_choice"] in cut_rows[0]

    log.clear()  # a second invocation with one more seed runs only the new runs
    run_quality_bench(config, "tiny", ["dense", "uniform"], [0, 1], runs, results, overrides, log=log.append)
    assert [line for line in log if "running" in line] == [
        f"dense seed 1: running -> {runs / 'tiny' / 'dense' / 'seed-1'}",
        f"uniform seed 1: running -> {runs / 'tiny' / 'uniform' / 'seed-1'}",
    ]
    table = (results / "tiny.md").read_text()
    dense_row = next(line for line in table.splitlines() if "`dense`" in line)
    assert "±" in dense_row and "0,1" in dense_row
    assert "`rlal`" in table and "`no-align`" in table  # rows of the earlier invocation stay
    pair = next(line for line in table.splitlines() if line.startswith("| `uniform` − `dense` | 0,1 |"))
    cells = [cell.strip() for cell in pair.strip("|").split("|")]  # difference, seeds, mean, SE, interval
    acc = {(m, s): json.loads((runs / "tiny" / m / f"seed-{s}" / "result.json").read_text())["test_acc"]
           for m in ("uniform", "dense") for s in (0, 1)}  # fmt: skip
    summary = summarize_paired([acc["uniform", s] - acc["dense", s] for s in (0, 1)])
    assert cells[4] == f"[{summary.ci[0]:+.2f}, {summary.ci[1]:+.2f}]" and cells[3] == f"{summary.se:.2f}"


def test_unknown_methods_and_bad_seeds_are_one_line_errors():
    with pytest.raises(RlalError, match="unknown method 'prune-it'"):
        parse_methods("dense,prune-it")
    with pytest.raises(RlalError, match="comma-separated"):
        parse_seeds("0,one")
    assert parse_methods("rlal, dense,rlal") == ["rlal", "dense"]


def test_the_paper_row_aligns_with_the_papers_subgradient_while_the_method_row_uses_the_default():
    base = load_config(None, [])
    assert method_config(base, METHODS["rlal-paper"]).search.align.step == "subgradient"
    assert method_config(base, METHODS["rlal"]).search.align.step == base.search.align.step == "proximal"


def test_the_residual_floor_row_floors_the_residual_widths_and_needs_them_pruned():
    base = load_config(None, ["env.policy=all"])
    assert method_config(base, METHODS["rlal-residual-floor"]).env.residual_floor == "uniform"
    assert method_config(base, METHODS["rlal"]).env.residual_floor == "min"
    with pytest.raises(RlalError, match=r"residual_floor=uniform needs env\.policy=all"):
        method_config(load_config(None, []), METHODS["rlal-residual-floor"])


def test_the_subnet_row_trains_sub_networks_and_the_method_row_does_not():
    base = load_config(None, [])
    assert method_config(base, METHODS["rlal-subnet"]).search.subnet_weight == 1.0
    assert method_config(base, METHODS["rlal"]).search.subnet_weight == base.search.subnet_weight == 0.0


def test_the_half_dense_row_halves_the_epochs_before_the_cut_and_the_method_row_does_not():
    base = load_config(None, [])
    assert method_config(base, METHODS["rlal-half-dense"]).search.dense_epoch_fraction == 0.5
    assert method_config(base, METHODS["rlal"]).search.dense_epoch_fraction == 1.0


def _finished_run(run_dir, test_acc, cut=None, host=None):
    """A run folder as a finished run leaves it, with only what the table reads."""
    run_dir.mkdir(parents=True)
    result = {"test_acc": test_acc, "macs": 500, "dense_macs": 1000, "params": 40, "plan": None,
              "seconds": 10.0, "epochs": 5, "model": "resnet20", "dataset": "fashion-mnist",
              "test_images": 100}
    if cut is not None:
        result |= {f"at_cut_{key}": value for key, value in cut.items()}
        choice = {"phase": "final-choice", "chosen": "uniform"}
        (run_dir / "metrics.jsonl").write_text(json.dumps(choice) + "\n")
    (run_dir / "result.json").write_text(json.dumps(result))
    (run_dir / "config.yaml").write_text("method: rlal\n")
    (run_dir / "run.json").write_text(json.dumps({"device": "cpu", **({"host": host} if host else {})}))


def test_a_table_rewritten_on_a_new_machine_keeps_the_runs_its_records_hold(tmp_path):
    config = tmp_path / "track.yaml"
    config.write_text("method: rlal\n")
    base = load_config(config, [])
    cut = {"dense_test_acc": 80.0, "masked_test_acc": 79.0, "cut_test_acc": 79.0,
           "removed_kept_norm_ratio": 0.01, "cut_test_acc_bn_recalibrated": 79.5}
    old_runs, new_runs, results = tmp_path / "old", tmp_path / "new", tmp_path / "results"
    _finished_run(old_runs / "t" / "uniform" / "seed-0", 88.0)
    _finished_run(old_runs / "t" / "rlal" / "seed-0", 89.0, cut)
    _finished_run(old_runs / "t" / "rlal" / "seed-1", 70.0, cut)
    write_results("t", config, base, old_runs, results)
    first = {(r["method"], r["seed"]): r for r in json.loads((results / "t.json").read_text())}

    # the first machine is gone; the second holds uniform seed 1 and a re-run of rlal seed 1
    _finished_run(new_runs / "t" / "uniform" / "seed-1", 87.5)
    _finished_run(new_runs / "t" / "rlal" / "seed-1", 88.0, cut)
    text = write_results("t", config, base, new_runs, results).read_text()

    records = {(r["method"], r["seed"]): r for r in json.loads((results / "t.json").read_text())}
    assert sorted(records) == [("rlal", 0), ("rlal", 1), ("uniform", 0), ("uniform", 1)]
    assert records[("rlal", 1)]["test_acc"] == 88.0  # this machine's run folder wins over the record
    assert records[("rlal", 0)] == first[("rlal", 0)] and records[("uniform", 0)] == first[("uniform", 0)]
    assert records[("rlal", 0)]["cut"] == cut and records[("rlal", 0)]["final_choice"] == "uniform"
    assert "| `rlal` − `uniform` | 0,1 | +0.75 ± 0.35 | 0.25 | [-2.43, +3.93] | +1.00, +0.50 |" in text
    assert "earlier `t.json`" in text and "uniform seed 0; rlal seed 0." in text
    assert "| `rlal` | 0 | 0.010 | 80.00 | 79.00 | 79.00 | 79.50 | +1.00 | uniform |" in text


def test_runs_the_records_hold_are_not_run_again_and_no_run_runs_nothing(tmp_path):
    config = tmp_path / "track.yaml"
    config.write_text("method: rlal\n")
    old_runs, new_runs, results = tmp_path / "old", tmp_path / "new", tmp_path / "results"
    _finished_run(old_runs / "t" / "uniform" / "seed-0", 88.0)
    write_results("t", config, load_config(config, []), old_runs, results)
    recorded, table = results / "t.json", results / "t.md"
    written = table.read_text()
    logs: list[str] = []
    # a new machine without runs: uniform seed 0 is in the records, rlal seed 0 nowhere, and --no-run
    assert run_quality_bench(config, "t", ["uniform", "rlal"], [0], new_runs, results, log=logs.append,
                             run=False) == table
    assert logs == [f"uniform seed 0: done on another machine (recorded in {recorded}); not run again",
                    "rlal seed 0: not run (--no-run)",
                    f"no run of t on this machine: {results / 't'}.md left as it was"]
    assert not new_runs.exists() and table.read_text() == written
    # with a run of its own, the table is written again, the recorded run carried over
    _finished_run(new_runs / "t" / "uniform" / "seed-1", 87.0)
    logs.clear()
    run_quality_bench(config, "t", ["uniform", "rlal"], [0, 1], new_runs, results, log=logs.append, run=False)
    assert logs[:2] == [f"uniform seed 0: done on another machine (recorded in {recorded}); not run again",
                        f"uniform seed 1: done ({new_runs / 't' / 'uniform' / 'seed-1'})"]
    runs = [(r["method"], r["seed"]) for r in json.loads(recorded.read_text())]
    assert runs == [("uniform", 0), ("uniform", 1)]
    assert "| `rlal` |" not in table.read_text()


def test_a_table_names_the_machine_its_runs_recorded_not_the_one_that_writes_it(tmp_path):
    config = tmp_path / "track.yaml"
    config.write_text("method: rlal\n")
    base = load_config(config, [])
    gpu = "a 16-core Intel(R) Xeon(R) Processor with an NVIDIA H200"
    _finished_run(tmp_path / "runs" / "t" / "uniform" / "seed-0", 88.0, host=gpu)
    _finished_run(tmp_path / "runs" / "t" / "rlal" / "seed-0", 89.0, host=gpu)
    text = write_results("t", config, base, tmp_path / "runs", tmp_path / "results").read_text()
    assert f"--seeds 0` on {gpu} (cpu)." in text
    # a run from before hosts were recorded: this machine, as before; a caller's word wins over both
    _finished_run(tmp_path / "runs" / "t" / "uniform" / "seed-1", 87.0)
    text = write_results("t", config, base, tmp_path / "runs", tmp_path / "results").read_text()
    assert f"` on a {os.cpu_count()}-core {cpu_name()} (cpu)." in text
    text = write_results("t", config, base, tmp_path / "runs", tmp_path / "results",
                         machine="the lab's box").read_text()
    assert "` on the lab's box (cpu)." in text


def test_records_that_are_not_a_tables_are_a_one_line_error_and_stay_as_they_were(tmp_path):
    config = tmp_path / "track.yaml"
    config.write_text("method: rlal\n")
    _finished_run(tmp_path / "runs" / "t" / "uniform" / "seed-0", 88.0)
    results = tmp_path / "results"
    results.mkdir()
    (results / "t.json").write_text('[{"method": "prune-it", "seed": 0}]')
    with pytest.raises(RlalError, match=r"t\.json is not a table's records \(unknown method 'prune-it'\)"):
        write_results("t", config, load_config(config, []), tmp_path / "runs", results)
    assert (results / "t.json").read_text() == '[{"method": "prune-it", "seed": 0}]'
    assert not (results / "t.md").exists()


def test_a_record_read_back_is_the_run_it_was_written_from_less_its_folder(tmp_path):
    joint = RunRecord("rlal", 3, tmp_path, {
        "test_acc": 89.5, "macs": 7_000_000, "params": 200_000, "plan": {"stem.conv": 9},
        "dense_macs": 70_000_000, "at_cut_removed_kept_norm_ratio": 0.015, "at_cut_cut_test_acc": 64.2},
        1100.0, 10, "uniform")
    dense = RunRecord("dense", 0, tmp_path, {"test_acc": 90.4, "macs": 70_000_000, "params": 2_000_000,
                                             "plan": None}, 750.0, 10)
    for run in (joint, dense):
        back = from_record(json.loads(json.dumps(run_record(run))))
        assert back.run_dir is None
        assert (back.method, back.seed, back.result, back.seconds, back.epochs, back.choice) == (
            run.method, run.seed, run.result, run.seconds, run.epochs, run.choice)
        assert run_record(back) == run_record(run)


def test_a_three_stage_run_moved_off_its_machine_finds_its_dense_run_beside_it(tmp_path):
    config = tmp_path / "track.yaml"
    config.write_text("method: rlal\n")
    base = load_config(config, [])
    runs = tmp_path / "runs"
    _finished_run(runs / "t" / "dense" / "seed-0", 90.0)
    _finished_run(runs / "t" / "depgraph" / "seed-0", 88.0)
    result_path = runs / "t" / "depgraph" / "seed-0" / "result.json"
    result = json.loads(result_path.read_text()) | {"dense_run": "/gone/machine/runs/t/dense/seed-0"}
    result_path.write_text(json.dumps(result))
    write_results("t", config, base, runs, tmp_path / "results")
    records = {r["method"]: r for r in json.loads((tmp_path / "results" / "t.json").read_text())}
    assert records["depgraph"]["seconds"] == 20.0  # its own 10 s and the dense run's 10 s

    shutil.rmtree(runs / "t" / "dense")
    with pytest.raises(RlalError, match=r"pruned the dense run /gone/machine/runs/t/dense/seed-0, which is "
                                        r"neither there nor at .*dense/seed-0"):
        write_results("t", config, base, runs, tmp_path / "results2")


def _track(tmp_path):
    config = tmp_path / "track.yaml"
    config.write_text("method: rlal\ndata:\n  train_subset: 1000\ntrain:\n  epochs: 12\nsearch:\n"
                      "  warmup_epochs: 1\n  search_epochs: 2\n  align_epochs: 1\n")
    return config, load_config(config, [])


def test_uniform_matched_trains_for_the_epochs_rlals_compute_buys(tmp_path):
    config, base = _track(tmp_path)
    runs, results = tmp_path / "runs", tmp_path / "results"
    # uniform's network has half the dense MACs: rlal's 4 dense + 8 small epochs cost 16 small ones
    _finished_run(runs / "t" / "uniform" / "seed-0", 88.0)  # macs 500 of dense 1000
    assert matched_uniform_epochs(base, "t", runs, results / "t.json") == 16
    # from the table's records alone, on a machine without the uniform run
    write_results("t", config, base, runs, results)
    assert matched_uniform_epochs(base, "t", tmp_path / "elsewhere", results / "t.json") == 16
    # with no uniform run at all, from the uniform plan of the zoo model (24 epochs: 4 dense + 20 small)
    longer = load_config(config, ["train.epochs=24"])
    assert matched_uniform_epochs(longer, "t", tmp_path / "none", tmp_path / "none.json") == 28
    # half-epochs before the cut: 4 x 0.5 dense epochs cost 4 small ones, so rlal spends uniform's 12
    half = load_config(config, ["search.dense_epoch_fraction=0.5"])
    assert matched_uniform_epochs(half, "t", runs, results / "t.json") == 12
    table = write_results("t", config, half, runs, results).read_text()
    assert "episodes per search epoch; each epoch before the cut takes 0.5 of an epoch's steps)" in table
    assert "each epoch before the cut" not in write_results("t", config, base, runs, results).read_text()


def test_the_uniform_plan_is_priced_without_data_as_the_uniform_runs_cut_it():
    # the MACs T1's uniform runs recorded (docs/results/t1-fmnist-resnet20-r8-fill.json)
    t1 = load_config(resolve_config_path("bench-t1-fmnist-resnet20"), ["env.round_to=8"])
    assert uniform_plan_macs(t1) == (31_021_952, 15_216_512)


def test_uniform_matched_on_a_track_it_cannot_price_without_data_asks_for_a_uniform_run(tmp_path):
    config = tmp_path / "track.yaml"
    config.write_text("method: rlal\ndata:\n  dataset: imagefolder\n  train_subset: 1000\n")
    runs, results = tmp_path / "runs", tmp_path / "results"
    with pytest.raises(RlalError, match="uniform-matched needs a finished uniform run in the table"):
        run_quality_bench(config, "t", ["uniform-matched"], [0], runs, results)
    assert not runs.exists()


def test_the_table_gives_each_methods_training_compute_and_as_a_multiple_of_uniforms(tmp_path):
    config, base = _track(tmp_path)
    runs, results = tmp_path / "runs", tmp_path / "results"
    for method, acc, settings in (("uniform", 88.0, "method: uniform"), ("rlal", 88.5, "method: rlal"),
                                  ("uniform-matched", 89.0, "method: uniform\ntrain:\n  epochs: 16")):
        _finished_run(runs / "t" / method / "seed-0", acc)
        (runs / "t" / method / "seed-0" / "config.yaml").write_text(
            f"{settings}\ndata:\n  train_subset: 1000\nsearch:\n  warmup_epochs: 1\n  search_epochs: 2\n"
            "  align_epochs: 1\n")
    result = runs / "t" / "uniform-matched" / "seed-0" / "result.json"
    result.write_text(json.dumps(json.loads(result.read_text()) | {"epochs": 16}))
    for method, counted in (("uniform", {}), ("rlal", {"search_macs": 2.0e12})):  # 12-epoch runs
        path = runs / "t" / method / "seed-0" / "result.json"
        path.write_text(json.dumps(json.loads(path.read_text()) | {"epochs": 12, **counted}))
    text = write_results("t", config, base, runs, results).read_text()
    step = 3 * 896
    rows = {line.split("`")[1]: line for line in text.splitlines()
            if line.startswith("| `") and " T MACs" in line}
    assert f"| {step * 12 * 500 / 1e12:.1f} T MACs (1.00×) |" in rows["uniform"]
    assert "(1.33×) + 2.0 T scoring |" in rows["rlal"]  # (4 x 1000 + 8 x 500) / 6000, and the counted passes
    assert "(1.33×) |" in rows["uniform-matched"]
    assert "| `rlal` − `uniform-matched` | 0 | -0.50 |" in text
    records = {r["method"]: r for r in json.loads((results / "t.json").read_text())}
    assert records["rlal"]["train_macs"] == step * (4 * 1000 + 8 * 500)
    # records written before training compute was recorded get it from the runs' committed configs
    saved = json.loads((results / "t.json").read_text())
    (results / "t.json").write_text(json.dumps([{k: v for k, v in r.items() if k != "train_macs"}
                                                for r in saved]))
    _finished_run(tmp_path / "new" / "t" / "uniform" / "seed-1", 87.0)
    write_results("t", config, base, tmp_path / "new", results)
    records = {(r["method"], r["seed"]): r for r in json.loads((results / "t.json").read_text())}
    assert records[("rlal", 0)]["train_macs"] == step * (4 * 1000 + 8 * 500)
    assert records[("rlal", 0)]["search_macs"] == 2.0e12
    assert records[("uniform-matched", 0)]["train_macs"] == step * 16 * 500
    assert records[("uniform", 1)]["train_macs"] is None  # its config (method: rlal, no subset) cannot say
