"""Input handling shared by every forecaster: validation, the regular grid, gaps, seasonality, scale.

A forecaster receives a ``pd.Series`` indexed by UTC timestamps (hourly or daily; other fixed steps
work but get no default seasonal periods). ``prepare_series`` turns it into a gap-free float series on
a regular grid or raises ``ForecastInputError`` naming what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from statsmodels.tsa.stattools import acf

from hub_ml.forecast.errors import ForecastInputError

HOUR = pd.Timedelta(hours=1)
DAY = pd.Timedelta(days=1)
# Gaps this short are interpolated linearly; longer ones are filled from the previous season so a
# missing afternoon does not become a straight line through the night.
LINEAR_GAP_LIMIT = 3
MAX_MISSING_FRACTION = 0.5


def _to_utc_index(index: pd.Index) -> pd.DatetimeIndex:
    if not isinstance(index, pd.DatetimeIndex):
        raise ForecastInputError(
            f"series must be indexed by timestamps (a DatetimeIndex), got {type(index).__name__}"
        )
    # Naive timestamps are taken to be UTC: that is what every hub table stores.
    return index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")


def infer_step(index: pd.DatetimeIndex) -> pd.Timedelta:
    """The grid step of ``index``: the most common spacing between consecutive timestamps."""
    if len(index) < 2:
        raise ForecastInputError("series needs at least two timestamps to infer its frequency")
    deltas = pd.Series(np.diff(index.asi8))
    step = pd.Timedelta(int(deltas.mode().iloc[0]), unit="ns")
    if step <= pd.Timedelta(0):
        raise ForecastInputError("series timestamps must be strictly increasing")
    return step


def prepare_series(series: pd.Series, *, fill_period: int | None = None) -> pd.Series:
    """Validate ``series`` and return it as floats on a regular UTC grid with gaps filled.

    Raises ``ForecastInputError`` for a non-datetime index, duplicate or misaligned timestamps,
    non-numeric or infinite values, and series that are mostly missing.
    """
    if not isinstance(series, pd.Series):
        raise ForecastInputError(f"expected a pandas Series, got {type(series).__name__}")
    if len(series) == 0:
        raise ForecastInputError("series is empty")
    if series.dtype == bool or not (pd.api.types.is_numeric_dtype(series.dtype) or series.dtype == object):
        raise ForecastInputError(f"series values must be numeric, got dtype {series.dtype}")
    try:
        values = pd.to_numeric(series, errors="raise").astype(float)
    except (ValueError, TypeError) as exc:
        raise ForecastInputError(f"series values must be numeric: {exc}") from exc
    index = _to_utc_index(series.index)
    values = pd.Series(values.to_numpy(), index=index, name=series.name).sort_index()
    if values.index.has_duplicates:
        dupes = values.index[values.index.duplicated()].unique()[:3]
        raise ForecastInputError(f"series has duplicate timestamps, e.g. {list(map(str, dupes))}")
    if np.isinf(values.to_numpy()).any():
        raise ForecastInputError("series contains infinite values")

    step = infer_step(values.index)
    offsets = (values.index.asi8 - values.index.asi8[0]) % step.value
    if (offsets != 0).any():
        bad = values.index[offsets != 0][:3]
        raise ForecastInputError(f"timestamps are not on a regular {step} grid, e.g. {list(map(str, bad))}")
    grid = pd.date_range(values.index[0], values.index[-1], freq=step, tz="UTC")
    values = values.reindex(grid)
    missing = values.isna().mean()
    if missing > MAX_MISSING_FRACTION:
        raise ForecastInputError(
            f"series is {missing:.0%} missing on its {step} grid (at most {MAX_MISSING_FRACTION:.0%} usable)"
        )
    if missing > 0:
        values = _fill_gaps(values, fill_period or default_periods(step)[:1] or None)
    values.index.freq = step
    return values


def _fill_gaps(values: pd.Series, period: int | tuple[int, ...] | None) -> pd.Series:
    if isinstance(period, tuple):
        period = period[0] if period else None
    missing = values.isna()
    run_id = (missing != missing.shift()).cumsum()
    run_length = missing.groupby(run_id).transform("sum")
    short_gap = missing & (run_length <= LINEAR_GAP_LIMIT)
    # pandas' interpolate(limit=) would also fill the first steps of a long gap; fill short gaps only.
    filled = values.where(~short_gap, values.interpolate(method="linear", limit_area="inside"))
    if period:
        # Long gaps take the value one season earlier (or later, at the very start).
        for _ in range(int(np.ceil(len(values) / period))):
            if not filled.isna().any():
                break
            filled = filled.fillna(filled.shift(period)).fillna(filled.shift(-period))
    return filled.interpolate(method="linear", limit_direction="both")


def steps_per_day(step: pd.Timedelta) -> float:
    return DAY / step


def default_periods(step: pd.Timedelta) -> tuple[int, ...]:
    """Seasonal periods worth testing for a grid step: day and week for hourly, week for daily."""
    if step == HOUR:
        return (24, 168)
    if step == DAY:
        return (7,)
    per_day = steps_per_day(step)
    if per_day > 1 and float(per_day).is_integer():
        return (int(per_day), int(per_day) * 7)
    return ()


def horizon_steps(days: float, step: pd.Timedelta) -> int:
    """Number of grid steps in ``days`` days (168 for 7 days hourly, 7 for 7 days daily)."""
    return max(1, round(days * steps_per_day(step)))


def future_index(last: pd.Timestamp, step: pd.Timedelta, horizon: int) -> pd.DatetimeIndex:
    return pd.date_range(last + step, periods=horizon, freq=step, tz="UTC")


def detect_seasonal_periods(
    values: np.ndarray,
    candidates: tuple[int, ...],
    *,
    min_cycles: int = 2,
    min_autocorrelation: float = 0.2,
) -> tuple[int, ...]:
    """The candidate periods the data shows: autocorrelation of the detrended series at the lag.

    A period is kept when at least ``min_cycles`` full cycles are available and the autocorrelation
    at that lag is both above ``min_autocorrelation`` and above the 95% white-noise band. The series
    is detrended with a centred moving average over the longest candidate so growth does not pass
    for seasonality.
    """
    y = np.asarray(values, dtype=float)
    usable = [p for p in sorted(candidates) if p >= 2 and len(y) >= min_cycles * p]
    if not usable:
        return ()
    y = _log_if_positive(y)
    window = max(usable)
    trend = pd.Series(y).rolling(window, center=True, min_periods=max(2, window // 2)).mean()
    detrended = y - trend.to_numpy()
    detrended = detrended[~np.isnan(detrended)]
    # Winsorise: a few anomalous hours (spikes of x5, level shifts of x2) would otherwise swamp
    # the autocorrelation of a regular weekly pattern.
    center = np.median(detrended)
    spread = 1.4826 * np.median(np.abs(detrended - center))
    if spread > 0:
        detrended = np.clip(detrended, center - 4 * spread, center + 4 * spread)
    if detrended.std() == 0:
        return ()
    correlations = acf(detrended, nlags=min(max(usable), len(detrended) - 1), fft=True)
    band = 1.96 / np.sqrt(len(detrended))
    found = []
    for period in usable:
        if period < len(correlations) and correlations[period] > max(min_autocorrelation, band):
            found.append(period)
    return tuple(found)


def replace_outliers(
    y: pd.Series, period: int, limit: float = 6.0, level_window: int | None = None
) -> tuple[pd.Series, int]:
    """Replace points far from the series' usual shape by that shape; returns (series, count).

    Usual shape, on the log scale for non-negative series: the median of the same seasonal phase
    over the series plus a rolling median level over ``level_window`` steps (default: a week of
    steps, at least one period; it must be longer than the anomalies, which hold up to three days,
    or a level shift becomes the level). A point whose residual exceeds
    ``limit`` robust standard deviations (1.4826 x MAD) is replaced. Meant for training data only,
    so injected spikes, drops and runaways do not teach the models a pattern that has ended; it
    looks at nothing outside the series it is given, so it cannot leak data past a backtest origin.
    """
    values = y.to_numpy(dtype=float)
    period = int(period)
    if period < 2 or len(values) < 3 * period:
        return y, 0
    z = _log_if_positive(values)
    if level_window is None:
        week = round(7 * steps_per_day(y.index.freq)) if y.index.freq is not None else period
        level_window = max(period, week)
    level_window = min(int(level_window), len(z))
    phase = np.arange(len(z)) % period
    profile = pd.Series(z).groupby(phase).transform("median").to_numpy()
    level = pd.Series(z - profile).rolling(level_window, center=True, min_periods=level_window // 2).median()
    expected = profile + level.bfill().ffill().to_numpy()
    residual = z - expected
    spread = 1.4826 * np.median(np.abs(residual - np.median(residual)))
    if not spread > 0:
        return y, 0
    outliers = np.abs(residual) > limit * spread
    if not outliers.any():
        return y, 0
    replacement = np.expm1(expected) if (values >= 0).all() else expected
    cleaned = np.where(outliers, replacement, values)
    return pd.Series(cleaned, index=y.index, name=y.name), int(outliers.sum())


def _log_if_positive(y: np.ndarray) -> np.ndarray:
    return np.log1p(y) if (y >= 0).all() else y


@dataclass(frozen=True)
class LogTransform:
    """log(y + offset) for non-negative series, so multiplicative seasonality becomes additive.

    ``offset`` is 0 for strictly positive series and 1 (log1p) when zeros occur. ``enabled=False``
    is the identity, used for series that can go negative.
    """

    enabled: bool
    offset: float = 0.0

    @classmethod
    def for_values(cls, y: np.ndarray, mode: str = "auto") -> LogTransform:
        if mode not in ("auto", "log", "none"):
            raise ValueError(f"transform must be 'auto', 'log' or 'none', got {mode!r}")
        if mode == "none":
            return cls(False)
        if (y < 0).any():
            if mode == "log":
                raise ForecastInputError(
                    "transform='log' needs non-negative values; the series has negatives"
                )
            return cls(False)
        return cls(True, 0.0 if (y > 0).all() else 1.0)

    def forward(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y, dtype=float)
        # The floor keeps a forecast of exactly zero (allowed when offset is 0) finite.
        return np.log(np.maximum(y + self.offset, 1e-12)) if self.enabled else y

    def inverse(self, z: np.ndarray) -> np.ndarray:
        z = np.asarray(z, dtype=float)
        if not self.enabled:
            return z
        # Clip so a wild extrapolation cannot overflow to inf.
        return np.exp(np.clip(z, -50.0, 50.0)) - self.offset
