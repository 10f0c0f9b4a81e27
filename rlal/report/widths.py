"""``widths.csv``: dense and kept channels of every prunable layer, the layers that were skipped and why,
and the MACs each row accounts for.

One row per prunable layer (in the structure's order, input -> output), one per skipped group (a layer
that could not be pruned, with the reason in ``skipped``), then ``other`` and ``total``::

    layer, dense_channels, kept_channels, keep_ratio, macs_before, macs_after, skipped

**How MACs are attributed to a row.** Every conv/linear layer of the model is listed under exactly one
row, so the rows add up to the ``total`` row (see :attr:`~rlal.structure.Structure.mac_owners`):

* under the layer whose channels are its **outputs** (the conv(s) writing the layer's channels and a
  depthwise conv on them), else
* under the layer whose channels are its **inputs** (the first such layer in forward order): e.g. a
  ResNet block's second conv, whose outputs join the residual stream and are never pruned under the
  ``internal`` policy, is listed with the block's inner layer; the classifier with the last layer;
* under the **skipped group** whose channels are its outputs: convs no plan can change (a stem reading
  the image and writing a residual stream, a classifier reading it, convs whose channels pass through a
  channel shuffle...). A skipped row's ``macs_before`` over the total's is the share of the model's MACs
  that pruning cannot reach because of that skip;
* under ``other`` when no group touches either side (in practice only convs the forward never calls).

``macs_before`` is what those convs cost in the dense model, ``macs_after`` what they cost under the
plan, counting both of their sides: a conv listed under its output layer also loses the input channels
that its input layer drops. The ``total`` row is the cost model's own figures
(``structure.cost.dense_macs`` and ``structure.cost.of(plan)[0]``), which the rows match exactly; the
per-conv shrinkage follows the cost model's rule (a conv loses, per dropped layer channel, as many
positions of a dimension as the group covers per layer channel). Channels are real channels: a layer tied
by a grouped conv keeps ``tied`` channels per kept set. ``keep_ratio`` = kept / dense channels; skipped,
``other`` and ``total`` rows have no ratio, and skipped and ``other`` rows no channels.
"""

from __future__ import annotations

import csv
import io
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

from torch import nn

from rlal.checkpoint import write_text
from rlal.errors import RlalError
from rlal.structure import Plan, Structure, check_plan
from rlal.structure.layers import conv_or_linear_macs
from rlal.structure.trace import COUNTED_TYPES

log = logging.getLogger(__name__)

COLUMNS: tuple[str, ...] = (
    "layer", "dense_channels", "kept_channels", "keep_ratio", "macs_before", "macs_after", "skipped",
)
OLD_COLUMNS = COLUMNS[:-1]
"""The columns before skipped groups were listed (issue 13); such files are still read."""
OTHER = "other"
"""Row of the conv/linear layers no prunable layer touches."""
TOTAL = "total"
"""Row of the whole model: the cost model's MACs."""
WIDTHS_FILE = "widths.csv"


def layer_widths(structure: Structure, plan: Plan) -> list[dict[str, Any]]:
    """Rows of ``widths.csv`` as dicts keyed by :data:`COLUMNS`: one per layer, one per skipped group
    (channel columns ``None``, the reason in ``skipped``), then ``other`` (channel columns ``None``) and
    ``total`` (channels summed over the layers). See the module docstring for how MACs are attributed.
    Raises :class:`RlalError` when ``plan`` does not fit ``structure``."""
    check_plan(structure, plan)
    modules = dict(structure.model.named_modules())
    dropped = structure.channels - plan.array()

    # Per conv/linear module: channels its input/output dimension loses.
    out_cut: dict[str, float] = defaultdict(float)
    in_cut: dict[str, float] = defaultdict(float)
    for i, layer in enumerate(structure.layers):
        for member in layer.members:
            if member.kind not in ("conv", "depthwise", "linear"):
                continue  # BN & co. hold parameters, not MACs
            n = len(member.local) / layer.channels  # positions of the dimension per layer channel
            if member.role == "out":  # a depthwise conv's in/groups stays 1: only its output shrinks
                out_cut[member.module] += float(dropped[i]) * n
            else:
                in_cut[member.module] += float(dropped[i]) * n

    n_layers, n_skipped = len(structure.layers), len(structure.skipped)
    before = [0] * (n_layers + n_skipped + 1)  # layers, skipped groups, then the "other" row
    after = [0] * (n_layers + n_skipped + 1)
    owners = structure.mac_owners
    for name, module in modules.items():
        if not isinstance(module, COUNTED_TYPES):
            continue
        dense = conv_or_linear_macs(module, structure.census.positions.get(name, 0))
        out0, in0 = _dims(module)
        kind, index = owners.get(name, ("other", 0))
        row = index if kind == "layer" else n_layers + index if kind == "skipped" else -1
        before[row] += dense
        after[row] += round(dense * (out0 - out_cut[name]) / out0 * (in0 - in_cut[name]) / in0)

    rows = [
        _row(layer.name, layer.out_channels, kept * layer.tied, before[i], after[i])
        for i, (layer, kept) in enumerate(zip(structure.layers, plan.keep, strict=True))
    ]
    rows += [
        _row(group.module, None, None, before[n_layers + j], after[n_layers + j], skipped=group.reason)
        for j, group in enumerate(structure.skipped)
    ]
    rows.append(_row(OTHER, None, None, before[-1], after[-1]))
    macs, _ = structure.cost.of(plan)
    dense_channels = sum(layer.out_channels for layer in structure.layers)
    kept_channels = sum(k * layer.tied for layer, k in zip(structure.layers, plan.keep, strict=True))
    rows.append(_row(TOTAL, dense_channels, kept_channels, structure.cost.dense_macs, macs))
    if (sum(before), sum(after)) != (structure.cost.dense_macs, macs):
        # Never raised: widths.csv is written at the end of a training run and must not lose it.
        log.warning("widths.csv: per-layer MACs (%d -> %d) do not add up to the cost model's (%d -> %d)",
                    sum(before), sum(after), structure.cost.dense_macs, macs)
    return rows


def write_widths(path: Path, structure: Structure, plan: Plan) -> Path:
    """Write :func:`layer_widths` as CSV to ``path`` (a file, usually ``run_dir / "widths.csv"``),
    atomically; returns ``path``."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in layer_widths(structure, plan):
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    write_text(path, buffer.getvalue())
    return path


def read_widths(path: Path) -> list[dict[str, Any]]:
    """Read a ``widths.csv`` back into rows like :func:`layer_widths`'s (empty cells -> ``None``).
    Raises :class:`RlalError` naming the file when it cannot be parsed."""
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            if tuple(reader.fieldnames or ()) not in (COLUMNS, OLD_COLUMNS):
                raise RlalError(f"{path}: expected columns {', '.join(COLUMNS)}")
            return [{k: _parse(k, row.get(k)) for k in COLUMNS} for row in reader]
    except (OSError, ValueError) as exc:
        if isinstance(exc, RlalError):
            raise
        raise RlalError(f"cannot read {path}: {exc}") from None


def _row(
    layer: str, dense: int | None, kept: int | None, macs_before: int, macs_after: int,
    skipped: str | None = None,
) -> dict[str, Any]:
    return {
        "layer": layer,
        "dense_channels": dense,
        "kept_channels": kept,
        "keep_ratio": None if dense is None or kept is None else kept / dense,
        "macs_before": int(macs_before),
        "macs_after": int(macs_after),
        "skipped": skipped,
    }


def _dims(module: nn.Module) -> tuple[int, int]:
    """(output, input / groups) sizes: the two dimensions a MACs count multiplies."""
    if isinstance(module, nn.Linear):
        return module.out_features, module.in_features
    return module.out_channels, module.in_channels // module.groups


def _parse(column: str, value: str | None) -> Any:
    if column == "layer":
        return value
    if value is None or value == "":
        return None
    if column == "skipped":
        return value
    return float(value) if column == "keep_ratio" else int(value)
