"""Forecast report: for the tenant's key series, history, the newest forecast with its 95% band,
backtest scores and the champion model version.

Forecasts come from the `forecasts` table (the newest training of each series, the shortest
horizon covering each target); history from the query interface. Backtest scores and the champion
alias are read from MLflow when a tracking store is known (extras["mlflow_tracking_uri"], else
MLFLOW_TRACKING_URI, else $HUB_HOME/mlflow/mlflow.db if it exists): the run tagged
`hub.series_key=<series_key>` (newest first) gives the metrics (`<model>_<horizon>_<metric>`, e.g.
ensemble_30d_mape), its `hub.model` tag the registered model whose `champion` alias is shown. With no
forecasts yet, the report says so and shows the tenant's recent history instead.
"""

from __future__ import annotations

import logging
import os
import re
from datetime import timedelta
from pathlib import Path

import pandas as pd

from hub_pipelines import settings
from hub_pipelines.alerts.evaluate import latest_forecasts
from hub_pipelines.query.catalogue import DERIVED, VALUE_METRICS
from hub_pipelines.reports import charts
from hub_pipelines.reports.base import (
    Chart,
    Note,
    Paragraph,
    ReportContext,
    Section,
    Table,
    fmt_number,
    fmt_time,
    register_section,
)

log = logging.getLogger(__name__)

MAX_SERIES = 8
HISTORY = {"hour": timedelta(days=7), "day": timedelta(days=28)}
SHOWN_AHEAD = {"hour": timedelta(days=7), "day": timedelta(days=30)}
# Series metric names (anomalies/forecasts vocabulary) -> (query metric, aggregation).
SERIES_METRICS: dict[str, tuple[str, str | None]] = {
    "latency_p95_ms": ("latency_ms", "p95"),
    "latency_p50_ms": ("latency_ms", "p50"),
    "latency_p99_ms": ("latency_ms", "p99"),
    "latency_avg_ms": ("latency_ms", "avg"),
    "tokens_input": ("tokens_input", "sum"),
    "tokens_output": ("tokens_output", "sum"),
}
_SCORE = re.compile(
    r"^(?P<model>[a-z]+)_(?P<horizon>\d+[dh])_(?P<metric>mape|smape|mase|rmse|coverage|mae_vs_naive)$"
)


def query_metric(metric: str) -> tuple[str, str | None] | None:
    """The query interface's (metric, agg) for a series metric, or None when it has none."""
    if metric in SERIES_METRICS:
        return SERIES_METRICS[metric]
    if metric in DERIVED:
        return metric, None
    if metric in VALUE_METRICS:
        return metric, "avg"
    return None


def _none(value):
    return None if value is None or (isinstance(value, float) and pd.isna(value)) else value


def series_filters(row) -> dict:
    return {k: row[k] for k in ("model", "project") if _none(row[k]) is not None}


def key_series(frame: pd.DataFrame) -> list[str]:
    """Up to MAX_SERIES series: tenant-level first (no model, no project), then by metric."""
    firsts = frame.drop_duplicates("series_key")
    ordered = sorted(
        firsts.itertuples(index=False),
        key=lambda r: (_none(r.model) is not None, _none(r.project) is not None, r.metric, r.series_key),
    )
    return [r.series_key for r in ordered[:MAX_SERIES]]


def tracking_uri(ctx: ReportContext) -> str | None:
    uri = ctx.extras.get("mlflow_tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    default = settings.hub_home() / "mlflow" / "mlflow.db"
    return f"sqlite:///{default}" if Path(default).exists() else None


def mlflow_scores(uri: str, series_keys: list[str]) -> dict[str, dict]:
    """Backtest metrics and champion version per series key, from the MLflow store at `uri`."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    out: dict[str, dict] = {}
    if not experiments:
        return out
    for key in series_keys:
        escaped = key.replace("'", "\\'")
        runs = client.search_runs(
            experiments, filter_string=f"tags.`hub.series_key` = '{escaped}'",
            order_by=["attributes.start_time DESC"], max_results=1,
        )  # fmt: skip
        if not runs:
            continue
        run = runs[0]
        scores = {}
        for name, value in run.data.metrics.items():
            match = _SCORE.match(name)
            if match:
                scores.setdefault((match["model"], match["horizon"]), {})[match["metric"]] = float(value)
        entry: dict = {"run_id": run.info.run_id, "scores": scores, "model": run.data.tags.get("hub.model")}
        if entry["model"]:
            try:
                champion = client.get_model_version_by_alias(entry["model"], "champion")
                entry["champion_version"] = str(champion.version)
            except MlflowException:
                entry["champion_version"] = None
        out[key] = entry
    return out


@register_section("forecast", order=10, name="forecast.series")
def series_section(ctx: ReportContext) -> Section:
    frame = latest_forecasts(ctx.warehouse, tenant_id=ctx.tenant_id)
    if frame.empty:
        return _no_forecasts(ctx)
    keys = key_series(frame)
    as_of = ctx.end
    scores: dict[str, dict] = {}
    mlflow_note = None
    uri = tracking_uri(ctx)
    if uri is None:
        mlflow_note = (
            "No MLflow tracking store is configured (MLFLOW_TRACKING_URI), so backtest scores are not shown."
        )
    else:
        try:
            scores = mlflow_scores(uri, keys)
        except Exception as exc:  # noqa: BLE001 - the report degrades, it does not fail
            log.warning("forecast report: MLflow lookup failed: %s", exc)
            mlflow_note = f"Backtest scores could not be read from MLflow ({type(exc).__name__})."
    rows, blocks, summary = [], [], {"series": len(keys)}
    for key in keys:
        series = frame[frame["series_key"] == key].sort_values("target_ts")
        first = series.iloc[0]
        granularity = first["granularity"]
        step = timedelta(hours=1) if granularity == "hour" else timedelta(days=1)
        mapped = query_metric(first["metric"])
        actual_day, history = None, ([], [])
        if mapped is not None:
            metric, agg = mapped
            filters = series_filters(first)
            actual_day = ctx.total(metric, agg=agg, filters=filters)
            past = ctx.query(metric, agg=agg, filters=filters, start=as_of - HISTORY[granularity], end=as_of,
                             bucket="1h" if granularity == "hour" else "1d")  # fmt: skip
            history = ([t.to_pydatetime() for t in past["bucket_start"]], [float(v) for v in past["value"]])
        ahead = series[
            (series["target_ts"] >= as_of) & (series["target_ts"] < as_of + SHOWN_AHEAD[granularity])
        ]
        shown = series[
            (series["target_ts"] >= as_of - HISTORY[granularity])
            & (series["target_ts"] < as_of + SHOWN_AHEAD[granularity])
        ]
        next_point = ahead.iloc[0] if len(ahead) else None
        week = ahead[ahead["target_ts"] <= as_of + timedelta(days=7) - step]
        week_point = week.iloc[-1] if len(week) else None
        entry = scores.get(key, {})
        version = _none(first["model_version"])
        champion = entry.get("champion_version")
        rows.append([
            key, first["metric"], _dims(first), f"{first['model_name']}" + (f" v{version}" if version else ""),
            champion or "n/a", fmt_time(first["trained_at"]),
            fmt_number(actual_day), _point(next_point), _point(week_point),
        ])  # fmt: skip
        level = float(first["level"]) if _none(first["level"]) is not None else 0.95
        blocks.append(
            Chart(
                f"forecast_{len(blocks)}",
                f"{key}: history, forecast and {level:.0%} band",
                charts.forecast_chart(
                    history,
                    (
                        [t.to_pydatetime() for t in shown["target_ts"]],
                        shown["forecast"].tolist(),
                        shown["lower"].tolist(),
                        shown["upper"].tolist(),
                    ),
                    title=f"{first['metric']} · {_dims(first)}",
                    as_of=as_of,
                    level=level,
                ),  # fmt: skip
                alt=f"{key}: actual values, then the forecast with its {level:.0%} interval",
            )
        )
        if entry.get("scores"):
            score_rows = [
                [
                    key,
                    f"{model} {horizon}",
                    *[fmt_number(values.get(m)) for m in ("mape", "smape", "mase", "coverage")],
                ]
                for (model, horizon), values in sorted(entry["scores"].items())
            ]
            entry["rows"] = score_rows
    table = Table(
        ["series", "metric", "model / project", "forecast model", "champion (MLflow)", "trained",
         f"actual {ctx.day.isoformat()}", "next point [95% band]", "+7 days [95% band]"],
        rows,
        numeric=[6, 7, 8],
    )  # fmt: skip
    out: list = [
        Paragraph(
            f"The newest forecast of {len(keys)} key series of {ctx.tenant_id} (tenant-level series first), as"
            f" of the end of {ctx.day.isoformat()}: the actual value of the day from the query interface, the"
            " next forecast point and the point a week ahead with their 95% intervals."
        ),
        table,
    ]
    score_rows = [r for key in keys for r in scores.get(key, {}).get("rows", [])]
    backtest: list = []
    if score_rows:
        backtest = [
            Table(
                ["series", "model / horizon", "MAPE", "sMAPE", "MASE", "coverage"],
                score_rows,
                numeric=[2, 3, 4, 5],
            )
        ]
    else:
        backtest = [
            Note(
                mlflow_note
                or "No MLflow run is tagged with these series (hub.series_key); backtest scores are not shown."
            )
        ]
    return Section(
        "series",
        "Key series",
        out + blocks + [Paragraph("Backtest scores (rolling-origin, MLflow):")] + backtest,
        summary=summary,
    )


def _dims(row) -> str:
    parts = [f"{k}={row[k]}" for k in ("model", "project") if _none(row[k]) is not None]
    return ", ".join(parts) if parts else "all (tenant)"


def _point(row) -> str:
    if row is None:
        return "n/a"
    return f"{fmt_number(float(row['forecast']))} [{fmt_number(float(row['lower']))}, {fmt_number(float(row['upper']))}]"


def _no_forecasts(ctx: ReportContext) -> Section:
    blocks: list = [
        Note(
            f"No forecasts exist yet for {ctx.tenant_id}: the forecasts table has no rows for this tenant (the"
            " `forecasts` asset has not been materialised, or has not covered it). The recent history below is"
            " what the forecasts will be trained on."
        )
    ]
    rows = []
    start = ctx.end - timedelta(days=14)
    for metric, label in (("requests", "requests"), ("spend_usd", "spend (USD)")):
        frame = ctx.query(metric, start=start, end=ctx.end)
        days = [t.to_pydatetime() for t in frame["bucket_start"]]
        values = [float(v) for v in frame["value"]]
        rows.append([label, fmt_number(ctx.total(metric))])
        blocks.append(
            Chart(
                f"history_{metric}",
                f"Daily {label}, 14 days",
                charts.line_chart(
                    {label: (days, values)},
                    title=f"Daily {label}, last 14 days",
                    kind="usd" if metric == "spend_usd" else "number",
                ),
                alt=f"Daily {label} over the last 14 days",
            )  # fmt: skip
        )
    blocks.insert(1, Table(["measure", ctx.day.isoformat()], rows))
    return Section("series", "Key series", blocks, summary={"series": 0})
