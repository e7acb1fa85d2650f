"""The fitted ensemble as an MLflow pyfunc model, and the train -> log -> register -> promote flow.

Request (a DataFrame; every column optional, at least one of the first two present):
    horizon    int       number of steps after the end of the training series
    timestamp  datetime  future timestamps on the series' grid, naive UTC (MLflow's datetime type
                         carries no zone; aware values work when calling the model directly);
                         takes precedence over horizon
    level      float     interval probability, default 0.95
Response: timestamp (UTC), forecast, lower, upper; one row per requested step or timestamp.

The fitted forecaster is stored as a pickle artifact and the ``hub_ml`` package travels with the
model (``code_paths``), so ``models:/<name>@champion`` loads in a fresh process or another
environment with the logged pip requirements.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hub_ml import tracking
from hub_ml.forecast.base import Forecaster
from hub_ml.forecast.ensemble import EnsembleConfig, EnsembleForecaster
from hub_ml.forecast.errors import ForecastInputError

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow  # noqa: E402
from mlflow.models import ModelSignature  # noqa: E402
from mlflow.types import ColSpec, Schema  # noqa: E402

FORECASTER_ARTIFACT = "forecaster"
PIP_EXTRAS = ("statsmodels", "prophet", "holidays", "cmdstanpy", "torch==2.13.0")
HUB_ML_DIR = Path(__file__).resolve().parents[1]
PYFUNC_ENTRY = Path(__file__).resolve().with_name("pyfunc_entry.py")


def forecast_for_request(forecaster: Forecaster, request: pd.DataFrame) -> pd.DataFrame:
    """Answer a pyfunc request (see the module docstring) with a fitted forecaster."""
    if not isinstance(request, pd.DataFrame):
        request = pd.DataFrame(request)
    level = 0.95
    if "level" in request and request["level"].notna().any():
        level = float(request["level"].dropna().iloc[0])
    step, last = forecaster.step_, forecaster.last_timestamp_
    if "timestamp" in request and request["timestamp"].notna().any():
        wanted = pd.DatetimeIndex(pd.to_datetime(request["timestamp"].dropna()))
        wanted = wanted.tz_localize("UTC") if wanted.tz is None else wanted.tz_convert("UTC")
        offsets = (wanted - last) / step
        if (offsets < 1).any():
            raise ForecastInputError(f"requested timestamps must be after the training data's end {last}")
        if not np.allclose(offsets, np.round(offsets)):
            raise ForecastInputError(f"requested timestamps must be on the series' {step} grid from {last}")
        frame = forecaster.predict(int(np.round(offsets).max()), level).set_index("timestamp").loc[wanted]
        frame = frame.reset_index()
    elif "horizon" in request and request["horizon"].notna().any():
        frame = forecaster.predict(int(request["horizon"].dropna().max()), level)
    else:
        raise ForecastInputError("request needs a 'horizon' or a 'timestamp' column")
    return frame.rename(columns={"mean": "forecast"})[["timestamp", "forecast", "lower", "upper"]]


class EnsemblePyfuncModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper; the forecaster itself lives in the ``forecaster`` artifact."""

    def __init__(self, forecaster: Forecaster | None = None) -> None:
        self.forecaster = forecaster

    def load_context(self, context) -> None:
        with open(context.artifacts[FORECASTER_ARTIFACT], "rb") as handle:
            self.forecaster = pickle.load(handle)

    def predict(
        self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        return forecast_for_request(self.forecaster, model_input)


def model_signature() -> ModelSignature:
    inputs = Schema(
        [
            ColSpec("long", "horizon", required=False),
            ColSpec("datetime", "timestamp", required=False),
            ColSpec("double", "level", required=False),
        ]
    )
    outputs = Schema(
        [
            ColSpec("datetime", "timestamp"),
            ColSpec("double", "forecast"),
            ColSpec("double", "lower"),
            ColSpec("double", "upper"),
        ]
    )
    return ModelSignature(inputs=inputs, outputs=outputs)


def log_forecaster(forecaster: Forecaster, *, name: str = "forecast_model") -> Any:
    """Log a fitted forecaster as a pyfunc model into the active run; returns MLflow's ModelInfo."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "forecaster.pkl"
        with open(path, "wb") as handle:
            pickle.dump(forecaster, handle, protocol=pickle.HIGHEST_PROTOCOL)
        return tracking.log_pyfunc_model(
            str(PYFUNC_ENTRY),
            name=name,
            signature=model_signature(),
            input_example=pd.DataFrame({"horizon": [24]}),
            pip_requirements=tracking.default_pip_requirements(PIP_EXTRAS),
            artifacts={FORECASTER_ARTIFACT: str(path)},
            code_paths=[str(HUB_ML_DIR)],
        )


def comparison_metric(report) -> str:
    """The metric versions are compared on: the ensemble's backtest MAPE at the longest horizon."""
    return f"ensemble_{list(report.horizons)[-1]}_mape"


@dataclass
class TrainingOutcome:
    """What ``train_and_register`` did: the run, the registered version, and the promotion."""

    run_id: str
    model_uri: str
    version: str
    promotion: tracking.PromotionDecision
    metrics: dict[str, float]
    forecaster: EnsembleForecaster


def train_and_register(
    series: pd.Series,
    *,
    model_name: str,
    experiment: str,
    run_key: str,
    config: EnsembleConfig | None = None,
    tags: dict[str, Any] | None = None,
    artifact_location: str | None = None,
) -> TrainingOutcome:
    """Fit the ensemble on ``series``, log its backtest metrics and the pyfunc model into the run
    for ``run_key`` (found again on retry), register a version of ``model_name`` and move the
    ``champion`` alias to it only if its backtest 30-day MAPE beats the current champion's.

    MLflow must already point at a store (``hub_ml.tracking.configure``); ``artifact_location`` is
    used when the experiment is created (without it a SQLite store puts artifacts in ./mlruns of the
    working directory, MLflow's default).
    """
    forecaster = EnsembleForecaster(config).fit(series)
    report = forecaster.report
    metrics = report.as_metrics()
    with tracking.run_for_key(
        experiment,
        run_key,
        tags={"hub.model": model_name, **(tags or {})},
        artifact_location=artifact_location,
    ) as run:
        tracking.set_tags({f"forecast.{k}": v for k, v in report.params().items()})
        tracking.log_metrics(metrics)
        mlflow.log_text(report.summary(), "backtest_summary.md")
        info = log_forecaster(forecaster)
        run_id = run.info.run_id
    version = tracking.register_version(info.model_uri, model_name, tags={"hub.run_key": run_key})
    # Judged on the backtest MAPE at the longest horizon (lower is better).
    comparison = comparison_metric(report)
    promotion = tracking.promote_if_better(
        model_name,
        version.version,
        comparison,
        metrics.get(comparison, float("nan")),
        greater_is_better=False,
    )
    return TrainingOutcome(
        run_id=run_id,
        model_uri=info.model_uri,
        version=str(version.version),
        promotion=promotion,
        metrics=metrics,
        forecaster=forecaster,
    )
