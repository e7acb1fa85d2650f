"""A 30-day backfill launched from the CLI completes with the multiprocess executor, as one run per
asset group (single-run backfill policy), against a persistent Dagster instance."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import sqlalchemy as sa

from hub_pipelines.warehouse import Warehouse
from hub_pipelines.warehouse.tables import events

DAYS = 30
END = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
START = END - timedelta(days=DAYS)
HOURLY = "hourly_rollups"
DAILY = "daily_rollups,cost_daily,security_daily,compliance_daily"


def _rows():
    for hour in range(DAYS * 24):
        moment = START + timedelta(hours=hour, minutes=7)
        for i, (event_type, extra) in enumerate(
            [
                (
                    "telemetry",
                    {"metric_name": "latency_ms", "metric_value": 100.0 + hour % 50, "status": "ok"},
                ),
                ("telemetry", {"metric_name": "tokens_input", "metric_value": 200.0}),
                ("cost", {"cost_usd": 0.01, "cost_type": "inference"}),
                ("security", {"threat_type": "jailbreak", "severity": "warning"}),
                (
                    "policy",
                    {
                        "policy_id": "p1",
                        "policy_category": "safety",
                        "outcome": "pass" if hour % 4 else "fail",
                    },
                ),
            ]
        ):
            yield {c.name: None for c in events.columns} | {
                "event_id": str(uuid.uuid4()), "event_time": moment + timedelta(seconds=i),
                "tenant_id": f"tenant-0{hour % 2 + 1}", "source_module": "llm-observatory",
                "event_type": event_type, "schema_version": "2.0.0", "schema_major": 2, "model": "gpt-4o",
                "provider": "openai", "project": "chat", "team": "core", "original": "{}",
                "batch_id": "bench", "ingested_at": END,
            } | extra  # fmt: skip


def _dagster(home: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "dagster",
        "asset",
        "materialize",
        "-m",
        "hub_pipelines.definitions",
        *args,
    ]
    return subprocess.run(command, env=env, cwd=home, capture_output=True, text=True, timeout=240)


def test_thirty_day_backfill_from_the_cli_with_the_multiprocess_executor(tmp_path):
    url = f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    warehouse = Warehouse(url)
    warehouse.create_tables()
    with warehouse.begin() as conn:
        conn.execute(events.insert(), list(_rows()))
    warehouse.engine.dispose()

    home = tmp_path / "dagster"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = os.environ | {
        "DAGSTER_HOME": str(home),
        "HUB_WAREHOUSE_URL": url,
        "HUB_HOME": str(tmp_path / "hub"),
    }
    last_hour = (END - timedelta(hours=1)).strftime("%Y-%m-%d-%H:%M")
    hourly = _dagster(
        home, env, "--select", HOURLY, "--partition-range", f"{START:%Y-%m-%d-%H:%M}...{last_hour}"
    )
    assert hourly.returncode == 0, hourly.stderr[-3000:]
    last_day = (END - timedelta(days=1)).strftime("%Y-%m-%d")
    daily = _dagster(home, env, "--select", DAILY, "--partition-range", f"{START:%Y-%m-%d}...{last_day}")
    assert daily.returncode == 0, daily.stderr[-3000:]

    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert len(runs) == 2 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        for run in runs:
            kinds = {
                e.dagster_event.event_type_value for e in instance.all_logs(run.run_id) if e.dagster_event
            }
            # Steps ran in worker processes: the multiprocess executor.
            assert "STEP_WORKER_STARTED" in kinds, kinds
            checks = [
                e.dagster_event.event_specific_data.passed
                for e in instance.all_logs(run.run_id)
                if e.dagster_event and e.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION"
            ]
            assert checks and all(checks)  # the write-time totals check (and the freshness check) passed
        hours = instance.get_materialized_partitions(dg.AssetKey("hourly_rollups"))
        days = instance.get_materialized_partitions(dg.AssetKey("compliance_daily"))
        assert len(hours) == DAYS * 24 and len(days) == DAYS

    warehouse = Warehouse(url)
    with warehouse.connect() as conn:
        partitions = dict(
            conn.execute(sa.text("SELECT grain, count(*) FROM rollup_partitions GROUP BY grain")).all()
        )
        assert partitions == {"hour": DAYS * 24, "day": DAYS}
        totals = conn.execute(
            sa.text(
                "SELECT (SELECT sum(value_count) FROM rollup_metrics_daily),"
                " (SELECT sum(requests) FROM rollup_usage_daily), (SELECT sum(detections) FROM rollup_security_daily),"
                " (SELECT sum(failed) FROM rollup_policy_daily), (SELECT sum(spend_usd) FROM rollup_usage_daily)"
            )
        ).one()
    warehouse.engine.dispose()
    hours_total = DAYS * 24
    assert totals[:4] == (3 * hours_total, hours_total, hours_total, hours_total // 4)
    # events.cost_usd is a 4-byte FLOAT on DuckDB: 0.01 is stored as 0.0099999998.
    assert abs(totals[4] - 0.01 * hours_total) < 1e-6 * hours_total
