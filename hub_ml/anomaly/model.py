"""The anomaly ensemble as an MLflow pyfunc model, and the train -> log -> register -> promote step.

``AnomalyEnsembleModel`` holds one fitted ``AnomalyEnsemble`` per series key. Loaded anywhere with
``mlflow.pyfunc.load_model("models:/<name>@champion")``, ``predict`` takes a DataFrame with columns
``timestamp`` and ``value`` (and ``series_key`` when the model holds several series) and returns the
anomaly records (``RECORD_COLUMNS``) of those rows, walk-forward from the history it was trained on.
``params={"all_points": True}`` returns every row with its verdict instead of the flagged ones.

``train_anomaly_model`` is what the Dagster asset calls: it measures the ensemble on a held-out tail
of each series (walk-forward, against labels when given, else against anomalies planted into the
tail), refits on the full series, logs everything into the MLflow run found by ``run_key``, registers
a version and moves ``champion`` only when the held-out metric beats the current champion's.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema
from mlflow.types.schema import Array

from hub_ml import tracking
from hub_ml.anomaly.base import WalkForwardDetector
from hub_ml.anomaly.ensemble import (
    RECORD_COLUMNS,
    AnomalyEnsemble,
    combine,
    records_frame,
    records_from_scores,
)
from hub_ml.anomaly.evaluation import DEFAULT_TOLERANCE, Window, WindowMetrics, evaluate_windows
from hub_ml.anomaly.synthetic import inject_anomalies

INPUT_COLUMNS = ["timestamp", "value", "series_key"]
DEFAULT_EXPERIMENT = "hub-anomaly"
PIP_EXTRAS = ("torch", "statsmodels")


def model_signature() -> ModelSignature:
    inputs = Schema(
        [
            ColSpec(DataType.datetime, "timestamp"),
            ColSpec(DataType.double, "value"),
            ColSpec(DataType.string, "series_key", required=False),
        ]
    )
    outputs = Schema(
        [
            ColSpec(DataType.datetime, "timestamp"),
            ColSpec(DataType.string, "series_key"),
            ColSpec(DataType.double, "value"),
            ColSpec(DataType.double, "expected"),
            ColSpec(DataType.double, "lower"),
            ColSpec(DataType.double, "upper"),
            ColSpec(DataType.double, "score"),
            ColSpec(DataType.string, "severity"),
            ColSpec(DataType.double, "confidence"),
            ColSpec(Array(DataType.string), "detected_by"),
            ColSpec(DataType.string, "explanation"),
        ]
    )
    params = ParamSchema([ParamSpec("all_points", DataType.boolean, False)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


class AnomalyEnsembleModel(mlflow.pyfunc.PythonModel):
    """Fitted ensembles by series key, scoring ``DataFrame(timestamp, value[, series_key])``."""

    def __init__(self, ensembles: Mapping[str, AnomalyEnsemble]) -> None:
        if not ensembles:
            raise ValueError("the model needs at least one fitted ensemble")
        self.ensembles = dict(ensembles)

    @property
    def series_keys(self) -> list[str]:
        return list(self.ensembles)

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        all_points = bool((params or {}).get("all_points", False))
        frame = pd.DataFrame(model_input)
        missing = {"timestamp", "value"} - set(frame.columns)
        if missing:
            raise ValueError(f"model input lacks columns {sorted(missing)}")
        if "series_key" not in frame.columns or frame["series_key"].isna().all():
            if len(self.ensembles) != 1:
                raise ValueError(f"series_key is required: this model holds {self.series_keys}")
            frame = frame.assign(series_key=self.series_keys[0])
        results = []
        for key, rows in frame.groupby("series_key", sort=False):
            if key not in self.ensembles:
                raise KeyError(f"no model for series {key!r}; known: {self.series_keys}")
            timestamps = pd.to_datetime(rows["timestamp"], utc=True)
            series = pd.Series(rows["value"].to_numpy(dtype=float), index=pd.DatetimeIndex(timestamps))
            scored = self.ensembles[key].score(series.sort_index())
            if all_points:
                out = scored.reset_index(names="timestamp")
                out.insert(1, "series_key", key)
                results.append(out)
            else:
                results.append(records_frame(records_from_scores(scored, str(key))))
        if not results:
            return records_frame([])
        out = pd.concat(results, ignore_index=True)
        return out if all_points else out[RECORD_COLUMNS]


@dataclass
class TrainingResult:
    run_id: str
    model_uri: str
    version: str
    decision: tracking.PromotionDecision
    metrics: dict[str, float]
    ensembles: dict[str, AnomalyEnsemble] = field(repr=False)


def holdout_metrics(
    series: pd.Series,
    make_ensemble: Callable[[], AnomalyEnsemble],
    *,
    holdout_fraction: float,
    labels: Sequence[Window] | None,
    seed: int,
    tolerance: pd.Timedelta = DEFAULT_TOLERANCE,
) -> tuple[WindowMetrics, dict[str, WindowMetrics]]:
    """Walk-forward precision/recall on the last ``holdout_fraction`` of ``series``: the ensemble is
    fitted on what comes before. Against ``labels`` when given, else against anomalies planted into
    the tail (self-supervised). Returns the ensemble's metrics and each detector's."""
    n_holdout = max(1, int(round(len(series) * holdout_fraction)))
    train, holdout = series.iloc[:-n_holdout], series.iloc[-n_holdout:]
    train_labels = None
    if labels is not None:
        windows = list(labels)
        train_labels = [(s, e) for s, e in windows if pd.Timestamp(s) < holdout.index[0]]
    else:
        holdout, windows = inject_anomalies(holdout, np.random.default_rng(seed), every=36, margin=6)
    ensemble = make_ensemble().fit(train, labels=train_labels)
    outputs = ensemble.score_detectors(holdout)
    combined = combine(
        outputs, ensemble.weights, roles=ensemble.roles, vote_threshold=ensemble.vote_threshold
    )
    per_detector = {
        name: evaluate_windows(out["is_anomaly"], windows, tolerance=tolerance)
        for name, out in outputs.items()
    }
    return evaluate_windows(combined["is_anomaly"], windows, tolerance=tolerance), per_detector


def _detector_params(detectors: Sequence[WalkForwardDetector]) -> dict[str, str]:
    params: dict[str, str] = {}
    for detector in detectors:
        for key, value in detector.get_params().items():
            if key in {"cache_size"}:
                continue
            params[f"{detector.name}.{key}"] = str(value)
    return params


def train_anomaly_model(
    series_by_key: Mapping[str, pd.Series],
    *,
    model_name: str,
    run_key: str,
    experiment: str = DEFAULT_EXPERIMENT,
    labels_by_key: Mapping[str, Sequence[Window]] | None = None,
    make_ensemble: Callable[[], AnomalyEnsemble] = AnomalyEnsemble,
    holdout_fraction: float = 0.25,
    comparison_metric: str = "holdout_f1",
    greater_is_better: bool = True,
    seed: int = 0,
    include_code: bool = True,
    tags: Mapping[str, Any] | None = None,
) -> TrainingResult:
    """Measure, fit, log, register and (maybe) promote one anomaly model over ``series_by_key``.

    The caller configures MLflow first (``tracking.configure``). ``comparison_metric`` is one of the
    logged metrics (``holdout_f1``, ``holdout_precision``, ``holdout_recall``); its value is stored on
    the version as the tag ``hub.metric.<name>`` and decides whether ``champion`` moves.
    ``include_code`` ships the ``hub_ml`` package inside the model, so it loads where hub is not
    installed.
    """
    if not series_by_key:
        raise ValueError("no series to train on")
    total = WindowMetrics()
    per_detector: dict[str, WindowMetrics] = {}
    ensembles: dict[str, AnomalyEnsemble] = {}
    for i, (key, series) in enumerate(series_by_key.items()):
        labels = labels_by_key.get(key) if labels_by_key is not None else None
        metrics, detector_metrics = holdout_metrics(
            series, make_ensemble, holdout_fraction=holdout_fraction, labels=labels, seed=seed + i
        )
        total = total + metrics
        for name, m in detector_metrics.items():
            per_detector[name] = per_detector.get(name, WindowMetrics()) + m
        ensembles[key] = make_ensemble().fit(series, labels=labels)

    metrics = total.as_dict(prefix="holdout_")
    for name, m in per_detector.items():
        metrics[f"holdout_f1_{name}"] = m.f1
    for name in per_detector:
        metrics[f"weight_{name}"] = float(np.mean([e.weights[name] for e in ensembles.values()]))
    if comparison_metric not in metrics:
        raise KeyError(f"comparison_metric {comparison_metric!r} is not one of {sorted(metrics)}")

    sample_ensemble = next(iter(ensembles.values()))
    params = {
        "series": len(series_by_key),
        "detectors": ",".join(d.name for d in sample_ensemble.detectors),
        "vote_threshold": sample_ensemble.vote_threshold,
        "holdout_fraction": holdout_fraction,
        "labels": "given" if labels_by_key is not None else "self-supervised",
        **_detector_params(sample_ensemble.detectors),
    }
    model = AnomalyEnsembleModel(ensembles)
    first_key, first_series = next(iter(series_by_key.items()))
    example = pd.DataFrame(
        {
            "timestamp": first_series.index[-24:].tz_convert("UTC").tz_localize(None),
            "value": first_series.iloc[-24:].to_numpy(dtype=float),
            "series_key": first_key,
        }
    )
    code_paths = [str(Path(__file__).resolve().parents[1])] if include_code else None
    with tracking.run_for_key(experiment, run_key, tags={"hub.model": model_name, **(tags or {})}) as run:
        tracking.log_params(params)
        tracking.log_metrics(metrics)
        tracking.set_tags({"hub.weight_source": sample_ensemble.weight_source})
        info = tracking.log_pyfunc_model(
            model,
            name="anomaly_model",
            input_example=example,
            signature=model_signature(),
            pip_requirements=tracking.default_pip_requirements(PIP_EXTRAS),
            code_paths=code_paths,
        )
        version = tracking.register_version(info.model_uri, model_name, tags={"hub.run_key": run_key})
        decision = tracking.promote_if_better(
            model_name,
            version.version,
            comparison_metric,
            metrics[comparison_metric],
            greater_is_better=greater_is_better,
        )
        tracking.set_tags({"hub.promoted": decision.promoted, "hub.registered_version": version.version})
        run_id = run.info.run_id
    return TrainingResult(
        run_id=run_id,
        model_uri=info.model_uri,
        version=str(version.version),
        decision=decision,
        metrics=metrics,
        ensembles=ensembles,
    )


def load_champion_model(model_name: str, alias: str = tracking.CHAMPION_ALIAS) -> mlflow.pyfunc.PyFuncModel:
    """``models:/<model_name>@champion`` as a pyfunc model (configure the tracking URI first)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    return tracking.load_champion(model_name, alias)
