"""Forecasting library: forecasters, rolling-origin backtests, the validation-weighted ensemble with
conformal intervals, what-if scenarios, and the MLflow pyfunc wrapper. Plain Python, no Dagster.

Every forecaster: ``fit(series)`` (UTC DatetimeIndex, hourly or daily, gaps allowed) then
``predict(horizon, level=0.95)`` -> DataFrame(timestamp, mean, lower, upper).
The MLflow parts (``train_and_register``, ``log_forecaster``, ``EnsemblePyfuncModel``) live in
``hub_ml.forecast.mlflow_model`` and are loaded on first use, so importing this package does not
import MLflow.
"""

from __future__ import annotations

from typing import Any

from hub_ml.forecast.backtest import BacktestResult, plan_origins, rolling_origin_backtest
from hub_ml.forecast.base import Forecaster
from hub_ml.forecast.conformal import ConformalIntervals, HorizonBuckets
from hub_ml.forecast.ensemble import (
    MODEL_CLASSES,
    WEIGHTING_SCHEMES,
    EnsembleConfig,
    EnsembleForecaster,
    EnsembleReport,
)
from hub_ml.forecast.errors import ForecastInputError, NotFittedError
from hub_ml.forecast.lstm import LstmForecaster
from hub_ml.forecast.metrics import coverage, mae, mape, mase, rmse, seasonal_naive_scale, smape
from hub_ml.forecast.naive import SeasonalNaiveForecaster
from hub_ml.forecast.prophet_model import ProphetForecaster
from hub_ml.forecast.sarima import SarimaForecaster
from hub_ml.forecast.scenarios import (
    Scenario,
    ScenarioResult,
    apply_scenario,
    cost_per_request_series,
    cost_what_if,
    product_forecast,
)
from hub_ml.forecast.series import detect_seasonal_periods, horizon_steps, prepare_series

_MLFLOW_NAMES = (
    "EnsemblePyfuncModel",
    "TrainingOutcome",
    "log_forecaster",
    "model_signature",
    "train_and_register",
)

__all__ = [
    "MODEL_CLASSES",
    "WEIGHTING_SCHEMES",
    "BacktestResult",
    "ConformalIntervals",
    "EnsembleConfig",
    "EnsembleForecaster",
    "EnsembleReport",
    "ForecastInputError",
    "Forecaster",
    "HorizonBuckets",
    "LstmForecaster",
    "NotFittedError",
    "ProphetForecaster",
    "SarimaForecaster",
    "Scenario",
    "ScenarioResult",
    "SeasonalNaiveForecaster",
    "apply_scenario",
    "cost_per_request_series",
    "cost_what_if",
    "coverage",
    "detect_seasonal_periods",
    "horizon_steps",
    "mae",
    "mape",
    "mase",
    "plan_origins",
    "prepare_series",
    "product_forecast",
    "rmse",
    "rolling_origin_backtest",
    "seasonal_naive_scale",
    "smape",
    *_MLFLOW_NAMES,
]


def __getattr__(name: str) -> Any:
    # MLflow costs ~1.6 s to import: load the pyfunc module only when one of its names is used.
    if name in _MLFLOW_NAMES:
        from hub_ml.forecast import mlflow_model

        return getattr(mlflow_model, name)
    raise AttributeError(f"module 'hub_ml.forecast' has no attribute {name!r}")
