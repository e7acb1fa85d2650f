"""Evaluate alert rules as of a moment: which rules fire, and for which groups.

Plain Python (no Dagster). Threshold and rate-of-change rules read the query interface
(`hub_pipelines.query.query`), so an alert's numbers are those `hub query` gives; anomaly and
predictive rules read the anomalies and forecasts tables; composite rules combine the firings of
the rules they name. Nothing here writes: `hub_pipelines.alerts.lifecycle` turns firings into
stored alerts.

Time: a rule is evaluated as of `as_of` (data time). `resolve_as_of("latest")` is the end of the
newest rolled-up hour (never after now), so evaluating a history loaded today, or a live stream,
looks at the last complete hour of data either way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import sqlalchemy as sa

from hub_pipelines.alerts.rules import (
    ANOMALY_SEVERITIES,
    AnomalyRule,
    CompositeRule,
    PredictiveRule,
    RateOfChangeRule,
    RuleSet,
    ThresholdRule,
    format_duration,
)
from hub_pipelines.query import parse_time, query
from hub_pipelines.warehouse import tables
from hub_pipelines.warehouse.store import Warehouse

log = logging.getLogger(__name__)

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
}


@dataclass(frozen=True)
class Firing:
    """One rule firing for one group (labels: tenant_id first, then the rule's other keys)."""

    rule_id: str
    rule_type: str
    severity: str
    labels: dict[str, Any]
    summary: str
    value: float | None = None
    threshold: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def tenant_id(self) -> str | None:
        return self.labels.get("tenant_id")

    @property
    def fingerprint(self) -> str:
        """Stable across evaluations: the rule and the group, nothing that changes with the data."""
        return fingerprint(self.rule_id, self.labels)


def fingerprint(rule_id: str, labels: dict[str, Any]) -> str:
    text = json.dumps({"rule": rule_id, "labels": labels}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:40]


@dataclass
class Evaluation:
    as_of: datetime
    firings: dict[str, list[Firing]] = field(default_factory=dict)  # every rule evaluated
    errors: dict[str, str] = field(default_factory=dict)  # rule id -> why it could not be evaluated

    def alerting(self, ruleset: RuleSet) -> list[Firing]:
        """Firings of the standalone rules: the ones that become alerts."""
        standalone = {r.id for r in ruleset.rules if r.standalone}
        return [f for rule_id, fs in self.firings.items() if rule_id in standalone for f in fs]


# -- as-of ---------------------------------------------------------------------------------------


def resolve_as_of(warehouse: Warehouse, spec: str | datetime | None = "latest", now: datetime | None = None):
    """ "latest" (default): the end of the newest rolled-up hour, at most now (now when nothing is
    rolled up yet); "now": the clock; an ISO-8601 time or a datetime: that moment (UTC)."""
    now = now or datetime.now(UTC)
    if isinstance(spec, datetime):
        return parse_time(spec)
    if spec in (None, "", "latest"):
        with warehouse.connect() as conn:
            newest = conn.execute(
                sa.select(sa.func.max(tables.rollup_partitions.c.partition_end)).where(
                    tables.rollup_partitions.c.grain == "hour"
                )
            ).scalar_one()
        if newest is None:
            return now
        newest = parse_time(newest)
        return min(newest, now)
    if spec == "now":
        return now
    return parse_time(spec)


# -- the evaluation ----------------------------------------------------------------------------


@contextmanager
def hold_open(warehouse: Warehouse) -> Iterator[None]:
    """Keep the embedded DuckDB database open across many short queries: each query opens its own
    connection, and the last one to close would shut the database down (and the next would open
    it again, a few milliseconds each time). A no-op on PostgreSQL (pooled connections)."""
    if not warehouse.is_duckdb:
        yield
        return
    with warehouse.connect():
        yield


def evaluate(warehouse: Warehouse, ruleset: RuleSet, as_of: datetime) -> Evaluation:
    """Evaluate every rule as of `as_of`. A rule that fails (a query error, a missing table) is
    recorded in `errors` and the others go on; the lifecycle leaves that rule's alerts as they are."""
    as_of = parse_time(as_of)
    result = Evaluation(as_of=as_of)
    by_id = {r.id: r for r in ruleset.rules}

    def run(rule_id: str) -> list[Firing] | None:
        if rule_id in result.firings:
            return result.firings[rule_id]
        if rule_id in result.errors:
            return None
        rule = by_id[rule_id]
        try:
            if isinstance(rule, CompositeRule):
                children = [run(ref) for ref in rule.rules]
                if any(c is None for c in children):
                    failed = [ref for ref, c in zip(rule.rules, children, strict=True) if c is None]
                    raise RuleEvaluationError(f"depends on rules that failed: {', '.join(failed)}")
                firings = _composite(rule, children)
            else:
                firings = EVALUATORS[type(rule)](warehouse, rule, as_of)
        except Exception as exc:  # noqa: BLE001 - one broken rule must not stop the others
            log.warning("alert rule %s could not be evaluated: %s", rule_id, exc)
            result.errors[rule_id] = f"{type(exc).__name__}: {exc}"
            return None
        result.firings[rule_id] = firings
        return firings

    with hold_open(warehouse):
        for rule in ruleset.rules:
            run(rule.id)
    return result


class RuleEvaluationError(RuntimeError):
    pass


def _floor(moment: datetime, step: timedelta) -> datetime:
    seconds = int(step.total_seconds())
    epoch = int(moment.timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, UTC)


def _format(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if abs(value) >= 1000 or value == int(value):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:g}"
    return f"{value:.4g}"


def _group_text(labels: dict[str, Any]) -> str:
    parts = [f"{k}={'(none)' if v is None else v}" for k, v in labels.items() if k != "tenant_id"]
    return f"{labels.get('tenant_id')}" + (f" ({', '.join(parts)})" if parts else "")


class _Safe(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _summary(rule, default: str, values: dict[str, Any]) -> str:
    if not rule.summary:
        return default
    try:
        return rule.summary.format_map(_Safe(values))
    except (ValueError, TypeError, IndexError, AttributeError):
        return default


def _groups(frame: pd.DataFrame, keys: list[str]):
    """(labels, rows) per group of a query result (None where a dimension is NULL)."""
    if frame.empty:
        return
    for values, rows in frame.groupby(keys, dropna=False, sort=True):
        values = values if isinstance(values, tuple) else (values,)
        labels = {k: (None if v is None or (isinstance(v, float) and math.isnan(v)) else v)
                  for k, v in zip(keys, values, strict=True)}  # fmt: skip
        yield labels, rows


def _series(rows: pd.DataFrame) -> dict[datetime, float]:
    return {ts.to_pydatetime(): float(v) for ts, v in zip(rows["bucket_start"], rows["value"], strict=True)}


def _label_key(labels: dict[str, Any]) -> tuple:
    return tuple(sorted((k, "" if v is None else str(v)) for k, v in labels.items()))


# -- threshold -----------------------------------------------------------------------------------


def _threshold(warehouse: Warehouse, rule: ThresholdRule, as_of: datetime) -> list[Firing]:
    step = rule.bucket_delta
    end = _floor(as_of, step)
    start = end - rule.for_
    buckets = [start + i * step for i in range(int(rule.for_ / step))]
    keys = rule.keys
    # A counter below a limit: a group with no events in the window is at 0, so the groups are
    # taken from a longer look back (a day, or the window again) to see who went quiet.
    quiet_counts = rule.is_counter and rule.op in ("<", "<=")
    look_from = start - max(DAY, rule.for_) if quiet_counts else start
    frame = query(
        warehouse, rule.metric, start=look_from, end=end, bucket=rule.bucket, agg=rule.agg,
        group_by=keys, filters=rule.scope.query_filters(),
    )  # fmt: skip
    compare = _OPS[rule.op]
    firings = []
    for labels, rows in _groups(frame, keys):
        seen = _series(rows)
        values = [seen.get(b, 0.0 if rule.is_counter else math.nan) for b in buckets]
        if any(math.isnan(v) for v in values) or not all(compare(v, rule.value) for v in values):
            continue
        agg = frame.attrs.get("agg")
        values_text = ", ".join(_format(v) for v in values)
        default = (
            f"{rule.title}: {rule.metric} {agg} {rule.op} {_format(rule.value)} for {format_duration(rule.for_)}"
            f" for {_group_text(labels)}; last {rule.bucket} buckets: {values_text}"
        )
        details = {
            "metric": rule.metric,
            "agg": agg,
            "op": rule.op,
            "for": format_duration(rule.for_),
            "bucket": rule.bucket,
            "window_start": start.isoformat(),
            "window_end": end.isoformat(),
            "values": values,
        }
        firings.append(
            Firing(
                rule.id,
                rule.type,
                rule.severity,
                labels,
                _summary(rule, default, {**labels, **details, "value": values[-1], "threshold": rule.value}),
                value=values[-1],
                threshold=rule.value,
                details=details,
            )  # fmt: skip
        )
    return firings


# -- rate of change ----------------------------------------------------------------------------


def _rate_of_change(warehouse: Warehouse, rule: RateOfChangeRule, as_of: datetime) -> list[Firing]:
    step = rule.bucket_delta
    end = _floor(as_of, step)
    current_start = end - step
    base_start, base_end = current_start - rule.offset, end - rule.offset
    keys = rule.keys
    common = dict(bucket=rule.bucket, agg=rule.agg, group_by=keys, filters=rule.scope.query_filters())
    current = query(warehouse, rule.metric, start=current_start, end=end, **common)
    base = query(warehouse, rule.metric, start=base_start, end=base_end, **common)
    now_values = {_label_key(labels): (labels, _series(rows)) for labels, rows in _groups(current, keys)}
    base_values = {_label_key(labels): (labels, _series(rows)) for labels, rows in _groups(base, keys)}
    missing = 0.0 if rule.is_counter else math.nan
    firings = []
    for key in sorted(set(now_values) | set(base_values)):
        labels = (now_values.get(key) or base_values[key])[0]
        value = now_values[key][1].get(current_start, missing) if key in now_values else missing
        before = base_values[key][1].get(base_start, missing) if key in base_values else missing
        if math.isnan(value) or math.isnan(before) or abs(before) <= rule.min_base or before == 0:
            continue
        change = (value - before) / abs(before) * 100.0
        fires = {
            "up": change >= rule.change_pct,
            "down": change <= -rule.change_pct,
            "either": abs(change) >= rule.change_pct,
        }[rule.direction]
        if not fires:
            continue
        agg = current.attrs.get("agg")
        default = (
            f"{rule.title}: {rule.metric} {agg} for {_group_text(labels)} changed {change:+.0f}%"
            f" ({_format(before)} -> {_format(value)}) over {rule.bucket} against {format_duration(rule.offset)} earlier"
        )
        details = {
            "metric": rule.metric,
            "agg": agg,
            "bucket": rule.bucket,
            "bucket_start": current_start.isoformat(),
            "compare_to": format_duration(rule.offset),
            "base_bucket_start": base_start.isoformat(),
            "base_value": before,
            "change_pct": change,
            "direction": rule.direction,
        }
        firings.append(
            Firing(
                rule.id,
                rule.type,
                rule.severity,
                labels,
                _summary(rule, default, {**labels, **details, "value": value, "threshold": rule.change_pct}),
                value=value,
                threshold=rule.change_pct,
                details=details,
            )  # fmt: skip
        )
    return firings


# -- anomaly ---------------------------------------------------------------------------------------


def _dimension_clauses(table: sa.Table, scope) -> list:
    clauses = []
    if scope.tenant is not None:
        clauses.append(table.c.tenant_id.in_(scope.tenant))
    for name, value in scope.dimensions.items():
        column = table.c[name]
        if value is None:
            clauses.append(column.is_(None))
        elif isinstance(value, list):
            clauses.append(column.in_(value))
        else:
            clauses.append(column == value)
    return clauses


def _rows(warehouse: Warehouse, statement) -> pd.DataFrame:
    with warehouse.connect() as conn:
        result = conn.execute(statement)
        return pd.DataFrame(result.mappings().all(), columns=list(result.keys()))


def _anomaly(warehouse: Warehouse, rule: AnomalyRule, as_of: datetime) -> list[Firing]:
    table = tables.anomalies
    ranks = {name: i for i, name in enumerate(ANOMALY_SEVERITIES)}
    wanted = [s for s in ANOMALY_SEVERITIES if ranks[s] >= ranks[rule.min_severity]]
    clauses = [
        table.c.ts >= as_of - rule.lookback,
        table.c.ts < as_of,
        table.c.severity.in_(wanted),
        table.c.score >= rule.min_score,
        *_dimension_clauses(table, rule.scope),
    ]
    if rule.metrics is not None:
        clauses.append(table.c.metric.in_(rule.metrics))
    frame = _rows(warehouse, sa.select(table).where(*clauses))
    firings = []
    if frame.empty:
        return firings
    frame["rank"] = frame["severity"].map(ranks)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    for series_key, rows in frame.groupby("series_key", sort=True):
        worst = rows.sort_values(["rank", "score", "ts"], ascending=False).iloc[0]
        labels = {
            "tenant_id": worst["tenant_id"],
            "metric": worst["metric"],
            "model": _none(worst["model"]),
            "project": _none(worst["project"]),
        }
        value = _float(worst["value"])
        default = (
            f"{rule.title}: {worst['severity']} anomaly in {worst['metric']} for {_group_text(labels)} at"
            f" {worst['ts'].isoformat()}: {_format(value)} outside"
            f" [{_format(_float(worst['expected_low']))}, {_format(_float(worst['expected_high']))}]."
            f" {worst['explanation']}"
        )
        details = {
            "series_key": series_key,
            "ts": worst["ts"].isoformat(),
            "anomaly_severity": worst["severity"],
            "score": float(worst["score"]),
            "confidence": float(worst["confidence"]),
            "expected_low": _float(worst["expected_low"]),
            "expected_high": _float(worst["expected_high"]),
            "explanation": worst["explanation"],
            "detected_by": _json(worst["detected_by"]),
            "model_version": _none(worst["model_version"]),
            "anomalous_hours": int(len(rows)),
        }
        firings.append(
            Firing(
                rule.id,
                rule.type,
                rule.severity,
                labels,
                _summary(rule, default, {**labels, **details, "value": value, "threshold": None}),
                value=value,
                threshold=None,
                details=details,
            )  # fmt: skip
        )
    return firings


def _none(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def _float(value) -> float | None:
    value = _none(value)
    return None if value is None else float(value)


def _json(text):
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


# -- predictive ------------------------------------------------------------------------------------


def latest_forecasts(
    warehouse: Warehouse,
    *,
    metric: str | None = None,
    scenario: str = "baseline",
    scope=None,
    tenant_id: str | None = None,
) -> pd.DataFrame:
    """The newest forecast of each series (latest trained_at), one row per target time (the
    shortest horizon that covers it). Also used by the forecast report."""
    table = tables.forecasts
    clauses = [table.c.scenario == scenario]
    if metric is not None:
        clauses.append(table.c.metric == metric)
    if tenant_id is not None:
        clauses.append(table.c.tenant_id == tenant_id)
    if scope is not None:
        clauses += _dimension_clauses(table, scope)
    newest = (
        sa.select(table.c.series_key, sa.func.max(table.c.trained_at).label("newest"))
        .where(*clauses)
        .group_by(table.c.series_key)
        .subquery()
    )
    statement = (
        sa.select(table)
        .join(
            newest, sa.and_(table.c.series_key == newest.c.series_key, table.c.trained_at == newest.c.newest)
        )
        .where(*clauses)
    )
    frame = _rows(warehouse, statement)
    if frame.empty:
        return frame
    frame["target_ts"] = pd.to_datetime(frame["target_ts"], utc=True)
    frame["trained_at"] = pd.to_datetime(frame["trained_at"], utc=True)
    frame = frame.sort_values(["series_key", "target_ts", "horizon_days"])
    frame = frame.drop_duplicates(["series_key", "target_ts"], keep="first")
    return frame.reset_index(drop=True)


def period_bounds(as_of: datetime, period: str) -> tuple[datetime, datetime | None]:
    """Start and end (None: open) of the budget period containing as_of (UTC)."""
    midnight = as_of.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "month":
        start = midnight.replace(day=1)
        end = (
            start.replace(year=start.year + 1, month=1)
            if start.month == 12
            else start.replace(month=start.month + 1)
        )
        return start, end
    if period == "week":
        start = midnight - timedelta(days=midnight.weekday())
        return start, start + timedelta(days=7)
    if period == "day":
        return midnight, midnight + DAY
    return as_of, None


def _predictive(warehouse: Warehouse, rule: PredictiveRule, as_of: datetime) -> list[Firing]:
    frame = latest_forecasts(warehouse, metric=rule.metric, scenario=rule.scenario, scope=rule.scope)
    firings = []
    if frame.empty:
        return firings
    horizon_end = as_of + rule.horizon
    period_start, period_end = period_bounds(as_of, rule.period if rule.mode == "cumulative" else "none")
    window_end = min(horizon_end, period_end) if period_end is not None else horizon_end
    for series_key, rows in frame.groupby("series_key", sort=True):
        first = rows.iloc[0]
        labels = {
            "tenant_id": first["tenant_id"],
            "metric": first["metric"],
            "model": _none(first["model"]),
            "project": _none(first["project"]),
        }
        step = HOUR if first["granularity"] == "hour" else DAY
        points = []
        for target, band in zip(rows["target_ts"], rows[rule.band], strict=True):
            lo = max(target.to_pydatetime(), as_of)
            hi = min(target.to_pydatetime() + step, window_end)
            if hi > lo:
                points.append((target.to_pydatetime(), lo, (hi - lo) / step, float(band)))
        crossing, value, actual = None, None, None
        if rule.mode == "level":
            for _target, moment, _fraction, band in points:
                if band >= rule.limit:
                    crossing, value = moment, band
                    break
            peak = max((p[3] for p in points), default=None)
            projected = peak
        else:
            actual = _actual_total(warehouse, rule, labels, period_start, as_of)
            total = actual
            if total >= rule.limit:
                crossing, value = as_of, total
            for _target, moment, fraction, band in points:
                before = total
                total += fraction * band
                if crossing is None and total >= rule.limit:
                    # Within the point, assume an even rate to place the crossing.
                    share = (rule.limit - before) / (total - before) if total > before else 0.0
                    crossing = moment + (step * fraction) * share
                    value = total
            projected = total
        if crossing is None:
            continue
        days = (crossing - as_of).total_seconds() / 86400
        what = "budget" if rule.mode == "cumulative" else "limit"
        default = (
            f"{rule.title}: {rule.metric} for {_group_text(labels)} is forecast to reach its {what} of"
            f" {_format(rule.limit)} on {crossing:%Y-%m-%d %H:%M} UTC (in {days:.1f} days)"
            + (f"; {_format(actual)} so far this {rule.period}" if actual is not None else "")
        )
        details = {
            "series_key": series_key,
            "mode": rule.mode,
            "band": rule.band,
            "limit": rule.limit,
            "within_days": rule.within_days,
            "crossing_at": crossing.isoformat(),
            "days_to_crossing": days,
            "projected": projected,
            "actual_to_date": actual,
            "period": rule.period if rule.mode == "cumulative" else None,
            "period_start": period_start.isoformat() if rule.mode == "cumulative" else None,
            "model_name": first["model_name"],
            "model_version": _none(first["model_version"]),
            "trained_at": first["trained_at"].isoformat(),
        }
        firings.append(
            Firing(
                rule.id,
                rule.type,
                rule.severity,
                labels,
                _summary(rule, default, {**labels, **details, "value": value, "threshold": rule.limit}),
                value=value,
                threshold=rule.limit,
                details=details,
            )  # fmt: skip
        )
    return firings


def _actual_total(
    warehouse: Warehouse, rule: PredictiveRule, labels: dict, start: datetime, end: datetime
) -> float:
    """The counter's total for the series' tenant (and model/project where the series has one)."""
    if end <= start:
        return 0.0
    filters = {k: v for k, v in labels.items() if k in ("tenant_id", "model", "project") and v is not None}
    frame = query(
        warehouse, rule.actual_metric or rule.metric, start=start, end=end, bucket="1h", filters=filters
    )
    return float(frame["value"].sum()) if len(frame) else 0.0


# -- composite -------------------------------------------------------------------------------------


def _composite(rule: CompositeRule, children: list[list[Firing]]) -> list[Firing]:
    def key(firing: Firing) -> tuple:
        return tuple(firing.labels.get(name) for name in rule.match_on)

    per_child = [{key(f): f for f in sorted(fs, key=lambda f: f.fingerprint)} for fs in children]
    if rule.operator == "and":
        matched = set(per_child[0]).intersection(*per_child[1:]) if per_child else set()
    else:
        matched = set().union(*per_child)
    firings = []
    for group in sorted(matched, key=lambda k: tuple("" if v is None else str(v) for v in k)):
        labels = dict(zip(rule.match_on, group, strict=True))
        parts = [
            {"rule_id": ref, "summary": child[group].summary, "value": child[group].value}
            for ref, child in zip(rule.rules, per_child, strict=True)
            if group in child
        ]
        joiner = " AND " if rule.operator == "and" else " OR "
        default = f"{rule.title} for {_group_text(labels)}: " + joiner.join(p["rule_id"] for p in parts)
        details = {"operator": rule.operator, "match_on": rule.match_on, "children": parts}
        firings.append(
            Firing(
                rule.id,
                rule.type,
                rule.severity,
                labels,
                _summary(rule, default, {**labels, "value": None, "threshold": None}),
                value=None,
                threshold=None,
                details=details,
            )  # fmt: skip
        )
    return firings


EVALUATORS: dict[type, Callable[[Warehouse, Any, datetime], list[Firing]]] = {
    ThresholdRule: _threshold,
    RateOfChangeRule: _rate_of_change,
    AnomalyRule: _anomaly,
    PredictiveRule: _predictive,
}
