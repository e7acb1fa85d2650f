"""`query()`: metrics over time from the rollups where they can answer, raw events otherwise.

Plain Python (no Dagster): the ML training series, the reports and `hub query` are built on it, so
its signature and the shape of its result are kept stable.

How a query is answered
-----------------------
The time range is widened to whole buckets (start floored, end ceiled), so every bucket in the
result is complete, and rollups and raw events give the same numbers.

- Buckets of 1h or 1d, grouped and filtered only by dimensions a rollup keeps: the hours (and, for
  1d buckets, days) listed in `rollup_partitions` are read from the hourly (daily) rollups, the
  rest (the current hour, hours never rolled up) from the raw events; the partial aggregates are
  merged (counts and sums add, min of mins, max of maxes), so the answer is exact.
- Percentiles with exact=True (default) are read from the stored hourly p50/p95/p99 only when each
  result row is one hourly rollup row (1h buckets, every rollup dimension grouped by or fixed by a
  one-value filter, every hour rolled up); otherwise from the raw events, exactly
  (percentile_cont). With exact=False they are merged from the rollups' sketches (within 1%
  relative, see `hub_pipelines.warehouse.sketch`), which also works after raw events have passed
  their retention.
- 1m and 5m buckets, `tags.*`, and dimensions no rollup keeps (status, severity of a telemetry
  metric, ...) read raw events.

Rollups are refreshed when late events land (the late_events_rollup_sensor), so a rolled-up hour
can lag its raw events for the minute it takes the refresh to run.

Identifiers in the SQL come only from the allowlists in `catalogue`; every value is a bound
parameter.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from hub_pipelines.query.catalogue import (
    AGGREGATIONS,
    ALIASES,
    BUCKETS,
    CATALOG_DIMENSIONS,
    DERIVED,
    DIMENSIONS,
    PERCENTILES,
    TAG_PREFIX,
    TELEMETRY_PREFIX,
    VALUE_DIMENSIONS,
    VALUE_METRICS,
    DerivedMetric,
)
from hub_pipelines.warehouse import rollups, sketch
from hub_pipelines.warehouse.store import Warehouse

SOURCES = ("auto", "rollups", "events")
ORDERS = ("time", "-time", "value", "-value")
_TAG_KEY = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_RELATIVE = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w)\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
# Raw-event predicates are sent a few intervals at a time.
_INTERVALS_PER_QUERY = 32
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


class QueryError(ValueError):
    """A query that cannot be answered as asked (unknown name, bad range, ...); the message says
    what is allowed."""


def parse_since(text: str) -> timedelta:
    """'90s', '30m', '24h', '7d', '2w' -> timedelta."""
    match = _RELATIVE.match(str(text))
    if not match:
        raise QueryError(
            f"since={text!r}: use a number and a unit, e.g. 30m, 24h, 7d, 2w (units s, m, h, d, w)"
        )
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def parse_time(value: str | datetime) -> datetime:
    """An ISO-8601 string or datetime as an aware UTC datetime (naive means UTC)."""
    if isinstance(value, datetime):
        moment = value
    else:
        text = str(value).strip()
        if text[-1:] in ("Z", "z"):
            text = text[:-1] + "+00:00"
        try:
            moment = datetime.fromisoformat(text)
        except ValueError as exc:
            raise QueryError(f"{value!r} is not an ISO-8601 time (e.g. 2026-11-01T00:00:00Z)") from exc
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def query(
    warehouse: Warehouse,
    metric: str,
    *,
    since: str | timedelta | None = None,
    start: str | datetime | None = None,
    end: str | datetime | None = None,
    bucket: str = "1h",
    agg: str | None = None,
    group_by: Sequence[str] | str = (),
    filters: Mapping[str, Any] | None = None,
    order: str = "time",
    limit: int | None = None,
    exact: bool = True,
    source: str = "auto",
    now: datetime | None = None,
) -> pd.DataFrame:
    """One metric, aggregated per time bucket and group.

    Args:
        warehouse: the hub warehouse (DuckDB or PostgreSQL).
        metric: a values metric (a telemetry metric_name such as latency_ms, or cost_usd), a
            counter (requests, errors, tokens_total, spend_usd, cost_events, threats,
            policy_evaluations, policy_passed, policy_failed) or a ratio (error_rate,
            cost_per_request, cost_per_1k_tokens, throughput_rps, error_adjusted_throughput_rps,
            compliance_rate). `hub_pipelines.query.describe()` lists them. The composites
            error_rate, throughput_rps and tokens_total share their names with telemetry metrics a
            source may send; `telemetry:error_rate` (etc.) asks for those values instead.
        since: a relative range ending now: "30m", "24h", "7d", "2w" (or a timedelta). Default
            "24h" when neither since nor start is given.
        start, end: an absolute range (ISO-8601 or datetime; naive means UTC); end defaults to now.
        bucket: "1m", "5m", "1h" or "1d" (UTC buckets).
        agg: count, sum, avg, min, max, p50, p95 or p99 for values metrics (default avg); "sum"
            for counters and "avg" for ratios (their defaults).
        group_by: dimension names (see DIMENSIONS; aliases tenant, source, type, category),
            "tags.<key>", or the registry metadata of the event's asset from asset_catalog
            (asset_name, asset_version, asset_owner, asset_type; raw events).
        filters: {dimension: value} (equality), {dimension: [values]} (any of), {dimension: None}
            (is NULL); same names as group_by.
        order: "time" (bucket, then groups; default), "-time", "value" or "-value".
        limit: keep the first `limit` rows after ordering.
        exact: percentiles exactly (raw events unless stored hourly percentiles answer) or, when
            False, from the rollups' sketches (within 1% relative; survives raw retention).
        source: "auto" (default), "rollups" (never raw events: buckets not rolled up are absent)
            or "events" (raw events only).
        now: the current time for relative ranges (tests); default the clock.

    Returns:
        A DataFrame with columns bucket_start (UTC timestamps), the group_by dimensions in the order
        given (None where the dimension is NULL), and value (float64). Buckets without data are
        absent. `.attrs` holds the resolved query: metric, agg, bucket, start, end, group_by,
        filters and `sources` (table -> number of bucket partitions it answered).

    Raises:
        QueryError: unknown metric, aggregation, bucket, dimension, order or source, or a bad range;
            the message lists what is allowed.
    """
    plan = _plan(
        warehouse, metric, since, start, end, bucket, agg, group_by, filters, order, limit, exact, source, now
    )
    with warehouse.connect() as conn:
        frame = _execute(warehouse, conn, plan)
    frame = _finish(frame, plan)
    frame.attrs = {
        "metric": plan.metric,
        "agg": plan.agg,
        "bucket": plan.bucket,
        "start": plan.start.isoformat(),
        "end": plan.end.isoformat(),
        "group_by": list(plan.group_by),
        "filters": {k: v for k, v in plan.filters.items()},
        "exact": plan.exact,
        "sources": dict(plan.sources),
    }
    return frame


# -- planning -------------------------------------------------------------------------------------


@dataclass
class _Plan:
    metric: str
    derived: DerivedMetric | None
    agg: str
    bucket: str
    seconds: int
    start: datetime
    end: datetime
    group_by: tuple[str, ...]
    filters: dict[str, Any]
    order: str
    limit: int | None
    exact: bool
    source: str
    sources: dict[str, int] = field(default_factory=dict)

    @property
    def rollup_dimensions(self) -> tuple[str, ...]:
        return self.derived.family.dimensions if self.derived else VALUE_DIMENSIONS

    @property
    def uses_rollups(self) -> bool:
        """Whether the bucket and the names asked for allow reading rollups at all."""
        if self.source == "events" or self.bucket not in ("1h", "1d"):
            return False
        names = set(self.group_by) | set(self.filters)
        return names <= set(self.rollup_dimensions)


def _dimension(name: str) -> str:
    if not isinstance(name, str):
        raise QueryError(f"dimension names are strings, not {name!r}")
    canonical = ALIASES.get(name, name)
    if canonical in DIMENSIONS or canonical in CATALOG_DIMENSIONS:
        return canonical
    if canonical.startswith(TAG_PREFIX) and _TAG_KEY.match(canonical[len(TAG_PREFIX) :]):
        return canonical
    raise QueryError(
        f"unknown dimension {name!r}; allowed: {', '.join((*DIMENSIONS, *CATALOG_DIMENSIONS))}, "
        f"tags.<key> (key of letters, digits, _ or -), aliases {', '.join(f'{a}={c}' for a, c in ALIASES.items())}"
    )


def _plan(
    warehouse, metric, since, start, end, bucket, agg, group_by, filters, order, limit, exact, source, now
):
    if bucket not in BUCKETS:
        raise QueryError(f"unknown bucket {bucket!r}; allowed: {', '.join(BUCKETS)}")
    if source not in SOURCES:
        raise QueryError(f"unknown source {source!r}; allowed: {', '.join(SOURCES)}")
    if order not in ORDERS:
        raise QueryError(f"unknown order {order!r}; allowed: {', '.join(ORDERS)}")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise QueryError(f"limit must be a positive integer, not {limit!r}")
    if isinstance(metric, str) and metric.startswith(TELEMETRY_PREFIX):
        metric, derived = metric[len(TELEMETRY_PREFIX) :], None
    else:
        derived = DERIVED.get(metric)
    if derived is None:
        _check_values_metric(warehouse, metric)
        allowed = AGGREGATIONS
        agg = agg or "avg"
    else:
        allowed = derived.aggregations
        agg = agg or allowed[0]
    if agg not in allowed:
        kind = f"{derived.kind} {metric!r}" if derived else f"values metric {metric!r}"
        raise QueryError(f"unknown aggregation {agg!r} for {kind}; allowed: {', '.join(allowed)}")
    if isinstance(group_by, str):
        group_by = [g for g in group_by.split(",") if g.strip()]
    groups = tuple(_dimension(g.strip()) for g in group_by)
    if len(set(groups)) != len(groups):
        raise QueryError(f"group_by names a dimension twice: {list(group_by)}")
    checked: dict[str, Any] = {}
    for name, value in (filters or {}).items():
        canonical = _dimension(name)
        if isinstance(value, (list, tuple, set, frozenset)):
            values = sorted({str(v) for v in value})
            if not values:
                raise QueryError(f"filter {name!r} has an empty list of values")
            checked[canonical] = values
        elif value is None or isinstance(value, (str, int, float, bool)):
            checked[canonical] = None if value is None else str(value)
        else:
            raise QueryError(
                f"filter {name!r}: use a value, a list of values or None, not {type(value).__name__}"
            )
    begin, finish = _time_range(since, start, end, now)
    seconds = BUCKETS[bucket]
    begin = _floor(begin, seconds)
    finish = _ceil(finish, seconds)
    if finish <= begin:
        raise QueryError(
            f"empty time range: start {begin.isoformat()} is not before end {finish.isoformat()}"
        )
    return _Plan(
        metric, derived, agg, bucket, seconds, begin, finish, groups, checked, order, limit, exact, source
    )


def _time_range(since, start, end, now) -> tuple[datetime, datetime]:
    now = parse_time(now) if now is not None else datetime.now(UTC)
    if since is not None and start is not None:
        raise QueryError("give either since (relative) or start/end (absolute), not both")
    if start is None:
        span = since if isinstance(since, timedelta) else parse_since(since if since is not None else "24h")
        if end is not None:
            raise QueryError("end needs start; since always ends now")
        return now - span, now
    return parse_time(start), parse_time(end) if end is not None else now


def _floor(moment: datetime, seconds: int) -> datetime:
    epoch = int(moment.timestamp() // 1)
    return datetime.fromtimestamp(epoch - epoch % seconds, UTC)


def _ceil(moment: datetime, seconds: int) -> datetime:
    floored = _floor(moment, seconds)
    return floored if floored == moment else floored + timedelta(seconds=seconds)


def _check_values_metric(warehouse: Warehouse, metric: str) -> None:
    if not isinstance(metric, str) or not metric:
        raise QueryError(f"metric must be a name, not {metric!r}")
    if metric in VALUE_METRICS:
        return
    with warehouse.connect() as conn:
        found = conn.execute(
            sa.text(
                "SELECT 1 FROM rollup_metrics_hourly WHERE metric_name = :m"
                " UNION ALL SELECT 1 FROM events WHERE event_type = 'telemetry' AND metric_name = :m LIMIT 1"
            ),
            {"m": metric},
        ).first()
        if found:
            return
        seen = sorted(
            set(
                conn.execute(
                    sa.text(
                        "SELECT DISTINCT metric_name FROM rollup_metrics_daily ORDER BY metric_name LIMIT 200"
                    )
                ).scalars()
            )
            - set(VALUE_METRICS)
        )
    known = [*VALUE_METRICS, *seen, *DERIVED]
    raise QueryError(f"unknown metric {metric!r}; allowed: {', '.join(known)}")


# -- SQL pieces -------------------------------------------------------------------------------------


class _Sql:
    """Collects bound parameters while SQL text is assembled from allowlisted identifiers."""

    def __init__(self, warehouse: Warehouse) -> None:
        self.warehouse = warehouse
        self.params: dict[str, Any] = {}
        self.expanding: list[str] = []

    def bind(self, value: Any, expanding: bool = False) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        if expanding:
            self.expanding.append(name)
        return f":{name}"

    def text(self, sql: str) -> sa.TextClause:
        clause = sa.text(sql)
        if self.expanding:
            clause = clause.bindparams(*(sa.bindparam(n, expanding=True) for n in self.expanding))
        return clause

    def dimension(self, name: str, alias: str = "") -> str:
        """SQL for a dimension of the events table (tags.<key> parsed from the JSON text; the
        registry's asset_* looked up in asset_catalog, which needs the events table aliased)."""
        prefix = f"{alias}." if alias else ""
        if name in CATALOG_DIMENSIONS:
            if not alias:
                raise ValueError(f"{name} needs the events table aliased")
            return (
                f"(SELECT c.{CATALOG_DIMENSIONS[name]} FROM asset_catalog c"
                f" WHERE c.tenant_id = {alias}.tenant_id AND c.asset_id = {alias}.asset_id)"
            )
        if name in DIMENSIONS:
            return f"{prefix}{name}"
        key = name[len(TAG_PREFIX) :]
        if self.warehouse.is_duckdb:
            return f"json_extract_string({prefix}tags, {self.bind('$.' + key)})"
        return f"(CAST({prefix}tags AS json) ->> {self.bind(key)})"

    def filters(self, filters: Mapping[str, Any], alias: str = "") -> str:
        parts = []
        for name, value in filters.items():
            column = self.dimension(name, alias)
            if value is None:
                parts.append(f"{column} IS NULL")
            elif isinstance(value, list):
                parts.append(f"{column} IN {self.bind(value, expanding=True)}")
            else:
                parts.append(f"{column} = {self.bind(value)}")
        return " AND ".join(parts) if parts else "TRUE"

    def intervals(self, column: str, spans: Sequence[tuple[datetime, datetime]]) -> str:
        return (
            "("
            + " OR ".join(f"({column} >= {self.bind(s)} AND {column} < {self.bind(e)})" for s, e in spans)
            + ")"
        )


def _bucket_sql(column: str, seconds: int) -> str:
    return (
        f"CAST(floor(CAST(extract(epoch FROM {column}) AS DOUBLE PRECISION) / {int(seconds)}) AS BIGINT)"
        f" * {int(seconds)}"
    )


def _group_aliases(plan: _Plan) -> list[str]:
    return [f"g{i}" for i in range(len(plan.group_by))]


# -- execution ------------------------------------------------------------------------------------------


@dataclass
class _Coverage:
    daily: list[tuple[datetime, datetime]]
    hourly: list[tuple[datetime, datetime]]
    raw: list[tuple[datetime, datetime]]


def _coverage(conn, plan: _Plan) -> _Coverage:
    whole = [(plan.start, plan.end)]
    if not plan.uses_rollups:
        return _Coverage([], [], whole)
    rows = conn.execute(
        sa.text(
            "SELECT grain, partition_start FROM rollup_partitions"
            " WHERE partition_start >= :start AND partition_start < :end"
        ),
        {"start": plan.start - DAY, "end": plan.end},
    ).all()
    hours = {_utc(s) for g, s in rows if g == "hour"}
    days = {_utc(s) for g, s in rows if g == "day"} if plan.bucket == "1d" else set()
    daily, hourly, raw = [], [], []
    cursor = plan.start
    while cursor < plan.end:
        if cursor in days and cursor + DAY <= plan.end:
            daily.append((cursor, cursor + DAY))
            cursor += DAY
            continue
        (hourly if cursor in hours else raw).append((cursor, cursor + HOUR))
        cursor += HOUR
    if plan.source == "rollups":
        raw = []
    return _Coverage(_merge_spans(daily), _merge_spans(hourly), _merge_spans(raw))


def _merge_spans(spans: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    merged: list[tuple[datetime, datetime]] = []
    for s, e in spans:
        if merged and merged[-1][1] == s:
            merged[-1] = (merged[-1][0], e)
        else:
            merged.append((s, e))
    return merged


def _count_buckets(spans, step: timedelta) -> int:
    return sum(int((e - s) / step) for s, e in spans)


def _execute(warehouse: Warehouse, conn, plan: _Plan) -> pd.DataFrame:
    coverage = _coverage(conn, plan)
    if plan.derived is not None:
        return _derived(warehouse, conn, plan, coverage)
    if plan.agg in PERCENTILES:
        if plan.exact or not plan.uses_rollups:
            stored = _stored_percentiles(warehouse, conn, plan, coverage)
            if stored is not None:
                return stored
            if plan.source == "rollups":
                raise QueryError(
                    f"{plan.agg} over {plan.bucket} buckets grouped by {list(plan.group_by)} cannot be read"
                    " exactly from rollups (each row would merge several stored percentiles); use"
                    " exact=False (sketches, within 1%), source='auto' (raw events), or group by every"
                    f" rollup dimension ({', '.join(VALUE_DIMENSIONS)})"
                )
            return _raw_percentiles(warehouse, conn, plan)
        return _sketch_percentiles(warehouse, conn, plan, coverage)
    return _value_aggregates(warehouse, conn, plan, coverage)


def _read(conn, sql: _Sql, text: str, columns: list[str]) -> pd.DataFrame:
    rows = conn.execute(sql.text(text), sql.params).all()
    return pd.DataFrame.from_records(rows, columns=columns)


def _raw_chunks(spans):
    for i in range(0, len(spans), _INTERVALS_PER_QUERY):
        yield spans[i : i + _INTERVALS_PER_QUERY]


def _values_raw_source(sql: _Sql, plan: _Plan, spans) -> str:
    """(bk, g0.., v) rows of a values metric from raw events (telemetry values and cost amounts)."""
    groups = ", ".join(
        f"{sql.dimension(d, 'e')} AS {a}" for d, a in zip(plan.group_by, _group_aliases(plan), strict=True)
    )
    metric = sql.bind(plan.metric)
    filters = sql.filters(plan.filters, "e")
    time_filter = sql.intervals("event_time", spans)
    parts = []
    for name, value, where in rollups.METRIC_VALUE_SOURCES:
        parts.append(
            f"SELECT {_bucket_sql('event_time', plan.seconds)} AS bk{', ' + groups if groups else ''},"
            f" {value} AS v FROM events e"
            f" WHERE {where} AND {name} = {metric} AND {time_filter} AND {filters}"
        )
    return " UNION ALL ".join(parts)


def _rollup_source(sql: _Sql, plan: _Plan, table: str, spans, columns: str, where: str = "TRUE") -> str:
    groups = ", ".join(f"{d} AS {a}" for d, a in zip(plan.group_by, _group_aliases(plan), strict=True))
    return (
        f"SELECT {_bucket_sql('bucket_start', plan.seconds)} AS bk{', ' + groups if groups else ''}, {columns}"
        f" FROM {table} WHERE {where} AND {sql.intervals('bucket_start', spans)} AND {sql.filters(plan.filters)}"
    )


def _group_list(plan: _Plan) -> str:
    return ", ".join(["bk", *_group_aliases(plan)])


def _value_aggregates(warehouse, conn, plan: _Plan, coverage: _Coverage) -> pd.DataFrame:
    keys = _group_list(plan)
    columns = ["bk", *_group_aliases(plan), "n", "s", "mn", "mx"]
    parts = []
    for table, spans in (
        ("rollup_metrics_daily", coverage.daily),
        ("rollup_metrics_hourly", coverage.hourly),
    ):
        if not spans:
            continue
        sql = _Sql(warehouse)
        source = _rollup_source(
            sql, plan, table, spans, "value_count, value_sum, value_min, value_max",
            where=f"metric_name = {sql.bind(plan.metric)}",
        )  # fmt: skip
        parts.append(
            _read(
                conn,
                sql,
                f"SELECT {keys}, CAST(sum(value_count) AS DOUBLE PRECISION), sum(value_sum), min(value_min),"
                f" max(value_max) FROM ({source}) t GROUP BY {keys}",
                columns,
            )
        )
        plan.sources[table] = _count_buckets(spans, DAY if table.endswith("daily") else HOUR)
    for chunk in _raw_chunks(coverage.raw):
        sql = _Sql(warehouse)
        parts.append(
            _read(
                conn,
                sql,
                f"SELECT {keys}, CAST(count(*) AS DOUBLE PRECISION), sum(v), min(v), max(v)"
                f" FROM ({_values_raw_source(sql, plan, chunk)}) t GROUP BY {keys}",
                columns,
            )
        )
        plan.sources["events"] = plan.sources.get("events", 0) + _count_buckets(chunk, HOUR)
    frame = _concat(parts, columns)
    merged = _grouped(frame, plan).agg(n=("n", "sum"), s=("s", "sum"), mn=("mn", "min"), mx=("mx", "max"))
    merged = merged.reset_index()
    value = {
        "count": merged["n"],
        "sum": merged["s"],
        "avg": merged["s"] / merged["n"],
        "min": merged["mn"],
        "max": merged["mx"],
    }[plan.agg]
    return merged.assign(value=value.astype(float))


def _stored_percentiles(warehouse, conn, plan: _Plan, coverage: _Coverage) -> pd.DataFrame | None:
    """Stored hourly percentiles, when each result row is exactly one hourly rollup row."""
    if not (plan.uses_rollups and plan.bucket == "1h" and not coverage.raw and coverage.hourly):
        return None
    pinned = {name for name, value in plan.filters.items() if not isinstance(value, list)}
    if not set(VALUE_DIMENSIONS) <= set(plan.group_by) | pinned:
        return None
    sql = _Sql(warehouse)
    source = _rollup_source(
        sql,
        plan,
        "rollup_metrics_hourly",
        coverage.hourly,
        plan.agg,
        where=f"metric_name = {sql.bind(plan.metric)}",
    )
    plan.sources["rollup_metrics_hourly"] = _count_buckets(coverage.hourly, HOUR)
    return _read(conn, sql, source, ["bk", *_group_aliases(plan), "value"])


def _raw_percentiles(warehouse, conn, plan: _Plan) -> pd.DataFrame:
    keys = _group_list(plan)
    sql = _Sql(warehouse)
    q = PERCENTILES[plan.agg]
    source = _values_raw_source(sql, plan, [(plan.start, plan.end)])
    plan.sources = {"events": _count_buckets([(plan.start, plan.end)], HOUR)}
    return _read(
        conn,
        sql,
        f"SELECT {keys}, percentile_cont({q}) WITHIN GROUP (ORDER BY v) FROM ({source}) t GROUP BY {keys}",
        ["bk", *_group_aliases(plan), "value"],
    )


def _sketch_percentiles(warehouse, conn, plan: _Plan, coverage: _Coverage) -> pd.DataFrame:
    keys = _group_list(plan)
    columns = ["bk", *_group_aliases(plan), "bucket_key", "c"]
    parts = []
    for table, spans in (
        ("rollup_metrics_daily", coverage.daily),
        ("rollup_metrics_hourly", coverage.hourly),
    ):
        if not spans:
            continue
        sql = _Sql(warehouse)
        source = _rollup_source(
            sql, plan, table, spans, "sketch", where=f"metric_name = {sql.bind(plan.metric)}"
        )
        entries = rollups.sketch_entries_sql(source, keys)
        parts.append(
            _read(
                conn,
                sql,
                f"SELECT {keys}, bucket_key, CAST(sum(bucket_count) AS DOUBLE PRECISION) FROM ({entries}) t"
                f" GROUP BY {keys}, bucket_key",
                columns,
            )
        )
        plan.sources[table] = _count_buckets(spans, DAY if table.endswith("daily") else HOUR)
    for chunk in _raw_chunks(coverage.raw):
        sql = _Sql(warehouse)
        source = _values_raw_source(sql, plan, chunk)
        parts.append(
            _read(
                conn,
                sql,
                f"SELECT {keys}, bucket_key, CAST(count(*) AS DOUBLE PRECISION) FROM"
                f" (SELECT {keys}, {sketch.key_sql('v')} AS bucket_key FROM ({source}) r) t GROUP BY {keys}, bucket_key",
                columns,
            )
        )
        plan.sources["events"] = plan.sources.get("events", 0) + _count_buckets(chunk, HOUR)
    frame = _concat(parts, columns)
    counts = _grouped(frame, plan, extra=["bucket_key"])["c"].sum().reset_index()
    group_cols = ["bk", *_group_aliases(plan)]
    ids = counts.groupby(group_cols, dropna=False, sort=False).ngroup().to_numpy()
    (values,) = sketch.grouped_quantiles(
        ids, counts["bucket_key"].to_numpy(), counts["c"].to_numpy().astype(np.int64), [PERCENTILES[plan.agg]]
    )
    # The first row of each group, in group-id order (ids are 0..G-1 in order of appearance).
    first = pd.Series(np.arange(len(ids))).groupby(ids).first().to_numpy()
    return counts.iloc[first][group_cols].reset_index(drop=True).assign(value=values)


def _derived(warehouse, conn, plan: _Plan, coverage: _Coverage) -> pd.DataFrame:
    family = plan.derived.family
    keys = _group_list(plan)
    names = list(family.components)
    columns = ["bk", *_group_aliases(plan), *names]
    parts = []
    for table, spans in ((family.daily, coverage.daily), (family.hourly, coverage.hourly)):
        if not spans:
            continue
        sql = _Sql(warehouse)
        source = _rollup_source(sql, plan, table, spans, ", ".join(names))
        sums = ", ".join(f"CAST(sum({n}) AS DOUBLE PRECISION)" for n in names)
        parts.append(_read(conn, sql, f"SELECT {keys}, {sums} FROM ({source}) t GROUP BY {keys}", columns))
        plan.sources[table] = _count_buckets(spans, DAY if table.endswith("daily") else HOUR)
    for chunk in _raw_chunks(coverage.raw):
        sql = _Sql(warehouse)
        groups = ", ".join(
            f"{sql.dimension(d, 'e')} AS {a}"
            for d, a in zip(plan.group_by, _group_aliases(plan), strict=True)
        )
        inner = (
            f"SELECT e.*, {_bucket_sql('e.event_time', plan.seconds)} AS bk{', ' + groups if groups else ''}"
            f" FROM events e WHERE {family.raw_where}"
            f" AND {sql.intervals('e.event_time', chunk)} AND {sql.filters(plan.filters, 'e')}"
        )
        sums = ", ".join(f"CAST({expr} AS DOUBLE PRECISION)" for expr in family.components.values())
        parts.append(_read(conn, sql, f"SELECT {keys}, {sums} FROM ({inner}) t GROUP BY {keys}", columns))
        plan.sources["events"] = plan.sources.get("events", 0) + _count_buckets(chunk, HOUR)
    frame = _concat(parts, columns)
    merged = _grouped(frame, plan)[names].sum().reset_index()
    return merged.assign(value=plan.derived.compute(merged, plan.seconds).astype(float))


def _concat(parts: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype="float64" if c not in ("bk",) else "int64") for c in columns})
    frame = pd.concat(parts, ignore_index=True)
    for column in columns:
        if column == "bk" or column == "bucket_key":
            frame[column] = frame[column].astype("int64")
        elif not column.startswith("g"):
            frame[column] = frame[column].astype("float64")
    return frame


def _grouped(frame: pd.DataFrame, plan: _Plan, extra: Iterable[str] = ()):
    return frame.groupby(["bk", *_group_aliases(plan), *extra], dropna=False, sort=False)


def _finish(frame: pd.DataFrame, plan: _Plan) -> pd.DataFrame:
    aliases = _group_aliases(plan)
    out = pd.DataFrame(
        {
            "bucket_start": pd.to_datetime(frame["bk"].astype("int64"), unit="s", utc=True)
            if len(frame)
            else pd.Series(dtype="datetime64[ns, UTC]"),
            **{
                name: frame[alias].astype(object).where(frame[alias].notna(), None)
                if len(frame)
                else pd.Series(dtype=object)
                for name, alias in zip(plan.group_by, aliases, strict=True)
            },
            "value": frame["value"].astype("float64") if len(frame) else pd.Series(dtype="float64"),
        }
    )
    if plan.order in ("value", "-value"):
        out = out.sort_values(
            ["value", "bucket_start", *plan.group_by],
            ascending=plan.order == "value",
            na_position="last",
            kind="stable",
        )
    else:
        out = out.sort_values(
            ["bucket_start", *plan.group_by],
            ascending=plan.order == "time",
            na_position="last",
            kind="stable",
        )
    if plan.limit is not None:
        out = out.head(plan.limit)
    return out.reset_index(drop=True)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
