"""What can be asked: metrics, aggregations, buckets and dimensions (the query vocabulary).

Three kinds of metric:

- **values**: a number carried by each event, aggregated with any of count, sum, avg, min, max,
  p50, p95, p99. Every telemetry `metric_name` (latency_ms, ttft_ms, tokens_input, ...; values in
  the canonical unit: ms, bytes, count, per-second, ratio) and `cost_usd` (the USD amount of each
  cost event). Rollups: rollup_metrics_hourly/daily and their sketches.
- **counters**: additive counts and totals (requests, errors, spend_usd, threats, ...): agg "sum".
- **ratios**: composites computed per bucket and group from counter sums (error_rate =
  errors / requests, ...): agg "avg" (the ratio of the sums, i.e. the request-weighted mean).

Counters and ratios are defined over the raw events exactly as the rollups compute them
(`hub_pipelines.warehouse.rollups`), so reading either gives the same numbers. Three of them share
a name with a telemetry metric a source may send itself (error_rate, throughput_rps, tokens_total):
the name means hub's composite, and `telemetry:<name>` the values the sources sent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from hub_pipelines.events import contract
from hub_pipelines.warehouse import rollups
from hub_pipelines.warehouse.tables import (
    METRIC_ROLLUP_DIMENSIONS,
    POLICY_ROLLUP_DIMENSIONS,
    SECURITY_ROLLUP_DIMENSIONS,
    USAGE_ROLLUP_DIMENSIONS,
)

BUCKETS: dict[str, int] = {"1m": 60, "5m": 300, "1h": 3600, "1d": 86400}
AGGREGATIONS = ("count", "sum", "avg", "min", "max", "p50", "p95", "p99")
PERCENTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}

# Columns of the events table a query may filter and group by.
DIMENSIONS = (
    "tenant_id",
    "source_module",
    "event_type",
    "severity",
    "environment",
    "model",
    "provider",
    "project",
    "team",
    "region",
    "status",
    "asset_id",
    "cost_type",
    "threat_type",
    "policy_id",
    "policy_category",
    "outcome",
)
# Registry metadata of the asset an event concerns (its `asset_id`), looked up in asset_catalog, the
# latest record per asset: the name, version, owner and type the registry gives it now. Raw events only.
CATALOG_DIMENSIONS = {
    "asset_name": "asset_name",
    "asset_version": "version",
    "asset_owner": "owner",
    "asset_type": "asset_type",
}
ALIASES = {
    "tenant": "tenant_id",
    "source": "source_module",
    "type": "event_type",
    "category": "policy_category",
}
# `tags.<key>` filters and groups by one key of the event's tags (raw events only).
TAG_PREFIX = "tags."


@dataclass(frozen=True)
class Family:
    """A rollup family: its tables, its grain, and how its components are summed from raw events."""

    name: str
    hourly: str
    daily: str
    dimensions: tuple[str, ...]
    raw_where: str
    components: dict[str, str]  # component -> SQL aggregate over raw events (= sum of the rollup column)


USAGE = Family(
    "usage",
    "rollup_usage_hourly",
    "rollup_usage_daily",
    USAGE_ROLLUP_DIMENSIONS,
    rollups.USAGE_WHERE,
    rollups.USAGE_COMPONENTS_SQL,
)
SECURITY = Family(
    "security",
    "rollup_security_hourly",
    "rollup_security_daily",
    SECURITY_ROLLUP_DIMENSIONS,
    rollups.SECURITY_WHERE,
    rollups.SECURITY_COMPONENTS_SQL,
)
POLICY = Family(
    "policy",
    "rollup_policy_hourly",
    "rollup_policy_daily",
    POLICY_ROLLUP_DIMENSIONS,
    rollups.POLICY_WHERE,
    rollups.POLICY_COMPONENTS_SQL,
)
# Dimensions of the values rollups (metric_name is the metric itself).
VALUE_DIMENSIONS = tuple(d for d in METRIC_ROLLUP_DIMENSIONS if d != "metric_name")


def _ratio(num: str, den: str, scale: float = 1.0) -> Callable[[pd.DataFrame, int], pd.Series]:
    def compute(frame: pd.DataFrame, _seconds: int) -> pd.Series:
        den_values = frame[den].astype(float)
        return (frame[num].astype(float) * scale / den_values).where(den_values > 0)

    return compute


def _per_second(num: Callable[[pd.DataFrame], pd.Series]) -> Callable[[pd.DataFrame, int], pd.Series]:
    return lambda frame, seconds: num(frame).astype(float) / seconds


def _column(name: str) -> Callable[[pd.DataFrame, int], pd.Series]:
    return lambda frame, _seconds: frame[name].astype(float)


@dataclass(frozen=True)
class DerivedMetric:
    name: str
    family: Family
    kind: str  # "counter" or "ratio"
    unit: str
    description: str
    compute: Callable[[pd.DataFrame, int], pd.Series] = field(compare=False)

    @property
    def aggregations(self) -> tuple[str, ...]:
        return ("sum",) if self.kind == "counter" else ("avg",)


DERIVED: dict[str, DerivedMetric] = {
    m.name: m
    for m in [
        DerivedMetric("requests", USAGE, "counter", "count", "latency_ms events (request attempts)",
                      _column("requests")),
        DerivedMetric("errors", USAGE, "counter", "count", "requests whose status is set and not ok",
                      _column("errors")),
        DerivedMetric("tokens_total", USAGE, "counter", "count", "tokens_input + tokens_output",
                      lambda f, _s: f["tokens_input"].astype(float) + f["tokens_output"].astype(float)),
        DerivedMetric("spend_usd", USAGE, "counter", "USD", "sum of cost events' USD amounts",
                      _column("spend_usd")),
        DerivedMetric("cost_events", USAGE, "counter", "count", "cost events", _column("cost_events")),
        DerivedMetric("error_rate", USAGE, "ratio", "ratio", "errors / requests", _ratio("errors", "requests")),
        DerivedMetric("cost_per_request", USAGE, "ratio", "USD", "spend_usd / requests",
                      _ratio("spend_usd", "requests")),
        DerivedMetric("cost_per_1k_tokens", USAGE, "ratio", "USD",
                      "spend_usd / (tokens_input + tokens_output) x 1000",
                      lambda f, _s: _ratio("spend_usd", "_tokens", 1000.0)(
                          f.assign(_tokens=f["tokens_input"].astype(float) + f["tokens_output"].astype(float)), _s)),
        DerivedMetric("throughput_rps", USAGE, "ratio", "per_second", "requests / bucket seconds",
                      _per_second(lambda f: f["requests"])),
        DerivedMetric("error_adjusted_throughput_rps", USAGE, "ratio", "per_second",
                      "(requests - errors) / bucket seconds",
                      _per_second(lambda f: f["requests"].astype(float) - f["errors"].astype(float))),
        DerivedMetric("threats", SECURITY, "counter", "count", "security detections", _column("detections")),
        DerivedMetric("policy_evaluations", POLICY, "counter", "count", "policy evaluations",
                      _column("evaluations")),
        DerivedMetric("policy_passed", POLICY, "counter", "count", "evaluations that passed", _column("passed")),
        DerivedMetric("policy_failed", POLICY, "counter", "count", "evaluations that failed", _column("failed")),
        DerivedMetric("compliance_rate", POLICY, "ratio", "ratio", "passed / (passed + failed)",
                      lambda f, _s: _ratio("passed", "_judged")(
                          f.assign(_judged=f["passed"].astype(float) + f["failed"].astype(float)), _s)),
    ]
}  # fmt: skip

# Known values metrics and their units (any other telemetry metric name found in the data is
# accepted too).
VALUE_METRICS: dict[str, str] = dict(contract.METRIC_UNITS) | {rollups.COST_METRIC: "USD"}
# A values metric whose name a derived metric takes is asked for with this prefix.
TELEMETRY_PREFIX = "telemetry:"
SHADOWED = frozenset(VALUE_METRICS) & frozenset(DERIVED)


def describe() -> pd.DataFrame:
    """The known metrics: name, kind, unit, aggregations, description."""
    rows = [
        {
            "metric": TELEMETRY_PREFIX + name if name in SHADOWED else name,
            "kind": "values",
            "unit": unit,
            "aggregations": ",".join(AGGREGATIONS),
            "description": "USD amount of each cost event"
            if name == rollups.COST_METRIC
            else "telemetry metric_value",
        }
        for name, unit in VALUE_METRICS.items()
    ] + [
        {
            "metric": m.name,
            "kind": m.kind,
            "unit": m.unit,
            "aggregations": ",".join(m.aggregations),
            "description": m.description,
        }
        for m in DERIVED.values()
    ]
    return pd.DataFrame(rows)
