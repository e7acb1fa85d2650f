"""Anomaly models per series: train, log to MLflow, register, promote; score with the champions.

Plain Python over `hub_ml.anomaly` (the Dagster assets in `hub_pipelines.defs.ml` call this).

Training one series (`train_series`) is `hub_ml.anomaly.model.train_anomaly_model` for a single
series, with the held-out evaluation kept as a frame so it can be drawn: the ensemble is fitted on
the first (1 - holdout_fraction) of the series and scores the rest walk-forward, against the
generator's labels when they are given, else against spikes, drops and shifts planted into the
held-out part (the self-supervised proxy); then it is refitted on the whole series. Logged into the
MLflow run found by `run_key` (a retried step reuses it, and a run that already registered its
model is reused as it is): params (detector settings), tags (series, span, label source), metrics
(held-out precision, recall, F1 and counts for the ensemble and each detector, detector weights),
the evaluation plot and table, and the model (`AnomalyEnsembleModel` with its signature). The
version is registered as `hub-anomaly.<tenant>.<metric>.<model>` and takes the alias `champion`
only when its held-out F1 beats the champion's (`hub_ml.tracking.promote_if_better`). Both are
judged on the same data: the champion scores the candidate's held-out part (walk-forward from the
end of its own training series; logged as `champion_holdout_f1`) unless its training series reaches
into it, in which case the F1 it was registered with stands.

Scoring (`score_champion`) is walk-forward: a champion scores from the end of its training series
(or from the window start, when that lies inside it: the detectors then refit on the data before
it), and each hour's verdict uses only values at or before that hour.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from hub_ml import tracking
from hub_ml.anomaly import AnomalyEnsemble, WindowMetrics, combine, default_detectors, evaluate_windows
from hub_ml.anomaly.evaluation import DEFAULT_TOLERANCE, Window, label_windows
from hub_ml.anomaly.model import PIP_EXTRAS, AnomalyEnsembleModel, model_signature
from hub_ml.anomaly.synthetic import inject_anomalies
from hub_pipelines.ml_training import ANOMALY_DETECTORS, ANOMALY_METRICS, plots, registry
from hub_pipelines.ml_training.series import SeriesSpec, md_cell, registered_model_name, utc
from hub_pipelines.warehouse import Warehouse, tables

KIND = "anomaly"
MODEL_PREFIX = "hub-anomaly."
DETECTOR_NAMES = ANOMALY_DETECTORS
COMPARISON_METRIC = "holdout_f1"
DEFAULT_METRICS = ANOMALY_METRICS
SEVERITIES = ("low", "medium", "high", "critical")
HUB_ML_DIR = Path(tracking.__file__).resolve().parent


@dataclass(frozen=True)
class AnomalySettings:
    """How the ensembles are built and judged."""

    detectors: tuple[str, ...] = DETECTOR_NAMES
    holdout_fraction: float = 0.25
    seed: int = 0
    lstm_epochs: int | None = None  # None: the detector's default

    def __post_init__(self) -> None:
        unknown = set(self.detectors) - set(DETECTOR_NAMES)
        if unknown or not self.detectors:
            raise ValueError(f"unknown detectors {sorted(unknown)}; choose from {', '.join(DETECTOR_NAMES)}")
        if not 0.05 <= self.holdout_fraction <= 0.5:
            raise ValueError("holdout_fraction must be between 0.05 and 0.5")

    def make_ensemble(self) -> AnomalyEnsemble:
        """The default ensemble's detectors (with their ensemble thresholds), those selected."""
        detectors = [d for d in default_detectors() if d.name in self.detectors]
        for detector in detectors:
            if detector.name == "lstm" and self.lstm_epochs is not None:
                detector.epochs = self.lstm_epochs
        return AnomalyEnsemble(detectors, seed=self.seed)


@dataclass
class SeriesTraining:
    """What training one series did."""

    spec: SeriesSpec
    model_name: str
    run_id: str
    run_key: str
    version: str
    promoted: bool
    reason: str
    champion_version: str | None
    metrics: dict[str, float]
    label_source: str
    points: int
    seconds: float
    reused: bool = False
    plot_png: bytes | None = field(default=None, repr=False)
    per_detector: dict[str, WindowMetrics] = field(default_factory=dict)

    @property
    def holdout(self) -> WindowMetrics:
        m = self.metrics
        return WindowMetrics(
            int(m.get("holdout_true_positives", 0)),
            int(m.get("holdout_false_negatives", 0)),
            int(m.get("holdout_false_positive_events", 0)),
        )


def load_labels(path: str | Path | None) -> list[dict] | None:
    """The generator's labels.json (a list of labels), or None when no file is configured."""
    if not path:
        return None
    text = Path(path).read_text()
    labels = json.loads(text)
    if isinstance(labels, dict):  # tolerate {"labels": [...]}
        labels = labels.get("labels", [])
    if not isinstance(labels, list):
        raise ValueError(f"{path}: expected a JSON list of labels")
    return labels


def series_windows(labels: Sequence[Mapping] | None, spec: SeriesSpec) -> list[Window] | None:
    """Label windows that concern the series (its tenant, its model or every model, its metric)."""
    if labels is None:
        return None
    windows = label_windows(labels, metric=spec.metric, tenant_id=spec.tenant_id, model=spec.model)
    if spec.project is not None:
        windows = [
            (utc(lb["start"]), utc(lb["end"]))
            for lb in labels
            if spec.metric in lb.get("metrics", ())
            and lb.get("tenant_id") in (None, spec.tenant_id)
            and lb.get("project") in (None, spec.project)
        ]
    return windows


def _metrics_from(prefix: str, m: WindowMetrics) -> dict[str, float]:
    return m.as_dict(prefix=prefix)


@dataclass
class Holdout:
    """A held-out evaluation: the ensemble fitted on `train` and judged on `values` (the held-out
    tail, with planted anomalies when there are no labels) against `windows`."""

    overall: WindowMetrics
    per_detector: dict[str, WindowMetrics]
    scored: pd.DataFrame
    windows: list[Window]
    train: pd.Series
    values: pd.Series


def holdout_evaluation(
    series: pd.Series,
    make_ensemble: Callable[[], AnomalyEnsemble],
    *,
    holdout_fraction: float,
    windows: Sequence[Window] | None,
    seed: int,
) -> Holdout:
    """As `hub_ml.anomaly.model.holdout_metrics`, also keeping the scored held-out frame, the
    windows it was judged against, the values it scored and the training part."""
    n_holdout = max(1, int(round(len(series) * holdout_fraction)))
    train, holdout = series.iloc[:-n_holdout], series.iloc[-n_holdout:]
    train_labels = None
    if windows is not None:
        judged = list(windows)
        train_labels = [(s, e) for s, e in judged if pd.Timestamp(s) < holdout.index[0]]
        scored_input = holdout
    else:
        scored_input, judged = inject_anomalies(holdout, np.random.default_rng(seed), every=36, margin=6)
    ensemble = make_ensemble().fit(train, labels=train_labels)
    outputs = ensemble.score_detectors(scored_input)
    combined = combine(
        outputs, ensemble.weights, roles=ensemble.roles, vote_threshold=ensemble.vote_threshold
    )
    per_detector = {
        name: evaluate_windows(out["is_anomaly"], judged, tolerance=DEFAULT_TOLERANCE)
        for name, out in outputs.items()
    }
    overall = evaluate_windows(combined["is_anomaly"], judged, tolerance=DEFAULT_TOLERANCE)
    return Holdout(overall, per_detector, combined, judged, train, scored_input)


def champion_on_holdout(model_name: str, spec: SeriesSpec, holdout: Holdout) -> WindowMetrics | None:
    """The current champion judged on the candidate's held-out values and windows, walk-forward from
    the end of its own training series, so both are compared on the same data. None when there is
    no champion, or when its training series reaches into the held-out span (it has seen it)."""
    current = tracking.champion_version(model_name)
    if current is None:
        return None
    tagged_end = (current.tags or {}).get("hub.train_end")
    start = holdout.values.index[0]
    if not tagged_end or utc(tagged_end) > start:
        return None
    train_end = utc(tagged_end)
    context = pd.concat([holdout.train[holdout.train.index >= train_end], holdout.values])
    model = registry.load_model(f"models:/{model_name}/{current.version}")
    scored = model.predict(
        pd.DataFrame(
            {
                "timestamp": context.index.tz_convert("UTC").tz_localize(None),
                "value": context.to_numpy(dtype=float),
                "series_key": spec.key,
            }
        ),
        params={"all_points": True},
    )
    flags = pd.Series(
        scored["is_anomaly"].to_numpy(dtype=bool),
        index=pd.DatetimeIndex(pd.to_datetime(scored["timestamp"], utc=True)),
    )
    return evaluate_windows(flags[flags.index >= start], holdout.windows, tolerance=DEFAULT_TOLERANCE)


def _detector_params(ensemble: AnomalyEnsemble) -> dict[str, str]:
    params: dict[str, str] = {}
    for detector in ensemble.detectors:
        for key, value in detector.get_params().items():
            if key != "cache_size":
                params[f"{detector.name}.{key}"] = str(value)
    return params


def _reused(spec: SeriesSpec, model_name: str, run_key: str, run) -> SeriesTraining:
    tags = run.data.tags
    version = tags[registry.REGISTERED_VERSION_TAG]
    champion = tracking.champion_version(model_name)
    return SeriesTraining(
        spec=spec,
        model_name=model_name,
        run_id=run.info.run_id,
        run_key=run_key,
        version=str(version),
        promoted=tags.get("hub.promoted") == "True",
        reason=tags.get("hub.decision", "") + " (reused: this run key already finished)",
        champion_version=str(champion.version) if champion is not None else None,
        metrics=dict(run.data.metrics),
        label_source=tags.get("hub.labels", ""),
        points=int(run.data.metrics.get("series_points", 0)),
        seconds=0.0,
        reused=True,
    )


def train_series(
    spec: SeriesSpec,
    series: pd.Series,
    *,
    experiment: str,
    run_key: str,
    settings: AnomalySettings | None = None,
    labels: Sequence[Mapping] | None = None,
    label_source: str = "self-supervised",
    tags: Mapping[str, Any] | None = None,
    artifact_location: str | None = None,
    include_code: bool = True,
) -> SeriesTraining:
    """Evaluate, fit, log, register and (maybe) promote the anomaly model of one series.

    MLflow must already point at the store. `labels` are the generator's labels (all of them; the
    ones concerning this series are picked here) or None for the self-supervised proxy.
    """
    settings = settings or AnomalySettings()
    model_name = registered_model_name(KIND, spec)
    done = registry.completed_run(experiment, run_key)
    if done is not None:
        return _reused(spec, model_name, run_key, done)
    started = time.perf_counter()
    series = series.astype(float).sort_index()
    series.name = spec.metric
    windows = series_windows(labels, spec)
    holdout = holdout_evaluation(
        series,
        settings.make_ensemble,
        holdout_fraction=settings.holdout_fraction,
        windows=windows,
        seed=settings.seed,
    )
    overall, per_detector = holdout.overall, holdout.per_detector
    ensemble = settings.make_ensemble().fit(series, labels=windows)
    metrics = _metrics_from("holdout_", overall)
    for name, m in per_detector.items():
        metrics[f"holdout_f1_{name}"] = m.f1
        metrics[f"holdout_precision_{name}"] = m.precision
        metrics[f"holdout_recall_{name}"] = m.recall
    for name, weight in ensemble.weights.items():
        metrics[f"weight_{name}"] = float(weight)
    metrics["series_points"] = float(series.notna().sum())
    metrics["holdout_windows"] = float(overall.windows)
    source = label_source if windows is not None else "self-supervised"
    title = (
        f"{spec.label}: held-out P={overall.precision:.2f} R={overall.recall:.2f} F1={overall.f1:.2f}"
        f" ({overall.windows} {'labelled' if windows is not None else 'planted'} windows)"
    )
    png = plots.evaluation_plot(title, holdout.scored, holdout.windows, history=holdout.train.iloc[-7 * 24 :])
    table = evaluation_table(
        {"ensemble": overall, **per_detector}, {k: metrics.get(f"weight_{k}") for k in per_detector}
    )
    params = {
        "detectors": ",".join(d.name for d in ensemble.detectors),
        "vote_threshold": ensemble.vote_threshold,
        "holdout_fraction": settings.holdout_fraction,
        "comparison_metric": COMPARISON_METRIC,
        "seed": settings.seed,
        **_detector_params(ensemble),
    }
    run_tags = {
        "hub.model": model_name,
        "hub.kind": "anomaly_training",
        "hub.anomaly_series_key": spec.key,
        "hub.labels": source,
        "hub.train_start": series.index[0].isoformat(),
        "hub.train_end": (series.index[-1] + spec.step).isoformat(),
        "hub.weight_source": ensemble.weight_source,
        **{k: v for k, v in spec.tags().items() if k != "hub.series_key"},
        **(tags or {}),
    }
    example = pd.DataFrame(
        {
            "timestamp": series.index[-24:].tz_convert("UTC").tz_localize(None),
            "value": series.iloc[-24:].to_numpy(dtype=float),
            "series_key": spec.key,
        }
    )
    # Judged before the candidate is registered: the alias still names the current champion.
    champion = champion_on_holdout(model_name, spec, holdout)
    if champion is not None:
        metrics["champion_holdout_f1"] = champion.f1
    with tracking.run_for_key(
        experiment,
        run_key,
        run_name=f"anomaly {spec.key}",
        tags=run_tags,
        artifact_location=artifact_location,
    ) as run:
        import mlflow

        tracking.log_params(params)
        tracking.log_metrics(metrics)
        log_bytes(png, "evaluation", "holdout.png")
        mlflow.log_text(f"# {title}\n\n{table}\n", "evaluation/holdout.md")
        info = tracking.log_pyfunc_model(
            AnomalyEnsembleModel({spec.key: ensemble}),
            name="anomaly_model",
            input_example=example,
            signature=model_signature(),
            pip_requirements=tracking.default_pip_requirements(PIP_EXTRAS),
            code_paths=[str(HUB_ML_DIR)] if include_code else None,
        )
        version = tracking.register_version(
            info.model_uri,
            model_name,
            tags={
                "hub.run_key": run_key,
                "hub.series_key": spec.key,
                "hub.train_start": run_tags["hub.train_start"],
                "hub.train_end": run_tags["hub.train_end"],
                "hub.labels": source,
            },
        )
        registry.tag_registered_model(model_name, {"hub.kind": KIND, **spec.tags()})
        decision = tracking.promote_if_better(
            model_name,
            version.version,
            COMPARISON_METRIC,
            metrics[COMPARISON_METRIC],
            greater_is_better=True,
            champion_value=champion.f1 if champion is not None else None,
            champion_basis="re-scored on this held-out window",
        )
        tracking.set_tags(
            {
                "hub.promoted": decision.promoted,
                "hub.decision": decision.reason,
                registry.REGISTERED_VERSION_TAG: version.version,
            }
        )
        run_id = run.info.run_id
    return SeriesTraining(
        spec=spec,
        model_name=model_name,
        run_id=run_id,
        run_key=run_key,
        version=str(version.version),
        promoted=decision.promoted,
        reason=decision.reason,
        champion_version=decision.champion_version,
        metrics=metrics,
        label_source=source,
        points=int(metrics["series_points"]),
        seconds=time.perf_counter() - started,
        plot_png=png,
        per_detector=per_detector,
    )


def log_bytes(data: bytes, artifact_dir: str, filename: str) -> None:
    """Log `data` as the artifact `<artifact_dir>/<filename>` of the active run."""
    import tempfile

    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / filename
        path.write_bytes(data)
        mlflow.log_artifact(str(path), artifact_dir)


def evaluation_table(results: Mapping[str, WindowMetrics], weights: Mapping[str, float | None]) -> str:
    lines = [
        "| detector | precision | recall | F1 | TP | FN | FP events | weight |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in results.items():
        weight = weights.get(name)
        lines.append(
            f"| {name} | {m.precision:.3f} | {m.recall:.3f} | {m.f1:.3f} | {m.true_positives} |"
            f" {m.false_negatives} | {m.false_positives} | {'' if weight is None else f'{weight:.3f}'} |"
        )
    return "\n".join(lines)


def trainings_table(results: Sequence[SeriesTraining]) -> str:
    """One row per series: held-out figures, version, decision (markdown)."""
    lines = [
        "| series | labels | points | precision | recall | F1 | windows | FP events | version | champion | decision |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        m = r.holdout
        decision = md_cell(r.reason)
        lines.append(
            f"| {md_cell(r.spec.key)} | {r.label_source} | {r.points} | {m.precision:.3f} | {m.recall:.3f} | {m.f1:.3f} |"
            f" {m.windows} | {m.false_positives} | v{r.version} | v{r.champion_version} | {decision} |"
        )
    return "\n".join(lines)


def pooled(results: Sequence[SeriesTraining]) -> WindowMetrics:
    """Held-out figures of the ensembles, micro-averaged over the series."""
    total = WindowMetrics()
    for r in results:
        total = total + r.holdout
    return total


def pooled_detectors(results: Sequence[SeriesTraining]) -> dict[str, WindowMetrics]:
    """Held-out figures of each detector alone, micro-averaged over the series trained here."""
    out: dict[str, WindowMetrics] = {}
    for r in results:
        for name, m in r.per_detector.items():
            out[name] = out.get(name, WindowMetrics()) + m
    return out


# -- scoring ------------------------------------------------------------------------------------


def scoring_start(champion: registry.Champion, window_start: pd.Timestamp) -> pd.Timestamp:
    """Where a champion's walk-forward scoring of a window starts: the end of its training series
    when the window lies after it (no gap in the detectors' context), else the window start."""
    if champion.train_end is not None and window_start > champion.train_end:
        return champion.train_end
    return window_start


def score_champion(
    champion: registry.Champion,
    model: Any,
    values: pd.Series,
    window_start: datetime,
    window_end: datetime,
) -> pd.DataFrame:
    """Anomaly records (hub_ml RECORD_COLUMNS) of the champion for [window_start, window_end).

    `values` must cover [scoring_start(...), window_end) on the series grid.
    """
    ws, we = utc(window_start), utc(window_end)
    start = scoring_start(champion, ws)
    part = values[(values.index >= start) & (values.index < we)]
    if part.notna().sum() == 0:
        return pd.DataFrame()
    frame = pd.DataFrame(
        {
            "timestamp": part.index.tz_convert("UTC").tz_localize(None),
            "value": part.to_numpy(dtype=float),
            "series_key": champion.spec.key,
        }
    )
    records = model.predict(frame)
    if records is None or len(records) == 0:
        return pd.DataFrame()
    records = records.copy()
    records["timestamp"] = pd.to_datetime(records["timestamp"], utc=True)
    return records[(records["timestamp"] >= ws) & (records["timestamp"] < we)].reset_index(drop=True)


def table_rows(champion: registry.Champion, records: pd.DataFrame, scored_at: datetime) -> list[dict]:
    """Rows of the `anomalies` table from ensemble records."""
    spec = champion.spec
    rows = []
    for r in records.itertuples(index=False):
        detected_by = list(r.detected_by) if not isinstance(r.detected_by, str) else json.loads(r.detected_by)
        rows.append(
            {
                "series_key": spec.key,
                "ts": r.timestamp.to_pydatetime(),
                "tenant_id": spec.tenant_id,
                "metric": spec.metric,
                "model": spec.model,
                "project": spec.project,
                "value": _finite(r.value),
                "expected_low": _finite(r.lower),
                "expected_high": _finite(r.upper),
                "score": float(r.score),
                "severity": str(r.severity),
                "confidence": float(r.confidence),
                "detected_by": json.dumps([str(d) for d in detected_by]),
                "explanation": str(r.explanation),
                "model_version": f"{champion.name}/{champion.version}",
                "scored_at": scored_at,
            }
        )
    return rows


def _finite(value) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def write_anomalies(warehouse: Warehouse, start: datetime, end: datetime, rows: Sequence[dict]) -> int:
    """Replace the anomalies of [start, end) with `rows`, in one transaction (idempotent)."""
    table = tables.anomalies
    with warehouse.begin() as conn:
        conn.execute(sa.delete(table).where(table.c.ts >= start, table.c.ts < end))
        if rows:
            conn.execute(table.insert(), list(rows))
    return len(rows)


def severity_counts(rows: Sequence[dict]) -> dict[str, int]:
    counts = dict.fromkeys(SEVERITIES, 0)
    for row in rows:
        counts[row["severity"]] = counts.get(row["severity"], 0) + 1
    return counts
