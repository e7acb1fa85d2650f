"""Retention through the Dagster job: raw events, dead letters and rollups past their retention are
deleted, per-tenant overrides honoured, counts reported; rollups outlive their raw events."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import dagster as dg
import sqlalchemy as sa

from hub_pipelines.definitions import defs
from hub_pipelines.warehouse.rollups import refresh_daily, refresh_hourly
from hub_pipelines.warehouse.tables import dead_letter_events, events

NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


def _event(tenant: str, moment: datetime, value: float) -> dict:
    return {
        "event_id": str(uuid.uuid4()), "event_time": moment, "tenant_id": tenant,
        "source_module": "llm-observatory", "event_type": "telemetry", "schema_version": "2.0.0",
        "schema_major": 2, "metric_name": "latency_ms", "metric_value": value, "unit": "ms",
        "model": "gpt-4o", "provider": "openai", "original": "{}", "batch_id": "test", "ingested_at": NOW,
    }  # fmt: skip


def _dead_letter(tenant: str, moment: datetime, index: int) -> dict:
    return {
        "batch_id": "test", "record_index": index, "landing_key": "x.jsonl", "tenant_id": tenant,
        "primary_reason": "schema", "reasons": "[]", "raw": "{}", "received_at": moment,
    }  # fmt: skip


def _counts(warehouse, table: str, column: str) -> dict[str, int]:
    with warehouse.connect() as conn:
        return dict(
            conn.execute(sa.text(f"SELECT tenant_id, count(*) FROM {table} GROUP BY tenant_id")).all()
        ) | {"_all": conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()}


def test_retention_job_deletes_by_age_and_tenant(warehouse, monkeypatch):
    monkeypatch.setenv("HUB_WAREHOUSE_URL", warehouse.url)
    ages = (5, 40, 100, 400)  # days
    rows = [
        _event(tenant, NOW - timedelta(days=age, hours=3), 100.0 + age)
        for tenant in ("acme", "big", "short")
        for age in ages
    ]
    with warehouse.begin() as conn:
        conn.execute(events.insert(), rows)
        conn.execute(
            dead_letter_events.insert(),
            [_dead_letter(t, NOW - timedelta(days=age), i) for i, (t, age) in enumerate(
                (t, age) for t in ("acme", "big") for age in (40, 100, 200))],
        )  # fmt: skip
    for age in ages:
        hour = NOW - timedelta(days=age, hours=3)
        refresh_hourly(warehouse, hour, hour + timedelta(hours=1))
        day = hour.replace(hour=0)
        refresh_daily(warehouse, day, day + timedelta(days=1))

    job = defs.resolve_job_def("retention_job")
    config = {
        "tenant_overrides": {"big": {"events_days": 120}, "short": {"rollups_days": 30}},
    }
    instance = dg.DagsterInstance.ephemeral()
    dry = job.execute_in_process(
        run_config={"ops": {"apply_retention_op": {"config": config | {"dry_run": True}}}}, instance=instance
    )
    assert dry.success
    would = dry.output_for_node("apply_retention_op")
    assert _counts(warehouse, "events", "event_time")["_all"] == 12  # nothing deleted

    result = job.execute_in_process(
        run_config={"ops": {"apply_retention_op": {"config": config}}}, instance=instance
    )
    assert result.success
    deleted = result.output_for_node("apply_retention_op")
    assert deleted == would
    # events: default 30 days (acme, short lose 40/100/400), big keeps 120 days (loses 400).
    assert deleted["events"] == 3 + 3 + 1
    assert _counts(warehouse, "events", "event_time") == {"acme": 1, "big": 3, "short": 1, "_all": 5}
    # dead letters: 90 days by default (acme keeps 40), big at least its 120 days of events.
    assert deleted["dead_letter_events"] == 2 + 1
    assert _counts(warehouse, "dead_letter_events", "received_at") == {"acme": 1, "big": 2, "_all": 3}
    # rollups: 365 days (the 400-day-old rows go), short keeps 30 days.
    assert deleted["rollup_metrics_hourly"] == 3 + 2 and deleted["rollup_metrics_daily"] == 3 + 2
    assert _counts(warehouse, "rollup_metrics_hourly", "bucket_start") == {
        "acme": 3,
        "big": 3,
        "short": 1,
        "_all": 7,
    }
    assert deleted["rollup_partitions"] == 2  # the 400-day-old hour and day

    # What was deleted is on the op's output and observed on the assets.
    step = next(e for e in result.all_events if e.event_type_value == "STEP_OUTPUT")
    metadata = step.event_specific_data.metadata
    assert metadata["deleted_events"].value == 7 and metadata["deleted_total"].value == sum(deleted.values())
    observations = {
        e.event_specific_data.asset_observation.asset_key.to_user_string():
            e.event_specific_data.asset_observation.metadata["retention_deleted_rows"].value
        for e in result.all_events
        if e.event_type_value == "ASSET_OBSERVATION"
    }  # fmt: skip
    assert observations["validated_events"] == 7 and observations["dead_letter_events"] == 3
    assert observations["hourly_rollups"] == sum(n for t, n in deleted.items() if t.endswith("_hourly"))
    assert observations["daily_rollups"] == deleted["rollup_metrics_daily"]

    # Rollups outlive raw events: at 100 days acme's raw events are gone but big's remain.
    # Re-materialising the hour recomputes big from its events and keeps acme's rows.
    old_hour = NOW - timedelta(days=100, hours=3)

    def tenants_in(hour):
        with warehouse.connect() as conn:
            return sorted(
                conn.execute(
                    sa.text("SELECT tenant_id FROM rollup_metrics_hourly WHERE bucket_start = :h"),
                    {"h": hour},
                ).scalars()
            )

    assert tenants_in(old_hour) == ["acme", "big"]
    job = defs.resolve_job_def("hourly_rollups_job")
    rerun = job.execute_in_process(instance=instance, partition_key=old_hour.strftime("%Y-%m-%d-%H:%M"))
    assert rerun.success and tenants_in(old_hour) == ["acme", "big"]
    metadata = rerun.get_asset_materialization_events()[0].event_specific_data.materialization.metadata
    assert metadata["hours_with_rollups_kept_past_raw_retention"].value == [old_hour.isoformat()]
    # Without the protection the hour is replaced whole, from the raw events that are left.
    refresh_hourly(warehouse, old_hour, old_hour + timedelta(hours=1))
    assert tenants_in(old_hour) == ["big"]
