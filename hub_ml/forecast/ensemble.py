"""The forecast ensemble: backtest the members, weight them by validation error, calibrate intervals.

``EnsembleForecaster.fit(series)``:
1. rolling-origin backtest of every member (seasonal naive, SARIMA, Prophet, LSTM by default) at the
   longest report horizon (30 days), each fit on the data before its origin;
2. combination weights per bucket of horizon steps under each weighting scheme (equal, inverse MAPE,
   inverse MSE, stacking); every scheme is judged leave-one-origin-out (weights from the other
   origins, error on the held-out one) and, with ``weighting="auto"``, the best one is kept
   (stacking only where the backtest holds enough distinct target steps per weight, see
   ``stacking_supported``);
3. fallback: when the ensemble's leave-one-origin-out error does not beat the best single member's
   backtest error, the ensemble becomes that member alone;
4. split-conformal intervals from the combined backtest residuals per horizon bucket; their coverage
   is measured leave-one-origin-out and reported;
5. the members the weights use are refitted on the whole series.
``report`` holds the backtest metrics of every member and of the ensemble, the weights, the scheme
comparison and the measured coverage; ``report.as_metrics()`` is a flat dict for ``mlflow.log_metrics``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import nnls

from hub_ml.forecast import metrics
from hub_ml.forecast.backtest import BacktestResult, plan_origins, rolling_origin_backtest, score_forecasts
from hub_ml.forecast.base import Forecaster, check_level
from hub_ml.forecast.conformal import ConformalIntervals, HorizonBuckets
from hub_ml.forecast.errors import ForecastInputError
from hub_ml.forecast.lstm import LstmForecaster
from hub_ml.forecast.naive import SeasonalNaiveForecaster
from hub_ml.forecast.prophet_model import ProphetForecaster
from hub_ml.forecast.sarima import SarimaForecaster
from hub_ml.forecast.series import (
    LogTransform,
    default_periods,
    detect_seasonal_periods,
    horizon_steps,
    steps_per_day,
)

MODEL_CLASSES: dict[str, type[Forecaster]] = {
    SeasonalNaiveForecaster.name: SeasonalNaiveForecaster,
    SarimaForecaster.name: SarimaForecaster,
    ProphetForecaster.name: ProphetForecaster,
    LstmForecaster.name: LstmForecaster,
}
BASELINE_MODEL = SeasonalNaiveForecaster.name
WEIGHTING_SCHEMES = ("equal", "inverse_mape", "inverse_mse", "stacking")
ENSEMBLE = "ensemble"


@dataclass(frozen=True)
class EnsembleConfig:
    """What to ensemble and how to validate it.

    ``horizon_days``: the report horizons (7 and 30 days: 168/720 steps hourly, 7/30 daily); the
    longest is the backtest horizon. ``n_origins``/``origin_step`` (in steps) default to 3 origins a
    week apart for sub-daily series and 8 origins 3 days apart for daily ones (a daily series has
    few points, and its fits are cheap). ``model_params`` passes keyword arguments to a member's
    constructor, e.g. ``{"lstm": {"epochs": 10}}``. ``outlier_limit``: members replace training
    points this many robust standard deviations off the usual seasonal shape (anomalies) before
    fitting; None keeps them. Backtests still score against the raw data. ``symmetric_intervals``:
    see ``hub_ml.forecast.conformal``. ``min_stacking_points``: ``weighting="auto"`` considers stacking
    only when every horizon bucket's backtest windows cover at least this many distinct target
    steps per member weight (see ``stacking_supported``).
    """

    models: tuple[str, ...] = tuple(MODEL_CLASSES)
    model_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    horizon_days: tuple[float, ...] = (7.0, 30.0)
    n_origins: int | None = None
    origin_step: int | None = None
    weighting: str = "auto"
    seasonal_periods: tuple[int, ...] | None = None
    min_bucket_residuals: int = 40
    coverage_level: float = 0.95
    outlier_limit: float | None = 6.0
    symmetric_intervals: bool = True
    min_stacking_points: int = 10

    def __post_init__(self) -> None:
        unknown = [m for m in self.models if m not in MODEL_CLASSES]
        if unknown or not self.models:
            raise ValueError(f"unknown models {unknown}; choose from {sorted(MODEL_CLASSES)}")
        if self.weighting not in (*WEIGHTING_SCHEMES, "auto"):
            raise ValueError(
                f"weighting must be 'auto' or one of {WEIGHTING_SCHEMES}, got {self.weighting!r}"
            )
        stray = set(self.model_params) - set(self.models)
        if stray:
            raise ValueError(f"model_params for models not in the ensemble: {sorted(stray)}")
        if not self.horizon_days or min(self.horizon_days) <= 0:
            raise ValueError("horizon_days must hold positive numbers of days")

    @classmethod
    def quick(cls, **overrides: Any) -> EnsembleConfig:
        """Small grids and few epochs: for tests and interactive use (seconds, not a minute)."""
        params = {
            "sarima": {"max_p": 1, "max_q": 1, "max_P": 1, "max_Q": 0, "harmonic_grid": (0, 4, 12)},
            "prophet": {"uncertainty_samples": 50},
            "lstm": {"epochs": 12, "hidden_size": 24, "max_windows": 800},
        }
        models = overrides.get("models", cls.models)
        overrides.setdefault("model_params", {m: p for m, p in params.items() if m in models})
        return cls(**overrides)


# -- weighting -------------------------------------------------------------------------------------
def _relative_rows(actual: np.ndarray) -> np.ndarray:
    return np.abs(actual) > metrics.ZERO_TOLERANCE


def scheme_weights(
    scheme: str, actuals: np.ndarray, forecasts: np.ndarray, buckets: HorizonBuckets
) -> np.ndarray:
    """Weights (buckets x models) from backtest forecasts shaped (models, origins, horizon).

    inverse_mape / inverse_mse: proportional to 1 / error of each member in the bucket;
    stacking: non-negative least squares on relative errors, normalised to sum to one.
    """
    n_models = forecasts.shape[0]
    weights = np.zeros((len(buckets), n_models))
    for b, part in enumerate(buckets.slices()):
        a = actuals[:, part].ravel()
        f = forecasts[:, :, part].reshape(n_models, -1)
        if scheme == "equal":
            w = np.ones(n_models)
        elif scheme in ("inverse_mape", "inverse_mse"):
            if scheme == "inverse_mape":
                error = np.array([metrics.mape(a, fm) for fm in f])
            else:
                error = np.mean((f - a) ** 2, axis=1)
            w = 1.0 / np.maximum(error, 1e-12)
        elif scheme == "stacking":
            keep = _relative_rows(a)
            # Minimise sum(((a - F w) / a)^2): rows scaled by 1/a, target 1. A heavily weighted extra
            # row pins the weights' sum to one while nnls keeps them non-negative.
            design = (f[:, keep] / a[keep]).T
            penalty = 1e3
            design = np.vstack([design, penalty * np.ones(n_models)])
            target = np.append(np.ones(keep.sum()), penalty)
            w, _ = nnls(design, target)
            if w.sum() <= 0:
                w = np.ones(n_models)
        else:
            raise ValueError(f"unknown weighting scheme {scheme!r}")
        w = np.where(np.isfinite(w), w, 0.0)
        weights[b] = w / w.sum()
    return weights


def distinct_target_points(origins, buckets: HorizonBuckets) -> list[int]:
    """Per bucket, how many distinct time steps the backtest windows of that bucket cover.

    Overlapping origins score the same days again: 8 daily origins 3 days apart put 56 residuals in
    the steps 1-7 bucket but only 28 distinct days in it (hourly: 3 origins a week apart, 72
    distinct hours in steps 1-24).
    """
    origins = np.asarray(origins, dtype=int)
    return [
        len(np.unique((origins[:, None] + np.arange(part.start, part.stop)[None, :]).ravel()))
        for part in buckets.slices()
    ]


def stacking_supported(origins, buckets: HorizonBuckets, n_models: int, min_points: int) -> bool:
    """Whether stacking's free weights rest on enough data for ``weighting="auto"`` to pick it.

    Stacking fits ``n_models`` weights per bucket by least squares; with fewer than ``min_points``
    distinct target steps per weight (the usual ten observations per parameter) it fits the noise of
    the few days it saw, and its leave-one-origin-out error cannot show that: the held-out window
    shares most of its days with the overlapping windows the weights were fitted on. Daily series
    (7-9 distinct days per weight) fall below that; on generated daily spend (seeds 1-6) stacking
    then lost to inverse-MSE weighting at 30 days: mean MASE 0.740 vs 0.722, worst 1.113 vs 0.893.
    """
    return min(distinct_target_points(origins, buckets)) >= min_points * n_models


def combine(forecasts: np.ndarray, weights: np.ndarray, buckets: HorizonBuckets) -> np.ndarray:
    """Weighted sum of member forecasts (models, ..., horizon) with per-bucket weights."""
    horizon = forecasts.shape[-1]
    per_step = weights[buckets.index(horizon)]  # (horizon, models)
    return np.einsum("m...h,hm->...h", forecasts, per_step)


def _selection_error(actuals: np.ndarray, forecast: np.ndarray, horizons: list[int]) -> float:
    """Mean MAPE over the report horizons (so the 7-day window counts as much as the 30-day one)."""
    return float(np.mean([metrics.mape(actuals[:, :h], forecast[:, :h]) for h in horizons]))


# -- report ----------------------------------------------------------------------------------------
@dataclass
class EnsembleReport:
    """What the fit found, for people (``summary()``) and for MLflow (``as_metrics()``)."""

    step: pd.Timedelta
    seasonal_periods: tuple[int, ...]
    horizons: dict[str, int]
    origins: list[pd.Timestamp]
    backtest: pd.DataFrame
    weighting: str
    weighting_errors: dict[str, float]
    weights: pd.DataFrame
    fallback_model: str | None
    members: list[str]
    failures: dict[str, str]
    tuned_params: dict[str, dict[str, Any]]
    seconds: dict[str, float]
    coverage_level: float

    def metric(self, model: str, horizon: str, name: str) -> float:
        row = self.backtest[(self.backtest["model"] == model) & (self.backtest["horizon"] == horizon)]
        return float(row[name].iloc[0]) if len(row) else float("nan")

    def as_metrics(self) -> dict[str, float]:
        """Flat ``{name: value}``: ``<model>_<horizon>_<metric>`` (e.g. ``ensemble_30d_mape``), the
        weighting comparison (``weighting_<scheme>_mape``), mean member weights and timings."""
        out: dict[str, float] = {}
        for row in self.backtest.to_dict("records"):
            for name in ("mape", "smape", "mase", "rmse", "coverage", "mae_vs_naive"):
                value = row.get(name)
                if value is not None and np.isfinite(value):
                    out[f"{row['model']}_{row['horizon']}_{name}"] = float(value)
        for scheme, error in self.weighting_errors.items():
            out[f"weighting_{scheme}_mape"] = float(error)
        for model in self.weights.columns:
            out[f"weight_{model}"] = float(self.weights[model].mean())
        out["fallback"] = float(self.fallback_model is not None)
        for name, seconds in self.seconds.items():
            out[f"seconds_{name}"] = float(seconds)
        return out

    def params(self) -> dict[str, str]:
        """Settings that describe the model, for ``mlflow.log_params``."""
        return {
            "step": str(self.step),
            "seasonal_periods": ",".join(map(str, self.seasonal_periods)),
            "horizons": ",".join(f"{k}={v}" for k, v in self.horizons.items()),
            "n_origins": str(len(self.origins)),
            "weighting": self.weighting,
            "fallback_model": self.fallback_model or "",
            "members": ",".join(self.members),
            **{f"{m}_tuned": str(p) for m, p in self.tuned_params.items() if p},
        }

    def summary(self) -> str:
        """Markdown: the backtest table and the weights."""
        table = self.backtest.copy()
        lines = [
            f"Backtest over {len(self.origins)} origins ({self.origins[0]:%Y-%m-%d %H:%M} to "
            f"{self.origins[-1]:%Y-%m-%d %H:%M} UTC), seasonal periods {self.seasonal_periods}, "
            f"weighting {self.weighting}"
            + (f", fallback to {self.fallback_model}" if self.fallback_model else ""),
            "",
            table.to_markdown(index=False, floatfmt=".3f")
            if _has_tabulate()
            else table.to_string(index=False),
            "",
            "Weights by horizon bucket:",
            "",
            self.weights.round(3).to_string(),
        ]
        return "\n".join(lines)


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


# -- the ensemble ----------------------------------------------------------------------------------
class EnsembleForecaster(Forecaster):
    """Validation-weighted ensemble with conformal intervals; see the module docstring."""

    name = ENSEMBLE

    def __init__(self, config: EnsembleConfig | None = None) -> None:
        config = config or EnsembleConfig()
        super().__init__(seasonal_periods=config.seasonal_periods)
        self.config = config

    # -- geometry ---------------------------------------------------------------------------------
    def _horizons(self) -> dict[str, int]:
        return {f"{d:g}d": horizon_steps(d, self.step_) for d in sorted(self.config.horizon_days)}

    def _origin_plan(self) -> tuple[int, int]:
        per_day = steps_per_day(self.step_)
        if per_day > 1:
            n_origins, step = 3, horizon_steps(7, self.step_)
        else:
            n_origins, step = 8, max(1, round(3 * per_day))
        return self.config.n_origins or n_origins, self.config.origin_step or step

    def _factories(self, periods: tuple[int, ...]) -> dict[str, Any]:
        return {
            name: functools.partial(
                MODEL_CLASSES[name],
                seasonal_periods=periods,
                **{"outlier_limit": self.config.outlier_limit, **self.config.model_params.get(name, {})},
            )
            for name in self.config.models
        }

    def _min_train(self, periods: tuple[int, ...]) -> int:
        return max(factory().min_length() for factory in self._factories(periods).values())

    def min_length(self) -> int:
        return self._min_train(self._periods_in_use) + max(self._horizons().values())

    def length_requirement(self) -> str:
        horizon = max(self._horizons().values())
        return (
            f"{self._min_train(self._periods_in_use)} to train the members for seasonal periods "
            f"{self._periods_in_use or '(none)'}, plus a {horizon}-step backtest horizon "
            f"({max(self.config.horizon_days):g} days at step {self.step_})"
        )

    # -- fit --------------------------------------------------------------------------------------
    def _fit(self, y: pd.Series) -> None:
        started = time.perf_counter()
        horizons = self._horizons()
        horizon = max(horizons.values())
        n_origins, origin_step = self._origin_plan()
        periods = self.periods_ or ()
        origins = plan_origins(len(y), horizon, n_origins, origin_step, self._min_train(periods))
        if self.config.seasonal_periods is None:
            # Judge seasonality on the data before the earliest origin only: no look-ahead.
            early = detect_seasonal_periods(y.to_numpy()[: origins[0]], default_periods(self.step_))
            if early != periods:
                periods = early
                origins = plan_origins(len(y), horizon, n_origins, origin_step, self._min_train(periods))
        self.periods_ = periods
        factories = self._factories(periods)

        backtest = rolling_origin_backtest(
            y, factories, horizon=horizon, origins=origins, mase_season=max(periods, default=1)
        )
        if not backtest.models:
            reasons = "; ".join(f"{m}: {r}" for m, r in backtest.failures.items())
            raise ForecastInputError(f"every ensemble member failed the backtest: {reasons}")
        self.backtest_ = backtest
        members = backtest.models
        stacked = np.stack([backtest.means[m] for m in members])
        actuals = backtest.actuals
        buckets = HorizonBuckets.for_horizon(
            horizon, self.step_, len(origins), min_residuals=self.config.min_bucket_residuals
        )
        self.transform_ = LogTransform.for_values(y.to_numpy())
        report_horizons = list(horizons.values())

        # Judge every weighting scheme leave-one-origin-out.
        loo_forecasts = {s: self._leave_one_out(s, actuals, stacked, buckets) for s in WEIGHTING_SCHEMES}
        scheme_errors = {s: _selection_error(actuals, f, report_horizons) for s, f in loo_forecasts.items()}
        member_errors = {m: _selection_error(actuals, backtest.means[m], report_horizons) for m in members}
        candidates = [
            s
            for s in WEIGHTING_SCHEMES
            if s != "stacking"
            or stacking_supported(origins, buckets, len(members), self.config.min_stacking_points)
        ]
        scheme = (
            min(candidates, key=scheme_errors.get)
            if self.config.weighting == "auto"
            else self.config.weighting
        )
        best_member = min(member_errors, key=member_errors.get)
        fallback = best_member if scheme_errors[scheme] >= member_errors[best_member] else None

        if fallback:
            weights = np.zeros((len(buckets), len(members)))
            weights[:, members.index(fallback)] = 1.0
            ensemble_backtest = backtest.means[fallback]
        else:
            weights = scheme_weights(scheme, actuals, stacked, buckets)
            ensemble_backtest = loo_forecasts[scheme]
        self.weights_ = weights
        self.members_ = members
        self.buckets_ = buckets
        # Intervals: residuals of the combination as fitted, over all origins.
        self.conformal_ = ConformalIntervals.calibrate(
            actuals,
            combine(stacked, weights, buckets),
            self.transform_,
            buckets,
            self.config.symmetric_intervals,
        )
        loo_lower, loo_upper = self._leave_one_out_intervals(scheme, fallback, actuals, stacked, buckets)
        backtest_seconds = time.perf_counter() - started

        # Refit the members the weights use on the whole series, with the hyperparameters tuned at
        # the earliest origin.
        refit_started = time.perf_counter()
        self.fitted_members_: dict[str, Forecaster] = {}
        for index, name in enumerate(members):
            if weights[:, index].max() > 0:
                model = factories[name](**backtest.tuned_params.get(name, {}))
                self.fitted_members_[name] = model.fit(y)

        self.report = self._build_report(
            backtest,
            horizons,
            scheme,
            scheme_errors,
            member_errors,
            fallback,
            ensemble_backtest,
            loo_lower,
            loo_upper,
            seconds={
                **{f"backtest_{m}": s for m, s in backtest.fit_seconds.items()},
                "backtest_total": backtest_seconds,
                "refit": time.perf_counter() - refit_started,
            },
        )

    def _leave_one_out(self, scheme: str, actuals, stacked, buckets) -> np.ndarray:
        """Combined backtest forecasts, each origin weighted by the weights of the other origins."""
        n = actuals.shape[0]
        if n == 1:
            return combine(stacked, scheme_weights(scheme, actuals, stacked, buckets), buckets)
        out = np.empty_like(actuals)
        for k in range(n):
            others = np.arange(n) != k
            w = scheme_weights(scheme, actuals[others], stacked[:, others], buckets)
            out[k] = combine(stacked[:, k], w, buckets)
        return out

    def _leave_one_out_intervals(self, scheme, fallback, actuals, stacked, buckets):
        """Interval of each origin from weights and residuals of the other origins only."""
        n = actuals.shape[0]
        lower, upper = np.empty_like(actuals), np.empty_like(actuals)
        level = self.config.coverage_level
        for k in range(n):
            others = np.arange(n) != k if n > 1 else np.ones(n, dtype=bool)
            if fallback:
                w = np.zeros((len(buckets), stacked.shape[0]))
                w[:, self.members_.index(fallback)] = 1.0
            else:
                w = scheme_weights(scheme, actuals[others], stacked[:, others], buckets)
            calibration = ConformalIntervals.calibrate(
                actuals[others],
                combine(stacked[:, others], w, buckets),
                self.transform_,
                buckets,
                self.config.symmetric_intervals,
            )
            lower[k], upper[k] = calibration.interval(combine(stacked[:, k], w, buckets), level)
        return lower, upper

    def _build_report(
        self,
        backtest: BacktestResult,
        horizons,
        scheme,
        scheme_errors,
        member_errors,
        fallback,
        ensemble_backtest,
        loo_lower,
        loo_upper,
        seconds,
    ) -> EnsembleReport:
        rows = []
        naive = backtest.means.get(BASELINE_MODEL)
        candidates = [(m, backtest.means[m], backtest.lowers[m], backtest.uppers[m]) for m in backtest.models]
        candidates.append((ENSEMBLE, ensemble_backtest, loo_lower, loo_upper))
        for label, h in horizons.items():
            naive_mae = metrics.mae(backtest.actuals[:, :h], naive[:, :h]) if naive is not None else np.nan
            for model, mean, lower, upper in candidates:
                scores = score_forecasts(backtest.actuals, mean, backtest.mase_scales, h, lower, upper)
                model_mae = metrics.mae(backtest.actuals[:, :h], mean[:, :h])
                scores["mae_vs_naive"] = model_mae / naive_mae if naive_mae > 0 else float("nan")
                rows.append({"model": model, "horizon": label, "steps": h, **scores})
        bucket_labels = [f"steps {s.start + 1}-{s.stop}" for s in self.buckets_.slices()]
        return EnsembleReport(
            step=self.step_,
            seasonal_periods=tuple(self.periods_ or ()),
            horizons=dict(horizons),
            origins=backtest.origin_timestamps,
            backtest=pd.DataFrame(rows),
            weighting=f"fallback:{fallback}" if fallback else scheme,
            weighting_errors={**scheme_errors, **{f"single_{m}": e for m, e in member_errors.items()}},
            weights=pd.DataFrame(self.weights_, index=bucket_labels, columns=self.members_),
            fallback_model=fallback,
            members=[m for m in self.members_ if m in self.fitted_members_],
            failures=dict(backtest.failures),
            tuned_params=dict(backtest.tuned_params),
            seconds=seconds,
            coverage_level=self.config.coverage_level,
        )

    def member_factory(self, name: str):
        """Constructor of member ``name`` with the seasonal periods and hyperparameters this fit used
        (call it, then ``fit``, to refit a member the weights left out, e.g. for a comparison)."""
        return functools.partial(
            self._factories(self.periods_ or ())[name], **self.backtest_.tuned_params.get(name, {})
        )

    # -- predict ----------------------------------------------------------------------------------
    def predict_members(self, horizon: int, level: float = 0.95) -> dict[str, pd.DataFrame]:
        """Each fitted member's own forecast (for inspection and charts)."""
        return {name: model.predict(horizon, level) for name, model in self.fitted_members_.items()}

    def _predict(self, horizon: int, level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # Steps past the backtest horizon reuse the last bucket's weights and residual quantiles:
        # the interval there is an extrapolation, not a calibrated one.
        level = check_level(level)
        stacked = np.stack(
            [
                self.fitted_members_[m].predict(horizon, level)["mean"].to_numpy()
                if m in self.fitted_members_
                else np.zeros(horizon)  # weight 0 everywhere: not refitted
                for m in self.members_
            ]
        )
        mean = combine(stacked, self.weights_, self.buckets_)
        lower, upper = self.conformal_.interval(mean, level)
        return mean, lower, upper
