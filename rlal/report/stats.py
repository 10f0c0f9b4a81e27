"""Paired differences over seeds, summarised with the uncertainty a reader needs to judge them.

A benchmark's claim is a mean difference over a handful of seeds, so its standard error and a 95% confidence
interval (Student's t, n − 1 degrees of freedom) are printed beside it: with 5 seeds the interval is
mean ± 2.78 standard errors, not ± 1.96, and "separated from zero" should be read off the interval, not
guessed from mean ± std.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


def t_quantile(df: int, p: float = 0.975) -> float:
    """The ``p`` quantile (``p`` > 0.5) of Student's t with ``df`` degrees of freedom.

    The standard library has no Student t and scipy is not a dependency for one number, so the upper tail's
    probability mass is integrated (Simpson's rule in ``u = atan(t / sqrt(df))``, where the density becomes
    ``cos(u)^(df - 1)`` up to a constant and the infinite range becomes ``[0, pi/2)``) and the quantile
    found by bisection; it agrees with published tables to their four decimals.
    """
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if not 0.5 < p < 1:
        raise ValueError(f"p must be in (0.5, 1), got {p}")
    # cos(u)^(df-1) ~ exp(-df u^2 / 2): past 12 / sqrt(df) its mass is below 1e-30, so the range stops there
    # and the integration steps stay fine however large df is.
    end = min(math.pi / 2, 12 / math.sqrt(df))
    half = _cos_power_integral(df - 1, end)
    target = (p - 0.5) / 0.5 * half  # P(0 < T < t) = p - 0.5 of the half-line's 0.5
    low, high = 0.0, end
    for _ in range(50):
        mid = (low + high) / 2
        if _cos_power_integral(df - 1, mid) < target:
            low = mid
        else:
            high = mid
    return math.sqrt(df) * math.tan((low + high) / 2)


def _cos_power_integral(power: int, upper: float, steps: int = 400) -> float:
    """Integral of cos(v)^power over [0, upper] by Simpson's rule (a smooth, bounded integrand)."""
    h = upper / steps
    total = 1.0 + math.cos(upper) ** power
    for i in range(1, steps):
        total += (4 if i % 2 else 2) * math.cos(i * h) ** power
    return total * h / 3


@dataclass(frozen=True)
class PairedSummary:
    """Mean, spread and 95% confidence interval of paired differences (one per seed)."""

    n: int
    mean: float
    std: float | None
    """Sample standard deviation (n − 1); None for a single seed."""
    se: float | None
    """Standard error of the mean, ``std / sqrt(n)``; None for a single seed."""
    ci: tuple[float, float] | None
    """95% interval, ``mean ± t(0.975, n − 1) * se``; None for a single seed."""

    def interval_text(self) -> str | None:
        """``[lo, hi]`` in signed points, as the tables print it; None for a single seed."""
        return None if self.ci is None else f"[{self.ci[0]:+.2f}, {self.ci[1]:+.2f}]"

    @property
    def excludes_zero(self) -> bool:
        """Whether the 95% interval lies wholly on one side of zero (a two-sided t-test at 5%)."""
        return self.ci is not None and (self.ci[0] > 0 or self.ci[1] < 0)


def summarize_paired(diffs: Sequence[float]) -> PairedSummary:
    """Summarise paired differences: their mean, sample std, standard error and 95% t interval."""
    if not diffs:
        raise ValueError("no differences to summarise")
    n, mean = len(diffs), statistics.mean(diffs)
    if n == 1:
        return PairedSummary(1, mean, None, None, None)
    std = statistics.stdev(diffs)
    se = std / math.sqrt(n)
    half = t_quantile(n - 1) * se
    return PairedSummary(n, mean, std, se, (mean - half, mean + half))
