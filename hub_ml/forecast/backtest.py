"""Rolling-origin backtests: refit every model on the data before each origin, forecast, score.

Origins are counted back from the end in steps of ``origin_step``, the latest one leaving exactly
``horizon`` points to score, so every origin is scored on a full horizon. Nothing after an origin is
seen by the fit at that origin: the models are fitted on ``y[:origin]`` only, hyperparameter searches
(ARIMA orders, Fourier harmonics) run at the earliest origin and are reused unchanged later, and the
MASE scale at an origin comes from the history before it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from hub_ml.forecast import metrics
from hub_ml.forecast.base import Forecaster
from hub_ml.forecast.errors import ForecastInputError
from hub_ml.forecast.series import prepare_series

ModelFactory = Callable[..., Forecaster]


def plan_origins(n: int, horizon: int, n_origins: int, origin_step: int, min_train: int) -> tuple[int, ...]:
    """Origin positions (index of the first forecast point), oldest first.

    Raises ``ForecastInputError`` when not even one origin leaves ``min_train`` points to fit on.
    """
    if n_origins < 1 or origin_step < 1:
        raise ValueError("n_origins and origin_step must be positive")
    latest = n - horizon
    origins = [latest - k * origin_step for k in range(n_origins)]
    origins = sorted(o for o in origins if o >= min_train)
    if not origins:
        raise ForecastInputError(
            f"series of {n} points is too short for a {horizon}-step backtest: the models need "
            f"{min_train} points to train, so at least {min_train + horizon} points are required"
        )
    return tuple(origins)


@dataclass
class BacktestResult:
    """Forecasts of every model at every origin, as arrays of shape (origins, horizon)."""

    timestamps: pd.DatetimeIndex
    origins: tuple[int, ...]
    horizon: int
    actuals: np.ndarray
    means: dict[str, np.ndarray] = field(default_factory=dict)
    lowers: dict[str, np.ndarray] = field(default_factory=dict)
    uppers: dict[str, np.ndarray] = field(default_factory=dict)
    mase_scales: np.ndarray | None = None
    fit_seconds: dict[str, float] = field(default_factory=dict)
    tuned_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)

    @property
    def models(self) -> list[str]:
        return list(self.means)

    @property
    def origin_timestamps(self) -> list[pd.Timestamp]:
        return [self.timestamps[o] for o in self.origins]

    def score(self, forecast: np.ndarray, horizon: int, lower=None, upper=None) -> dict[str, float]:
        """MAPE, sMAPE, MASE, RMSE (and coverage when bounds are given) over steps 1..horizon."""
        return score_forecasts(self.actuals, forecast, self.mase_scales, horizon, lower, upper)

    def metrics(self, horizons: Sequence[int] | None = None) -> pd.DataFrame:
        """One row per (model, horizon): mape, smape, mase, rmse, coverage of the model's own interval."""
        rows = []
        for model in self.models:
            for h in horizons or (self.horizon,):
                scores = self.score(self.means[model], h, self.lowers[model], self.uppers[model])
                rows.append({"model": model, "horizon": h, **scores})
        return pd.DataFrame(rows)


def score_forecasts(actuals, forecast, scales, horizon: int, lower=None, upper=None) -> dict[str, float]:
    """Scores over the first ``horizon`` steps of every origin; MASE is averaged over origins."""
    a, f = actuals[:, :horizon], forecast[:, :horizon]
    scores = {
        "mape": metrics.mape(a, f),
        "smape": metrics.smape(a, f),
        "mase": float(np.mean([metrics.mase(a[i], f[i], s) for i, s in enumerate(scales)]))
        if scales is not None
        else float("nan"),
        "rmse": metrics.rmse(a, f),
    }
    if lower is not None and upper is not None:
        scores["coverage"] = metrics.coverage(a, lower[:, :horizon], upper[:, :horizon])
    return scores


def rolling_origin_backtest(
    series: pd.Series,
    models: Mapping[str, ModelFactory],
    *,
    horizon: int,
    n_origins: int = 3,
    origin_step: int | None = None,
    origins: Sequence[int] | None = None,
    level: float = 0.95,
    mase_season: int | None = None,
    reuse_tuning: bool = True,
) -> BacktestResult:
    """Backtest each model factory over rolling origins.

    ``models`` maps a name to a callable returning an unfitted ``Forecaster`` and accepting the
    model's tuned hyperparameters as keyword arguments (a class or a ``functools.partial``). A model
    that raises at any origin is recorded in ``failures`` and left out, so every model kept has
    forecasts at every origin. ``mase_season`` defaults to the longest seasonal period of the
    first model fitted.
    """
    y = prepare_series(series)
    values = y.to_numpy()
    if origins is None:
        min_train = max(factory().min_length() for factory in models.values())
        origins = plan_origins(len(y), horizon, n_origins, origin_step or horizon, min_train)
    origins = tuple(sorted(int(o) for o in origins))
    if origins[0] < 1 or origins[-1] + horizon > len(y):
        raise ForecastInputError(f"origins {origins} leave no full {horizon}-step window in {len(y)} points")
    actuals = np.stack([values[o : o + horizon] for o in origins])
    result = BacktestResult(timestamps=y.index, origins=origins, horizon=horizon, actuals=actuals)

    for name, factory in models.items():
        means, lowers, uppers = [], [], []
        started = time.perf_counter()
        tuned: dict[str, Any] = {}
        try:
            for position, origin in enumerate(origins):
                model = factory(**tuned) if reuse_tuning else factory()
                model.fit(y.iloc[:origin])
                if position == 0:
                    tuned = model.tuned_params()
                    result.tuned_params[name] = tuned
                    if mase_season is None:
                        mase_season = model.season_length
                frame = model.predict(horizon, level)
                if not np.isfinite(frame[["mean", "lower", "upper"]].to_numpy()).all():
                    raise ForecastInputError(
                        f"{name} produced non-finite forecasts at origin {y.index[origin]}"
                    )
                means.append(frame["mean"].to_numpy())
                lowers.append(frame["lower"].to_numpy())
                uppers.append(frame["upper"].to_numpy())
        except (ForecastInputError, ValueError, np.linalg.LinAlgError, RuntimeError) as exc:
            result.failures[name] = f"{type(exc).__name__}: {exc}"
            result.tuned_params.pop(name, None)
            continue
        result.fit_seconds[name] = time.perf_counter() - started
        result.means[name] = np.stack(means)
        result.lowers[name] = np.stack(lowers)
        result.uppers[name] = np.stack(uppers)

    season = mase_season or 1
    result.mase_scales = np.array([metrics.seasonal_naive_scale(values[:o], season) for o in origins])
    return result
