"""Split-conformal prediction intervals from backtest residuals, per bucket of horizon steps.

Errors grow with the distance from the origin, so residuals are pooled by bucket (e.g. the first
day, the rest of the first week, the second week, the rest of the month) and each bucket gets its
own quantiles. Residuals are taken on the log scale for non-negative series, so an interval is a
band of relative error around the forecast (tight in absolute terms at night, wide at the peak).
By default the interval is symmetric on that scale: the quantile of the absolute residuals
(split-conformal's usual score). ``symmetric=False`` uses the signed 2.5% and 97.5% residuals
instead, which follows a skew but also trusts the backtest's bias to persist: with anomalies in the
backtest window (runaway days all above the forecast) that put the lower bound a hair under the
forecast and missed most of the next month, so it is not the default. The finite-sample rank
ceil((n + 1) level) of split-conformal prediction is used; when a bucket holds too few residuals
for that rank the most extreme residual is used, and ``HorizonBuckets.for_horizon`` merges buckets
to avoid that.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hub_ml.forecast.series import LogTransform, steps_per_day

# Bucket boundaries in days ahead: day 1, rest of week 1, week 2, rest of the month.
DEFAULT_BUCKET_DAYS = (1, 7, 14, 30)


@dataclass(frozen=True)
class HorizonBuckets:
    """Contiguous buckets of forecast steps; ``ends`` are the last step (1-based) of each bucket."""

    ends: tuple[int, ...]

    @classmethod
    def for_horizon(
        cls,
        horizon: int,
        step: pd.Timedelta,
        n_origins: int,
        *,
        min_residuals: int = 40,
        bucket_days: Sequence[float] = DEFAULT_BUCKET_DAYS,
    ) -> HorizonBuckets:
        """Buckets cut at ``bucket_days`` (and at ``horizon``), each with at least ``min_residuals``
        residuals over ``n_origins`` origins; a bucket short of that is merged into the next one."""
        per_day = steps_per_day(step)
        cuts = sorted({min(horizon, max(1, round(d * per_day))) for d in bucket_days} | {horizon})
        ends: list[int] = []
        start = 0
        for end in cuts:
            if (end - start) * n_origins >= min_residuals or end == horizon:
                ends.append(end)
                start = end
        if len(ends) > 1 and (ends[-1] - ends[-2]) * n_origins < min_residuals:
            ends.pop(-2)  # the last bucket came up short: merge it into the previous one
        return cls(tuple(ends))

    def __len__(self) -> int:
        return len(self.ends)

    def index(self, horizon: int) -> np.ndarray:
        """Bucket number of each step 1..horizon; steps past the last bucket use the last one."""
        steps = np.arange(1, horizon + 1)
        return np.minimum(np.searchsorted(np.asarray(self.ends), steps, side="left"), len(self.ends) - 1)

    def slices(self) -> list[slice]:
        starts = (0, *self.ends[:-1])
        return [slice(s, e) for s, e in zip(starts, self.ends, strict=True)]


def _rank_quantile(sorted_scores: np.ndarray, rank: int) -> float:
    return float(sorted_scores[min(max(rank, 1), len(sorted_scores)) - 1])


@dataclass
class ConformalIntervals:
    """Residual quantiles per horizon bucket; ``interval(mean, level)`` for any level."""

    transform: LogTransform
    buckets: HorizonBuckets
    scores: list[np.ndarray]
    symmetric: bool = True

    @classmethod
    def calibrate(
        cls,
        actuals: np.ndarray,
        forecasts: np.ndarray,
        transform: LogTransform,
        buckets: HorizonBuckets,
        symmetric: bool = True,
    ) -> ConformalIntervals:
        """Residuals transform(actual) - transform(forecast), arrays shaped (origins, horizon)."""
        forecasts = np.maximum(forecasts, 0.0) if transform.enabled else forecasts
        residuals = transform.forward(actuals) - transform.forward(forecasts)
        scores = [np.sort(residuals[:, part].ravel()) for part in buckets.slices()]
        return cls(transform, buckets, scores, symmetric)

    def quantiles(self, level: float) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper residual quantile of each bucket for a central ``level`` interval."""
        alpha = 1.0 - level
        lows, highs = [], []
        for scores in self.scores:
            n = len(scores)
            if self.symmetric:
                width = _rank_quantile(np.sort(np.abs(scores)), math.ceil((n + 1) * level))
                lows.append(-width)
                highs.append(width)
                continue
            lows.append(_rank_quantile(scores, math.floor((n + 1) * alpha / 2)))
            highs.append(_rank_quantile(scores, math.ceil((n + 1) * (1 - alpha / 2))))
        return np.array(lows), np.array(highs)

    def interval(self, mean: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
        mean = np.asarray(mean, dtype=float)
        low_q, high_q = self.quantiles(level)
        bucket = self.buckets.index(len(mean))
        center = self.transform.forward(np.maximum(mean, 0.0) if self.transform.enabled else mean)
        return (
            self.transform.inverse(center + low_q[bucket]),
            self.transform.inverse(center + high_q[bucket]),
        )
