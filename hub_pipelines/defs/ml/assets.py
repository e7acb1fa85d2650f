"""ML assets: anomaly and forecast models trained into MLflow, and what their champions produce.

- `anomaly_models`: one anomaly ensemble per series (metric x LLM model x tenant, from the hourly
  rollups), each training an MLflow run in the `hub-anomaly` experiment, registered per series and
  promoted to `champion` only when its held-out F1 beats the champion's.
- `anomalies` (hourly partitions): the champions score the hours walk-forward; records replace the
  partition's rows of the `anomalies` table.
- `forecast_models`: one ensemble per series (requests, tokens and p95 latency per tenant and model
  hourly; spend per tenant and per project, daily once there is enough history), one parent MLflow
  run per series with a child run per member, promoted when its backtest MAPE beats the champion's.
- `forecasts`: 7, 14 and 30 days ahead with 95% bands from the champions (scenario `baseline`), and
  what-if scenarios on spend (cost = requests x cost per request, the requests changed).

Training runs are tagged `hub/kind: training` (the production instance caps them by that tag), and
every MLflow run is found again by its run key `<asset>/<series_key>/<root run id>`, so a retried step
or a re-executed run logs into the run it started and reuses series it already finished. The domain
logic is plain Python in hub_pipelines.ml_training.
"""

import os
from datetime import UTC, datetime, timedelta

import dagster as dg
import pandas as pd
from pydantic import Field

from hub_pipelines.defs.rollups.assets import DAILY_COST, HOURLY
from hub_pipelines.defs.rollups.partitions import HOURLY as HOURLY_PARTITIONS
from hub_pipelines.ml_training import (
    ANOMALY_DETECTORS,
    ANOMALY_METRICS,
    FORECAST_HOURLY_METRICS,
    FORECAST_MEMBERS,
)
from hub_pipelines.ml_training.series import (
    SeriesSpec,
    busiest_models,
    canonical_metric,
    data_end,
    history_days,
    load_series,
    md_cell,
    select,
    utc,
)
from hub_pipelines.resources import WarehouseResource
from hub_pipelines.resources.mlflow import MlflowResource

ANOMALY_MODELS = dg.AssetKey("anomaly_models")
ANOMALIES = dg.AssetKey("anomalies")
FORECAST_MODELS = dg.AssetKey("forecast_models")
FORECASTS = dg.AssetKey("forecasts")
ML_GROUP = "ml"
TRAINING_TAGS = {"hub/kind": "training"}
TRAINING_POOL = "hub_ml_training"
LABELS_ENV = "HUB_ANOMALY_LABELS"
ROOT_RUN_TAG = "dagster/root_run_id"
TRAINING_RETRY = dg.RetryPolicy(max_retries=2, delay=5)


def run_key(context: dg.AssetExecutionContext, asset: str, series_key: str) -> str:
    """`<asset>/<series_key>/<root run id>`: the same for a retried step and a re-executed run."""
    root = context.run.tags.get(ROOT_RUN_TAG) or context.run_id
    return f"{asset}/{series_key}/{root}"


def _mlflow_tags(context: dg.AssetExecutionContext, asset: str) -> dict[str, str]:
    return {
        "dagster.run_id": context.run_id,
        "dagster.root_run_id": context.run.tags.get(ROOT_RUN_TAG) or context.run_id,
        "dagster.asset": asset,
    }


def _grouping(metric: str) -> tuple[str, ...]:
    return ("tenant_id",) if metric == "threats" else ("tenant_id", "model")


def _md_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(md_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


# -- anomaly models --------------------------------------------------------------------------------


class AnomalyModelsConfig(dg.Config):
    metrics: list[str] = Field(
        default_factory=lambda: list(ANOMALY_METRICS),
        description="Series metrics: requests, error_rate, latency_p95_ms, tokens_total, spend_usd, errors,"
        " latency_avg_ms, threats (per tenant).",
    )
    lookback_days: int = Field(default=28, ge=2, description="History each model trains on.")
    min_history_days: float = Field(
        default=10.0,
        description="Series with less history are skipped (a week of warm-up + a held-out tail).",
    )
    tenants: list[str] = Field(default_factory=list, description="Only these tenants (empty: all).")
    models: list[str] = Field(default_factory=list, description="Only these LLM models (empty: all).")
    max_models_per_tenant: int | None = Field(
        default=None, description="Only each tenant's busiest LLM models (by requests); unset: all."
    )
    labels_path: str | None = Field(
        default=None,
        description="Generator labels.json to judge the held-out tail against; unset: HUB_ANOMALY_LABELS, else"
        " the self-supervised proxy (anomalies planted into the tail).",
    )
    detectors: list[str] = Field(
        default_factory=lambda: list(ANOMALY_DETECTORS), description="Ensemble members."
    )
    holdout_fraction: float = Field(default=0.25, description="Held-out tail of each series.")
    lstm_epochs: int | None = Field(default=None, description="LSTM epochs; unset: the detector's default.")


@dg.asset(
    key=ANOMALY_MODELS,
    group_name=ML_GROUP,
    kinds={"mlflow", "pytorch", "scikitlearn"},
    description="Anomaly ensembles (z-score, IQR, EWMA, seasonal residual, Isolation Forest, LSTM) per series"
    " (metric x LLM model x tenant from the hourly rollups), trained into MLflow (experiment hub-anomaly),"
    " registered as hub-anomaly.<tenant>.<metric>.<model>; `champion` moves only when the held-out F1 beats"
    " the champion's.",
    deps=[HOURLY],
    op_tags=TRAINING_TAGS,
    pool=TRAINING_POOL,
    retry_policy=TRAINING_RETRY,
)
def anomaly_models(
    context: dg.AssetExecutionContext,
    config: AnomalyModelsConfig,
    warehouse: WarehouseResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    from hub_pipelines.ml_training import anomaly, plots

    wh = warehouse.warehouse
    experiment = mlflow.anomaly_experiment
    mlflow.ensure_experiment(experiment)
    labels_path = config.labels_path or os.environ.get(LABELS_ENV)
    labels = anomaly.load_labels(labels_path)
    label_source = os.path.basename(labels_path) if labels_path else "self-supervised"
    settings = anomaly.AnomalySettings(
        detectors=tuple(config.detectors),
        holdout_fraction=config.holdout_fraction,
        lstm_epochs=config.lstm_epochs,
    )
    end = data_end(wh, "hour")
    if end is None:
        return dg.MaterializeResult(metadata={"series_trained": 0, "note": "nothing is rolled up yet"})
    start = end - timedelta(days=config.lookback_days)
    allowed = (
        busiest_models(wh, start=start, end=end, per_tenant=config.max_models_per_tenant)
        if config.max_models_per_tenant
        else None
    )
    candidates: dict[SeriesSpec, pd.Series] = {}
    for metric in config.metrics:
        metric = canonical_metric(metric)
        found = load_series(wh, metric, start=start, end=end, by=_grouping(metric))
        candidates.update(select(found, tenants=config.tenants, models=config.models, allowed_models=allowed))
    context.log.info(
        f"training {len(candidates)} anomaly series on {start:%Y-%m-%d %H:%M}..{end:%Y-%m-%d %H:%M} UTC into"
        f" {mlflow.describe()} (labels: {label_source})"
    )
    results = []
    skipped: list[list] = []
    for spec, values in sorted(candidates.items()):
        days = history_days(values)
        if days < config.min_history_days:
            skipped.append([spec.key, f"{days:.1f} days of history < {config.min_history_days:g}"])
            continue
        try:
            result = anomaly.train_series(
                spec,
                values,
                experiment=experiment,
                run_key=run_key(context, "anomaly_models", spec.key),
                settings=settings,
                labels=labels,
                label_source=label_source,
                tags=_mlflow_tags(context, "anomaly_models"),
                artifact_location=mlflow.experiment_artifact_location(experiment),
            )
        except ValueError as exc:
            context.log.warning(f"{spec.key}: not trained: {exc}")
            skipped.append([spec.key, str(exc)[:200]])
            continue
        results.append(result)
        m = result.holdout
        context.log.info(
            f"{spec.key}: v{result.version} held-out P={m.precision:.2f} R={m.recall:.2f} F1={m.f1:.2f}"
            f" ({result.seconds:.1f}s){' [reused]' if result.reused else ''}; {result.reason}"
        )
    if (
        candidates
        and not results
        and len(skipped) == len(candidates)
        and any("days of history" not in reason for _key, reason in skipped)
    ):
        raise dg.Failure(f"no anomaly series could be trained: {skipped[:5]}")
    total = anomaly.pooled(results)
    per_detector = anomaly.pooled_detectors(results)
    plotted = next((r for r in sorted(results, key=lambda r: -r.holdout.windows) if r.plot_png), None)
    metadata = {
        "series_trained": len(results),
        "series_skipped": len(skipped),
        "versions_promoted": sum(1 for r in results if r.promoted and not r.reused),
        "holdout_precision": total.precision,
        "holdout_recall": total.recall,
        "holdout_f1": total.f1,
        "holdout_windows": total.windows,
        "holdout_false_positive_events": total.false_positives,
        "labels": label_source,
        "training_window": f"{start.isoformat()}..{end.isoformat()}",
        "mlflow_experiment": experiment,
        "mlflow_tracking_uri": mlflow.describe(),
        "evaluation": dg.MetadataValue.md(
            anomaly.trainings_table(results) if results else "_no series trained_"
        ),
        "detectors": dg.MetadataValue.md(
            anomaly.evaluation_table({"ensemble": total, **per_detector}, {})
            + "\n\nHeld-out figures pooled over the series trained in this run (window-based, +3 h tolerance)."
        ),
    }
    if skipped:
        metadata["skipped"] = dg.MetadataValue.md(_md_table(["series", "reason"], skipped))
    if plotted is not None:
        metadata["evaluation_plot"] = dg.MetadataValue.md(
            plots.markdown_image(plotted.plot_png, plotted.spec.key)
        )
    return dg.MaterializeResult(metadata=metadata)


# -- anomalies -------------------------------------------------------------------------------------


@dg.asset(
    key=ANOMALIES,
    group_name=ML_GROUP,
    kinds={"mlflow", "sql"},
    description="Anomaly records (value, expected range, score, severity, confidence, detectors, explanation)"
    " of each hour, from the champion models scoring walk-forward (each hour judged on data up to it);"
    " a partition's rows of the anomalies table are replaced on every run.",
    partitions_def=HOURLY_PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[ANOMALY_MODELS, HOURLY],
    metadata={"partition_expr": "ts", "table": "anomalies"},
    automation_condition=(
        dg.AutomationCondition.any_deps_match(dg.AutomationCondition.newly_updated())
        .allow(dg.AssetSelection.assets(HOURLY))
        .since_last_handled()
        & ~dg.AutomationCondition.any_deps_missing()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("score_when_its_hour_is_rolled_up"),
    op_tags={"hub/kind": "scoring"},
)
def anomalies(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, mlflow: MlflowResource
) -> dg.MaterializeResult:
    from hub_pipelines.ml_training import anomaly, registry

    wh = warehouse.warehouse
    mlflow.configure()
    window = context.partition_time_window
    ws, we = utc(window.start), utc(window.end)
    champions = registry.champions(anomaly.MODEL_PREFIX)
    scored_at = datetime.now(UTC)
    rows: list[dict] = []
    used: list[list] = []
    missing: list[str] = []
    for metric in sorted({c.spec.metric for c in champions}):
        group = [c for c in champions if c.spec.metric == metric]
        fetch_start = min(anomaly.scoring_start(c, ws) for c in group)
        values = load_series(
            wh, metric, start=fetch_start.to_pydatetime(), end=we.to_pydatetime(), by=_grouping(metric)
        )
        for champion in group:
            series = values.get(champion.spec)
            if series is None or series[series.index >= ws].notna().sum() == 0:
                missing.append(champion.spec.key)
                continue
            model = registry.load_model(champion.uri)
            records = anomaly.score_champion(champion, model, series, ws, we)
            found = anomaly.table_rows(champion, records, scored_at) if len(records) else []
            rows += found
            used.append(
                [
                    champion.spec.key,
                    f"v{champion.version}",
                    anomaly.scoring_start(champion, ws).isoformat(),
                    len(found),
                ]
            )
    written = anomaly.write_anomalies(wh, ws.to_pydatetime(), we.to_pydatetime(), rows)
    counts = anomaly.severity_counts(rows)
    top = sorted(rows, key=lambda r: (-anomaly.SEVERITIES.index(r["severity"]), -r["score"]))[:20]
    context.log.info(
        f"{written} anomalies in {ws:%Y-%m-%d %H:%M}..{we:%Y-%m-%d %H:%M} from {len(used)} series: {counts}"
    )
    return dg.MaterializeResult(
        metadata={
            "partition_range": f"{ws.isoformat()}..{we.isoformat()}",
            "anomalies": written,
            "dagster/row_count": written,
            **{f"severity_{s}": n for s, n in counts.items()},
            "by_severity": dg.MetadataValue.json(counts),
            "series_scored": len(used),
            "series_without_data": len(missing),
            "champions": dg.MetadataValue.md(
                _md_table(["series", "champion", "scored from", "anomalies"], used)
                if used
                else "_no champion models yet_"
            ),
            "top_anomalies": dg.MetadataValue.md(
                _md_table(
                    ["ts", "series", "severity", "score", "value", "expected", "explanation"],
                    [
                        [
                            f"{r['ts']:%Y-%m-%d %H:%M}",
                            r["series_key"],
                            r["severity"],
                            f"{r['score']:.3f}",
                            f"{r['value']:.4g}" if r["value"] is not None else "",
                            f"{r['expected_low'] or 0:.4g}..{r['expected_high'] or 0:.4g}",
                            r["explanation"],
                        ]
                        for r in top
                    ],
                )
                if top
                else "_none_"
            ),
        }
    )


# -- forecast models -------------------------------------------------------------------------------


class ForecastModelsConfig(dg.Config):
    hourly_metrics: list[str] = Field(
        default_factory=lambda: list(FORECAST_HOURLY_METRICS),
        description="Hourly series per tenant and LLM model: requests, tokens_total, latency_p95_ms.",
    )
    hourly_lookback_days: int = Field(default=90, ge=2, description="History of the hourly series.")
    daily_lookback_days: int = Field(default=365, ge=2, description="History of the daily spend series.")
    spend_levels: list[str] = Field(
        default_factory=lambda: ["tenant", "project"],
        description="Spend series: per tenant and/or per (tenant, project); empty: none.",
    )
    spend_granularity: str = Field(
        default="auto",
        description="day, hour, or auto: daily when a series has 45+ days of history, else hourly.",
    )
    tenants: list[str] = Field(default_factory=list, description="Only these tenants (empty: all).")
    models: list[str] = Field(default_factory=list, description="Only these LLM models (empty: all).")
    max_models_per_tenant: int | None = Field(
        default=None, description="Only each tenant's busiest LLM models; unset: all."
    )
    members: list[str] = Field(
        default_factory=lambda: list(FORECAST_MEMBERS), description="Ensemble members."
    )
    quick: bool = Field(default=False, description="Small grids and few epochs (EnsembleConfig.quick()).")
    min_points: int = Field(default=48, description="Series with fewer points are skipped.")


def forecast_series(wh, config: ForecastModelsConfig, end_hour: datetime) -> dict[SeriesSpec, pd.Series]:
    """The series `forecast_models` trains, per its config (plain function: the demo and the
    benchmark use it too)."""
    from hub_pipelines.ml_training import forecast

    start = end_hour - timedelta(days=config.hourly_lookback_days)
    allowed = (
        busiest_models(wh, start=start, end=end_hour, per_tenant=config.max_models_per_tenant)
        if config.max_models_per_tenant
        else None
    )
    out: dict[SeriesSpec, pd.Series] = {}
    for metric in config.hourly_metrics:
        found = load_series(wh, canonical_metric(metric), start=start, end=end_hour)
        out.update(select(found, tenants=config.tenants, models=config.models, allowed_models=allowed))
    end_day = end_hour.replace(hour=0, minute=0, second=0, microsecond=0)
    groupings = {"tenant": ("tenant_id",), "project": ("tenant_id", "project")}
    for level in config.spend_levels:
        by = groupings[level]
        daily = load_series(
            wh, "spend_usd", start=end_day - timedelta(days=config.daily_lookback_days), end=end_day,
            granularity="day", by=by,
        )  # fmt: skip
        hourly = None
        for spec, values in select(daily, tenants=config.tenants).items():
            if forecast.spend_granularity(history_days(values), config.spend_granularity) == "day":
                out[spec] = values
                continue
            if hourly is None:
                hourly = load_series(wh, "spend_usd", start=start, end=end_hour, by=by)
            hourly_spec = SeriesSpec("spend_usd", spec.tenant_id, None, spec.project, "hour")
            if hourly_spec in hourly:
                out[hourly_spec] = hourly[hourly_spec]
    return out


@dg.asset(
    key=FORECAST_MODELS,
    group_name=ML_GROUP,
    kinds={"mlflow", "pytorch", "statsmodels"},
    description="Forecast ensembles (seasonal naive, SARIMA, Prophet, LSTM; weights from backtest error,"
    " conformal 95% intervals) per series, trained into MLflow (experiment hub-forecast: a parent run per"
    " series, a child run per member), registered as hub-forecast.<tenant>.<metric>...; `champion` moves"
    " only when the backtest MAPE beats the champion's.",
    deps=[HOURLY, DAILY_COST],
    op_tags=TRAINING_TAGS,
    pool=TRAINING_POOL,
    retry_policy=TRAINING_RETRY,
)
def forecast_models(
    context: dg.AssetExecutionContext,
    config: ForecastModelsConfig,
    warehouse: WarehouseResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    from hub_ml.forecast import ForecastInputError
    from hub_pipelines.ml_training import forecast, plots

    wh = warehouse.warehouse
    experiment = mlflow.forecast_experiment
    mlflow.ensure_experiment(experiment)
    settings = forecast.ForecastSettings(members=tuple(config.members), quick=config.quick)
    end = data_end(wh, "hour")
    if end is None:
        return dg.MaterializeResult(metadata={"series_trained": 0, "note": "nothing is rolled up yet"})
    candidates = forecast_series(wh, config, end)
    context.log.info(
        f"training {len(candidates)} forecast series up to {end:%Y-%m-%d %H:%M} UTC into {mlflow.describe()}"
    )
    results = []
    skipped: list[list] = []
    for spec, values in sorted(candidates.items()):
        if values.notna().sum() < config.min_points:
            skipped.append([spec.key, f"{values.notna().sum()} points < {config.min_points}"])
            continue
        try:
            result = forecast.train_series(
                spec,
                values,
                experiment=experiment,
                run_key=run_key(context, "forecast_models", f"{spec.key}|{spec.granularity}"),
                settings=settings,
                tags=_mlflow_tags(context, "forecast_models"),
                artifact_location=mlflow.experiment_artifact_location(experiment),
            )
        except ForecastInputError as exc:
            context.log.warning(f"{spec.key}: not trained: {exc}")
            skipped.append([spec.key, str(exc)[:200]])
            continue
        results.append(result)
        h = result.horizons[-1] if result.horizons else "?"
        context.log.info(
            f"{spec.key} ({spec.granularity}): v{result.version} backtest {h} MAPE {result.metric('ensemble', h, 'mape'):.2f}%"
            f" MASE {result.metric('ensemble', h, 'mase'):.3f} coverage {result.metric('ensemble', h, 'coverage'):.3f}"
            f" ({result.seconds:.1f}s){' [reused]' if result.reused else ''}; {result.reason}"
        )
    metadata: dict = {
        "series_trained": len(results),
        "series_skipped": len(skipped),
        "versions_promoted": sum(1 for r in results if r.promoted and not r.reused),
        "data_end": end.isoformat(),
        "mlflow_experiment": experiment,
        "mlflow_tracking_uri": mlflow.describe(),
        "backtest": dg.MetadataValue.md(
            forecast.backtest_table(results) if results else "_no series trained_"
        ),
    }
    for name in ("mape", "smape", "mase", "rmse", "coverage"):
        values = [r.metric("ensemble", r.horizons[-1], name) for r in results if r.horizons]
        values = [v for v in values if pd.notna(v)]
        if values:
            metadata[f"mean_ensemble_{name}_longest_horizon"] = float(sum(values) / len(values))
    if skipped:
        metadata["skipped"] = dg.MetadataValue.md(_md_table(["series", "reason"], skipped))
    panels = [
        (
            f"{r.spec.label} (backtest {r.horizons[-1]} MAPE {r.metric('ensemble', r.horizons[-1], 'mape'):.1f}%)",
            r.history,
            r.forecast,
        )
        for r in results
        if r.forecast is not None and r.horizons
    ][:6]
    if panels:
        metadata["forecast_plot"] = dg.MetadataValue.md(
            plots.markdown_image(plots.forecast_plot(panels), "forecasts")
        )
    return dg.MaterializeResult(metadata=metadata)


# -- forecasts -------------------------------------------------------------------------------------


class ScenarioConfig(dg.Config):
    name: str = Field(description="Stored as the forecasts' scenario (not 'baseline').")
    start: str = Field(description="ISO-8601 date or time the change starts.")
    end: str | None = Field(default=None, description="Exclusive end; unset: to the end of the forecast.")
    multiplier: float = Field(default=1.0, description="Request volume factor, e.g. 2 for x2.")
    offset: float = Field(default=0.0, description="Requests added per step (after the factor).")
    tenants: list[str] = Field(default_factory=list, description="Only these tenants' spend (empty: all).")


class ForecastsConfig(dg.Config):
    scenarios: list[ScenarioConfig] = Field(
        default_factory=list,
        description="What-if scenarios on request volume: the dependent spend forecast is recomputed"
        " (requests x cost per request) and stored under the scenario's name.",
    )
    level: float = Field(default=0.95, description="Interval probability of the stored bands.")
    scenario_lookback_days: int = Field(default=90, description="History the scenario drivers are fitted on.")
    scenario_quick: bool = Field(default=True, description="Quick ensembles for the scenario drivers.")
    plot_series: int = Field(default=6, description="Series drawn in the plot.")


@dg.asset(
    key=FORECASTS,
    group_name=ML_GROUP,
    kinds={"mlflow", "sql"},
    description="7, 14 and 30 day forecasts with 95% bands from the champion forecast models (scenario"
    " baseline), and what-if scenarios on spend, in the forecasts table.",
    deps=[FORECAST_MODELS],
    metadata={"table": "forecasts"},
    op_tags={"hub/kind": "scoring"},
)
def forecasts(
    context: dg.AssetExecutionContext,
    config: ForecastsConfig,
    warehouse: WarehouseResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    from hub_pipelines.ml_training import forecast, plots, registry

    wh = warehouse.warehouse
    mlflow.configure()
    champions = registry.champions(forecast.MODEL_PREFIX)
    made = []
    rows: list[dict] = []
    for champion in champions:
        model = registry.load_model(champion.uri)
        result = forecast.forecast_champion(champion, model, config.level)
        made.append(result)
        rows += result.rows(champion.created_at.to_pydatetime(), config.level)
    written = forecast.write_forecasts(wh, rows, scenario="baseline") if rows else 0
    summary = []
    for f in made:
        week = f.frame[f.frame["timestamp"] < f.origin + pd.Timedelta(days=7)]
        summary.append(
            [
                f.champion.spec.label,
                f"{f.origin:%Y-%m-%d %H:%M}",
                f.model_name,
                f"v{f.champion.version}",
                f"{week['forecast'].sum():,.4g}"
                if f.champion.spec.metric in ("requests", "tokens_total", "spend_usd")
                else f"{week['forecast'].mean():,.4g} (mean)",
                f"{week['lower'].sum():,.4g}..{week['upper'].sum():,.4g}"
                if f.champion.spec.metric in ("requests", "tokens_total", "spend_usd")
                else f"{week['lower'].mean():,.4g}..{week['upper'].mean():,.4g}",
            ]
        )
    backtest_md, means = forecast.champion_backtest_table(made)
    metadata: dict = {
        "rows_baseline": written,
        "dagster/row_count": written,
        "series": len(made),
        "horizons_days": dg.MetadataValue.json(list(forecast.STORED_HORIZONS)),
        "level": config.level,
        "forecasts": dg.MetadataValue.md(
            _md_table(
                ["series", "from", "model", "champion", "next 7 days", "95% band (sum of bounds)"], summary
            )
            if summary
            else "_no champion forecast models yet_"
        ),
        "backtest": dg.MetadataValue.md(backtest_md),
        **means,
    }
    panels = []
    for f in made[: config.plot_series]:
        history = _history(wh, f.champion.spec, f.origin)
        panels.append((f"{f.champion.spec.label}", history, f.frame))
    if panels:
        png = plots.forecast_plot(panels)
        metadata["plot"] = dg.MetadataValue.md(plots.markdown_image(png, "history, forecast and 95% band"))
    if config.scenarios:
        results, written_scenarios = _scenarios(context, wh, config, made)
        metadata["what_if"] = dg.MetadataValue.md(
            forecast.what_if_table(results) if results else "_no spend series_"
        )
        metadata["rows_scenarios"] = written_scenarios  # rows stored, like rows_baseline
        for r in results:
            metadata[f"what_if_{r.scenario.name}_difference_total"] = r.summary["difference_total"]
    return dg.MaterializeResult(metadata=metadata)


def _history(wh, spec: SeriesSpec, origin: pd.Timestamp) -> pd.Series:
    """The last weeks (hourly) or months (daily) before a forecast's origin, for the plot."""
    days = 21 if spec.granularity == "hour" else 90
    start = (origin - pd.Timedelta(days=days)).to_pydatetime()
    found = load_series(
        wh, spec.metric, start=start, end=origin.to_pydatetime(), granularity=spec.granularity,
        by=tuple(d for d, v in (("tenant_id", 1), ("model", spec.model), ("project", spec.project)) if v),
        filters={"tenant_id": spec.tenant_id},
    )  # fmt: skip
    return found.get(spec, pd.Series(dtype=float))


def _scenarios(context, wh, config: ForecastsConfig, made: list) -> tuple[list, int]:
    """Apply each configured scenario to every spend series with a champion and store them; returns
    the results and the number of forecasts-table rows written (every stored horizon)."""
    from hub_ml.forecast import ForecastInputError, Scenario
    from hub_pipelines.ml_training import forecast

    settings = forecast.ForecastSettings(quick=config.scenario_quick, level=config.level)
    spend = [f for f in made if f.champion.spec.metric == "spend_usd"]
    results = []
    written = 0
    for scenario_config in config.scenarios:
        if scenario_config.name == "baseline" or not scenario_config.name.strip():
            raise dg.Failure(f"scenario name {scenario_config.name!r} is reserved or empty")
        scenario = Scenario(
            name=scenario_config.name,
            start=scenario_config.start,
            end=scenario_config.end,
            multiplier=scenario_config.multiplier,
            offset=scenario_config.offset,
        )
        rows: list[dict] = []
        for f in spend:
            spec = f.champion.spec
            if scenario_config.tenants and spec.tenant_id not in scenario_config.tenants:
                continue
            requests, unit = _drivers(wh, spec, f.origin, config.scenario_lookback_days)
            if requests is None:
                context.log.warning(f"{spec.key}: no request series to drive scenario {scenario.name!r}")
                continue
            try:
                result = forecast.what_if(spec, requests, unit, scenario, settings)
            except ForecastInputError as exc:
                context.log.warning(f"{spec.key}: scenario {scenario.name!r} not computed: {exc}")
                continue
            same = f.frame[f.frame["timestamp"].isin(result.frame["timestamp"])]
            result.baseline_total = float(same["forecast"].sum())
            results.append(result)
            rows += result.rows(f.champion.created_at.to_pydatetime(), config.level)
            context.log.info(
                f"{spec.key} {scenario.name}: {result.summary['baseline_total']:,.2f} -> "
                f"{result.summary['scenario_total']:,.2f} ({result.summary['difference_pct']:+.1f}%)"
            )
        if rows:
            written += forecast.write_forecasts(wh, rows, scenario=scenario.name)
    return results, written


def _drivers(wh, spec: SeriesSpec, origin: pd.Timestamp, lookback_days: int):
    """Requests and cost per request of a spend series, up to its champion's origin."""
    by = ("tenant_id", "project") if spec.project else ("tenant_id",)
    start = (origin - pd.Timedelta(days=lookback_days)).to_pydatetime()
    common = dict(start=start, end=origin.to_pydatetime(), granularity=spec.granularity, by=by,
                  filters={"tenant_id": spec.tenant_id})  # fmt: skip
    from hub_pipelines.ml_training.forecast import driver_specs

    requests_spec, unit_spec = driver_specs(spec)
    requests = load_series(wh, "requests", **common).get(requests_spec)
    unit = load_series(wh, "cost_per_request", **common).get(unit_spec)
    if requests is None or unit is None:
        return None, None
    return requests, unit


__all__ = [
    "ANOMALIES",
    "ANOMALY_MODELS",
    "FORECASTS",
    "FORECAST_MODELS",
    "AnomalyModelsConfig",
    "ForecastModelsConfig",
    "ForecastsConfig",
    "ScenarioConfig",
    "anomalies",
    "anomaly_models",
    "forecast_models",
    "forecasts",
]
