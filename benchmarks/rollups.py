"""Rollup benchmark: hourly rollups of one day of 1M events, and a 30-day hourly backfill of 10M.

    python benchmarks/rollups.py [--backend duckdb|postgres|both] [--events-per-day 1000000]
                                 [--backfill-events 10000000] [--backfill-days 30] [--no-backfill]
                                 [--no-one-day] [--through-dagster] [--json out.json]

1. One UTC day of N events (70% telemetry over four metrics, 20% cost, 3% security, 7% policy;
   10 tenants with 3 projects each, a project deployed in one of 3 regions, 6 models, 90% of traffic
   in production, 8% staging, 2% development: about 1,500 series an hour, 25 values each at 1M
   events a day; values log-uniform over 55..8100) is generated straight into the
   events table (SQL in DuckDB; Arrow + COPY into PostgreSQL), time-ordered as ingest writes it.
   `refresh_hourly` then writes every hourly family for the day's 24 hours (metrics with exact
   p50/p95/p99, sketches, usage, security, policy; delete and insert in one transaction) and
   `refresh_daily` the day. Baseline in the same process: a plain pandas groupby of the same day's
   metric values (already in memory, nothing written) computing count, sum, min, max, mean, std and
   the three quantiles per (hour, tenant, source, metric, model, provider, project, environment,
   region). Reported: seconds and the ratio hub / pandas.
2. The backfill: M events over D days, then refresh_hourly over the whole range (a day per
   transaction, as the single-run backfill does) and refresh_daily over the days. With
   --through-dagster the DuckDB backfill also runs as one Dagster run of the hourly_rollups asset
   over the partition range (in process), to show Dagster's own per-partition bookkeeping, and
   one day of it both as 24 runs (one per partition) and as one run, the single-run backfill policy
   `hourly_rollups` declares: the ratio is why it declares it.

Target: hourly rollups of one day of 1,000,000 events under 10 s on DuckDB (2-core hub machine).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import sqlalchemy as sa
from ingest import fresh_postgres_database  # benchmarks/ingest.py

from hub_pipelines.warehouse import Warehouse
from hub_pipelines.warehouse.rollups import refresh_daily, refresh_hourly
from hub_pipelines.warehouse.tables import METRIC_ROLLUP_DIMENSIONS, events

POSTGRES_URL = os.environ.get("HUB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
DAY = timedelta(days=1)

MODELS = ["gpt-4o", "gpt-4o-mini", "claude-sonnet", "claude-haiku", "llama-3-70b", "mistral-large"]
PROVIDERS = ["openai", "openai", "anthropic", "anthropic", "meta", "mistral"]


def events_sql(n: int, day: datetime, offset: int, seed: float) -> str:
    """SQL (DuckDB) for n events spread over one UTC day, time-ordered. Numbers only from code."""
    models = "[" + ", ".join(f"'{m}'" for m in MODELS) + "]"
    providers = "[" + ", ".join(f"'{p}'" for p in PROVIDERS) + "]"
    start = day.strftime("%Y-%m-%d %H:%M:%S+00")
    return f"""
    WITH r AS (
        SELECT i, random() AS u0, random() AS u1, random() AS u2, random() AS u3, random() AS u4,
               random() AS u5, random() AS u6, random() AS u7
        FROM range({offset}, {offset + n}) t(i)
    ), e AS (
        SELECT i,
            TIMESTAMPTZ '{start}' + to_microseconds(CAST(floor(u0 * 86400e6) AS BIGINT)) AS event_time,
            CAST(floor(u1 * 10) AS INTEGER) AS t,
            CAST(floor(u2 * 6) AS INTEGER) + 1 AS m,
            CASE WHEN i % 100 < 70 THEN 'telemetry' WHEN i % 100 < 90 THEN 'cost'
                 WHEN i % 100 < 93 THEN 'security' ELSE 'policy' END AS event_type,
            u3, u4, u5, u6, u7
        FROM r
    )
    SELECT
        'bench-' || lpad(CAST(i AS VARCHAR), 30, '0') AS event_id,
        event_time,
        'tenant-' || lpad(CAST(t AS VARCHAR), 2, '0') AS tenant_id,
        CASE event_type WHEN 'telemetry' THEN 'llm-observatory' WHEN 'cost' THEN 'llm-costops'
             WHEN 'security' THEN 'llm-sentinel' ELSE 'llm-policy-engine' END AS source_module,
        event_type,
        '2.0.0' AS schema_version, 2 AS schema_major, NULL AS correlation_id,
        CASE WHEN event_type = 'security' THEN (CASE WHEN u5 < 0.6 THEN 'warning' WHEN u5 < 0.9 THEN 'error'
             ELSE 'critical' END) END AS severity,
        CASE WHEN u3 < 0.9 THEN 'production' WHEN u3 < 0.98 THEN 'staging' ELSE 'development' END AS environment,
        NULL AS tags,
        CASE WHEN event_type = 'telemetry'
             THEN ['latency_ms', 'ttft_ms', 'tokens_input', 'tokens_output'][1 + CAST(floor(u4 * 4) AS INTEGER)]
        END AS metric_name,
        CASE WHEN event_type = 'telemetry' THEN round(exp(4 + 5 * u5), 1) END AS metric_value,
        CASE WHEN event_type = 'telemetry' THEN 'ms' END AS unit,
        {models}[m] AS model,
        {providers}[m] AS provider,
        'project-' || CAST(t AS VARCHAR) || '-' || CAST(floor(u6 * 3) AS VARCHAR) AS project,
        'team-' || CAST(floor(u6 * 3) AS VARCHAR) AS team,
        ['us-east-1', 'eu-west-1', 'ap-south-1'][1 + (t + CAST(floor(u6 * 3) AS INTEGER)) % 3] AS region,
        CASE WHEN event_type = 'telemetry' THEN (CASE WHEN u7 * 1000 % 1 < 0.03 THEN 'error' ELSE 'ok' END)
        END AS status,
        NULL AS asset_id,
        CASE WHEN event_type = 'cost' THEN 'inference' END AS cost_type,
        CASE WHEN event_type = 'cost' THEN round(u5 * 0.05, 6) END AS cost_usd,
        CASE WHEN event_type = 'security' THEN ['jailbreak', 'prompt_injection', 'pii_leak'][1 + CAST(floor(u4 * 3) AS INTEGER)] END AS threat_type,
        CASE WHEN event_type = 'policy' THEN 'pol-' || CAST(floor(u4 * 5) AS VARCHAR) END AS policy_id,
        CASE WHEN event_type = 'policy' THEN ['safety', 'privacy', 'cost'][1 + CAST(floor(u4 * 3) AS INTEGER)] END AS policy_category,
        CASE WHEN event_type = 'policy' THEN (CASE WHEN u5 < 0.93 THEN 'pass' ELSE 'fail' END) END AS outcome,
        NULL AS payload, '{{}}' AS original, 'bench' AS batch_id,
        TIMESTAMPTZ '{start}' + INTERVAL 1 DAY AS ingested_at
    FROM e
    ORDER BY event_time
    """  # noqa: S608 - every interpolated value is a number or constant produced by this script


def load_day(warehouse: Warehouse, n: int, day: datetime, offset: int, seed: float) -> float:
    """Generate n events for `day` into the events table; returns seconds."""
    columns = ", ".join(c.name for c in events.columns)
    began = time.perf_counter()
    if warehouse.is_duckdb:
        with warehouse.begin() as conn:
            conn.exec_driver_sql(f"SELECT setseed({seed})")
            conn.exec_driver_sql(
                f"INSERT INTO events ({columns}) SELECT {columns} FROM ({events_sql(n, day, offset, seed)})"
            )
        return time.perf_counter() - began
    local = duckdb.connect()
    local.execute("SET TimeZone = 'UTC'").fetchall()
    local.execute(f"SELECT setseed({seed})").fetchall()
    table = local.sql(events_sql(n, day, offset, seed)).to_arrow_table()
    local.close()
    import pyarrow as pa

    fields = []
    for field in table.schema:
        if pa.types.is_null(field.type):
            fields.append(pa.field(field.name, pa.string()))
        elif pa.types.is_integer(field.type) and field.name != "schema_major":
            fields.append(field)
        elif pa.types.is_decimal(field.type) or pa.types.is_floating(field.type):
            fields.append(pa.field(field.name, pa.float64()))
        elif pa.types.is_timestamp(field.type):
            fields.append(pa.field(field.name, pa.timestamp("us", tz="UTC")))
        elif field.name == "schema_major":
            fields.append(pa.field(field.name, pa.int32()))
        else:
            fields.append(field)
    table = table.cast(pa.schema(fields))
    with warehouse.begin() as conn:
        warehouse.stage(conn, "bench_events", table)
        conn.exec_driver_sql(f"INSERT INTO events ({columns}) SELECT {columns} FROM bench_events")
    with warehouse.begin() as conn:
        conn.exec_driver_sql("ANALYZE events")
    return time.perf_counter() - began


def sketch_entries(warehouse: Warehouse, day: datetime) -> int:
    """Entries (non-empty buckets) in the day's hourly sketches, and so the size they take."""
    from hub_pipelines.warehouse.rollups import sketch_entries_sql

    entries = sketch_entries_sql(
        "SELECT bucket_start, sketch FROM rollup_metrics_hourly WHERE bucket_start >= :s AND bucket_start < :e",
        "bucket_start",
    )
    with warehouse.connect() as conn:
        return int(
            conn.execute(
                sa.text(f"SELECT count(*) FROM ({entries}) x"), {"s": day, "e": day + DAY}
            ).scalar_one()
        )


def pandas_baseline(warehouse: Warehouse, day: datetime) -> tuple[float, int, float]:
    """(seconds of the groupby, groups, seconds to load the frame) for the day's metric values."""
    dims = ", ".join(d for d in METRIC_ROLLUP_DIMENSIONS if d != "metric_name")
    began = time.perf_counter()
    with warehouse.connect() as conn:
        frame = pd.read_sql(
            sa.text(
                f"SELECT event_time, {dims}, metric_name, CAST(metric_value AS DOUBLE PRECISION) AS v FROM events"
                " WHERE event_type = 'telemetry' AND metric_value IS NOT NULL AND event_time >= :s AND event_time < :e"
                f" UNION ALL SELECT event_time, {dims}, 'cost_usd', CAST(cost_usd AS DOUBLE PRECISION) FROM events"
                " WHERE event_type = 'cost' AND cost_usd IS NOT NULL AND event_time >= :s AND event_time < :e"
            ),
            conn,
            params={"s": day, "e": day + DAY},
        )
    loaded = time.perf_counter() - began
    began = time.perf_counter()
    frame["hour"] = pd.to_datetime(frame["event_time"], utc=True).dt.floor("h")
    grouped = frame.groupby(["hour", *METRIC_ROLLUP_DIMENSIONS], dropna=False, sort=False)["v"]
    stats = grouped.agg(["count", "sum", "min", "max", "mean", "std"])
    quantiles = grouped.quantile([0.5, 0.95, 0.99]).unstack()
    result = stats.join(quantiles)
    return time.perf_counter() - began, len(result), loaded


@contextmanager
def open_warehouse(backend: str, workdir: Path):
    """A warehouse in a fresh DuckDB file, or in a fresh PostgreSQL database dropped afterwards."""
    if backend == "duckdb":
        yield Warehouse(f"duckdb:///{workdir / 'bench.duckdb'}")
        return
    with fresh_postgres_database(POSTGRES_URL) as url:
        warehouse = Warehouse(url)
        try:
            yield warehouse
        finally:
            warehouse.engine.dispose()


def one_day(backend: str, n: int, workdir: Path) -> dict:
    with open_warehouse(backend, workdir) as warehouse:
        warehouse.create_tables()
        day = datetime(2026, 10, 1, tzinfo=UTC)
        load_s = load_day(warehouse, n, day, 0, 0.1)
        hourly = refresh_hourly(warehouse, day, day + DAY)
        again = refresh_hourly(warehouse, day, day + DAY)  # a re-run (replaces the same partitions)
        daily = refresh_daily(warehouse, day, day + DAY)
        pandas_s, groups, pandas_load_s = pandas_baseline(warehouse, day)
        return {
            "backend": backend,
            "events": n,
            "load_events_s": round(load_s, 2),
            "hourly_rollups_s": round(hourly.seconds, 2),
            "hourly_rollups_rerun_s": round(again.seconds, 2),
            "daily_rollup_s": round(daily.seconds, 2),
            "metric_rows": hourly.rows["rollup_metrics_hourly"],
            "sketch_entries": sketch_entries(warehouse, day),
            "usage_rows": hourly.rows["rollup_usage_hourly"],
            "pandas_groupby_s": round(pandas_s, 2),
            "pandas_groups": groups,
            "pandas_load_s": round(pandas_load_s, 2),
            "ratio_hub_over_pandas": round(hourly.seconds / pandas_s, 2),
            "events_per_s": round(n / hourly.seconds),
        }


def backfill(backend: str, n: int, days: int, workdir: Path, through_dagster: bool) -> dict:
    with open_warehouse(backend, workdir) as warehouse:
        warehouse.create_tables()
        start = datetime(2026, 9, 1, tzinfo=UTC)
        per_day = n // days
        load_s = sum(load_day(warehouse, per_day, start + k * DAY, k * per_day, 0.2) for k in range(days))
        hourly = refresh_hourly(warehouse, start, start + days * DAY)
        daily = refresh_daily(warehouse, start, start + days * DAY)
        out = {
            "backend": backend,
            "events": per_day * days,
            "days": days,
            "load_events_s": round(load_s, 1),
            "hourly_backfill_s": round(hourly.seconds, 1),
            "daily_backfill_s": round(daily.seconds, 1),
            "hours": hourly.partitions,
            "events_per_s": round(per_day * days / hourly.seconds),
        }
        if through_dagster:
            out |= dagster_backfill(warehouse, start, days, workdir)
        return out


def dagster_backfill(warehouse: Warehouse, start: datetime, days: int, workdir: Path) -> dict:
    """The same hourly backfill as one Dagster run over the partition range (single-run policy)."""
    import dagster as dg
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    os.environ["HUB_WAREHOUSE_URL"] = warehouse.url
    from hub_pipelines.definitions import defs

    home = workdir / "dagster"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    last = start + days * DAY - timedelta(hours=1)
    tags = {
        ASSET_PARTITION_RANGE_START_TAG: start.strftime("%Y-%m-%d-%H:%M"),
        ASSET_PARTITION_RANGE_END_TAG: last.strftime("%Y-%m-%d-%H:%M"),
    }
    with dg.DagsterInstance.from_config(str(home)) as instance:
        began = time.perf_counter()
        result = defs.resolve_job_def("hourly_rollups_job").execute_in_process(instance=instance, tags=tags)
        seconds = time.perf_counter() - began
        assert result.success
        step = [e for e in result.all_events if e.event_type_value == "STEP_SUCCESS"][0]
        step_s = step.event_specific_data.duration_ms / 1000
        policies = compare_backfill_policies(defs, instance, start)
    return {"dagster_run_s": round(seconds, 1), "dagster_step_s": round(step_s, 1), **policies}


def compare_backfill_policies(defs, instance, day: datetime) -> dict:
    """One day of hourly partitions backfilled as 24 runs (one per partition, the multi-run policy)
    and as one run over the range (the single-run policy hourly_rollups declares)."""
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    job = defs.resolve_job_def("hourly_rollups_job")
    hours = [day + timedelta(hours=h) for h in range(24)]
    began = time.perf_counter()
    for hour in hours:
        assert job.execute_in_process(
            instance=instance, partition_key=hour.strftime("%Y-%m-%d-%H:%M")
        ).success
    per_partition_s = time.perf_counter() - began
    tags = {
        ASSET_PARTITION_RANGE_START_TAG: hours[0].strftime("%Y-%m-%d-%H:%M"),
        ASSET_PARTITION_RANGE_END_TAG: hours[-1].strftime("%Y-%m-%d-%H:%M"),
    }
    began = time.perf_counter()
    assert job.execute_in_process(instance=instance, tags=tags).success
    single_run_s = time.perf_counter() - began
    return {
        "one_day_as_24_runs_s": round(per_partition_s, 1),
        "one_day_as_one_run_s": round(single_run_s, 1),
        "single_run_speedup": round(per_partition_s / single_run_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["duckdb", "postgres", "both"], default="both")
    parser.add_argument("--events-per-day", type=int, default=1_000_000)
    parser.add_argument("--backfill-events", type=int, default=10_000_000)
    parser.add_argument("--backfill-days", type=int, default=30)
    parser.add_argument("--no-backfill", action="store_true")
    parser.add_argument("--no-one-day", action="store_true")
    parser.add_argument("--through-dagster", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    backends = ["duckdb", "postgres"] if args.backend == "both" else [args.backend]
    report = {"machine": f"{platform.node()} ({os.cpu_count()} cores)", "one_day": [], "backfill": []}
    with tempfile.TemporaryDirectory(prefix="hub-bench-rollups-") as tmp:
        for backend in [] if args.no_one_day else backends:
            result = one_day(backend, args.events_per_day, Path(tmp))
            report["one_day"].append(result)
            print(json.dumps(result), flush=True)
        if not args.no_backfill:
            for backend in backends:
                result = backfill(
                    backend,
                    args.backfill_events,
                    args.backfill_days,
                    Path(tmp),
                    args.through_dagster and backend == "duckdb",
                )
                report["backfill"].append(result)
                print(json.dumps(result), flush=True)
    print()
    for r in report["one_day"]:
        print(
            f"{r['backend']:>8}: hourly rollups of one day of {r['events']:,} events {r['hourly_rollups_s']} s"
            f" (re-run {r['hourly_rollups_rerun_s']} s; daily {r['daily_rollup_s']} s);"
            f" pandas groupby of the metrics alone {r['pandas_groupby_s']} s; ratio hub/pandas"
            f" {r['ratio_hub_over_pandas']}"
        )
    for r in report["backfill"]:
        extra = (
            f"; as one Dagster run {r['dagster_run_s']} s; one day as 24 runs {r['one_day_as_24_runs_s']} s"
            f" against one run {r['one_day_as_one_run_s']} s (x{r['single_run_speedup']})"
            if "dagster_run_s" in r
            else ""
        )
        print(
            f"{r['backend']:>8}: {r['days']}-day hourly backfill of {r['events']:,} events {r['hourly_backfill_s']} s"
            f" ({r['hours']} hours), daily {r['daily_backfill_s']} s{extra}"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
