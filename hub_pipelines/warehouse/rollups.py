"""Hourly and daily rollups: what each column means and the SQL that computes it (no Dagster).

Four families, each an hourly table computed from the raw events and a daily table computed from
the hourly one (the tables are in `tables.py`):

- **metrics** per (bucket, tenant, source module, metric, model, provider, project, environment,
  region): count, sum, min, max, avg, sample stddev, m2 (sum of squared deviations, so that
  stddev merges exactly) and p50/p95/p99 of telemetry `metric_value`s, plus the USD amount of cost
  events as metric `cost_usd`. Hourly percentiles are exact (percentile_cont, the linear
  interpolation numpy and pandas use by default); daily percentiles come from the merged hourly
  sketches (`sketch.py`, within 1% relative). Each row keeps its sketch in the `sketch` column
  ("key:count,..." in key order), so percentiles of any coarser grouping can be merged later,
  after the raw events are gone.
- **usage** per (bucket, tenant, model, provider, project, team, environment, region): requests
  (telemetry `latency_ms` events, one per request attempt), errors (those whose status is set and
  is not "ok"), tokens_input/output/total (sums of those telemetry metrics), spend_usd and
  cost_events (cost events), and the composites: error_rate = errors / requests, cost_per_request
  = spend / requests, cost_per_1k_tokens = spend / tokens_total * 1000, throughput_rps = requests /
  bucket seconds, error_adjusted_throughput_rps = (requests - errors) / bucket seconds. A
  composite whose denominator is 0 is NULL.
- **security** per (bucket, tenant, source module, threat type, severity, model, project,
  environment): detections.
- **policy** per (bucket, tenant, source module, policy, category, model, project, team,
  environment): evaluations, passed, failed, compliance_rate = passed / (passed + failed).

A write replaces whole partitions: the rows of its time range are deleted and inserted again in one
transaction, with one `rollup_partitions` row per hour or day, so running it again gives the same
rows. Long ranges are written a day at a time (one transaction each) so that the embedded DuckDB
file is never held for long. On PostgreSQL, writers take a transaction-level advisory lock first, so
two runs refreshing the same hour one after the other cannot both insert it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hub_pipelines.warehouse import sketch
from hub_pipelines.warehouse.store import Warehouse
from hub_pipelines.warehouse.tables import (
    METRIC_ROLLUP_DIMENSIONS,
    POLICY_ROLLUP_DIMENSIONS,
    SECURITY_ROLLUP_DIMENSIONS,
    USAGE_ROLLUP_DIMENSIONS,
)

log = logging.getLogger(__name__)

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
# pg_advisory_xact_lock key of rollup writers (any constant unique to hub's rollups).
_PG_LOCK_KEY = 0x6875625F726F6C6C  # "hub_roll"

# -- the raw events each family reads, as SQL fragments shared with the query interface ------------

# Telemetry metric values and cost amounts, as (metric_name, value) rows.
METRIC_VALUE_SOURCES = (
    # (metric name expression, value expression, where)
    (
        "metric_name",
        "CAST(metric_value AS DOUBLE PRECISION)",
        "event_type = 'telemetry' AND metric_name IS NOT NULL AND metric_value IS NOT NULL",
    ),
    ("'cost_usd'", "CAST(cost_usd AS DOUBLE PRECISION)", "event_type = 'cost' AND cost_usd IS NOT NULL"),
)
COST_METRIC = "cost_usd"

USAGE_WHERE = (
    "(event_type = 'cost' OR (event_type = 'telemetry'"
    " AND metric_name IN ('latency_ms', 'tokens_input', 'tokens_output')))"
)
_IS_REQUEST = "event_type = 'telemetry' AND metric_name = 'latency_ms'"
# Component sums of the usage family over raw events: name -> SQL aggregate.
USAGE_COMPONENTS_SQL = {
    "requests": f"sum(CASE WHEN {_IS_REQUEST} THEN 1 ELSE 0 END)",
    "errors": f"sum(CASE WHEN {_IS_REQUEST} AND status IS NOT NULL AND status <> 'ok' THEN 1 ELSE 0 END)",
    "tokens_input": "coalesce(sum(CASE WHEN event_type = 'telemetry' AND metric_name = 'tokens_input'"
    " THEN CAST(metric_value AS DOUBLE PRECISION) END ORDER BY metric_value), 0)",
    "tokens_output": "coalesce(sum(CASE WHEN event_type = 'telemetry' AND metric_name = 'tokens_output'"
    " THEN CAST(metric_value AS DOUBLE PRECISION) END ORDER BY metric_value), 0)",
    "spend_usd": "coalesce(sum(CASE WHEN event_type = 'cost' THEN CAST(cost_usd AS DOUBLE PRECISION) END ORDER BY cost_usd), 0)",
    "cost_events": "sum(CASE WHEN event_type = 'cost' THEN 1 ELSE 0 END)",
}
SECURITY_WHERE = "event_type = 'security'"
SECURITY_COMPONENTS_SQL = {"detections": "count(*)"}
POLICY_WHERE = "event_type = 'policy'"
POLICY_COMPONENTS_SQL = {
    "evaluations": "count(*)",
    "passed": "sum(CASE WHEN outcome = 'pass' THEN 1 ELSE 0 END)",
    "failed": "sum(CASE WHEN outcome = 'fail' THEN 1 ELSE 0 END)",
}
_INTEGER_COMPONENTS = {"requests", "errors", "cost_events", "detections", "evaluations", "passed", "failed"}


def usage_composites_sql(seconds: int) -> dict[str, str]:
    """The usage composites as SQL over the component columns (NULL where undefined)."""
    return {
        "error_rate": "CASE WHEN requests > 0 THEN CAST(errors AS DOUBLE PRECISION) / requests END",
        "cost_per_request": "CASE WHEN requests > 0 THEN spend_usd / requests END",
        "cost_per_1k_tokens": "CASE WHEN tokens_input + tokens_output > 0"
        " THEN spend_usd * 1000.0 / (tokens_input + tokens_output) END",
        "throughput_rps": f"CAST(requests AS DOUBLE PRECISION) / {int(seconds)}",
        "error_adjusted_throughput_rps": f"CAST(requests - errors AS DOUBLE PRECISION) / {int(seconds)}",
    }


def policy_composites_sql() -> dict[str, str]:
    return {
        "compliance_rate": "CASE WHEN passed + failed > 0"
        " THEN CAST(passed AS DOUBLE PRECISION) / (passed + failed) END"
    }


def metric_values_sql(where_time: str) -> str:
    """(event_time, dims..., value) rows of the metrics family, for a time predicate."""
    dims = ", ".join(d for d in METRIC_ROLLUP_DIMENSIONS if d != "metric_name")
    parts = [
        f"SELECT event_time, {name} AS metric_name, {dims}, {value} AS v FROM events"
        f" WHERE {where} AND {where_time}"
        for name, value, where in METRIC_VALUE_SOURCES
    ]
    return " UNION ALL ".join(parts)


# -- hourly ---------------------------------------------------------------------------------------

_TIME = "event_time >= :start AND event_time < :end"
_HOUR_OF = "date_trunc('hour', event_time)"
_DAY_OF = "date_trunc('day', bucket_start)"


def _cols(names) -> str:
    return ", ".join(names)


_NULL_STATS = "CAST(NULL AS BIGINT), " + ", ".join(["CAST(NULL AS DOUBLE PRECISION)"] * 9)


def _hourly_metrics_sql() -> str:
    dims = _cols(METRIC_ROLLUP_DIMENSIONS)
    percentiles = ", ".join(
        f"percentile_cont({q}) WITHIN GROUP (ORDER BY v)" for q in sketch.PERCENTILES.values()
    )
    values = f"SELECT {_HOUR_OF} AS bucket_start, {dims}, v FROM ({metric_values_sql(_TIME)}) e"
    stats = f"""
        SELECT bucket_start, {dims}, count(*), sum(v ORDER BY v), min(v), max(v), avg(v ORDER BY v),
            stddev_samp(v ORDER BY v), var_pop(v ORDER BY v) * count(*), {percentiles},
            CAST(NULL AS VARCHAR)
        FROM ({values}) t
        GROUP BY bucket_start, {dims}
    """
    buckets = f"""
        SELECT bucket_start, {dims}, bucket_key, count(*) AS bucket_count
        FROM (SELECT bucket_start, {dims}, {sketch.key_sql("v")} AS bucket_key FROM ({values}) t) k
        GROUP BY bucket_start, {dims}, bucket_key
    """
    # The stats row and the sketch text of a group meet by grouping their union on the keys (NULL
    # dimensions group together on both engines; no join plan can go quadratic).
    return f"""
        INSERT INTO rollup_metrics_hourly (bucket_start, {dims}, {_METRIC_COLUMNS})
        SELECT bucket_start, {dims}, {", ".join(f"max({c})" for c in _METRIC_COLUMNS.split(", "))}
        FROM (
            {stats}
            UNION ALL
            SELECT bucket_start, {dims}, {_NULL_STATS}, {_sketch_text("bucket_key", "bucket_count")}
            FROM ({buckets}) b GROUP BY bucket_start, {dims}
        ) u (bucket_start, {dims}, {_METRIC_COLUMNS})
        GROUP BY bucket_start, {dims}
    """


_METRIC_COLUMNS = (
    "value_count, value_sum, value_min, value_max, value_avg, value_stddev, value_m2, p50, p95, p99, sketch"
)


def _sketch_text(key: str, count: str) -> str:
    """SQL aggregate writing sketch entries as text: "key:count,..." in key order."""
    return f"string_agg(CAST({key} AS VARCHAR) || ':' || CAST({count} AS VARCHAR), ',' ORDER BY {key})"


def sketch_entries_sql(source: str, columns: str) -> str:
    """(columns..., bucket_key, bucket_count) rows, one per entry of the `sketch` text of the rows of
    `source` (a query selecting `columns` and `sketch`). Works on DuckDB and PostgreSQL."""
    return (
        f"SELECT {columns}, CAST(split_part(kv, ':', 1) AS INTEGER) AS bucket_key,"
        f" CAST(split_part(kv, ':', 2) AS BIGINT) AS bucket_count"
        f" FROM (SELECT {columns}, unnest(string_to_array(sketch, ',')) AS kv FROM ({source}) s) e"
    )


def _components_select(components: dict[str, str]) -> str:
    return ", ".join(
        f"CAST({expr} AS BIGINT) AS {name}" if name in _INTEGER_COMPONENTS else f"{expr} AS {name}"
        for name, expr in components.items()
    )


def _hourly_family_sql(
    table: str,
    dims_names: tuple[str, ...],
    where: str,
    components: dict[str, str],
    composites: dict[str, str],
) -> str:
    dims = _cols(dims_names)
    extra = dict(composites)
    if table.startswith("rollup_usage"):
        extra = {"tokens_total": "tokens_input + tokens_output"} | extra
    outer = ", ".join([*components, *(f"{expr} AS {name}" for name, expr in extra.items())])
    columns = _cols([*components, *extra])
    return f"""
        INSERT INTO {table} (bucket_start, {dims}, {columns})
        SELECT bucket_start, {dims}, {outer}
        FROM (
            SELECT bucket_start, {dims}, {_components_select(components)}
            FROM (SELECT {_HOUR_OF} AS bucket_start, * FROM events WHERE {where} AND {_TIME}) e
            GROUP BY bucket_start, {dims}
        ) g
    """


def _daily_family_sql(
    table: str, dims_names: tuple[str, ...], components: dict[str, str], composites: dict[str, str]
) -> str:
    """Daily rows of an additive family: component sums over the hourly rows, composites again."""
    dims = _cols(dims_names)
    hourly = table.replace("_daily", "_hourly")
    sums = ", ".join(
        f"CAST(sum({name}) AS BIGINT) AS {name}"
        if name in _INTEGER_COMPONENTS
        else f"sum({name} ORDER BY bucket_start) AS {name}"
        for name in components
    )
    extra = dict(composites)
    if table.startswith("rollup_usage"):
        extra = {"tokens_total": "tokens_input + tokens_output"} | extra
    outer = ", ".join([*components, *(f"{expr} AS {name}" for name, expr in extra.items())])
    columns = _cols([*components, *extra])
    return f"""
        INSERT INTO {table} (bucket_start, {dims}, {columns})
        SELECT bucket_start, {dims}, {outer}
        FROM (
            SELECT day_start AS bucket_start, {dims}, {sums}
            FROM (SELECT {_DAY_OF} AS day_start, bucket_start, {dims}, {_cols(components)} FROM {hourly}
                  WHERE bucket_start >= :start AND bucket_start < :end) h
            GROUP BY day_start, {dims}
        ) g
    """


def sketch_quantiles_sql(sketch_rows: str, group_cols: tuple[str, ...]) -> str:
    """SQL giving p50/p95/p99 per group from sketch rows (group cols..., bucket_key, bucket_count).

    The same rule as `sketch.grouped_quantiles`: the ranks floor(q (n-1)) and the next one are
    found by the cumulative counts in key order and interpolated by the representatives.
    """
    groups = _cols(group_cols)
    ranks = []
    picks = []
    for name, q in sketch.PERCENTILES.items():
        virtual = f"({q} * (n - 1))"
        lo = f"floor({virtual})"
        hi = f"least(floor({virtual}) + 1, n - 1)"
        ranks.append(f"min(CASE WHEN cum > {lo} THEN bucket_key END) AS {name}_lo")
        ranks.append(f"min(CASE WHEN cum > {hi} THEN bucket_key END) AS {name}_hi")
        ranks.append(f"max({virtual} - {lo}) AS {name}_f")
        lo_v, hi_v = sketch.value_sql(f"{name}_lo"), sketch.value_sql(f"{name}_hi")
        picks.append(f"({lo_v}) + {name}_f * (({hi_v}) - ({lo_v})) AS {name}")
    return f"""
        SELECT {groups}, {", ".join(picks)} FROM (
            SELECT {groups}, {", ".join(ranks)} FROM (
                SELECT {groups}, bucket_key,
                    CAST(sum(bucket_count) OVER (PARTITION BY {groups} ORDER BY bucket_key
                        ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS DOUBLE PRECISION) AS cum,
                    CAST(sum(bucket_count) OVER (PARTITION BY {groups}) AS DOUBLE PRECISION) AS n
                FROM ({sketch_rows}) s
            ) c GROUP BY {groups}
        ) r
    """


def _daily_metrics_sql() -> str:
    dims = _cols(METRIC_ROLLUP_DIMENSIONS)
    groups = ("bucket_start", *METRIC_ROLLUP_DIMENSIONS)
    # Chan et al.: m2 of the union = sum(m2_i + n_i (mean_i - mean)^2), mean the union's mean.
    stats = f"""
        SELECT day_start AS bucket_start, {dims}, CAST(sum(value_count) AS BIGINT) AS n,
            sum(value_sum ORDER BY bucket_start) AS s, min(value_min) AS mn, max(value_max) AS mx,
            sum(coalesce(value_m2, 0) + value_count * (value_avg - day_mean) * (value_avg - day_mean)
                ORDER BY bucket_start) AS m2
        FROM (
            SELECT {_DAY_OF} AS day_start, bucket_start, {dims}, value_count, value_sum, value_min,
                value_max, value_avg, value_m2,
                sum(value_sum) OVER w / sum(value_count) OVER w AS day_mean
            FROM rollup_metrics_hourly
            WHERE bucket_start >= :start AND bucket_start < :end
            WINDOW w AS (PARTITION BY {_DAY_OF}, {dims} ORDER BY bucket_start
                         ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
        ) h
        GROUP BY day_start, {dims}
    """
    entries = sketch_entries_sql(
        f"SELECT {_DAY_OF} AS bucket_start, {dims}, sketch FROM rollup_metrics_hourly"
        " WHERE bucket_start >= :start AND bucket_start < :end",
        f"bucket_start, {dims}",
    )
    merged = (
        f"SELECT bucket_start, {dims}, bucket_key, CAST(sum(bucket_count) AS BIGINT) AS bucket_count"
        f" FROM ({entries}) e GROUP BY bucket_start, {dims}, bucket_key"
    )
    quantiles = sketch_quantiles_sql(merged, groups)
    # Stats, percentiles and the merged sketch are combined by grouping their union on the keys.
    n = "CAST(NULL AS BIGINT)"
    d = "CAST(NULL AS DOUBLE PRECISION)"
    text = "CAST(NULL AS VARCHAR)"
    return f"""
        INSERT INTO rollup_metrics_daily (bucket_start, {dims}, {_METRIC_COLUMNS})
        SELECT bucket_start, {dims}, max(n), max(s), min(mn), max(mx), max(s) / max(n),
            CASE WHEN max(n) > 1 THEN sqrt(greatest(max(m2), 0) / (max(n) - 1)) END, greatest(max(m2), 0),
            max(p50), max(p95), max(p99), max(sketch)
        FROM (
            SELECT bucket_start, {dims}, n, s, mn, mx, m2, {d}, {d}, {d}, {text} FROM ({stats}) st
            UNION ALL
            SELECT bucket_start, {dims}, {n}, {d}, {d}, {d}, {d}, p50, p95, p99, {text} FROM ({quantiles}) q
            UNION ALL
            SELECT bucket_start, {dims}, {n}, {d}, {d}, {d}, {d}, {d}, {d}, {d},
                {_sketch_text("bucket_key", "bucket_count")}
            FROM ({merged}) m GROUP BY bucket_start, {dims}
        ) u (bucket_start, {dims}, n, s, mn, mx, m2, p50, p95, p99, sketch)
        GROUP BY bucket_start, {dims}
    """


HOURLY_TABLES = (
    "rollup_metrics_hourly",
    "rollup_usage_hourly",
    "rollup_security_hourly",
    "rollup_policy_hourly",
)
DAILY_TABLES = tuple(t.replace("_hourly", "_daily") for t in HOURLY_TABLES)
FAMILY_TABLES = {
    "metrics": ("rollup_metrics_hourly", "rollup_metrics_daily"),
    "usage": ("rollup_usage_hourly", "rollup_usage_daily"),
    "security": ("rollup_security_hourly", "rollup_security_daily"),
    "policy": ("rollup_policy_hourly", "rollup_policy_daily"),
}


def _hourly_statements() -> list[tuple[str, str]]:
    return [
        ("rollup_metrics_hourly", _hourly_metrics_sql()),
        (
            "rollup_usage_hourly",
            _hourly_family_sql(
                "rollup_usage_hourly",
                USAGE_ROLLUP_DIMENSIONS,
                USAGE_WHERE,
                USAGE_COMPONENTS_SQL,
                usage_composites_sql(3600),
            ),
        ),
        (
            "rollup_security_hourly",
            _hourly_family_sql(
                "rollup_security_hourly",
                SECURITY_ROLLUP_DIMENSIONS,
                SECURITY_WHERE,
                SECURITY_COMPONENTS_SQL,
                {},
            ),
        ),
        (
            "rollup_policy_hourly",
            _hourly_family_sql(
                "rollup_policy_hourly",
                POLICY_ROLLUP_DIMENSIONS,
                POLICY_WHERE,
                POLICY_COMPONENTS_SQL,
                policy_composites_sql(),
            ),
        ),
    ]


def _daily_statements() -> list[tuple[str, str]]:
    return [
        ("rollup_metrics_daily", _daily_metrics_sql()),
        (
            "rollup_usage_daily",
            _daily_family_sql(
                "rollup_usage_daily",
                USAGE_ROLLUP_DIMENSIONS,
                USAGE_COMPONENTS_SQL,
                usage_composites_sql(86400),
            ),
        ),
        (
            "rollup_security_daily",
            _daily_family_sql(
                "rollup_security_daily", SECURITY_ROLLUP_DIMENSIONS, SECURITY_COMPONENTS_SQL, {}
            ),
        ),
        (
            "rollup_policy_daily",
            _daily_family_sql(
                "rollup_policy_daily",
                POLICY_ROLLUP_DIMENSIONS,
                POLICY_COMPONENTS_SQL,
                policy_composites_sql(),
            ),
        ),
    ]


# -- writing partitions -----------------------------------------------------------------------------


@dataclass
class RollupWrite:
    """What a write did: per table, rows now in the written range; events read; time taken."""

    grain: str
    start: datetime
    end: datetime
    rows: dict[str, int] = field(default_factory=dict)
    events_read: int = 0
    partitions: int = 0
    kept: list[str] = field(default_factory=list)  # hours where some tenant's rows outlived raw events
    seconds: float = 0.0

    def add(self, other: RollupWrite) -> None:
        for table, n in other.rows.items():
            self.rows[table] = self.rows.get(table, 0) + n
        self.events_read += other.events_read
        self.partitions += other.partitions
        self.kept += other.kept


def floor_to(moment: datetime, step: timedelta) -> datetime:
    moment = moment.astimezone(UTC)
    seconds = int(step.total_seconds())
    epoch = int(moment.timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, UTC)


def _check_range(start: datetime, end: datetime, step: timedelta) -> tuple[datetime, datetime]:
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("rollup ranges need timezone-aware datetimes (UTC)")
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if floor_to(start, step) != start or floor_to(end, step) != end or end <= start:
        raise ValueError(f"rollup range {start.isoformat()}..{end.isoformat()} is not whole {step} steps")
    return start, end


@contextmanager
def _writer(warehouse: Warehouse) -> Iterator[Connection]:
    """A rollup-writing transaction, serialised against other rollup writers on PostgreSQL.

    Re-running a partition gives identical rows: floating-point sums are taken in a defined order
    (`sum(v ORDER BY v)`, hourly rows by hour), so neither parallel aggregation nor the physical
    order of rows (which changes when a partition is rewritten) can change their last bits.
    """
    with warehouse.begin() as conn:
        if not warehouse.is_duckdb:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
            conn.exec_driver_sql("SET LOCAL max_parallel_workers_per_gather = 0")
            # Percentiles sort each group's values; the 4 MB default spills them to disk.
            conn.exec_driver_sql("SET LOCAL work_mem = '256MB'")
        yield conn


def _chunks(start: datetime, end: datetime, size: timedelta):
    cursor = start
    while cursor < end:
        # Chunks end on day boundaries so a day is never split across transactions.
        stop = min(end, floor_to(cursor, DAY) + size)
        yield cursor, stop
        cursor = stop


def refresh_hourly(
    warehouse: Warehouse,
    start: datetime,
    end: datetime,
    *,
    run_id: str | None = None,
    keep_before: datetime | None = None,
    progress: Callable[[RollupWrite], None] | None = None,
) -> RollupWrite:
    """(Re)compute the hourly rollups of [start, end), whole hours, one transaction per UTC day.

    keep_before: hours that ended before this moment can no longer gain events (ingest rejects
    events more than 7 days old), only lose them to retention; for them only the tenants that still
    have raw events are recomputed, and the rows of tenants whose raw events are gone are kept, so
    rollups outlive raw events. Hours after it are replaced whole.
    """
    start, end = _check_range(start, end, HOUR)
    total = RollupWrite("hour", start, end)
    began = time.perf_counter()
    for chunk_start, chunk_end in _chunks(start, end, DAY):
        written = _write_hourly_chunk(warehouse, chunk_start, chunk_end, run_id, keep_before)
        total.add(written)
        if progress:
            progress(written)
    total.seconds = time.perf_counter() - began
    return total


def _write_hourly_chunk(
    warehouse: Warehouse, start: datetime, end: datetime, run_id: str | None, keep_before: datetime | None
) -> RollupWrite:
    params = {"start": start, "end": end}
    written = RollupWrite("hour", start, end)
    with _writer(warehouse) as conn:
        per_hour = {
            _as_utc(hour): int(n)
            for hour, n in conn.execute(
                sa.text(f"SELECT {_HOUR_OF} AS h, count(*) FROM events WHERE {_TIME} GROUP BY {_HOUR_OF}"),
                params,
            ).all()
        }
        hours = list(_steps(start, end, HOUR))
        protected = {h for h in hours if keep_before is not None and h + HOUR <= keep_before}
        if protected:
            written.kept = _hours_with_rows_but_no_events(conn, min(protected), max(protected) + HOUR)
            if written.kept:
                log.info(
                    "keeping rollups of tenants whose raw events are gone in %d hours", len(written.kept)
                )
        for begin, stop in _runs(hours, protected):
            _replace(conn, HOURLY_TABLES, _hourly_statements(), {"start": begin, "end": stop})
        for begin, stop in _runs(hours, set(hours) - protected):
            _replace(
                conn,
                HOURLY_TABLES,
                _hourly_statements(),
                {"start": begin, "end": stop},
                tenants_with_events=True,
            )
        rows_per_hour = _rows_per_bucket(conn, "rollup_metrics_hourly", params)
        _record_partitions(conn, "hour", hours, HOUR, per_hour, rows_per_hour, run_id)
        written.events_read = sum(per_hour.values())
        written.partitions = len(hours)
        for table in HOURLY_TABLES:
            written.rows[table] = _count(conn, table, params)
    return written


def refresh_daily(
    warehouse: Warehouse,
    start: datetime,
    end: datetime,
    *,
    run_id: str | None = None,
    progress: Callable[[RollupWrite], None] | None = None,
) -> RollupWrite:
    """(Re)compute the daily rollups of [start, end) (whole UTC days) from the hourly rollups, one
    transaction per day."""
    start, end = _check_range(start, end, DAY)
    total = RollupWrite("day", start, end)
    began = time.perf_counter()
    for day in _steps(start, end, DAY):
        params = {"start": day, "end": day + DAY}
        written = RollupWrite("day", day, day + DAY)
        with _writer(warehouse) as conn:
            _replace(conn, DAILY_TABLES, _daily_statements(), params)
            events_read = conn.execute(
                sa.text(
                    "SELECT coalesce(sum(events_read), 0) FROM rollup_partitions"
                    " WHERE grain = 'hour' AND partition_start >= :start AND partition_start < :end"
                ),
                params,
            ).scalar_one()
            written.events_read = int(events_read)
            written.partitions = 1
            for table in DAILY_TABLES:
                written.rows[table] = _count(conn, table, params)
            _record_partitions(
                conn,
                "day",
                [day],
                DAY,
                {day: written.events_read},
                {day: written.rows["rollup_metrics_daily"]},
                run_id,
            )
        total.add(written)
        if progress:
            progress(written)
    total.seconds = time.perf_counter() - began
    return total


def _replace(
    conn: Connection,
    tables,
    statements: list[tuple[str, str]],
    params: dict,
    tenants_with_events: bool = False,
) -> None:
    """Delete the range's rows and insert them again. tenants_with_events: delete only the rows of
    tenants that have raw events in the range (the others' raw events are gone; their rows stay)."""
    scope = (
        " AND tenant_id IN (SELECT DISTINCT tenant_id FROM events WHERE event_time >= :start AND event_time < :end)"
        if tenants_with_events
        else ""
    )
    for table in tables:
        conn.execute(
            sa.text(f"DELETE FROM {table} WHERE bucket_start >= :start AND bucket_start < :end{scope}"),
            params,
        )
    for _table, statement in statements:
        conn.execute(sa.text(statement), params)


def _hours_with_rows_but_no_events(conn: Connection, start: datetime, end: datetime) -> list[str]:
    """Hours in [start, end) with rollup rows of a tenant that has no raw events left there."""
    rows = conn.execute(
        sa.text(
            "SELECT DISTINCT r.bucket_start FROM rollup_metrics_hourly r"
            " WHERE r.bucket_start >= :start AND r.bucket_start < :end AND NOT EXISTS ("
            " SELECT 1 FROM events e WHERE e.tenant_id = r.tenant_id AND e.event_time >= r.bucket_start"
            " AND e.event_time < r.bucket_start + INTERVAL '1 hour')"
        ),
        {"start": start, "end": end},
    ).scalars()
    return sorted(_as_utc(h).isoformat() for h in rows)


def _record_partitions(
    conn: Connection,
    grain: str,
    starts: list[datetime],
    step: timedelta,
    events_read: dict[datetime, int],
    rows: dict[datetime, int],
    run_id: str | None,
) -> None:
    if not starts:
        return
    conn.execute(
        sa.text(
            "DELETE FROM rollup_partitions WHERE grain = :grain AND partition_start IN :starts"
        ).bindparams(sa.bindparam("starts", expanding=True)),
        {"grain": grain, "starts": list(starts)},
    )
    now = datetime.now(UTC)
    conn.execute(
        sa.text(
            "INSERT INTO rollup_partitions (grain, partition_start, partition_end, events_read,"
            " rows_written, refreshed_at, run_id)"
            " VALUES (:grain, :start, :end, :events, :rows, :now, :run_id)"
        ),
        [
            {
                "grain": grain,
                "start": s,
                "end": s + step,
                "events": events_read.get(s, 0),
                "rows": rows.get(s, 0),
                "now": now,
                "run_id": run_id,
            }
            for s in sorted(starts)
        ],
    )


def _rows_per_bucket(conn: Connection, table: str, params: dict) -> dict[datetime, int]:
    return {
        _as_utc(b): int(n)
        for b, n in conn.execute(
            sa.text(
                f"SELECT bucket_start, count(*) FROM {table}"
                " WHERE bucket_start >= :start AND bucket_start < :end GROUP BY bucket_start"
            ),
            params,
        ).all()
    }


def _count(conn: Connection, table: str, params: dict) -> int:
    return int(
        conn.execute(
            sa.text(f"SELECT count(*) FROM {table} WHERE bucket_start >= :start AND bucket_start < :end"),
            params,
        ).scalar_one()
    )


def _steps(start: datetime, end: datetime, step: timedelta):
    cursor = start
    while cursor < end:
        yield cursor
        cursor += step


def _runs(hours: list[datetime], skip: set[datetime]):
    """Maximal [begin, end) runs of consecutive hours not in `skip`."""
    begin = None
    for hour in hours:
        if hour in skip:
            if begin is not None:
                yield begin, hour
                begin = None
        elif begin is None:
            begin = hour
    if begin is not None:
        yield begin, hours[-1] + HOUR


def _as_utc(moment) -> datetime:
    if isinstance(moment, datetime):
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    raise TypeError(f"expected a datetime, got {moment!r}")


# -- reconciliation (used by the asset checks) ---------------------------------------------------------


def reconcile(
    warehouse: Warehouse, grain: str, start: datetime, end: datetime
) -> dict[str, tuple[float, float]]:
    """Totals that must agree after a write of [start, end): name -> (expected, found).

    hour: raw events against the hourly rollups (values, requests, detections, evaluations, and
    the sketches' counts against the values' counts). day: the hourly rollups against the daily ones.
    """
    params = {"start": start, "end": end}
    in_range = "bucket_start >= :start AND bucket_start < :end"
    if grain == "hour":
        expected = {
            "values": f"SELECT count(*) FROM ({metric_values_sql(_TIME)}) v",
            "requests": f"SELECT count(*) FROM events WHERE {_IS_REQUEST} AND {_TIME}",
            "spend_usd": f"SELECT coalesce(sum(CAST(cost_usd AS DOUBLE PRECISION)), 0) FROM events"
            f" WHERE event_type = 'cost' AND {_TIME}",
            "detections": f"SELECT count(*) FROM events WHERE {SECURITY_WHERE} AND {_TIME}",
            "evaluations": f"SELECT count(*) FROM events WHERE {POLICY_WHERE} AND {_TIME}",
            "sketch_values": f"SELECT coalesce(sum(value_count), 0) FROM rollup_metrics_hourly WHERE {in_range}",
        }
        found = {
            "values": f"SELECT coalesce(sum(value_count), 0) FROM rollup_metrics_hourly WHERE {in_range}",
            "requests": f"SELECT coalesce(sum(requests), 0) FROM rollup_usage_hourly WHERE {in_range}",
            "spend_usd": f"SELECT coalesce(sum(spend_usd), 0) FROM rollup_usage_hourly WHERE {in_range}",
            "detections": f"SELECT coalesce(sum(detections), 0) FROM rollup_security_hourly WHERE {in_range}",
            "evaluations": f"SELECT coalesce(sum(evaluations), 0) FROM rollup_policy_hourly WHERE {in_range}",
            "sketch_values": f"SELECT coalesce(sum(bucket_count), 0) FROM ({_entries('rollup_metrics_hourly')}) e",
        }
    elif grain == "day":
        pairs = {
            "values": ("rollup_metrics", "value_count"),
            "requests": ("rollup_usage", "requests"),
            "spend_usd": ("rollup_usage", "spend_usd"),
            "detections": ("rollup_security", "detections"),
            "evaluations": ("rollup_policy", "evaluations"),
        }
        expected = {
            n: f"SELECT coalesce(sum({c}), 0) FROM {t}_hourly WHERE {in_range}" for n, (t, c) in pairs.items()
        }
        found = {
            n: f"SELECT coalesce(sum({c}), 0) FROM {t}_daily WHERE {in_range}" for n, (t, c) in pairs.items()
        }
        expected["sketch_values"] = (
            f"SELECT coalesce(sum(value_count), 0) FROM rollup_metrics_daily WHERE {in_range}"
        )
        found["sketch_values"] = (
            f"SELECT coalesce(sum(bucket_count), 0) FROM ({_entries('rollup_metrics_daily')}) e"
        )
    else:
        raise ValueError(f"grain must be hour or day, not {grain!r}")
    with warehouse.connect() as conn:
        return {
            name: (
                float(conn.execute(sa.text(expected[name]), params).scalar_one()),
                float(conn.execute(sa.text(found[name]), params).scalar_one()),
            )
            for name in expected
        }


def _entries(table: str) -> str:
    return sketch_entries_sql(
        f"SELECT bucket_start, sketch FROM {table} WHERE bucket_start >= :start AND bucket_start < :end",
        "bucket_start",
    )


def stale_hours(warehouse: Warehouse, start: datetime, end: datetime) -> list[dict]:
    """Rolled-up hours in [start, end) whose events changed since (late events not yet refreshed),
    and ended hours with events that were never rolled up."""
    with warehouse.connect() as conn:
        now_counts = {
            _as_utc(h): int(n)
            for h, n in conn.execute(
                sa.text(f"SELECT {_HOUR_OF} AS h, count(*) FROM events WHERE {_TIME} GROUP BY {_HOUR_OF}"),
                {"start": start, "end": end},
            ).all()
        }
        rolled = {
            _as_utc(s): int(n)
            for s, n in conn.execute(
                sa.text(
                    "SELECT partition_start, events_read FROM rollup_partitions WHERE grain = 'hour'"
                    " AND partition_start >= :start AND partition_start < :end"
                ),
                {"start": start, "end": end},
            ).all()
        }
    out = []
    for hour in sorted(set(now_counts) | set(rolled)):
        events_now, events_read = now_counts.get(hour, 0), rolled.get(hour)
        if events_read is None or events_read != events_now:
            out.append({"hour": hour.isoformat(), "events_now": events_now, "events_rolled_up": events_read})
    return out
