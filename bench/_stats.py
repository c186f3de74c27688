"""Statistics shared by the bench scripts."""

from __future__ import annotations

import statistics


def t_interval(values: list[float]) -> tuple[float, float]:
    from scipy import stats

    m, s = statistics.mean(values), statistics.stdev(values)
    h = stats.t.ppf(0.975, len(values) - 1) * s / len(values) ** 0.5
    return m - h, m + h
