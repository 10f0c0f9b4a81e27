"""One quality table from several calls of the GPU evidence run (docs/gpu.md).

A session may call the device tool more than once: the full run (seeds 0 and 1), then calls that add seeds
(``--steps quality --quality-epochs N --seeds S``). Each call's ``results.tar.gz`` holds its own runs and a
table of those alone. This reads every call's ``evidence.jsonl`` and tarball, refuses calls whose quality
runs did not share one schedule (their ``--set`` overrides differ) or that repeat a (method, seed), and
writes the table over all their runs into ``--results-dir``, naming the machine the calls recorded (the
table would otherwise name the machine that merges); then the runs' records are copied into ``--runs-dir``.

    python bench/gpu_evidence_merge.py CALL_DIR [CALL_DIR ...] [--results-dir docs/results] [--runs-dir DIR]

A CALL_DIR is a reply's ``files_at`` folder (``evidence.jsonl`` and ``results.tar.gz``). Bad input is a
one-line error with exit status 2, and leaves the runs folder as it was.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_evidence import TABLE, TRACK

from rlal.machine import in_words


class UsageError(Exception):
    """Bad input: one line, exit status 2."""


@dataclass(frozen=True)
class Call:
    """One call's quality step, as its ``evidence.jsonl`` recorded it."""

    folder: Path
    table: str
    """The table the call's runs were made for (``--name``; calls before it had none: cifar10-resnet56)."""
    started: str
    machine: str
    overrides: tuple[str, ...]
    epochs: int
    config_epochs: int
    concurrency: int
    runs: tuple[tuple[str, int], ...]
    """(method, seed) of every run that finished."""


def read_call(folder: Path) -> Call:
    """The call's start, machine, quality plan and finished runs; a one-line error if any is missing."""
    jsonl, tarball = folder / "evidence.jsonl", folder / "results.tar.gz"
    for path in (jsonl, tarball):
        if not path.is_file():
            raise UsageError(f"{folder}: no {path.name} (a GPU evidence call's files_at folder holds it)")
    try:
        records = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise UsageError(f"{jsonl}: not JSON lines ({exc})") from None

    def one(step: str, kind: str) -> dict[str, Any]:
        found = [r for r in records if r.get("step") == step and r.get("kind") == kind]
        if not found:
            raise UsageError(f"{jsonl}: no {step} {kind} record (did the call run the quality step?)")
        return found[-1]

    start, env, plan = one("run", "start"), one("prepare", "env"), one("quality", "plan")
    runs = tuple((r["method"], int(r["seed"])) for r in records
                 if r.get("step") == "quality" and r.get("kind") == "run" and r.get("status") == "done")
    return Call(folder, plan.get("table", TABLE), start["time"], in_words(env), tuple(plan["overrides"]),
                int(plan["epochs"]), int(plan["config_epochs"]), int(plan["concurrency"]), runs)


def check_calls(calls: list[Call]) -> None:
    """One schedule for every call, and no (method, seed) twice."""
    first = calls[0]
    for call in calls[1:]:
        if call.table != first.table:
            raise UsageError(f"{call.folder} ran table {call.table}, {first.folder} table {first.table}: "
                             "one merge makes one table")
        if call.overrides != first.overrides:
            differ = sorted(set(call.overrides) ^ set(first.overrides))
            raise UsageError(f"{call.folder} ran other settings than {first.folder} ({', '.join(differ)}): "
                             "their runs cannot share one table")
    seen: dict[tuple[str, int], Path] = {}
    for call in calls:
        for run in call.runs:
            if run in seen:
                raise UsageError(f"{run[0]} seed {run[1]} finished in both {seen[run]} and {call.folder}")
            seen[run] = call.folder
    if not seen:
        raise UsageError("no call has a finished quality run: nothing to tabulate")


def unpack_runs(calls: list[Call], runs_dir: Path) -> None:
    """Each call's finished runs' records into ``runs_dir/<table>/<method>/seed-<s>/``."""
    for call in calls:
        prefix = f"runs/gpu-evidence/{call.table}/"
        with tempfile.TemporaryDirectory() as tmp, tarfile.open(call.folder / "results.tar.gz") as tar:
            tar.extractall(tmp, members=[m for m in tar.getmembers() if m.name.startswith(prefix)],
                           filter="data")
            for method, seed in call.runs:
                source = Path(tmp) / prefix / method / f"seed-{seed}"
                if not (source / "result.json").is_file():
                    raise UsageError(f"{call.folder}: results.tar.gz lacks {method} seed {seed}'s "
                                     "result.json")
                shutil.copytree(source, runs_dir / call.table / method / f"seed-{seed}")


def note(calls: list[Call]) -> str:
    """The table's note: where and how the runs ran, call by call."""
    first = calls[0]
    each = "; ".join(
        f"{c.started}: " + ", ".join(f"{m} s{s}" for m, s in c.runs)
        + f" (up to {min(c.concurrency, len(c.runs))} at a time)"
        for c in calls)
    shortened = ", shortened to fit the time" if first.epochs != first.config_epochs else ""
    calls_word = f"{len(calls)} call{'s' if len(calls) > 1 else ''}"
    return (f"Run by `bench/gpu_evidence.py` in {calls_word} of the device tool, merged by "
            f"`bench/gpu_evidence_merge.py`: {each}. {first.epochs} epochs (the config's "
            f"{first.config_epochs}{shortened}); --set " + " ".join(f"`{o}`" for o in first.overrides) + ".")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("calls", nargs="+", type=Path, help="each call's files_at folder")
    parser.add_argument("--results-dir", type=Path, default=Path("docs/results"))
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/gpu-evidence"))
    args = parser.parse_args(argv)
    try:
        calls = [read_call(folder) for folder in args.calls]
        check_calls(calls)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from rlal.benchmark import write_results
    from rlal.config import load_config
    from rlal.errors import RlalError

    # Unpacked and tabulated in a scratch folder first: a bad tarball leaves the runs folder as it was.
    with tempfile.TemporaryDirectory() as tmp:
        try:
            unpack_runs(calls, Path(tmp))
            base = load_config(TRACK, list(calls[0].overrides))
            machines = " and ".join(dict.fromkeys(c.machine for c in calls))
            table = calls[0].table
            path = write_results(table, TRACK, base, Path(tmp), args.results_dir, note(calls), machines)
        except (UsageError, RlalError, tarfile.TarError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        for run in sorted((Path(tmp) / table).glob("*/seed-*")):  # replacing an earlier merge's copy
            target = args.runs_dir / table / run.parent.name / run.name
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(run, target)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
