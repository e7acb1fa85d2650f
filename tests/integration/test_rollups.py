"""Rollups and the query interface against a pandas reference computed from the raw events.

Data: the generator's traffic (several days, several tenants, all six sources) ingested through the
real ingest path into DuckDB and into a fresh PostgreSQL database; rollups written for the whole
window. Every rollup column, and the answers of `query()` and `hub query`, are compared with pandas
over the raw events read back from the same warehouse.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from hub_pipelines.cli import main
from hub_pipelines.generator import GeneratorConfig, simulate, write_batches
from hub_pipelines.ingestion import ingest_files
from hub_pipelines.landing import LocalFolder
from hub_pipelines.query import DIMENSIONS, QueryError, query
from hub_pipelines.warehouse import Warehouse, sketch
from hub_pipelines.warehouse.rollups import refresh_daily, refresh_hourly
from hub_pipelines.warehouse.sketch import ALPHA
from hub_pipelines.warehouse.store import normalise_url
from hub_pipelines.warehouse.tables import (
    METRIC_ROLLUP_DIMENSIONS,
    POLICY_ROLLUP_DIMENSIONS,
    SECURITY_ROLLUP_DIMENSIONS,
    USAGE_ROLLUP_DIMENSIONS,
)

DAYS = 3
NOW = datetime.now(UTC)
END = NOW.replace(minute=0, second=0, microsecond=0)  # the generated window ends at this hour
START = END - timedelta(days=DAYS)
DAY0 = START.replace(hour=0)


@pytest.fixture(scope="module")
def batches(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("generated")
    config = GeneratorConfig(
        days=DAYS,
        tenants=3,
        seed=11,
        end=END,
        requests_per_hour=6,
        security_per_hour=1.0,
        policy_fraction=0.2,
    )
    write_batches(simulate(config), out)
    return out


@pytest.fixture(scope="module", params=["duckdb", "postgres"])
def populated(request, batches, tmp_path_factory):
    """(warehouse, url) with the generated data ingested and rolled up, per backend."""
    if request.param == "duckdb":
        url = f"duckdb:///{tmp_path_factory.mktemp('wh') / 'warehouse.duckdb'}"
        admin = None
    else:
        server = request.getfixturevalue("postgres_server")
        name = f"hub_test_rollups_{uuid.uuid4().hex[:10]}"
        admin = sa.create_engine(normalise_url(server), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        url = server.rsplit("/", 1)[0] + "/" + name
    warehouse = Warehouse(url)
    warehouse.create_tables()
    zone = LocalFolder(batches)
    # Only the batch files: the generator also writes labels.json and manifest.json beside them.
    keys = [f.key for f in zone.list_pending() if f.key.endswith(".jsonl")]
    report = ingest_files(warehouse, zone, keys, archive=False, received_at=NOW)
    assert report.summary["stored"] > 5000 and report.summary["dead_lettered"] == 0
    refresh_hourly(warehouse, START, END)
    refresh_daily(warehouse, DAY0, END.replace(hour=0) + timedelta(days=1))
    try:
        yield warehouse, url
    finally:
        warehouse.engine.dispose()
        if admin is not None:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.dispose()


def _events(warehouse: Warehouse) -> pd.DataFrame:
    with warehouse.connect() as conn:
        frame = pd.read_sql(
            sa.text(
                "SELECT event_time, event_type, source_module, metric_name,"
                " CAST(metric_value AS DOUBLE PRECISION) AS metric_value,"
                " CAST(cost_usd AS DOUBLE PRECISION) AS cost_usd, "
                + ", ".join(d for d in DIMENSIONS if d not in ("source_module", "event_type"))
                + " FROM events"
            ),
            conn,
        )
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True)
    return frame


def _table(warehouse: Warehouse, table: str) -> pd.DataFrame:
    with warehouse.connect() as conn:
        frame = pd.read_sql(sa.text(f"SELECT * FROM {table}"), conn)
    frame["bucket_start"] = pd.to_datetime(frame["bucket_start"], utc=True)
    return frame


def _metric_values(events: pd.DataFrame) -> pd.DataFrame:
    telemetry = events[
        (events.event_type == "telemetry") & events.metric_name.notna() & events.metric_value.notna()
    ].assign(v=lambda d: d.metric_value)
    cost = events[(events.event_type == "cost") & events.cost_usd.notna()].assign(
        metric_name="cost_usd", v=lambda d: d.cost_usd
    )
    return pd.concat([telemetry, cost], ignore_index=True)


def _reference_metrics(events: pd.DataFrame, freq: str) -> pd.DataFrame:
    values = _metric_values(events).assign(bucket_start=lambda d: d.event_time.dt.floor(freq))
    grouped = values.groupby(["bucket_start", *METRIC_ROLLUP_DIMENSIONS], dropna=False)["v"]
    return grouped.agg(
        value_count="count",
        value_sum="sum",
        value_min="min",
        value_max="max",
        value_avg="mean",
        value_stddev="std",
        p50=lambda x: np.quantile(x, 0.5),
        p95=lambda x: np.quantile(x, 0.95),
        p99=lambda x: np.quantile(x, 0.99),
    ).reset_index()


def _reference_usage(events: pd.DataFrame, freq: str, seconds: int) -> pd.DataFrame:
    is_request = (events.event_type == "telemetry") & (events.metric_name == "latency_ms")
    is_tokens = (events.event_type == "telemetry") & events.metric_name.isin(
        ["tokens_input", "tokens_output"]
    )
    usage = events[(events.event_type == "cost") | is_request | is_tokens].copy()
    usage["requests"] = is_request[usage.index].astype(int)
    usage["errors"] = (is_request & events.status.notna() & (events.status != "ok"))[usage.index].astype(int)
    usage["tokens_input"] = usage.metric_value.where(usage.metric_name == "tokens_input", 0.0).fillna(0.0)
    usage["tokens_output"] = usage.metric_value.where(usage.metric_name == "tokens_output", 0.0).fillna(0.0)
    usage["spend_usd"] = usage.cost_usd.where(usage.event_type == "cost", 0.0).fillna(0.0)
    usage["cost_events"] = (usage.event_type == "cost").astype(int)
    usage["bucket_start"] = usage.event_time.dt.floor(freq)
    ref = (
        usage.groupby(["bucket_start", *USAGE_ROLLUP_DIMENSIONS], dropna=False)[
            ["requests", "errors", "tokens_input", "tokens_output", "spend_usd", "cost_events"]
        ]
        .sum()
        .reset_index()
    )
    ref["tokens_total"] = ref.tokens_input + ref.tokens_output
    requests = ref.requests.astype(float)
    ref["error_rate"] = (ref.errors / requests).where(requests > 0)
    ref["cost_per_request"] = (ref.spend_usd / requests).where(requests > 0)
    ref["cost_per_1k_tokens"] = (ref.spend_usd * 1000.0 / ref.tokens_total).where(ref.tokens_total > 0)
    ref["throughput_rps"] = requests / seconds
    ref["error_adjusted_throughput_rps"] = (ref.requests - ref.errors) / seconds
    return ref


def _reference_security(events: pd.DataFrame, freq: str) -> pd.DataFrame:
    security = events[events.event_type == "security"].assign(
        bucket_start=lambda d: d.event_time.dt.floor(freq)
    )
    return (
        security.groupby(["bucket_start", *SECURITY_ROLLUP_DIMENSIONS], dropna=False)
        .size()
        .rename("detections")
        .reset_index()
    )


def _reference_policy(events: pd.DataFrame, freq: str) -> pd.DataFrame:
    policy = events[events.event_type == "policy"].assign(
        bucket_start=lambda d: d.event_time.dt.floor(freq),
        passed=lambda d: (d.outcome == "pass").astype(int),
        failed=lambda d: (d.outcome == "fail").astype(int),
    )
    ref = (
        policy.groupby(["bucket_start", *POLICY_ROLLUP_DIMENSIONS], dropna=False)
        .agg(evaluations=("outcome", "size"), passed=("passed", "sum"), failed=("failed", "sum"))
        .reset_index()
    )
    judged = (ref.passed + ref.failed).astype(float)
    ref["compliance_rate"] = (ref.passed / judged).where(judged > 0)
    return ref


def _compare(got: pd.DataFrame, ref: pd.DataFrame, keys: list[str], exact: list[str], approx: list[str] = ()):
    merged = ref.merge(got, on=keys, how="outer", suffixes=("_ref", ""), indicator=True)
    assert (merged["_merge"] == "both").all(), merged[merged["_merge"] != "both"][keys].head()
    for column in exact:
        np.testing.assert_allclose(
            merged[column].astype(float),
            merged[f"{column}_ref"].astype(float),
            rtol=1e-9,
            atol=1e-12,
            err_msg=column,
        )
    for column in approx:
        expected = merged[f"{column}_ref"].astype(float)
        assert ((merged[column] - expected).abs() <= ALPHA * expected.abs() * (1 + 1e-9) + 1e-9).all(), column
    return len(merged)


STATS = ["value_count", "value_sum", "value_min", "value_max", "value_avg", "value_stddev"]
PCTS = ["p50", "p95", "p99"]
USAGE_COLUMNS = [
    "requests", "errors", "tokens_input", "tokens_output", "tokens_total", "spend_usd", "cost_events",
    "error_rate", "cost_per_request", "cost_per_1k_tokens", "throughput_rps", "error_adjusted_throughput_rps",
]  # fmt: skip


def test_rollups_equal_the_pandas_reference(populated):
    warehouse, _ = populated
    events = _events(warehouse)
    assert events.tenant_id.nunique() == 3 and events.event_time.dt.floor("D").nunique() >= DAYS
    assert set(events.event_type) >= {"telemetry", "cost", "security", "policy"}

    for grain, freq, seconds in (("hourly", "h", 3600), ("daily", "D", 86400)):
        metric_keys = ["bucket_start", *METRIC_ROLLUP_DIMENSIONS]
        n = _compare(
            _table(warehouse, f"rollup_metrics_{grain}"),
            _reference_metrics(events, freq),
            metric_keys,
            exact=STATS + (PCTS if grain == "hourly" else []),
            approx=PCTS if grain == "daily" else [],
        )
        assert n > (1000 if grain == "hourly" else 100)
        _compare(
            _table(warehouse, f"rollup_usage_{grain}"),
            _reference_usage(events, freq, seconds),
            ["bucket_start", *USAGE_ROLLUP_DIMENSIONS],
            exact=USAGE_COLUMNS,
        )
        _compare(
            _table(warehouse, f"rollup_security_{grain}"),
            _reference_security(events, freq),
            ["bucket_start", *SECURITY_ROLLUP_DIMENSIONS],
            exact=["detections"],
        )
        _compare(
            _table(warehouse, f"rollup_policy_{grain}"),
            _reference_policy(events, freq),
            ["bucket_start", *POLICY_ROLLUP_DIMENSIONS],
            exact=["evaluations", "passed", "failed", "compliance_rate"],
        )
    # Each row's sketch holds its values exactly: hourly sketches equal the sketch of the raw values,
    # and the daily ones (merged in SQL) hold every value once.
    values = _metric_values(events).assign(bucket_start=lambda d: d.event_time.dt.floor("h"))
    hourly = _table(warehouse, "rollup_metrics_hourly").set_index(["bucket_start", *METRIC_ROLLUP_DIMENSIONS])
    for key, group in list(values.groupby(["bucket_start", *METRIC_ROLLUP_DIMENSIONS], dropna=False))[:300]:
        assert sketch.decode(hourly.loc[key, "sketch"]) == sketch.sketch_of(group.v.to_numpy())
    daily = _table(warehouse, "rollup_metrics_daily")
    assert sum(sum(sketch.decode(t).values()) for t in daily.sketch) == len(values)


def test_rewriting_partitions_gives_identical_rows(populated):
    warehouse, _ = populated
    day = DAY0 + timedelta(days=1)
    tables = ["rollup_metrics_hourly", "rollup_usage_hourly", "rollup_policy_hourly", "rollup_metrics_daily"]

    def snapshot():
        out = {}
        for table in tables:
            frame = _table(warehouse, table)
            frame = frame[(frame.bucket_start >= day) & (frame.bucket_start < day + timedelta(days=1))]
            out[table] = frame.sort_values(list(frame.columns)).reset_index(drop=True)
        return out

    before = snapshot()
    assert all(len(f) for f in before.values())
    refresh_hourly(warehouse, day, day + timedelta(days=1))
    refresh_hourly(warehouse, day + timedelta(hours=5), day + timedelta(hours=7))
    refresh_daily(warehouse, day, day + timedelta(days=1))
    after = snapshot()
    for table in tables:
        pd.testing.assert_frame_equal(before[table], after[table], check_exact=True)


def _reference_query(events: pd.DataFrame, freq: str, group: list[str], q: float) -> pd.DataFrame:
    latency = events[(events.event_type == "telemetry") & (events.metric_name == "latency_ms")]
    latency = latency.assign(bucket_start=latency.event_time.dt.floor(freq))
    return (
        latency.groupby(["bucket_start", *group], dropna=False)
        .metric_value.quantile(q)
        .rename("value")
        .reset_index()
    )


def test_query_reads_rollups_where_they_answer_and_matches_reference(populated):
    warehouse, _ = populated
    events = _events(warehouse)
    window = {"start": START, "end": END}
    dims = ["tenant_id", "source_module", "model", "provider", "project", "environment", "region"]

    exact_p95 = query(warehouse, "latency_ms", bucket="1h", agg="p95", group_by=["model"], **window)
    assert exact_p95.attrs["sources"] == {"events": DAYS * 24}  # merged percentiles need raw events
    _compare(exact_p95, _reference_query(events, "h", ["model"], 0.95), ["bucket_start", "model"], ["value"])

    stored = query(warehouse, "latency_ms", bucket="1h", agg="p99", group_by=dims, **window)
    assert stored.attrs["sources"] == {"rollup_metrics_hourly": DAYS * 24}  # one rollup row per result row
    _compare(stored, _reference_query(events, "h", dims, 0.99), ["bucket_start", *dims], ["value"])

    sketched = query(
        warehouse, "latency_ms", bucket="1d", agg="p95", group_by=["model"], exact=False, **window
    )
    assert set(sketched.attrs["sources"]) <= {"rollup_metrics_daily", "rollup_metrics_hourly"}
    _compare(
        sketched, _reference_query(events, "D", ["model"], 0.95), ["bucket_start", "model"], [], ["value"]
    )

    latency = events[(events.event_type == "telemetry") & (events.metric_name == "latency_ms")]
    for bucket, freq in (("1h", "h"), ("1d", "D")):
        avg = query(warehouse, "latency_ms", bucket=bucket, agg="avg", group_by=["tenant"], **window)
        assert "events" not in avg.attrs["sources"]
        ref = latency.assign(bucket_start=latency.event_time.dt.floor(freq))
        ref = ref.groupby(["bucket_start", "tenant_id"]).metric_value.mean().rename("value").reset_index()
        _compare(avg, ref, ["bucket_start", "tenant_id"], ["value"])

    # Raw-only: 5-minute buckets with a dimension no rollup keeps.
    ok = query(
        warehouse,
        "latency_ms",
        bucket="5m",
        agg="count",
        group_by=["tenant_id"],
        filters={"status": "ok"},
        **window,
    )
    ref = latency[latency.status == "ok"].assign(bucket_start=lambda d: d.event_time.dt.floor("5min"))
    ref = ref.groupby(["bucket_start", "tenant_id"]).size().rename("value").astype(float).reset_index()
    _compare(ok, ref, ["bucket_start", "tenant_id"], ["value"])

    # Composites from the usage and policy rollups equal the same ratios computed from raw events.
    usage = (
        _reference_usage(events, "D", 86400)
        .groupby(["bucket_start", "team"], dropna=False)[["spend_usd", "requests"]]
        .sum()
        .reset_index()
    )
    cost = query(warehouse, "cost_per_request", bucket="1d", group_by=["team"], **window)
    assert "events" not in cost.attrs["sources"]
    usage["value"] = (usage.spend_usd / usage.requests).where(usage.requests > 0)
    _compare(
        cost.dropna(), usage.dropna()[["bucket_start", "team", "value"]], ["bucket_start", "team"], ["value"]
    )
    policy = (
        _reference_policy(events, "D")
        .groupby(["bucket_start", "policy_category"])[["passed", "failed"]]
        .sum()
    )
    policy = (policy.passed / (policy.passed + policy.failed)).rename("value").reset_index()
    rate = query(warehouse, "compliance_rate", bucket="1d", group_by=["category"], **window)
    _compare(rate, policy, ["bucket_start", "policy_category"], ["value"])
    threats = query(
        warehouse, "threats", bucket="1h", group_by=["severity"], filters={"tenant": "tenant-01"}, **window
    )
    ref = _reference_security(events, "h")
    ref = ref[ref.tenant_id == "tenant-01"].groupby(["bucket_start", "severity"]).detections.sum()
    _compare(
        threats, ref.rename("value").astype(float).reset_index(), ["bucket_start", "severity"], ["value"]
    )

    # Reading only raw events gives the same answers as the rollups.
    for metric, agg in (
        ("latency_ms", "max"),
        ("spend_usd", "sum"),
        ("error_rate", "avg"),
        ("policy_failed", "sum"),
    ):
        auto = query(warehouse, metric, bucket="1d", agg=agg, group_by=["model"], **window)
        raw = query(warehouse, metric, bucket="1d", agg=agg, group_by=["model"], source="events", **window)
        assert "events" not in auto.attrs["sources"] and set(raw.attrs["sources"]) == {"events"}
        pd.testing.assert_frame_equal(auto, raw, check_exact=False, rtol=1e-9)


def test_query_fills_hours_not_rolled_up_from_raw_events(populated):
    warehouse, _ = populated
    hour = START + timedelta(hours=30)
    window = {"start": hour - timedelta(hours=3), "end": hour + timedelta(hours=3)}
    before = query(warehouse, "requests", bucket="1h", group_by=["model"], **window)
    with warehouse.begin() as conn:  # as if the hour had never been rolled up
        for table in ("rollup_usage_hourly", "rollup_partitions"):
            column = "bucket_start" if table != "rollup_partitions" else "partition_start"
            conn.execute(sa.text(f"DELETE FROM {table} WHERE {column} = :h"), {"h": hour})
    try:
        mixed = query(warehouse, "requests", bucket="1h", group_by=["model"], **window)
        assert mixed.attrs["sources"] == {"rollup_usage_hourly": 5, "events": 1}
        pd.testing.assert_frame_equal(before, mixed)
        only_rollups = query(
            warehouse, "requests", bucket="1h", group_by=["model"], source="rollups", **window
        )
        assert hour not in set(only_rollups.bucket_start) and hour in set(mixed.bucket_start)
    finally:
        refresh_hourly(warehouse, hour, hour + timedelta(hours=1))


def test_hub_query_cli_matches_reference_and_rejects_bad_names(populated):
    warehouse, url = populated
    events = _events(warehouse)
    runner = CliRunner()
    args = ["query", "--metric", "latency_ms", "--since", "7d", "--bucket", "1h", "--agg", "p95"]
    result = runner.invoke(main, [*args, "--group-by", "model", "--format", "json", "--warehouse-url", url])
    assert result.exit_code == 0, result.output
    got = pd.DataFrame(json.loads(result.output))
    got["bucket_start"] = pd.to_datetime(got["bucket_start"], utc=True)
    n = _compare(got, _reference_query(events, "h", ["model"], 0.95), ["bucket_start", "model"], ["value"])
    assert n > DAYS * 24

    csv = runner.invoke(
        main, [*args, "--group-by", "model", "--format", "csv", "--limit", "5", "--warehouse-url", url]
    )
    assert csv.exit_code == 0 and csv.output.splitlines()[0] == "bucket_start,model,value"
    assert len(csv.output.splitlines()) == 6
    table = runner.invoke(main, [*args, "--group-by", "model", "--warehouse-url", url])
    assert table.exit_code == 0 and "gpt-4o" in table.output

    bad = runner.invoke(main, [*args, "--group-by", "modle", "--warehouse-url", url])
    assert bad.exit_code == 2
    assert "unknown dimension 'modle'" in bad.output and "model" in bad.output and "tenant_id" in bad.output
    bad = runner.invoke(main, [*args, "--filter", "colour=red", "--warehouse-url", url])
    assert (
        bad.exit_code == 2 and "unknown dimension 'colour'" in bad.output and "policy_category" in bad.output
    )
    bad = runner.invoke(main, ["query", "--metric", "latncy_ms", "--warehouse-url", url])
    assert bad.exit_code == 2 and "unknown metric 'latncy_ms'" in bad.output and "latency_ms" in bad.output
    bad = runner.invoke(main, ["query", "--metric", "error_rate", "--agg", "p95", "--warehouse-url", url])
    assert bad.exit_code == 2 and "allowed: avg" in bad.output

    with pytest.raises(QueryError, match="allowed: 1m, 5m, 1h, 1d"):
        query(warehouse, "latency_ms", bucket="2h")
    with pytest.raises(QueryError, match="unknown dimension 'nope'.*tenant_id"):
        query(warehouse, "latency_ms", filters={"nope": "x"})
    # Values are bound parameters: an injection attempt is just a value that matches nothing.
    assert query(warehouse, "latency_ms", since="7d", filters={"model": "x' OR '1'='1"}).empty
