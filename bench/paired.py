"""Paired differences of test accuracy between two methods of two quality tables, over their common seeds.

A variant track (e.g. ``t1-fmnist-resnet20-linear``: the same config with one setting changed) can be
compared with the baselines of the main track's table, as the per-run records in ``docs/results/<name>.json``
allow; the tables themselves pair only the runs of one table. Several tables, comma-separated, pool their
records of the method (seeds that ran in different sessions). A table may name the seeds to take from it,
``TABLE.json@0`` or ``TABLE.json@1-4+7``, where two tables hold the same seed from different runs (a variant
that re-ran seeds 1-4 and shares seed 0 with an older table).

    python bench/paired.py docs/results/t1-fmnist-resnet20-linear.json:rlal \\
        docs/results/t1-fmnist-resnet20.json,docs/results/t1-fmnist-resnet20-linear.json:uniform
    python bench/paired.py docs/results/t1-fmnist-resnet20-seeded.json:rlal \\
        docs/results/t1-fmnist-resnet20-proximal.json@0,docs/results/t1-fmnist-resnet20-seeded.json:random-search

Prints one line per seed and the mean ± standard deviation of ``a - b`` in points, with its standard error
and 95% interval (Student's t). This is a benchmark script, not a test.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import NoReturn

from rlal.report.stats import summarize_paired


def _fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def seed_selection(text: str) -> set[int]:
    """``0``, ``1-4`` or ``0+2-4`` -> the seeds it names."""
    seeds: set[int] = set()
    for part in text.split("+"):
        low, dash, high = part.partition("-")
        try:
            first, last = int(low), int(high if dash else low)
        except ValueError:
            _fail(f"cannot read seeds {text!r}: expected e.g. 0, 1-4 or 0+2-4")
        if last < first:
            _fail(f"cannot read seeds {text!r}: the range {part} is empty")
        seeds.update(range(first, last + 1))
    return seeds


def accuracies(spec: str) -> tuple[str, dict[int, float]]:
    """``TABLE.json[@SEEDS][,TABLE.json[@SEEDS]...]:METHOD`` -> (the spec, {seed: test accuracy}) from the
    tables' per-run records, each limited to its named seeds; a seed that two tables hold with different
    accuracies is refused."""
    paths, _, method = spec.rpartition(":")
    if not paths or not method:
        _fail(f"expected TABLE.json[@SEEDS][,TABLE.json[@SEEDS]...]:METHOD, got {spec!r}")
    found: dict[int, float] = {}
    for table in paths.split(","):
        path, at, chosen = table.partition("@")
        only = seed_selection(chosen) if at else None
        try:
            records = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            _fail(f"cannot read the records of {path}: {e}")
        for r in records:
            if r["method"] != method or (only is not None and int(r["seed"]) not in only):
                continue
            seed, acc = int(r["seed"]), float(r["test_acc"])
            if found.setdefault(seed, acc) != acc:
                _fail(f"{method} seed {seed} has two different accuracies in {paths}")
    if not found:
        _fail(f"{paths} has no run of method {method!r}")
    return spec, found


def main() -> None:
    """Print the paired differences ``a - b`` over the seeds both have."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="TABLE.json[@SEEDS][,TABLE.json[@SEEDS]...]:METHOD")
    parser.add_argument("b", help="TABLE.json[@SEEDS][,TABLE.json[@SEEDS]...]:METHOD")
    args = parser.parse_args()
    (name_a, a), (name_b, b) = accuracies(args.a), accuracies(args.b)
    seeds = sorted(set(a) & set(b))
    if not seeds:
        _fail(f"{name_a} and {name_b} have no seed in common")
    diffs = [a[s] - b[s] for s in seeds]
    for s, d in zip(seeds, diffs, strict=True):
        print(f"seed {s}: {a[s]:.2f} - {b[s]:.2f} = {d:+.2f}")
    s = summarize_paired(diffs)
    spread = f" ± {s.std:.2f}" if s.std is not None else ""
    uncertainty = f" (SE {s.se:.2f}, 95% interval {s.interval_text()})" if s.se is not None else ""
    print(f"{name_a} - {name_b}, seeds {','.join(map(str, seeds))}: {s.mean:+.2f}{spread}{uncertainty}")


if __name__ == "__main__":
    main()
