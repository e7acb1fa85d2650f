"""Lagged Pearson correlation of series departures, with the Benjamini-Hochberg procedure.

The series correlated are departures from baseline (the z-scores of ``signals``), not raw values:
raw LLM-traffic series all share the daily cycle and would all correlate. For a pair of series of
different modules (or evidence families) and each lag from ``-max_lag`` to ``max_lag`` hours, the
Pearson coefficient over the hours both have, and its one-sided p-value (t with n - 2 degrees of
freedom; only a positive association links two departures). The p-values of every test made are
adjusted together by Benjamini-Hochberg, and only pairs below the false discovery rate ``q`` are
reported, so a coincidence between two unrelated series is not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class TemporalLink:
    a: int  # series index
    b: int
    lag: int  # hours b follows a by (negative: b leads)
    r: float
    n: int
    p_value: float
    q_value: float


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """Adjusted p-values (q-values) of the Benjamini-Hochberg step-up procedure."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    if m == 0:
        return p
    order = np.argsort(p)
    ranked = p[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out


def pearson_p(r: float, n: int) -> float:
    """One-sided p-value of a Pearson coefficient r over n points (H1: r > 0)."""
    if n < 4 or not np.isfinite(r):
        return 1.0
    r = min(r, 1 - 1e-12)
    t = r * np.sqrt((n - 2) / (1 - r * r))
    return float(stats.t.sf(t, n - 2))


def lagged_links(
    residuals: np.ndarray,
    pairs: list[tuple[int, int]],
    max_lag: int,
    q: float,
    min_points: int = 8,
) -> list[TemporalLink]:
    """Significant links among `pairs` of rows of `residuals` (series x hours, NaN where a series
    has no verdict): for each pair, the lag with the strongest correlation that survives BH."""
    tests: list[tuple[int, int, int, float, int, float]] = []
    for a, b in pairs:
        x_all, y_all = residuals[a], residuals[b]
        for lag in range(-max_lag, max_lag + 1):
            if lag >= 0:
                x, y = x_all[: len(x_all) - lag], y_all[lag:]
            else:
                x, y = x_all[-lag:], y_all[: len(y_all) + lag]
            ok = np.isfinite(x) & np.isfinite(y)
            n = int(ok.sum())
            if n < min_points or np.std(x[ok]) == 0 or np.std(y[ok]) == 0:
                continue
            r = float(np.corrcoef(x[ok], y[ok])[0, 1])
            tests.append((a, b, lag, r, n, pearson_p(r, n)))
    if not tests:
        return []
    q_values = benjamini_hochberg(np.array([t[5] for t in tests]))
    best: dict[tuple[int, int], TemporalLink] = {}
    for (a, b, lag, r, n, p), qv in zip(tests, q_values, strict=True):
        if qv >= q:
            continue
        link = TemporalLink(a, b, lag, r, n, p, float(qv))
        current = best.get((a, b))
        if current is None or (link.r, -abs(link.lag)) > (current.r, -abs(current.lag)):
            best[(a, b)] = link
    return sorted(best.values(), key=lambda link: link.q_value)
