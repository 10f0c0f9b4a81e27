"""rlal.report.stats: Student's t quantiles and the summary of paired differences the tables print."""

from __future__ import annotations

import math
import statistics

import pytest

from rlal.report.stats import summarize_paired, t_quantile


@pytest.mark.parametrize(
    ("df", "p", "published"),
    [(1, 0.975, 12.7062), (2, 0.975, 4.3027), (4, 0.975, 2.7764), (9, 0.975, 2.2622), (30, 0.975, 2.0423),
     (9, 0.995, 3.2498), (4, 0.95, 2.1318)],
)  # fmt: skip
def test_t_quantile_matches_published_tables(df: int, p: float, published: float) -> None:
    assert t_quantile(df, p) == pytest.approx(published, abs=5e-4)


def test_t_quantile_approaches_the_normal_as_degrees_of_freedom_grow() -> None:
    normal = statistics.NormalDist().inv_cdf(0.975)
    assert t_quantile(100_000) == pytest.approx(normal, abs=1e-3)
    assert t_quantile(5) > t_quantile(10) > t_quantile(100) > normal


@pytest.mark.parametrize(("df", "p"), [(0, 0.975), (3, 0.5), (3, 1.0)])
def test_t_quantile_refuses_what_has_no_quantile(df: int, p: float) -> None:
    with pytest.raises(ValueError):
        t_quantile(df, p)


def test_paired_summary_interval_is_mean_plus_minus_t_standard_errors() -> None:
    diffs = [0.00, 0.57, 0.02, 0.37, -0.08]
    s = summarize_paired(diffs)
    se = statistics.stdev(diffs) / math.sqrt(5)
    assert s.n == 5 and s.mean == pytest.approx(0.176) and s.se == pytest.approx(se)
    assert s.ci == pytest.approx((0.176 - 2.7764 * se, 0.176 + 2.7764 * se), abs=1e-3)
    assert not s.excludes_zero  # -0.17 .. +0.52
    assert summarize_paired([0.4, 0.5, 0.6]).excludes_zero
    assert summarize_paired([-0.4, -0.5, -0.6]).excludes_zero


def test_a_single_seed_has_a_mean_and_no_spread_or_interval() -> None:
    s = summarize_paired([0.3])
    assert (s.n, s.mean, s.std, s.se, s.ci, s.excludes_zero) == (1, 0.3, None, None, None, False)
    with pytest.raises(ValueError):
        summarize_paired([])
