"""The walk-forward contract every detector follows, and the seasonal baseline they share.

Interface: ``detector.fit(history)`` then ``detector.score(series)``; ``history`` and ``series`` are
``pd.Series`` (or a ``pd.DataFrame`` whose first column, or ``target``, is the scored metric) on a
UTC ``DatetimeIndex`` with a regular step, NaN for gaps. ``score`` returns a frame indexed like
``series`` with columns ``value, score, lower, upper, is_anomaly`` plus ``expected`` and ``deviation``.

Walk-forward, no look-ahead (DESIGN.md: "a detector gives each point the verdict it would have given
had the data ended there"):

* Only the part of the fitted history strictly before ``series``' first timestamp is used as context.
* Models are (re)fitted at boundaries fixed relative to the series start: positions 0, R, 2R, ...
  (``refit_every`` = R points). The model scoring position i was fitted on everything before boundary
  ``floor(i/R)*R`` (an expanding window, optionally capped at ``max_train`` points); it needs at least
  ``min_train`` non-missing points, and until then rows get no verdict (score NaN, not an anomaly).
* Scoring a point uses that model plus values at or before the point (trailing windows, filters run
  forward in time).

So scoring a series and the same series cut short give identical rows for the rows they share.

Scores: each detector computes a signed ``deviation`` scaled so that |deviation| >= 1 is its alarm
threshold; ``score = |d| / (1 + |d|)`` lies in [0, 1) and ``is_anomaly`` is ``score >= 0.5``, so 0.5
means "at the threshold" for every detector, which makes scores comparable in the ensemble.
``expected``/``lower``/``upper`` are in the metric's units.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Self

import numpy as np
import pandas as pd
from scipy.optimize import nnls

OUTPUT_COLUMNS = ["value", "score", "lower", "upper", "is_anomaly"]
EXTRA_COLUMNS = ["expected", "deviation"]
DAY = pd.Timedelta(days=1)

TransformName = Literal["auto", "log1p", "sqrt", "none"]
PeriodSpec = int | Literal["auto"] | None


# ----------------------------------------------------------------------------------------------
# Input handling


def as_utc_frame(data: pd.Series | pd.DataFrame, target: str | None = None) -> pd.DataFrame:
    """Float frame on a sorted, unique UTC index, target column first.

    A Series becomes a one-column frame named after it ("value" when unnamed). Naive timestamps are
    taken as UTC.
    """
    if isinstance(data, pd.Series):
        frame = data.to_frame(name=data.name if data.name is not None else "value")
    elif isinstance(data, pd.DataFrame):
        frame = data.copy()
    else:
        raise TypeError(f"expected a pandas Series or DataFrame, got {type(data).__name__}")
    if not isinstance(frame.index, pd.DatetimeIndex):
        raise TypeError("the series needs a DatetimeIndex")
    index = frame.index
    index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    frame.index = index
    if not index.is_monotonic_increasing:
        frame = frame.sort_index()
    if frame.index.has_duplicates:
        raise ValueError("the series index has duplicate timestamps")
    if target is not None:
        if target not in frame.columns:
            raise KeyError(f"target column {target!r} not in {list(frame.columns)}")
        frame = frame[[target, *[c for c in frame.columns if c != target]]]
    return frame.astype(float)


def infer_step(index: pd.DatetimeIndex) -> pd.Timedelta | None:
    """The regular step of ``index``: its freq, else the most common gap (missing stamps allowed)."""
    if index.freq is not None:
        try:
            return pd.Timedelta(index.freq)
        except (TypeError, ValueError):
            pass
    if len(index) < 2:
        return None
    gaps = np.diff(index.asi8)
    values, counts = np.unique(gaps, return_counts=True)
    step = int(values[np.argmax(counts)])
    if step <= 0 or np.any(gaps % step):
        raise ValueError("the series is not on a regular grid (gaps are not multiples of one step)")
    return pd.Timedelta(step, unit="ns")


def infer_period(step: pd.Timedelta, values: np.ndarray | None = None, max_period: int = 400) -> int | None:
    """Season length in points: one day for sub-daily steps that divide a day, a week for daily data;
    otherwise the lag of the highest autocorrelation peak of ``values`` (None when nothing stands out).
    """
    if step < DAY and (DAY % step) == pd.Timedelta(0):
        return int(DAY / step)
    if step == DAY:
        return 7
    if values is None:
        return None
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if len(x) < 12:
        return None
    x = x - x.mean()
    denom = float(np.dot(x, x))
    if denom == 0:
        return None
    lags = range(2, min(max_period, len(x) // 3))
    acf = np.array([np.dot(x[:-lag], x[lag:]) / denom for lag in lags])
    if len(acf) == 0:
        return None
    best = int(np.argmax(acf))
    return list(lags)[best] if acf[best] > 0.3 else None


def frame_hash(values: np.ndarray, index: pd.DatetimeIndex) -> str:
    """Identity of a training prefix, so a model is reused only for exactly the same data."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(np.ascontiguousarray(values, dtype=float).tobytes())
    if len(index):
        digest.update(np.array([index.asi8[0], index.asi8[-1], len(index)], dtype=np.int64).tobytes())
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------
# Transform and seasonal baseline


def signed_log1p(x: np.ndarray) -> np.ndarray:
    # Equal to log1p for the non-negative metrics hub has, defined for any value.
    return np.sign(x) * np.log1p(np.abs(x))


def signed_expm1(y: np.ndarray) -> np.ndarray:
    # Clipped: a range a million sigmas wide is "unbounded", not an overflow.
    return np.sign(y) * np.expm1(np.minimum(np.abs(y), 700.0))


def _group_robust_mean(values: np.ndarray, groups: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Winsorised mean and count of non-NaN ``values`` per group 0..size-1 (0 for empty groups).

    Values are clipped to the group median +- 2.5 robust sigmas before averaging: nearly as efficient
    as a mean on clean data (a plain median needs ~1.6x the data) and an anomaly moves it little.
    """
    ok = ~np.isnan(values)
    groups, values = groups[ok], values[ok]
    counts = np.bincount(groups, minlength=size).astype(float)
    if len(values) == 0:
        return np.zeros(size), counts
    medians = pd.Series(values).groupby(groups).median().reindex(range(size)).fillna(0.0).to_numpy()
    deviation = values - medians[groups]
    scale = 1.4826 * np.median(np.abs(deviation)) or float(np.std(deviation)) or 1.0
    clipped = medians[groups] + np.clip(deviation, -2.5 * scale, 2.5 * scale)
    sums = np.bincount(groups, weights=clipped, minlength=size)
    means = np.divide(sums, counts, out=np.zeros(size), where=counts > 0)
    return means, counts


@dataclass
class SeasonalBaseline:
    """Expected value and noise scale of one metric, learnt from a training window.

    Transform (``transform="auto"``, for non-negative metrics): ``log1p(x / unit)`` or ``sqrt(x / unit)``,
    whichever leaves standardised training residuals better calibrated across levels. The log suits
    averages with multiplicative noise (latency); the square root stabilises the variance of counts and
    sums of counts (requests, tokens, spend), where a log turns an ordinary empty hour into a 5-sigma
    drop. Metrics with negative values stay untransformed.

    In the transformed space: expected(t) = season(t) + level(t), where season is an hour-of-day
    profile plus a day-of-week offset plus a shrunk hour-of-week interaction (weekly terms only when the
    period is one day), and level(t) is the trailing median of the deseasonalised series over
    ``level_window`` points before t (a week, so anomalies shorter than half of it barely move it).
    The noise variance is ``(var_a + var_b * exp(-expected))`` times seasonal noise factors, fitted on
    the training residuals and inflated for the profile's own estimation error.
    """

    transform: str
    nonneg: bool
    #: Unit of the transform, ``y = log1p(x / unit)`` or ``sqrt(x / unit)``: a twentieth of the median
    #: positive training value (at least the smallest one), roughly "one event's worth", so the
    #: transform is scale-free (spend in USD and tokens behave alike).
    unit: float
    step_ns: int
    period: int | None
    weekly: bool
    hod: np.ndarray
    dow: np.ndarray
    how: np.ndarray
    level: float
    level_window: int
    var_a: float
    var_b: float
    # Multiplicative noise factors per hour of day and day of week (hour of week stays 1: see the fit).
    #: Points added before cutting days for the day-of-week terms: weekends follow the tenant's
    #: timezone, not UTC, so the day boundary is learnt (the shift that best separates the days).
    day_shift: int = 0
    noise_hod: np.ndarray | None = None
    noise_dow: np.ndarray | None = None
    noise_how: np.ndarray | None = None

    # -- transform
    def forward(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, dtype=float)
        if self.transform == "log1p":
            return signed_log1p(raw / self.unit)
        if self.transform == "sqrt":
            return np.sign(raw) * np.sqrt(np.abs(raw) / self.unit)
        return raw

    def inverse(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y, dtype=float)
        if self.transform == "log1p":
            out = signed_expm1(y) * self.unit
        elif self.transform == "sqrt":
            out = np.sign(y) * y**2 * self.unit
        else:
            out = y
        # A non-negative metric has a non-negative range.
        return np.maximum(out, 0.0) if self.nonneg else out

    # -- seasonality
    def _positions(self, index: pd.DatetimeIndex) -> np.ndarray:
        return index.asi8 // self.step_ns

    def _day(self, pos: np.ndarray) -> np.ndarray:
        return ((pos + self.day_shift) // (self.period or 1)) % 7

    def season(self, index: pd.DatetimeIndex) -> np.ndarray:
        if self.period is None:
            return np.zeros(len(index))
        pos = self._positions(index)
        s = self.hod[pos % self.period]
        if self.weekly:
            s = s + self.dow[self._day(pos)] + self.how[pos % (7 * self.period)]
        return s

    def trailing_level(self, deseasonalised: np.ndarray) -> np.ndarray:
        """Median of the ``level_window`` points before each t (t itself excluded)."""
        window = self.level_window
        rolled = pd.Series(deseasonalised).rolling(window, min_periods=max(3, window // 4)).median()
        return rolled.shift(1).to_numpy()

    def noise_factor(self, index: pd.DatetimeIndex) -> np.ndarray:
        if self.period is None or self.noise_hod is None:
            return np.ones(len(index))
        pos = self._positions(index)
        factor = self.noise_hod[pos % self.period]
        if self.weekly and self.noise_dow is not None and self.noise_how is not None:
            factor = factor * self.noise_dow[self._day(pos)] * self.noise_how[pos % (7 * self.period)]
        return factor

    def sigma(self, expected: np.ndarray, index: pd.DatetimeIndex | None = None) -> np.ndarray:
        """Noise scale at each point: the level-dependent model times the seasonal noise factor.

        Seasonal factors matter for averages such as latency, whose noise grows when few requests
        arrive (nights, weekends) although the metric's own level does not show it.
        """
        with np.errstate(over="ignore"):
            var = self.var_a + self.var_b * np.exp(-np.clip(expected, -50, 50))
        if index is not None:
            var = var * self.noise_factor(index)
        floor = 1e-3 if self.transform != "none" else 1e-9 + 1e-6 * abs(self.level)
        return np.sqrt(np.maximum(var, floor**2))

    def expected(self, y: np.ndarray, index: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray]:
        """Expected transformed value and season for every point of ``y`` (causal: uses y before t)."""
        season = self.season(index)
        level = self.trailing_level(y - season)
        # Before the trailing window fills, fall back to the training level.
        level = np.where(np.isnan(level), self.level, level)
        return season + level, season

    # -- fitting
    @classmethod
    def fit(
        cls,
        raw: np.ndarray,
        index: pd.DatetimeIndex,
        step: pd.Timedelta,
        *,
        period: PeriodSpec = "auto",
        transform: TransformName = "auto",
        level_window: int | None = None,
    ) -> SeasonalBaseline:
        raw = np.asarray(raw, dtype=float)
        valid = raw[~np.isnan(raw)]
        nonneg = bool(len(valid) and valid.min() >= 0)
        if transform == "auto":
            if not nonneg:
                transform = "none"
            else:
                candidates = [
                    cls.fit(raw, index, step, period=period, transform=t, level_window=level_window)
                    for t in ("log1p", "sqrt")
                ]
                return min(candidates, key=lambda b: b._calibration_error(raw, index))
        positive = np.abs(valid[valid != 0])
        # Never below the smallest non-zero value: for a count that is mostly 0, 1 or 2 a finer unit
        # would stretch the step from 0 to 1 into a chasm.
        unit = max(float(np.median(positive)) / 20.0, float(positive.min())) if len(positive) else 1.0
        step_ns = int(step.value)
        if period == "auto":
            y_probe = signed_log1p(raw / unit) if transform == "log1p" else raw
            period = infer_period(step, y_probe)
        if period is not None and (period < 2 or len(valid) < 2 * period):
            period = None
        weekly = bool(period is not None and step * period == DAY and len(valid) >= 7 * period)
        if level_window is None:
            level_window = 7 * period if weekly else (2 * period if period else 48)
        level_window = max(4, min(level_window, max(len(raw) // 2, 4)))

        base = cls(
            transform=transform,
            nonneg=nonneg,
            unit=unit,
            step_ns=step_ns,
            period=period,
            weekly=weekly,
            hod=np.zeros(period or 1),
            dow=np.zeros(7),
            how=np.zeros(7 * (period or 1)),
            level=0.0,
            level_window=level_window,
            var_a=1.0,
            var_b=0.0,
        )
        y = base.forward(raw)
        # Share of a point's noise variance in the profile's estimation error ("leverage"): in sample the
        # residual variance is sigma^2 (1 - leverage), out of sample sigma^2 (1 + leverage).
        leverage = 0.0
        if period is not None:
            pos = base._positions(index)
            trend_window = 7 * period if weekly else period
            trend = (
                pd.Series(y)
                .rolling(trend_window, center=True, min_periods=max(3, trend_window // 4))
                .median()
            ).to_numpy()
            detrended = y - trend
            hod, days = _group_robust_mean(detrended, pos % period, period)
            base.hod = hod - hod.mean()
            leverage += 1.0 / max(float(np.mean(days)), 1.0)
            rest = detrended - base.hod[pos % period]
            if weekly:
                # Day boundary: the shift whose day-of-week means explain most of the variance
                # (plain means are enough to choose; the chosen split is then fitted robustly).
                ok = ~np.isnan(rest)
                clipped = np.clip(rest[ok], *np.quantile(rest[ok], [0.02, 0.98]))
                best = np.inf
                for shift in range(period):
                    days_of = (((pos[ok] + shift) // period) % 7).astype(np.int64)
                    sums = np.bincount(days_of, weights=clipped, minlength=7)
                    counts = np.maximum(np.bincount(days_of, minlength=7), 1)
                    spread = float(np.sum((clipped - (sums / counts)[days_of]) ** 2))
                    if spread < best - 1e-9:
                        best, base.day_shift = spread, shift
                dow, _ = _group_robust_mean(rest, base._day(pos), 7)
                base.dow = dow - dow.mean()
                rest = rest - base.dow[base._day(pos)]
                how, weeks = _group_robust_mean(rest, pos % (7 * period), 7 * period)
                # With few weeks an hour-of-week cell is mostly noise: shrink it towards zero.
                shrink = weeks / (weeks + 4.0)
                base.how = how * shrink
                leverage += float(np.mean(shrink**2 / np.maximum(weeks, 1.0)))

        season = base.season(index)
        deseasonalised = y - season
        tail = deseasonalised[-level_window:]
        base.level = float(np.nanmedian(tail)) if np.any(~np.isnan(tail)) else 0.0
        level = base.trailing_level(deseasonalised)
        residual = deseasonalised - level
        expected = season + level
        ok = ~np.isnan(residual)
        if ok.sum() < 24:
            # Too short for trailing levels: residuals around the overall median.
            residual = deseasonalised - np.nanmedian(deseasonalised)
            expected = season + np.nanmedian(deseasonalised)
            ok = ~np.isnan(residual)
        base.var_a, base.var_b = _fit_variance(residual[ok], expected[ok], base.transform)
        if period is not None:
            base._fit_noise_factors(residual, expected, index)
        leverage = min(leverage, 0.5)
        inflation = (1.0 + leverage) / (1.0 - leverage)
        base.var_a, base.var_b = base.var_a * inflation, base.var_b * inflation
        return base

    def _calibration_error(self, raw: np.ndarray, index: pd.DatetimeIndex) -> float:
        """How far standardised training residuals are from unit variance, level by level, plus their
        excess of 4-sigma points: lower is better calibrated."""
        y = self.forward(raw)
        expected, _ = self.expected(y, index)
        z = (y - expected) / self.sigma(expected, index)
        ok = ~np.isnan(z)
        if ok.sum() < 20:
            return 0.0
        z, expected = z[ok], expected[ok]
        bins = np.array_split(np.argsort(expected), 4)
        spread = sum(abs(np.log(np.mean(np.minimum(z[b] ** 2, 25.0)) + 1e-9)) for b in bins if len(b))
        tails = float(np.mean(np.abs(z) > 4.0))
        return spread + 100.0 * tails

    def _fit_noise_factors(self, residual: np.ndarray, expected: np.ndarray, index: pd.DatetimeIndex) -> None:
        """Seasonal multipliers of the noise variance (mean 1 over the training points).

        Each factor is shrunk towards 1 by ``prior`` pseudo-points and hour-of-day factors are smoothed
        over neighbouring hours: a variance from a dozen points is itself noisy by +-40%.
        """
        prior = 10.0
        period = self.period or 1
        ok = ~np.isnan(residual)
        # Clipped at 5 sigma: a training anomaly must not teach the detector that an hour is noisy.
        ratio = np.minimum(residual[ok] ** 2 / self.sigma(expected[ok]) ** 2, 25.0)
        ratio = ratio / max(float(np.mean(ratio)), 1e-12)
        pos = self._positions(index)[ok]

        def shrunk(values: np.ndarray, groups: np.ndarray, size: int) -> np.ndarray:
            sums = np.bincount(groups, weights=values, minlength=size)
            counts = np.bincount(groups, minlength=size)
            return (sums + prior) / (counts + prior)

        hod = shrunk(ratio, pos % period, period)
        self.noise_hod = (np.roll(hod, 1) + 2 * hod + np.roll(hod, -1)) / 4.0
        ratio = ratio / self.noise_hod[pos % period]
        if self.weekly:
            # No hour-of-week factors: two or three points a cell would learn where past outliers fell.
            self.noise_dow = shrunk(ratio, self._day(pos), 7)
            self.noise_how = np.ones(7 * period)
        mean_factor = float(np.mean(self.noise_factor(index[ok])))
        self.noise_hod = self.noise_hod / mean_factor


_BASELINE_CACHE: OrderedDict[tuple, SeasonalBaseline] = OrderedDict()
_BASELINE_CACHE_SIZE = 256


def fit_baseline_cached(
    raw: np.ndarray,
    index: pd.DatetimeIndex,
    step: pd.Timedelta,
    *,
    period: PeriodSpec = "auto",
    transform: TransformName = "auto",
) -> SeasonalBaseline:
    """``SeasonalBaseline.fit``, shared between detectors that train on the same window (an ensemble's
    detectors all do). Baselines are never mutated after fitting, so sharing is safe."""
    key = (frame_hash(raw, index), int(step.value), period, transform)
    cached = _BASELINE_CACHE.get(key)
    if cached is not None:
        _BASELINE_CACHE.move_to_end(key)
        return cached
    baseline = SeasonalBaseline.fit(raw, index, step, period=period, transform=transform)
    _BASELINE_CACHE[key] = baseline
    while len(_BASELINE_CACHE) > _BASELINE_CACHE_SIZE:
        _BASELINE_CACHE.popitem(last=False)
    return baseline


def clear_baseline_cache() -> None:
    """Forget the shared baselines (benchmarks time fits from scratch; memory is otherwise bounded)."""
    _BASELINE_CACHE.clear()


def _fit_variance(residual: np.ndarray, expected: np.ndarray, transform: str) -> tuple[float, float]:
    """Fit residual^2 ~ a + b*exp(-expected) (b only under log1p), robust to a few outliers."""
    if len(residual) == 0:
        return 1.0, 0.0
    mad = 1.4826 * np.median(np.abs(residual - np.median(residual)))
    if mad == 0:
        mad = float(np.std(residual)) or 1e-3
    squared = residual**2
    if transform == "none":
        return float(np.mean(np.minimum(squared, (5 * mad) ** 2))), 0.0
    design = np.column_stack([np.ones_like(expected), np.exp(-np.clip(expected, -50, 50))])
    # First pass clips loosely (the noise is heteroscedastic, a global MAD understates quiet hours'
    # noise); the second clips each residual at 5 of its own first-pass sigmas.
    clip = np.full_like(squared, (10 * mad) ** 2)
    a, b = float(np.mean(squared)), 0.0
    for _ in range(2):
        coef, _ = nnls(design, np.minimum(squared, clip))
        if coef.sum() <= 0:
            break
        a, b = float(coef[0]), float(coef[1])
        clip = 25.0 * (design @ coef)
    return a, b


# ----------------------------------------------------------------------------------------------
# Walk-forward detector


@dataclass
class SegmentScores:
    """What a detector says about positions [start, stop) of the combined series (transformed space)."""

    expected: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    deviation: np.ndarray


@dataclass
class FittedSegment:
    baseline: SeasonalBaseline
    model: Any


def deviation_to_score(deviation: np.ndarray) -> np.ndarray:
    magnitude = np.abs(deviation)
    return magnitude / (1.0 + magnitude)


class WalkForwardDetector(ABC):
    """Base class: the refit schedule, context handling, caching and output format live here.

    Subclasses implement ``_fit_model`` (learn from a training window) and ``_score_segment`` (score a
    run of consecutive points with one fitted model, using only values at or before each point).
    """

    name: ClassVar[str] = "detector"
    #: How the ensemble groups votes: "point" detectors judge single points, "sustained" ones shifts.
    role: ClassVar[str] = "point"
    #: Whether ``_fit_model`` benefits from the previous segment's model (warm start).
    warm_start: ClassVar[bool] = False

    def __init__(
        self,
        *,
        threshold: float,
        seasonal_period: PeriodSpec = "auto",
        transform: TransformName = "auto",
        refit_every: int | None = None,
        min_train: int | None = None,
        max_train: int | None = None,
        target: str | None = None,
        cache_size: int = 16,
    ) -> None:
        if threshold <= 0:
            raise ValueError("threshold must be positive")
        self.threshold = float(threshold)
        self.seasonal_period = seasonal_period
        self.transform = transform
        self.refit_every = refit_every
        self.min_train = min_train
        self.max_train = max_train
        self.target = target
        self.cache_size = cache_size
        self._history: pd.DataFrame | None = None
        self._step: pd.Timedelta | None = None
        self._cache: OrderedDict[str, FittedSegment | None] = OrderedDict()
        self._fit_key: str | None = None

    # -- parameters
    def get_params(self) -> dict[str, Any]:
        """Constructor arguments (every subclass stores each argument under its own name)."""
        names = [
            p.name
            for cls in type(self).__mro__
            if cls is not object and "__init__" in cls.__dict__
            for p in inspect.signature(cls.__init__).parameters.values()
            if p.name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        return {
            name: copy.deepcopy(getattr(self, name)) for name in dict.fromkeys(names) if hasattr(self, name)
        }

    def clone(self) -> Self:
        """An unfitted copy with the same parameters."""
        return type(self)(**self.get_params())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # -- schedule
    def _season_points(self) -> int:
        if self._step is None:
            return 24
        period = self.seasonal_period if isinstance(self.seasonal_period, int) else None
        if period is None:
            period = infer_period(self._step) or 24
        return period

    def _refit_every(self) -> int:
        return self.refit_every or 7 * self._season_points()

    def _min_train(self) -> int:
        return self.min_train or 7 * self._season_points()

    # -- public API
    def fit(self, history: pd.Series | pd.DataFrame) -> Self:
        """Remember ``history`` as context and fit the model for a series that starts right after it."""
        frame = as_utc_frame(history, self.target)
        self._cache.clear()
        self._step = infer_step(frame.index) if len(frame) >= 2 else self._step
        if self._step is not None and len(frame):
            frame = self._regular(frame, frame.index[0], frame.index[-1])
        self._history = frame
        self._fit_key = None
        if self._step is not None and len(frame):
            values = frame.to_numpy()
            self._segment_model(values, frame.index, stop=len(frame), previous=None)
            self._fit_key = frame_hash(values, frame.index)
        return self

    def score(self, series: pd.Series | pd.DataFrame) -> pd.DataFrame:
        """Walk-forward verdicts for every row of ``series`` (see the module docstring)."""
        if self._history is None:
            raise RuntimeError(f"{type(self).__name__}.score called before fit")
        frame = as_utc_frame(series, self.target)
        if len(frame) == 0:
            return _empty_output(frame.index)
        history = self._history
        if len(history.columns) == 1 and len(frame.columns) == 1:
            # One metric: names need not match (a Series from a file is often unnamed).
            frame.columns = history.columns
        if list(history.columns) != list(frame.columns) and len(history):
            if frame.columns[0] != history.columns[0] or set(history.columns) != set(frame.columns):
                raise ValueError(f"history columns {list(history.columns)} differ from {list(frame.columns)}")
            history = history[list(frame.columns)]
        step = self._step or infer_step(frame.index)
        if step is None:
            raise ValueError("cannot tell the series step from one point: fit on a longer history")
        if len(frame) >= 2 and infer_step(frame.index) != step:
            raise ValueError(f"series step {infer_step(frame.index)} differs from the history step {step}")
        self._step = step

        start = frame.index[0]
        context = history[history.index < start]
        if len(context):
            if (start - context.index[0]) % step:
                raise ValueError("the series is not on the history's time grid")
            first = context.index[0]
        else:
            first = start
        combined = self._regular(pd.concat([context, frame]), first, frame.index[-1])
        offset = int((start - first) / step)
        values = combined.to_numpy()
        index = combined.index

        n = len(combined) - offset
        refit = self._refit_every()
        parts: list[pd.DataFrame] = []
        previous: FittedSegment | None = None
        for boundary in range(0, n, refit):
            seg_start = offset + boundary
            seg_stop = min(offset + boundary + refit, len(combined))
            fitted = self._segment_model(values, index, stop=seg_start, previous=previous)
            parts.append(self._segment_output(fitted, values, index, seg_start, seg_stop))
            previous = fitted if fitted is not None else previous
        out = pd.concat(parts)
        return out.reindex(frame.index)

    # -- internals
    def _regular(self, frame: pd.DataFrame, first: pd.Timestamp, last: pd.Timestamp) -> pd.DataFrame:
        grid = pd.date_range(first, last, freq=self._step, tz="UTC")
        if len(grid) != len(frame) or not grid.equals(frame.index):
            if not frame.index.isin(grid).all():
                raise ValueError("timestamps off the regular grid of the series")
            frame = frame.reindex(grid)
        return frame

    def _segment_model(
        self, values: np.ndarray, index: pd.DatetimeIndex, *, stop: int, previous: FittedSegment | None
    ) -> FittedSegment | None:
        """The model fitted on the points before ``stop`` (cached by the exact prefix)."""
        key = frame_hash(values[:stop], index[:stop])
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        lo = 0 if self.max_train is None else max(0, stop - self.max_train)
        train_values, train_index = values[lo:stop], index[lo:stop]
        fitted: FittedSegment | None = None
        if np.count_nonzero(~np.isnan(train_values[:, 0])) >= self._min_train():
            baseline = fit_baseline_cached(
                train_values[:, 0],
                train_index,
                self._step,
                period=self.seasonal_period,
                transform=self.transform,
            )
            model = self._fit_model(
                train_values,
                train_index,
                baseline,
                previous.model if (previous and self.warm_start) else None,
            )
            fitted = FittedSegment(baseline=baseline, model=model)
        self._cache[key] = fitted
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return fitted

    def _segment_output(
        self,
        fitted: FittedSegment | None,
        values: np.ndarray,
        index: pd.DatetimeIndex,
        start: int,
        stop: int,
    ) -> pd.DataFrame:
        raw = values[start:stop, 0]
        seg_index = index[start:stop]
        if fitted is None:
            nan = np.full(len(raw), np.nan)
            return pd.DataFrame(
                {
                    "value": raw,
                    "score": nan,
                    "lower": nan,
                    "upper": nan,
                    "is_anomaly": np.zeros(len(raw), dtype=bool),
                    "expected": nan,
                    "deviation": nan,
                },
                index=seg_index,
            )
        seg = self._score_segment(fitted.model, fitted.baseline, values[:stop], index[:stop], start)
        baseline = fitted.baseline
        deviation = np.where(np.isnan(raw), np.nan, seg.deviation)
        score = deviation_to_score(deviation)
        return pd.DataFrame(
            {
                "value": raw,
                "score": score,
                "lower": baseline.inverse(seg.lower),
                "upper": baseline.inverse(seg.upper),
                "is_anomaly": np.nan_to_num(score, nan=0.0) >= 0.5,
                "expected": baseline.inverse(seg.expected),
                "deviation": deviation,
            },
            index=seg_index,
        )

    def __getstate__(self) -> dict[str, Any]:
        # Models of past segments are recomputable: do not pickle them into a logged model.
        state = self.__dict__.copy()
        kept = self._fit_key
        state["_cache"] = OrderedDict((k, v) for k, v in self._cache.items() if k == kept)
        return state

    @abstractmethod
    def _fit_model(
        self,
        values: np.ndarray,
        index: pd.DatetimeIndex,
        baseline: SeasonalBaseline,
        previous: Any | None,
    ) -> Any:
        """Learn from the training window (``values[:, 0]`` is the target, raw units)."""

    @abstractmethod
    def _score_segment(
        self,
        model: Any,
        baseline: SeasonalBaseline,
        values: np.ndarray,
        index: pd.DatetimeIndex,
        start: int,
    ) -> SegmentScores:
        """Score positions ``start..len(values)-1``; ``values`` ends at the segment's last point."""


def _empty_output(index: pd.DatetimeIndex) -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=float) for c in [*OUTPUT_COLUMNS, *EXTRA_COLUMNS]}, index=index)
    frame["is_anomaly"] = frame["is_anomaly"].astype(bool)
    return frame
