"""The ML steps of `hub demo`: train the detectors and forecasters on the demo's rollups through
Dagster, score the hours after the detectors' warm-up, and summarise what was found against the
generator's labels and what is forecast, with the backtest scores.

    from hub_pipelines.defs.ml.demo import run_ml
    result = run_ml(instance, labels_path=landing / "labels.json", start=config.start_utc, end=config.end_utc)
    for line in result.lines():
        click.echo(line)

A few key series keep it to a few minutes on two cores: each tenant's busiest LLM models
(`max_models_per_tenant`), five anomaly metrics, the three capacity metrics of the busiest model and
spend per tenant for the forecasts, quick ensembles (`EnsembleConfig.quick()`).
"""

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from hub_pipelines import settings
from hub_pipelines.defs.ml.assets import (
    ANOMALIES,
    ANOMALY_MODELS,
    FORECAST_MODELS,
    FORECASTS,
    AnomalyModelsConfig,
    ForecastModelsConfig,
    ForecastsConfig,
    ScenarioConfig,
)
from hub_pipelines.ml_training.series import utc
from hub_pipelines.warehouse import Warehouse, tables

WARM_UP = timedelta(days=7)
# Training logs a line per series at INFO: the demo's progress; Dagster's DEBUG events stay in the UI.
PROGRESS = {"console": {"config": {"log_level": "INFO"}}}


@dataclass
class MlDemoResult:
    anomaly_training: dict = field(default_factory=dict)  # anomaly_models metadata
    scoring: dict = field(default_factory=dict)  # anomalies metadata
    forecast_training: dict = field(default_factory=dict)
    forecasts: dict = field(default_factory=dict)
    label_evaluation: dict = field(default_factory=dict)  # precision, recall, tp, fn, fp, labels
    detections: list[dict] = field(default_factory=list)  # per label: found or missed
    forecast_lines: list[str] = field(default_factory=list)
    what_if_lines: list[str] = field(default_factory=list)
    scored_window: tuple[datetime, datetime] | None = None
    run_ids: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    tracking_uri: str = ""

    def lines(self) -> list[str]:
        a, s, e = self.anomaly_training, self.scoring, self.label_evaluation
        held_out = (
            f"held-out P={a.get('holdout_precision', float('nan')):.2f} R={a.get('holdout_recall', float('nan')):.2f}"
            f" F1={a.get('holdout_f1', float('nan')):.2f} over {a.get('holdout_windows')} labelled windows"
            if a.get("holdout_windows")
            else f"no labelled anomaly falls in the held-out tails ({a.get('holdout_false_positive_events', 0)}"
            " false-alarm runs there)"
        )
        out = [
            f"anomaly models: {a.get('series_trained', 0)} series trained into MLflow ({self.tracking_uri},"
            f" experiment hub-anomaly) in {self.seconds.get('training', 0):.0f}s; {held_out}"
            f" (labels: {a.get('labels', '?')})",
        ]
        if self.scored_window:
            ws, we = self.scored_window
            by = ", ".join(
                f"{k.removeprefix('severity_')} {v}" for k, v in s.items() if k.startswith("severity_")
            )
            out.append(
                f"anomalies: scored {ws:%Y-%m-%d %H:%M}..{we:%Y-%m-%d %H:%M} UTC walk-forward with the champions"
                f" ({self.seconds.get('scoring', 0):.0f}s): {s.get('anomalies', 0)} anomalous hours ({by})"
            )
        if e:
            out.append(
                f"   against the generator's labels (a label counts once, +3 h tolerance): precision"
                f" {e['precision']:.2f}, recall {e['recall']:.2f} ({e['true_positives']} of {e['labels']} labels"
                f" found, {e['false_positives']} false alarms)"
                + (
                    f"; {e['in_scenarios']} more flags inside injected multi-module incidents"
                    if e.get("in_scenarios")
                    else ""
                )
            )
            for d in self.detections[:12]:
                out.append(
                    f"   {'found ' if d['found'] else 'missed'} {d['kind']:<12} {d['tenant_id']} {d['model'] or '*'}"
                    f" {d['start']:%m-%d %H:%M}..{d['end']:%m-%d %H:%M} ({', '.join(d['metrics'])})"
                    + (f": {d['explanation']}" if d.get("explanation") else "")
                )
        f = self.forecast_training
        out.append(
            f"forecast models: {f.get('series_trained', 0)} series (experiment hub-forecast, a parent run per"
            f" series and a child run per model) in {self.seconds.get('forecasting', 0):.0f}s"
        )
        out += [f"   {line}" for line in self.forecast_lines]
        out += [f"   {line}" for line in self.what_if_lines]
        return out


def _metadata(result) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        out[materialization.asset_key.to_user_string()] = {
            k: v.value for k, v in materialization.metadata.items()
        }
    return out


def run_ml(
    instance: dg.DagsterInstance | None = None,
    *,
    labels_path: str | Path | None,
    start: datetime,
    end: datetime,
    definitions: dg.Definitions | None = None,
    max_models_per_tenant: int = 2,
    anomaly_metrics: tuple[str, ...] = (
        "requests",
        "error_rate",
        "latency_p95_ms",
        "tokens_total",
        "spend_usd",
    ),
    forecast_models_per_tenant: int = 1,
    quick: bool = True,
    what_if: bool = True,
    warehouse_url: str | None = None,
    scenarios_path: str | Path | None = None,
) -> MlDemoResult:
    """Train (train_models_job), score (score_anomalies_job over the hours after the warm-up) and
    summarise; `start`/`end` are the generated window, `labels_path` its labels.json."""
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    from hub_pipelines.resources.mlflow import MlflowResource

    if definitions is None:
        from hub_pipelines.definitions import defs as definitions
    instance = instance or dg.DagsterInstance.get()
    result = MlDemoResult(tracking_uri=MlflowResource().describe())
    end = utc(end).to_pydatetime()
    start = utc(start).to_pydatetime()
    days = max(2, round((end - start) / timedelta(days=1)))
    origin = end.replace(hour=0, minute=0, second=0, microsecond=0)
    scenario = ScenarioConfig(
        name="requests_x2", start=(origin + timedelta(days=1)).isoformat(), multiplier=2.0
    )
    run_config = dg.RunConfig(
        loggers=PROGRESS,
        ops={
            ANOMALY_MODELS.to_python_identifier(): AnomalyModelsConfig(
                metrics=list(anomaly_metrics),
                lookback_days=days,
                min_history_days=min(10.0, days * 0.6),
                max_models_per_tenant=max_models_per_tenant,
                labels_path=str(labels_path) if labels_path else None,
            ),
            FORECAST_MODELS.to_python_identifier(): ForecastModelsConfig(
                hourly_lookback_days=days,
                daily_lookback_days=days,
                spend_levels=["tenant"],
                max_models_per_tenant=forecast_models_per_tenant,
                quick=quick,
            ),
            FORECASTS.to_python_identifier(): ForecastsConfig(
                scenarios=[scenario] if what_if else [], scenario_lookback_days=days
            ),
        },
    )
    started = time.perf_counter()
    trained = definitions.resolve_job_def("train_models_job").execute_in_process(
        instance=instance, run_config=run_config, raise_on_error=True
    )
    result.run_ids.append(trained.run_id)
    meta = _metadata(trained)
    result.anomaly_training = meta.get("anomaly_models", {})
    result.forecast_training = meta.get("forecast_models", {})
    result.forecasts = meta.get("forecasts", {})
    result.seconds["training"] = time.perf_counter() - started

    # Score the hours after the warm-up (the detectors need a week of context before a verdict).
    score_start = start + WARM_UP if end - start > WARM_UP + timedelta(days=1) else end - timedelta(days=1)
    started = time.perf_counter()
    scored = definitions.resolve_job_def("score_anomalies_job").execute_in_process(
        instance=instance,
        run_config=dg.RunConfig(loggers=PROGRESS),
        tags={
            ASSET_PARTITION_RANGE_START_TAG: score_start.strftime("%Y-%m-%d-%H:%M"),
            ASSET_PARTITION_RANGE_END_TAG: (end - timedelta(hours=1)).strftime("%Y-%m-%d-%H:%M"),
        },
        raise_on_error=True,
    )
    result.run_ids.append(scored.run_id)
    result.scoring = _metadata(scored).get(ANOMALIES.to_user_string(), {})
    result.seconds["scoring"] = time.perf_counter() - started
    result.scored_window = (score_start, end)

    warehouse = Warehouse(warehouse_url or settings.warehouse_url())
    try:
        if labels_path and Path(labels_path).exists():
            evaluation, detections = evaluate_against_labels(
                warehouse,
                Path(labels_path),
                score_start,
                end,
                scenarios_path=Path(scenarios_path) if scenarios_path else None,
            )
            result.label_evaluation, result.detections = evaluation, detections
        result.forecast_lines = forecast_lines(warehouse)
    finally:
        warehouse.engine.dispose()
    step_seconds = _step_seconds(instance, trained.run_id)
    result.seconds["forecasting"] = step_seconds.get("forecast_models", 0.0) + step_seconds.get(
        "forecasts", 0.0
    )
    result.seconds["training"] = step_seconds.get("anomaly_models", result.seconds["training"])
    result.what_if_lines = _what_if_lines(result.forecasts)
    return result


def _step_seconds(instance: dg.DagsterInstance, run_id: str) -> dict[str, float]:
    from dagster._core.execution.stats import build_run_step_stats_from_events

    records = instance.all_logs(run_id)
    return {
        s.step_key: (s.end_time - s.start_time)
        for s in build_run_step_stats_from_events(run_id, records)
        if s.end_time and s.start_time
    }


def evaluate_against_labels(
    warehouse: Warehouse,
    labels_path: Path,
    start: datetime,
    end: datetime,
    scenarios_path: Path | None = None,
) -> tuple[dict, list[dict]]:
    """Per-label precision and recall of the stored anomalies in [start, end) on the series that
    were scored (`hub_ml.anomaly.evaluation.evaluate_labels`, per tenant and LLM model).

    Hours inside an injected multi-module scenario of the tenant (scenarios.json) are real anomalies
    without a single-series label: they are counted apart (`in_scenarios`), not as false alarms."""
    from hub_ml.anomaly import WindowMetrics
    from hub_ml.anomaly.evaluation import DEFAULT_TOLERANCE, evaluate_labels
    from hub_pipelines.ml_training import anomaly, registry
    from hub_pipelines.resources.mlflow import MlflowResource

    MlflowResource().configure()
    labels = anomaly.load_labels(labels_path) or []
    champions = registry.champions(anomaly.MODEL_PREFIX)
    table = tables.anomalies
    with warehouse.connect() as conn:
        rows = conn.execute(
            sa.select(table.c.series_key, table.c.ts, table.c.explanation).where(
                table.c.ts >= start, table.c.ts < end
            )
        ).all()
    flagged: dict[str, dict[pd.Timestamp, str]] = {}
    for key, ts, explanation in rows:
        flagged.setdefault(key, {})[utc(ts)] = explanation
    grid = pd.date_range(utc(start), utc(end) - timedelta(hours=1), freq="h")
    total = WindowMetrics()
    detections = []
    groups: dict[tuple[str, str | None], list] = {}
    for champion in champions:
        groups.setdefault((champion.spec.tenant_id, champion.spec.model), []).append(champion.spec)
    scenarios = json.loads(scenarios_path.read_text()) if scenarios_path and scenarios_path.exists() else []
    in_scenarios = 0
    for (tenant, model), specs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        inside = pd.Series(False, index=grid)
        for scenario in scenarios:
            if scenario["tenant_id"] == tenant:
                inside |= (grid >= utc(scenario["start"])) & (grid < utc(scenario["end"]) + DEFAULT_TOLERANCE)
        flags = {}
        for spec in specs:
            flag = pd.Series(grid.isin(list(flagged.get(spec.key, {}))), index=grid)
            in_scenarios += int((flag & inside).sum())
            flags[spec.metric] = flag & ~inside
        mine = [lb for lb in labels if lb.get("tenant_id") == tenant and lb.get("model") in (None, model)]
        mine = [lb for lb in mine if utc(lb["end"]) > utc(start) and utc(lb["start"]) < utc(end)]
        total = total + evaluate_labels(flags, mine)
        for label in mine:
            named = [m for m in label.get("metrics", ()) if m in flags]
            if not named:
                continue
            ls, le = utc(label["start"]), utc(label["end"]) + DEFAULT_TOLERANCE
            hits = [
                (spec.key, ts)
                for spec in specs
                if spec.metric in named
                for ts in flagged.get(spec.key, {})
                if ls <= ts < le
            ]
            first = min(hits, key=lambda h: h[1]) if hits else None
            detections.append(
                {
                    "found": bool(hits),
                    "kind": label.get("kind", "?"),
                    "tenant_id": tenant,
                    "model": label.get("model"),
                    "metrics": named,
                    "start": utc(label["start"]),
                    "end": utc(label["end"]),
                    "explanation": flagged[first[0]][first[1]] if first else None,
                }
            )
    evaluation = {
        "precision": total.precision,
        "recall": total.recall,
        "f1": total.f1,
        "true_positives": total.true_positives,
        "false_negatives": total.false_negatives,
        "false_positives": total.false_positives,
        "labels": total.windows,
        "in_scenarios": in_scenarios,
    }
    detections.sort(key=lambda d: d["start"])
    return evaluation, detections


def forecast_lines(warehouse: Warehouse) -> list[str]:
    """One line per stored baseline forecast: the next 7 days with the band, and the backtest scores
    of the champion that made it."""
    from hub_pipelines.ml_training import forecast, registry
    from hub_pipelines.resources.mlflow import MlflowResource

    MlflowResource().configure()
    table = tables.forecasts
    with warehouse.connect() as conn:
        frame = pd.DataFrame(
            conn.execute(sa.select(table).where(table.c.scenario == "baseline", table.c.horizon_days == 7))
            .mappings()
            .all()
        )
    champions = {c.spec.key: c for c in registry.champions(forecast.MODEL_PREFIX)}
    lines = []
    if frame.empty:
        return ["no forecasts stored"]
    for key, rows in frame.groupby("series_key", sort=True):
        champion = champions.get(key)
        if champion is None:
            continue
        spec = champion.spec
        additive = spec.metric in ("requests", "tokens_total", "spend_usd")
        agg = (
            rows[["forecast", "lower", "upper"]].sum()
            if additive
            else rows[["forecast", "lower", "upper"]].mean()
        )
        unit = "$" if spec.metric == "spend_usd" else ""
        what = "total" if additive else "mean"
        metrics = registry.run_metrics(champion.run_id)
        horizons = [h for h in champion.tags.get("hub.backtest_horizons", "").split(",") if h]
        scores = ", ".join(
            f"{h}: MAPE {metrics.get(f'ensemble_{h}_mape', float('nan')):.1f}%"
            f" MASE {metrics.get(f'ensemble_{h}_mase', float('nan')):.2f}"
            f" coverage {metrics.get(f'ensemble_{h}_coverage', float('nan')):.2f}"
            for h in horizons
        )
        model = rows["model_name"].iloc[0]
        lines.append(
            f"{spec.label}: next 7 days {what} {unit}{agg['forecast']:,.4g} (95% band {unit}{agg['lower']:,.4g}"
            f"..{unit}{agg['upper']:,.4g}) by {model} v{champion.version}; backtest {scores}"
        )
    return lines


def _what_if_lines(forecasts_metadata: dict) -> list[str]:
    out = []
    for key, value in forecasts_metadata.items():
        if key.startswith("what_if_") and key.endswith("_difference_total"):
            name = key.removeprefix("what_if_").removesuffix("_difference_total")
            out.append(
                f"what-if {name} (request volume x2 from tomorrow): spend {value:+,.2f} USD over 30 days"
            )
    table = forecasts_metadata.get("what_if")
    if table:
        out.append("what-if by series (stored under scenario requests_x2 in the forecasts table):")
        for row in str(table).splitlines()[2:]:
            cells = [c.strip() for c in row.strip("|").split("|")]
            if len(cells) >= 7:
                out.append(f"   {cells[0]}: {cells[3]} -> {cells[4]} USD ({cells[6]})")
    return out
