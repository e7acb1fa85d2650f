"""Late events correct their hour and its day through the Dagster instance, by themselves.

The ingest job runs for real, the late_events_rollup_sensor is ticked against the instance and the
runs it requests are executed; the daily assets' automation condition is evaluated against the same
instance and the runs it requests are executed. Nobody calls the rollup functions. Values are
compared with a pandas reference computed from the raw events."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from hub_pipelines.definitions import defs
from hub_pipelines.defs.rollups.assets import DAILY_KEYS, DAILY_METRICS, HOURLY
from hub_pipelines.defs.rollups.sensors import SENSOR_NAME, RefreshState, late_events_rollup_sensor
from hub_pipelines.warehouse import Warehouse
from hub_pipelines.warehouse.sketch import ALPHA

HOUR = timedelta(hours=1)


@pytest.fixture
def hub_env(warehouse_url, tmp_path, monkeypatch):
    monkeypatch.setenv("HUB_HOME", str(tmp_path / "hub"))
    monkeypatch.setenv("HUB_LANDING_URL", str(tmp_path / "landing"))
    monkeypatch.setenv("HUB_WAREHOUSE_URL", warehouse_url)
    (tmp_path / "landing").mkdir()
    warehouse = Warehouse(warehouse_url)
    warehouse.create_tables()
    yield tmp_path / "landing", warehouse
    warehouse.engine.dispose()


def _land(landing, name: str, events: list[dict]) -> None:
    (landing / name).write_text("\n".join(json.dumps(e) for e in events))


def _latency_events(
    event_factory, start_index: int, hour: datetime, values: list[float], model: str
) -> list[dict]:
    events = []
    for i, value in enumerate(values):
        event = event_factory(
            start_index + i,
            hour + timedelta(seconds=37 * i % 3600),
            metric_value=value,
            dimensions={"model": model, "provider": "openai", "project": "chat", "status": "ok"},
        )
        event["event_id"] = str(uuid.uuid4())
        events.append(event)
    return events


def _ingest(instance) -> None:
    result = defs.resolve_job_def("ingest_job").execute_in_process(instance=instance)
    assert result.success


def _tick(instance, cursor):
    result = late_events_rollup_sensor(dg.build_sensor_context(instance=instance, cursor=cursor))
    return list(result.run_requests or []), result.cursor


def _run_hourly(instance, request) -> None:
    tags = dict(request.tags) | {"dagster/run_key": request.run_key, "dagster/sensor_name": SENSOR_NAME}
    result = defs.resolve_job_def("hourly_rollups_job").execute_in_process(instance=instance, tags=tags)
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks)


def _automation(instance, cursor):
    result = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, asset_selection=dg.AssetSelection.assets(*DAILY_KEYS), cursor=cursor
    )
    return result


def _run_days(instance, result) -> set[str]:
    days = set(result.get_requested_partitions(DAILY_METRICS))
    # The four daily assets are one multi-asset: requested together.
    for key in DAILY_KEYS:
        assert set(result.get_requested_partitions(key)) == days
    for day in sorted(days):
        run = defs.resolve_job_def("daily_rollups_job").execute_in_process(
            instance=instance, partition_key=day
        )
        assert run.success
        assert all(c.passed for c in run.get_asset_check_evaluations())
    return days


def _raw_latency(warehouse: Warehouse) -> pd.DataFrame:
    with warehouse.connect() as conn:
        frame = pd.read_sql(
            "SELECT event_time, model, CAST(metric_value AS DOUBLE PRECISION) AS v FROM events"
            " WHERE event_type = 'telemetry' AND metric_name = 'latency_ms'",
            conn,
        )
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True)
    return frame


def _rollup(warehouse: Warehouse, table: str, bucket: datetime, model: str) -> dict:
    with warehouse.connect() as conn:
        rows = pd.read_sql(
            f"SELECT value_count, value_sum, value_min, value_max, value_stddev, p50, p95, p99 FROM {table}"
            " WHERE metric_name = 'latency_ms' AND model = %(model)s AND bucket_start = %(bucket)s"
            if not warehouse.is_duckdb
            else f"SELECT value_count, value_sum, value_min, value_max, value_stddev, p50, p95, p99 FROM {table}"
            " WHERE metric_name = 'latency_ms' AND model = $model AND bucket_start = $bucket",
            conn,
            params={"model": model, "bucket": bucket},
        )
    assert len(rows) == 1, rows
    return rows.iloc[0].to_dict()


def _assert_matches(row: dict, values: pd.Series, exact_percentiles: bool) -> None:
    assert row["value_count"] == len(values)
    np.testing.assert_allclose(row["value_sum"], values.sum(), rtol=1e-12)
    assert row["value_min"] == values.min() and row["value_max"] == values.max()
    np.testing.assert_allclose(row["value_stddev"], values.std(), rtol=1e-9)
    for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        exact = float(np.quantile(values, q))
        if exact_percentiles:
            np.testing.assert_allclose(row[name], exact, rtol=1e-12)
        else:
            assert abs(row[name] - exact) <= ALPHA * exact * (1 + 1e-9)


def test_late_events_correct_their_hour_and_day(hub_env, event_factory):
    landing, warehouse = hub_env
    instance = dg.DagsterInstance.ephemeral()
    now = datetime.now(UTC)
    day = (now - timedelta(days=2)).replace(hour=0, minute=0, second=0, microsecond=0)
    day_key = day.strftime("%Y-%m-%d")
    # An hour that cannot end while the test runs (ingest accepts events up to an hour ahead).
    open_hour = (now + timedelta(minutes=30)).replace(minute=0, second=0, microsecond=0)
    rng = np.random.default_rng(3)

    automation = _automation(instance, None)
    assert automation.total_requested == 0  # nothing happened yet

    # 1. On-time data for three hours of that day, and one event of an hour that has not ended.
    first = []
    for n, offset in enumerate((3, 4, 5)):
        first += _latency_events(
            event_factory, 1000 * n, day + offset * HOUR, list(rng.lognormal(6, 0.6, 40)), "gpt-4o"
        )
    first += _latency_events(event_factory, 9000, now + timedelta(minutes=30), [123.0], "gpt-4o")
    _land(landing, "batch-1.jsonl", first)
    _ingest(instance)

    requests, cursor = _tick(instance, None)
    ranges = [
        (r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"])
        for r in requests
    ]
    assert ranges == [
        ((day + 3 * HOUR).strftime("%Y-%m-%d-%H:%M"), (day + 5 * HOUR).strftime("%Y-%m-%d-%H:%M"))
    ]
    # That hour is not a partition yet: it waits in the cursor.
    assert RefreshState.load(cursor).pending == [open_hour.isoformat()]
    for request in requests:
        _run_hourly(instance, request)

    automation = _automation(instance, automation.cursor)
    assert _run_days(instance, automation) == {day_key}

    late_hour = day + 4 * HOUR
    raw = _raw_latency(warehouse)
    in_hour = raw[raw.event_time.dt.floor("h") == late_hour].v
    _assert_matches(_rollup(warehouse, "rollup_metrics_hourly", late_hour, "gpt-4o"), in_hour, True)
    before_day = _rollup(warehouse, "rollup_metrics_daily", day, "gpt-4o")
    assert before_day["value_count"] == 120

    # Nothing new: the sensor and the automation stay quiet.
    requests, cursor = _tick(instance, cursor)
    assert requests == []
    automation = _automation(instance, automation.cursor)
    assert automation.total_requested == 0

    # 2. Late events for the already rolled-up 04:00 hour, far slower than the rest.
    late = _latency_events(event_factory, 5000, late_hour, list(rng.lognormal(9, 0.3, 15)), "gpt-4o")
    _land(landing, "batch-2-late.jsonl", late)
    _ingest(instance)

    requests, cursor = _tick(instance, cursor)
    assert [
        (r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"])
        for r in requests
    ] == [(late_hour.strftime("%Y-%m-%d-%H:%M"), late_hour.strftime("%Y-%m-%d-%H:%M"))]
    for request in requests:
        _run_hourly(instance, request)
    automation = _automation(instance, automation.cursor)
    assert _run_days(instance, automation) == {day_key}

    raw = _raw_latency(warehouse)
    in_hour = raw[raw.event_time.dt.floor("h") == late_hour].v
    assert len(in_hour) == 55
    _assert_matches(_rollup(warehouse, "rollup_metrics_hourly", late_hour, "gpt-4o"), in_hour, True)
    in_day = raw[(raw.event_time >= day) & (raw.event_time < day + timedelta(days=1))].v
    after_day = _rollup(warehouse, "rollup_metrics_daily", day, "gpt-4o")
    _assert_matches(after_day, in_day, False)
    assert after_day["value_count"] == 135 and after_day["p99"] > before_day["p99"]

    # The hour and the day carry fresh materialisations; then everything is quiet again.
    hour_key = late_hour.strftime("%Y-%m-%d-%H:%M")
    assert len(instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=HOURLY, asset_partitions=[hour_key]), limit=10
    ).records) == 2  # fmt: skip
    requests, cursor = _tick(instance, cursor)
    assert requests == []
    assert _automation(instance, automation.cursor).total_requested == 0
