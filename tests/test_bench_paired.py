"""bench/paired.py: paired differences over the seeds two sets of quality-table records share."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "paired.py"


def table(path: Path, runs: list[tuple[str, int, float]]) -> str:
    path.write_text(json.dumps([{"method": m, "seed": s, "test_acc": a} for m, s, a in runs]))
    return str(path)


def paired(a: str, b: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), a, b], capture_output=True, text=True, check=False)


def test_pairs_only_the_common_seeds_and_prints_mean_spread_and_interval(tmp_path: Path) -> None:
    new = table(tmp_path / "new.json", [("rlal", 0, 92.0), ("rlal", 1, 91.0), ("rlal", 2, 90.0)])
    old = table(tmp_path / "old.json", [("uniform", 1, 90.5), ("uniform", 2, 90.5), ("uniform", 3, 80.0)])
    out = paired(f"{new}:rlal", f"{old}:uniform")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:2] == ["seed 1: 91.00 - 90.50 = +0.50", "seed 2: 90.00 - 90.50 = -0.50"]
    # two seeds: SE 0.71 / sqrt(2), and the interval is ± t(0.975, 1 df) = 12.71 standard errors wide
    assert lines[2].endswith("seeds 1,2: +0.00 ± 0.71 (SE 0.50, 95% interval [-6.35, +6.35])")


def test_a_seed_two_tables_hold_differently_is_refused_unless_one_table_is_limited(tmp_path: Path) -> None:
    old = table(tmp_path / "old.json", [("random-search", 0, 92.0), ("random-search", 1, 91.0)])
    new = table(tmp_path / "new.json", [("random-search", 1, 90.0), ("random-search", 2, 89.0)])
    base = table(tmp_path / "base.json", [("uniform", s, 90.0) for s in range(3)])
    clash = paired(f"{old},{new}:random-search", f"{base}:uniform")
    assert clash.returncode == 2
    assert clash.stderr.strip() == f"error: random-search seed 1 has two different accuracies in {old},{new}"
    out = paired(f"{old}@0,{new}:random-search", f"{base}:uniform")
    assert out.returncode == 0, out.stderr
    assert "seeds 0,1,2: +0.33 ± 1.53 (SE 0.88, " in out.stdout.splitlines()[-1]


def test_seed_selections_take_ranges_and_refuse_unreadable_ones(tmp_path: Path) -> None:
    runs = table(tmp_path / "t.json", [("rlal", s, 90.0 + s) for s in range(8)])
    base = table(tmp_path / "b.json", [("uniform", s, 90.0) for s in range(8)])
    out = paired(f"{runs}@1-3+6:rlal", f"{base}:uniform")
    assert "seeds 1,2,3,6: +3.00 ± 2.16 (SE 1.08, " in out.stdout.splitlines()[-1]
    for bad in ("4-2", "x", ""):
        refused = paired(f"{runs}@{bad}:rlal", f"{base}:uniform")
        assert refused.returncode == 2
        assert refused.stderr.startswith(f"error: cannot read seeds '{bad}'")
