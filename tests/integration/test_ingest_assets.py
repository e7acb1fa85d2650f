"""The ingest assets as Dagster runs them: the materialisation metadata (events in, stored,
duplicates, dead-lettered by reason, event-time range, hours touched) is what the generator wrote
and what the tables hold, and the asset checks judge the result, on DuckDB and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from hub_pipelines.defs.ingest import assets as ingest_assets
from hub_pipelines.defs.ingest import checks as ingest_checks
from hub_pipelines.generator import GeneratorConfig, simulate, write_batches
from hub_pipelines.resources import LandingZoneResource, WarehouseResource

CHECKS = [
    ingest_checks.dead_letter_rate,
    ingest_checks.no_duplicate_event_ids,
    ingest_checks.events_are_fresh,
    ingest_checks.ingest_ledger_balances,
]


def _metadata(result: dg.ExecuteInProcessResult) -> dict[str, dict]:
    out = {}
    for m in result.asset_materializations_for_node("ingest_batches"):
        out[m.asset_key.to_user_string()] = {k: v.value for k, v in m.metadata.items()}
    return out


def test_ingest_run_metadata_and_checks(warehouse_url, tmp_path, monkeypatch):
    monkeypatch.setenv("HUB_HOME", str(tmp_path / "hub"))
    landing = tmp_path / "landing"
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    config = GeneratorConfig(days=2, tenants=2, seed=5, end=end, requests_per_hour=20, corrupt_rate=0.05)
    expected = write_batches(simulate(config), landing)["expected"]
    resources = {
        "warehouse": WarehouseResource(url=warehouse_url),
        "landing_zone": LandingZoneResource(url=str(landing)),
    }

    keep_files = {"ops": {"ingest_batches": {"config": {"archive": False}}}}
    result = dg.materialize(
        [ingest_assets.ingest_batches, *CHECKS], resources=resources, run_config=keep_files
    )
    assert result.success
    meta = _metadata(result)
    events_meta, dead_meta = meta["validated_events"], meta["dead_letter_events"]
    assert events_meta["events_in"] == expected["events_in"]
    assert events_meta["stored"] == expected["stored"]
    assert events_meta["duplicates"] == expected["duplicates"] > 0
    assert events_meta["dead_lettered"] == dead_meta["dead_lettered"] == expected["dead_lettered"] > 0
    assert dead_meta["dead_lettered_by_reason"] == expected["dead_letter_reasons"]

    warehouse = resources["warehouse"].warehouse
    with warehouse.connect() as conn:
        times = pd.to_datetime(
            pd.Series(conn.execute(sa.text("SELECT event_time FROM events")).scalars().all()), utc=True
        )
        table_rows = conn.execute(sa.text("SELECT count(*) FROM events")).scalar_one()
        catalog_rows = conn.execute(sa.text("SELECT count(*) FROM asset_catalog")).scalar_one()
    assert events_meta["dagster/row_count"] == table_rows == expected["stored"]
    assert meta["asset_catalog"]["dagster/row_count"] == catalog_rows > 0
    assert pd.Timestamp(events_meta["event_time_min"]) == times.min()
    assert pd.Timestamp(events_meta["event_time_max"]) == times.max()
    hours = sorted(t.isoformat() for t in times.dt.floor("h").unique())
    assert events_meta["hours_touched"] == hours and events_meta["hours_touched_count"] == len(hours)

    verdicts = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(verdicts) == {
        "dead_letter_rate",
        "no_duplicate_event_ids",
        "events_are_fresh",
        "ingest_ledger_balances",
    }
    rate = verdicts["dead_letter_rate"].metadata["dead_letter_rate"].value
    assert rate == expected["dead_lettered"] / expected["events_in"]
    assert all(v.passed for v in verdicts.values()), {n: v.metadata for n, v in verdicts.items()}

    # The same files again: nothing new is stored and the metadata says so.
    again = dg.materialize(
        [ingest_assets.ingest_batches, *CHECKS], resources=resources, run_config=keep_files
    )
    repeat = _metadata(again)["validated_events"]
    assert repeat["files_already_ingested"] == repeat["files"] > 0
    assert repeat["events_in"] == repeat["stored"] == 0 and repeat["hours_touched"] == []

    # A tighter bound than this batch's share of dead letters fails the check (a warning).
    tight = dg.materialize(
        [ingest_assets.ingest_batches, *CHECKS],
        resources=resources,
        selection=dg.AssetSelection.checks(ingest_checks.dead_letter_rate),
        run_config={"ops": {"dead_letter_events_dead_letter_rate": {"config": {"max_rate": rate / 2}}}},
    )
    (verdict,) = tight.get_asset_check_evaluations()
    assert not verdict.passed and verdict.severity == dg.AssetCheckSeverity.WARN
