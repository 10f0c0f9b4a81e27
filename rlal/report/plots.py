"""The run report's figures as PNG files, drawn from plain data read out of a run directory.

Every function takes the data and an output path and returns the path written, or ``None`` (nothing
written) when its data is absent: a dense run has only the accuracy curve. Figures are drawn with
matplotlib's object API on an Agg canvas (no pyplot, no display, no global backend switch) and written
atomically, so a crash never leaves a half-written PNG.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import groupby
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from rlal.checkpoint import atomic_write

DPI = 120
PHASE_COLORS: dict[str, str] = {
    "warm-up": "tab:gray", "search": "tab:orange", "fine-tune": "tab:green", "dense": "tab:blue",
}


def plot_widths(layers: Sequence[str], dense: Sequence[int], kept: Sequence[int], path: Path) -> Path | None:
    """Horizontal bars per layer: dense channels (light) with the kept channels over them (dark)."""
    if not layers:
        return None
    fig = Figure(figsize=(7.0, 1.2 + 0.28 * len(layers)))
    ax = fig.subplots()
    y = list(range(len(layers)))
    ax.barh(y, dense, color="tab:blue", alpha=0.25, label="dense")
    ax.barh(y, kept, color="tab:blue", label="kept")
    ax.set_yticks(y, labels=list(layers), fontsize=7)
    ax.invert_yaxis()  # input -> output from the top
    ax.set_xlabel("channels")
    ax.set_title("Channels per prunable layer")
    _legend(ax)
    return _save(fig, path)


def plot_rewards(
    rewards: Mapping[int, Sequence[float | None]], path: Path, *, xlabel: str = "epoch"
) -> Path | None:
    """Box plot of the episode rewards of each search epoch (``rewards[epoch]``), episodes as dots.
    Missing (None/NaN) rewards are left out; epochs without any finite reward are skipped."""
    data = {epoch: _finite(values) for epoch, values in sorted(rewards.items())}
    data = {epoch: values for epoch, values in data.items() if values}
    if not data:
        return None
    fig = Figure(figsize=(7.0, 3.6))
    ax = fig.subplots()
    positions = list(range(len(data)))
    ax.boxplot(list(data.values()), positions=positions, widths=0.6, showfliers=False)
    for x, values in zip(positions, data.values(), strict=True):
        ax.scatter([x] * len(values), values, s=8, color="tab:orange", alpha=0.6, zorder=3)
    ax.set_xticks(positions, labels=[str(epoch) for epoch in data])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("reward (accuracy on the reward split)")
    ax.set_title("Episode rewards per search epoch")
    return _save(fig, path)


def plot_decoder_loss(
    epochs: Sequence[int], losses: Sequence[float | None], path: Path
) -> Path | None:
    """The epoch-context model's decoder loss (MSE on the observed rewards) per search epoch."""
    points = [(e, v) for e, v in zip(epochs, losses, strict=True) if _is_finite(v)]
    if not points:
        return None
    fig = Figure(figsize=(7.0, 3.2))
    ax = fig.subplots()
    ax.plot([e for e, _ in points], [v for _, v in points], marker="o", color="tab:purple")
    if all(v > 0 for _, v in points):
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("decoder loss (MSE)")
    ax.set_title("Epoch-context model: decoder loss per search epoch")
    return _save(fig, path)


def plot_accuracy(
    epochs: Sequence[int],
    phases: Sequence[str],
    train_acc: Sequence[float | None],
    test_acc: Sequence[float | None],
    path: Path,
    *,
    cut: tuple[int, float | None, float | None] | None = None,
) -> Path | None:
    """Train and test accuracy (%) per epoch with each phase's epochs shaded; ``cut`` =
    ``(epoch, masked_test_acc, cut_test_acc)`` marks the cut after that epoch."""
    if not epochs:
        return None
    fig = Figure(figsize=(7.0, 3.6))
    ax = fig.subplots()
    shaded: set[str] = set()
    for phase, run in groupby(zip(epochs, phases, strict=True), key=lambda item: item[1]):
        span = [epoch for epoch, _ in run]
        ax.axvspan(min(span) - 0.5, max(span) + 0.5, color=PHASE_COLORS.get(phase, "tab:cyan"), alpha=0.12,
                   label=None if phase in shaded else phase, lw=0)
        shaded.add(phase)
    _line(ax, epochs, train_acc, label="train", color="tab:blue")
    _line(ax, epochs, test_acc, label="test", color="tab:red")
    if cut is not None:
        epoch, masked, after = cut
        ax.axvline(epoch + 0.5, color="black", lw=0.8, ls="--")
        if _is_finite(masked):
            ax.scatter([epoch + 0.5], [masked], marker="s", color="black", zorder=3, label="masked at cut")
        if _is_finite(after):
            ax.scatter([epoch + 0.5], [after], marker="x", color="tab:red", zorder=3, label="cut model")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Accuracy per epoch")
    _legend(ax)
    return _save(fig, path)


def plot_macs(
    epochs: Sequence[int],
    selected_macs: Sequence[int | None],
    path: Path,
    *,
    dense_macs: int | None = None,
    target_macs: int | None = None,
    episode_macs: Sequence[Sequence[int | None] | None] | None = None,
) -> Path | None:
    """MACs of the architecture selected at each search epoch, each epoch's episodes as faint dots, and
    horizontal lines at the target and the dense model's MACs (each drawn only when given)."""
    points = [(e, m) for e, m in zip(epochs, selected_macs, strict=True) if _is_finite(m)]
    if not points:
        return None
    fig = Figure(figsize=(7.0, 3.6))
    ax = fig.subplots()
    if episode_macs is not None:
        xs, ys = [], []
        for epoch, values in zip(epochs, episode_macs, strict=True):
            finite = _finite(values or [])
            xs += [epoch] * len(finite)
            ys += [v / 1e6 for v in finite]
        if xs:
            ax.scatter(xs, ys, s=8, color="tab:gray", alpha=0.4, label="episodes")
    ax.plot([e for e, _ in points], [m / 1e6 for _, m in points], marker="o", color="tab:blue",
            label="selected")
    if dense_macs is not None:
        ax.axhline(dense_macs / 1e6, color="black", lw=0.8, label="dense")
    if target_macs is not None:
        ax.axhline(target_macs / 1e6, color="tab:red", lw=0.8, ls="--", label="target")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(bottom=0)  # from zero, so the distances to the target and the dense model read as ratios
    ax.set_ylabel("MMACs")
    ax.set_title("MACs of the selected architecture per search epoch")
    _legend(ax)
    return _save(fig, path)


def _line(ax: Axes, epochs: Sequence[int], values: Sequence[float | None], **kwargs: str) -> None:
    points = [(e, v) for e, v in zip(epochs, values, strict=True) if _is_finite(v)]
    if points:
        ax.plot([e for e, _ in points], [v for _, v in points], marker="o", ms=3, **kwargs)


def _legend(ax: Axes) -> None:
    """Legend outside the axes, on the right: it never hides data."""
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def _is_finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _finite(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if _is_finite(v)]


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))  # tmp has no .png suffix
    return path
