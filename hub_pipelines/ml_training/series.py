"""Training series for hub's models, read from the rollups through the query interface.

A series is one metric of one tenant, optionally narrowed to an LLM model or a project, at an hourly
or daily grain (`SeriesSpec`). Its key (the `series_key` column of the anomalies and forecasts
tables, and the `hub.series_key` tag in MLflow) is `tenant|metric|model` with `*` for "all models",
plus `|project` for a project series: `tenant-01|latency_p95_ms|gpt-4o`, `tenant-01|spend_usd|*`,
`tenant-01|spend_usd|*|search-rag`.

Values come from `hub_pipelines.query.query` over complete buckets only (up to the end of the newest
rolled-up hour, or day), on a regular grid from the series' first observation: counters (requests,
tokens, spend, threats) are 0 where a bucket has no row (no traffic), averages, ratios and
percentiles are NaN there (no measurement). Percentiles are read from the rollups' sketches
(within 1%), so they survive the raw events' retention.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pandas as pd
import sqlalchemy as sa

from hub_pipelines.query import query
from hub_pipelines.warehouse import Warehouse, tables

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
GRANULARITIES = {"hour": HOUR, "day": DAY}
BUCKETS = {"hour": "1h", "day": "1d"}


@dataclass(frozen=True)
class MetricSource:
    """How a series metric is asked of the query interface."""

    query_metric: str
    agg: str | None
    kind: str  # counter (missing bucket = 0), ratio or value (missing bucket = NaN)
    dimensions: tuple[str, ...] = ("tenant_id", "model", "project")


SERIES_METRICS: dict[str, MetricSource] = {
    "requests": MetricSource("requests", None, "counter"),
    "errors": MetricSource("errors", None, "counter"),
    "error_rate": MetricSource("error_rate", None, "ratio"),
    "tokens_total": MetricSource("tokens_total", None, "counter"),
    "spend_usd": MetricSource("spend_usd", None, "counter"),
    "cost_per_request": MetricSource("cost_per_request", None, "ratio"),
    "latency_p95_ms": MetricSource("latency_ms", "p95", "value"),
    "latency_p50_ms": MetricSource("latency_ms", "p50", "value"),
    "latency_avg_ms": MetricSource("latency_ms", "avg", "value"),
    "threats": MetricSource("threats", None, "counter", ("tenant_id", "model", "project")),
}
ALIASES = {"tokens": "tokens_total", "spend": "spend_usd", "latency_p95": "latency_p95_ms"}


def canonical_metric(name: str) -> str:
    metric = ALIASES.get(name, name)
    if metric not in SERIES_METRICS:
        raise ValueError(f"unknown series metric {name!r}; known: {', '.join(SERIES_METRICS)}")
    return metric


@dataclass(frozen=True, order=True)
class SeriesSpec:
    """One series: a metric of a tenant, optionally of one LLM model or one project."""

    metric: str
    tenant_id: str
    model: str | None = None
    project: str | None = None
    granularity: str = "hour"

    @property
    def key(self) -> str:
        parts = [self.tenant_id, self.metric, self.model or "*"]
        if self.project:
            parts.append(self.project)
        return "|".join(parts)

    @property
    def step(self) -> timedelta:
        return GRANULARITIES[self.granularity]

    @property
    def label(self) -> str:
        """Short human description: `tenant-01 latency_p95_ms gpt-4o (hourly)`."""
        where = " ".join(p for p in (self.model, f"project {self.project}" if self.project else None) if p)
        grain = "hourly" if self.granularity == "hour" else "daily"
        return f"{self.tenant_id} {self.metric}{' ' + where if where else ''} ({grain})"

    def tags(self) -> dict[str, str]:
        """MLflow tags describing the series (registered model, version and run tags)."""
        return {
            "hub.series_key": self.key,
            "hub.tenant_id": self.tenant_id,
            "hub.metric": self.metric,
            "hub.llm_model": self.model or "",
            "hub.project": self.project or "",
            "hub.granularity": self.granularity,
        }

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> SeriesSpec:
        return cls(
            metric=tags["hub.metric"],
            tenant_id=tags["hub.tenant_id"],
            model=tags.get("hub.llm_model") or None,
            project=tags.get("hub.project") or None,
            granularity=tags.get("hub.granularity") or "hour",
        )


_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")


def registered_model_name(kind: str, spec: SeriesSpec) -> str:
    """`hub-<kind>.<tenant>.<metric>.<model or all>[.<project>][.daily]`, in the characters MLflow
    allows; a name that had to be changed gets a short hash so two series never share a model."""
    parts = [spec.tenant_id, spec.metric, spec.model or "all"]
    if spec.project:
        parts.append(spec.project)
    if spec.granularity == "day":
        parts.append("daily")
    cleaned = [_NAME_CHARS.sub("_", p) for p in parts]
    name = f"hub-{kind}." + ".".join(cleaned)
    if cleaned != parts:
        name += "." + hashlib.sha1(spec.key.encode()).hexdigest()[:8]
    return name


def data_end(warehouse: Warehouse, granularity: str = "hour") -> datetime | None:
    """End of the newest rolled-up hour (floored to the day for daily series), or None when nothing
    is rolled up yet. Buckets after it are incomplete or not rolled up: training stops there."""
    with warehouse.connect() as conn:
        newest = conn.execute(
            sa.select(sa.func.max(tables.rollup_partitions.c.partition_end)).where(
                tables.rollup_partitions.c.grain == "hour"
            )
        ).scalar_one()
    if newest is None:
        return None
    end = min(utc(newest).to_pydatetime(), datetime.now(UTC))
    if granularity == "day":
        end = end.replace(hour=0, minute=0, second=0, microsecond=0)
    return end


def load_series(
    warehouse: Warehouse,
    metric: str,
    *,
    start: datetime,
    end: datetime,
    granularity: str = "hour",
    by: Sequence[str] = ("tenant_id", "model"),
    filters: dict | None = None,
) -> dict[SeriesSpec, pd.Series]:
    """Every series of `metric` grouped by `by` (tenant_id plus model and/or project) in
    [start, end), each on its regular grid from its first observation to `end`."""
    metric = canonical_metric(metric)
    source = SERIES_METRICS[metric]
    if "tenant_id" not in by:
        raise ValueError("series are per tenant: `by` must include tenant_id")
    step = GRANULARITIES[granularity]
    frame = query(
        warehouse,
        source.query_metric,
        start=start,
        end=end,
        bucket=BUCKETS[granularity],
        agg=source.agg,
        group_by=list(by),
        filters=filters or {},
        exact=False,
    )
    out: dict[SeriesSpec, pd.Series] = {}
    if frame.empty:
        return out
    last = utc(end) - step
    for values, rows in frame.groupby(list(by), dropna=False, sort=True):
        values = values if isinstance(values, tuple) else (values,)
        labels = dict(zip(by, values, strict=True))
        labels = {
            k: (None if (v is None or (isinstance(v, float) and pd.isna(v))) else str(v))
            for k, v in labels.items()
        }
        if labels.get("tenant_id") is None:
            continue
        spec = SeriesSpec(
            metric=metric,
            tenant_id=labels["tenant_id"],
            model=labels.get("model"),
            project=labels.get("project"),
            granularity=granularity,
        )
        if ("model" in by and spec.model is None) or ("project" in by and spec.project is None):
            continue  # traffic without a model / project: no series of its own
        series = pd.Series(rows["value"].to_numpy(dtype=float), index=pd.DatetimeIndex(rows["bucket_start"]))
        series = series[~series.index.duplicated()].sort_index()
        grid = pd.date_range(series.index[0], last, freq=step, tz="UTC")
        if len(grid) == 0:
            continue
        series = series.reindex(grid)
        if source.kind == "counter":
            series = series.fillna(0.0)
        series.name = metric
        series.index.freq = None
        out[spec] = series
    return out


def busiest_models(
    warehouse: Warehouse, *, start: datetime, end: datetime, per_tenant: int | None
) -> dict[str, list[str]]:
    """LLM models of each tenant by request volume in [start, end), busiest first (all when
    `per_tenant` is None)."""
    frame = query(warehouse, "requests", start=start, end=end, bucket="1d", group_by=["tenant_id", "model"])
    frame = frame[frame["model"].notna() & frame["tenant_id"].notna()]
    totals = frame.groupby(["tenant_id", "model"])["value"].sum().sort_values(ascending=False)
    out: dict[str, list[str]] = {}
    for (tenant, model), _total in totals.items():
        out.setdefault(str(tenant), []).append(str(model))
    if per_tenant is not None:
        out = {t: models[:per_tenant] for t, models in out.items()}
    return out


def select(
    series: dict[SeriesSpec, pd.Series],
    *,
    tenants: Iterable[str] = (),
    models: Iterable[str] = (),
    allowed_models: dict[str, list[str]] | None = None,
) -> dict[SeriesSpec, pd.Series]:
    """Keep series of the given tenants and models (empty: all), and, per tenant, only the models
    listed in `allowed_models` (series without a model are always kept)."""
    tenants, models = set(tenants), set(models)
    out = {}
    for spec, values in series.items():
        if tenants and spec.tenant_id not in tenants:
            continue
        if spec.model is not None:
            if models and spec.model not in models:
                continue
            if allowed_models is not None and spec.model not in allowed_models.get(spec.tenant_id, []):
                continue
        out[spec] = values
    return out


def utc(moment) -> pd.Timestamp:
    """A timestamp or datetime as an aware UTC pandas Timestamp (naive means UTC)."""
    ts = pd.Timestamp(moment)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def history_days(series: pd.Series) -> float:
    """Days between the first and the last non-missing point."""
    valid = series.dropna()
    if len(valid) < 2:
        return 0.0
    return (valid.index[-1] - valid.index[0]) / pd.Timedelta(days=1)


def md_cell(value) -> str:
    """A value for a markdown table cell (pipes in series keys escaped, no line breaks)."""
    return str(value).replace("|", "\\|").replace("\n", " ")
