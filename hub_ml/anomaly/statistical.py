"""Statistical detectors: rolling z-score, IQR fences, EWMA control chart, seasonal residual.

All work in the baseline's transformed space (log1p or sqrt of non-negative metrics, see
``SeasonalBaseline``) against the seasonal baseline when a season is known (``seasonal_period="auto"``
finds 24 for hourly data, plus weekly terms), because LLM traffic has a daily and weekly rhythm that
would otherwise dominate every window. Pass ``seasonal_period=None`` for versions without a season.

Default thresholds (in each detector's noise units) are high by textbook standards: they were tuned
for the ensemble's window-based F1 on the generator's hourly series (seeds 1-6, 30 and 45 days,
docs/GENERATOR_SPEC.md), whose p95 latency over a few dozen requests jumps several sigmas whenever two
requests time out. Every detector keeps them comparable: |deviation| = 1 (score 0.5) is its alarm.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from hub_ml.anomaly.base import SeasonalBaseline, SegmentScores, WalkForwardDetector


def _trailing(x: np.ndarray, window: int, how: str, q: float | None = None) -> np.ndarray:
    """Statistic of the ``window`` points before each t (t excluded), NaN until half the window exists."""
    rolling = pd.Series(x).rolling(window, min_periods=max(3, window // 2))
    stat = rolling.quantile(q) if how == "quantile" else getattr(rolling, how)()
    return stat.shift(1).to_numpy()


def _noise_units(baseline: SeasonalBaseline, values: np.ndarray, index: pd.DatetimeIndex):
    """Residuals from the seasonal baseline in units of its expected noise, the baseline's expected
    value, and the unit per point.

    Quiet hours are noisier than busy ones (relative to their level): standardising first keeps one
    trailing window's mean, std or quartiles meaningful for every hour.
    """
    y = baseline.forward(values[:, 0])
    expected, _ = baseline.expected(y, index)
    scale = baseline.sigma(expected, index)
    return (y - expected) / scale, expected, scale


class RollingZScoreDetector(WalkForwardDetector):
    """z = (u_t - mean) / std over the ``window`` points before t, where u is the residual from the
    seasonal baseline in noise units; alarm at |z| >= threshold."""

    name = "zscore"

    def __init__(self, *, window: int = 72, threshold: float = 8.0, **base: Any) -> None:
        super().__init__(threshold=threshold, **base)
        self.window = window

    def _fit_model(self, values, index, baseline, previous):
        return None

    def _score_segment(self, model, baseline: SeasonalBaseline, values, index, start) -> SegmentScores:
        u, base, scale = _noise_units(baseline, values, index)
        mean = _trailing(u, self.window, "mean")[start:]
        std = _trailing(u, self.window, "std")[start:]
        mean = np.nan_to_num(mean, nan=0.0)
        # Floored: a quiet window must not turn noise into huge z-scores (u has unit noise).
        std = np.maximum(np.nan_to_num(std, nan=1.0), 0.5)
        z = (u[start:] - mean) / std
        seas, unit = base[start:], scale[start:]
        return SegmentScores(
            expected=seas + mean * unit,
            lower=seas + (mean - self.threshold * std) * unit,
            upper=seas + (mean + self.threshold * std) * unit,
            deviation=z / self.threshold,
        )


class IQRDetector(WalkForwardDetector):
    """Tukey fences on the ``window`` points before t (residuals in noise units): alarm below
    Q1 - k*IQR or above Q3 + k*IQR (``threshold`` is k; Tukey's "far out" is 3, the default is tuned
    like the others, below)."""

    name = "iqr"

    def __init__(self, *, window: int = 168, threshold: float = 5.5, **base: Any) -> None:
        super().__init__(threshold=threshold, **base)
        self.window = window

    def _fit_model(self, values, index, baseline, previous):
        return None

    def _score_segment(self, model, baseline: SeasonalBaseline, values, index, start) -> SegmentScores:
        u, base, scale = _noise_units(baseline, values, index)
        q1 = _trailing(u, self.window, "quantile", 0.25)[start:]
        q3 = _trailing(u, self.window, "quantile", 0.75)[start:]
        median = _trailing(u, self.window, "median")[start:]
        missing = np.isnan(q1) | np.isnan(q3) | np.isnan(median)
        q1 = np.where(missing, -0.674, q1)
        q3 = np.where(missing, 0.674, q3)
        median = np.where(missing, 0.0, median)
        iqr = np.maximum(q3 - q1, 0.5 * 1.349)
        k = self.threshold
        us = u[start:]
        deviation = np.where(us > q3, (us - q3) / (k * iqr), np.where(us < q1, (us - q1) / (k * iqr), 0.0))
        seas, unit = base[start:], scale[start:]
        return SegmentScores(
            expected=seas + median * unit,
            lower=seas + (q1 - k * iqr) * unit,
            upper=seas + (q3 + k * iqr) * unit,
            deviation=deviation,
        )


class EWMAControlChartDetector(WalkForwardDetector):
    """EWMA control chart on standardised residuals u_t = (x_t - level) / sigma_t.

    z_t = lam * u_t + (1 - lam) * z_{t-1}, with u clipped to [-``drop_clip``, ``clip``]; alarm when
    |z_t| >= threshold * sqrt(lam / (2 - lam)) (the chart's asymptotic limit). ``level`` and ``sigma`` come from the training window, so a shift stays
    out of control for as long as it lasts instead of being absorbed. The chart restarts at each
    segment ``burn_in`` points before the segment, a fixed schedule, so it stays walk-forward.

    Clipping is asymmetric: above the level the noise of traffic metrics has a heavy tail (a p95 over
    a few dozen requests jumps when two time out, timeouts raise the error count), so one point
    pushes the chart by at most ``lam * clip``; below it a metric is bounded (nothing falls below
    zero), and a drop to 5-30% of normal for 2-6 hours, which in a low count such as errors is only
    3-6 sigma an hour, must add up within those hours: it pushes by up to ``lam * drop_clip``. (With
    ``drop_clip = clip = 3`` the chart needed 5 hours of a drop to alarm and found about a quarter of them.)
    """

    name = "ewma"
    role = "sustained"

    def __init__(
        self,
        *,
        lam: float = 0.3,
        threshold: float = 6.0,
        clip: float = 3.0,
        drop_clip: float = 5.0,
        burn_in: int = 72,
        **base: Any,
    ) -> None:
        super().__init__(threshold=threshold, **base)
        if not 0 < lam <= 1:
            raise ValueError("lam must be in (0, 1]")
        if clip <= 0 or drop_clip <= 0:
            raise ValueError("clip and drop_clip must be positive")
        self.lam = lam
        self.clip = clip
        self.drop_clip = drop_clip
        self.burn_in = burn_in

    def _fit_model(self, values, index, baseline, previous):
        return None

    def _score_segment(self, model, baseline: SeasonalBaseline, values, index, start) -> SegmentScores:
        lo = max(0, start - self.burn_in)
        y = baseline.forward(values[lo:, 0])
        season = baseline.season(index[lo:])
        expected = season + baseline.level
        sigma = baseline.sigma(expected, index[lo:])
        u = (y - expected) / sigma
        # A missing point neither pushes nor pulls the chart; one outlier moves it by lam * clip at most
        # (Huberised EWMA; lam * drop_clip below the level), so it alarms on sustained shifts and
        # drops, not on single spikes.
        # A chart pickled before drop_clip existed clips symmetrically, as it did then.
        drop_clip = getattr(self, "drop_clip", self.clip)
        u = np.clip(np.nan_to_num(u, nan=0.0), -drop_clip, self.clip)
        lam = self.lam
        z = lfilter([lam], [1.0, -(1.0 - lam)], u)
        limit = self.threshold * np.sqrt(lam / (2.0 - lam))
        offset = start - lo
        z_prev = np.concatenate([[0.0], z[:-1]])[offset:]
        # Values that would keep z_t inside the limits, given z_{t-1}.
        u_low = (-limit - (1.0 - lam) * z_prev) / lam
        u_high = (limit - (1.0 - lam) * z_prev) / lam
        exp_seg, sig_seg = expected[offset:], sigma[offset:]
        # Past the clip a value pushes no harder, so the range never extends beyond it.
        u_low = np.clip(u_low, -drop_clip, self.clip)
        u_high = np.maximum(np.clip(u_high, -drop_clip, self.clip), u_low)
        return SegmentScores(
            expected=exp_seg,
            lower=exp_seg + u_low * sig_seg,
            upper=exp_seg + u_high * sig_seg,
            deviation=z[offset:] / limit,
        )


class SeasonalResidualDetector(WalkForwardDetector):
    """Residual from the seasonal baseline (season profile + trailing weekly median level), scaled by
    the baseline's level-dependent noise model; alarm at |residual| >= threshold * sigma."""

    name = "seasonal"

    def __init__(self, *, threshold: float = 9.0, **base: Any) -> None:
        super().__init__(threshold=threshold, **base)

    def _fit_model(self, values, index, baseline, previous):
        return None

    def _score_segment(self, model, baseline: SeasonalBaseline, values, index, start) -> SegmentScores:
        y = baseline.forward(values[:, 0])
        expected, _ = baseline.expected(y, index)
        expected = expected[start:]
        sigma = baseline.sigma(expected, index[start:])
        k = self.threshold
        return SegmentScores(
            expected=expected,
            lower=expected - k * sigma,
            upper=expected + k * sigma,
            deviation=(y[start:] - expected) / (k * sigma),
        )
