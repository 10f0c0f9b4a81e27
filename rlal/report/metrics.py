"""``metrics.jsonl``: one JSON object per line, appended and flushed as each epoch ends."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from rlal.checkpoint import write_text


class MetricsWriter:
    """Append-only JSON-lines log; every record is flushed and fsynced so a crash loses at most one line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines = len(read_metrics(path))
        """Complete records in the file: a checkpoint stores it, a resumed run truncates back to it."""

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps({k: _jsonable(v) for k, v in record.items()})
        with self.path.open("a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.lines += 1

    def truncate(self, lines: int) -> None:
        """Keep the first ``lines`` records: those written after the checkpoint a run resumes from go, so
        the resumed epochs are not logged twice (and a line torn by a crash goes with them)."""
        records = read_metrics(self.path, lines)
        text = "".join(json.dumps(r) + "\n" for r in records)
        write_text(self.path, text)
        self.lines = len(records)


def read_metrics(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Read the complete records of a ``metrics.jsonl`` file (the first ``limit`` of them, if given); a last
    line torn by a crash is not a record."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        if limit is not None and len(records) >= limit:
            break
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break  # only the last line can be torn: it is written in one append and fsynced
    return records


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf; a missing value reads as null
    return value
