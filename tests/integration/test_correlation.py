"""Correlation through the warehouse, on DuckDB and PostgreSQL: generated traffic with scenarios
and 2% bad input is ingested; the cells the database aggregates are those the engine computes from
the events; the incidents stored recover the scenarios with their root causes, the same as the engine
finds on the simulation itself; a re-run replaces them; `hub incidents` prints them. On DuckDB, the
`correlations` asset materialises a day and a range through Dagster, and the operations and
compliance reports list the incidents."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from hub_ml.correlation import CorrelationInput, cells_from_events, correlate, match_scenarios
from hub_pipelines.cli import main
from hub_pipelines.generator import GeneratorConfig, simulate, write_batches
from hub_pipelines.generator.frames import asset_catalog_frame, events_frame
from hub_pipelines.incidents import correlate_days, read_incidents, read_members
from hub_pipelines.incidents.inputs import load_cells
from hub_pipelines.ingestion import ingest_files
from hub_pipelines.landing import LocalFolder
from hub_pipelines.warehouse import Warehouse

FIRST_DAY = 2  # the days before are look-back only


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    # Up to the start of today: every event is in the past when ingested.
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    config = GeneratorConfig(days=6, tenants=2, seed=3, requests_per_hour=20, end=end, corrupt_rate=0.02,
                             scenarios=True, anomalies=False)  # fmt: skip
    sim = simulate(config)
    out = tmp_path_factory.mktemp("scenarios")
    write_batches(sim, out)
    assert len({s["kind"] for s in sim.scenarios}) == 3
    return sim, out


def _ingest(warehouse: Warehouse, out) -> None:
    zone = LocalFolder(out)
    report = ingest_files(warehouse, zone, [f.key for f in zone.list_pending()], archive=False)
    assert report.summary["dead_lettered"] > 0  # the bad input went where it belongs


def _window(sim):
    return sim.config.start_utc + timedelta(days=FIRST_DAY), sim.config.end_utc


def _key(incident) -> tuple:
    top = incident["hypotheses"][0]
    return (
        incident["tenant_id"],
        pd.Timestamp(incident["start"]),
        top["cause"],
        tuple(sorted(top["subject"].items())),
    )


def test_incidents_through_the_warehouse(warehouse, generated):
    sim, out = generated
    _ingest(warehouse, out)
    start, end = _window(sim)
    tenant = sim.scenarios[0]["tenant_id"]

    # The database's hourly cells are the engine's own aggregation of the same events.
    frame = events_frame(sim, [tenant])
    expected = cells_from_events(frame).sort_values(["hour", "kind", "model", "project", "label"])
    stored = load_cells(warehouse, tenant, sim.config.start_utc, sim.config.end_utc)
    stored = stored.sort_values(["hour", "kind", "model", "project", "label"])
    assert len(stored) == len(expected)
    for column in ("n", "n_failed", "n_calls"):
        assert np.array_equal(
            stored[column].to_numpy(dtype=np.int64), expected[column].to_numpy(dtype=np.int64)
        )
    for column in ("value_sum", "log_sum"):  # DuckDB keeps metric values in single precision
        assert np.allclose(stored[column].astype(float), expected[column].astype(float), rtol=1e-5)

    # The stored incidents recover the scenarios with their root causes...
    days = correlate_days(warehouse, start, end)
    assert sum(d.written for d in days) > 0
    found = read_incidents(warehouse, start=start, end=end)
    match = match_scenarios(found, sim.scenarios)
    assert match.recall == 1.0 and match.precision == 1.0 and match.root_cause_accuracy == 1.0, (
        match.summary()
    )

    # ...and are what the engine finds on the simulation itself.
    assets = asset_catalog_frame(sim)
    in_memory = []
    for t in sorted({s["tenant_id"] for s in sim.scenarios} | {x["tenant_id"] for x in found}):
        own = events_frame(sim, [t])
        for day in range(FIRST_DAY, sim.config.days):
            window = pd.Timestamp(sim.config.start_utc) + pd.Timedelta(days=day)
            data = CorrelationInput(
                t, window, window + pd.Timedelta(days=1), own, assets=assets[assets["tenant_id"] == t]
            )
            in_memory += [i.as_dict() for i in correlate(data).incidents]
    assert sorted(map(_key, found)) == sorted(map(_key, in_memory))

    # Members: the injected events, the signals, and for the campaign its indicators.
    for scenario, incident in match.matched:
        members = read_members(warehouse, incident["incident_id"])
        assert set(members["member_type"]) >= {"event", "signal"}
        assert set(members.loc[members["member_type"] == "event", "member_id"]) & set(scenario["event_ids"])
        if scenario["kind"] == "prompt_injection_campaign":
            causes = members[(members["member_type"] == "indicator") & (members["role"] == "cause")]
            assert list(causes["member_id"]) == [f"ip:{scenario['root_cause']['ip']}"]

    # A re-run replaces the days' incidents: same ids, nothing doubled.
    with warehouse.connect() as conn:
        before = conn.execute(sa.text("SELECT count(*) FROM incident_members")).scalar_one()
    correlate_days(warehouse, start, end)
    again = read_incidents(warehouse, start=start, end=end)
    assert sorted(i["incident_id"] for i in again) == sorted(i["incident_id"] for i in found)
    with warehouse.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM incident_members")).scalar_one() == before

    # `hub incidents` prints them.
    runner = CliRunner()
    args = [
        "incidents",
        "--start",
        start.isoformat(),
        "--end",
        end.isoformat(),
        "--warehouse-url",
        warehouse.url,
    ]
    result = runner.invoke(main, [*args, "--format", "json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert sorted(i["incident_id"] for i in printed) == sorted(i["incident_id"] for i in found)
    result = runner.invoke(main, [*args, "--tenant", tenant, "--details"])
    assert result.exit_code == 0, result.output
    for incident in (i for i in found if i["tenant_id"] == tenant):
        assert incident["hypotheses"][0]["description"] in result.output
    assert "explains" in result.output  # the evidence
    result = runner.invoke(main, [*args, "--format", "markdown"])
    assert result.exit_code == 0 and result.output.startswith("## Incidents")


def test_the_correlations_asset_and_the_reports(tmp_path, generated):
    from hub_pipelines.defs.correlation import correlations
    from hub_pipelines.reports import generate_report
    from hub_pipelines.resources import WarehouseResource

    sim, out = generated
    url = f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    warehouse = Warehouse(url)
    warehouse.create_tables()
    _ingest(warehouse, out)
    resources = {"warehouse": WarehouseResource(url=url)}
    instance = dg.DagsterInstance.ephemeral()
    scenario = next(s for s in sim.scenarios if s["kind"] == "rate_limit_cascade")
    day = pd.Timestamp(scenario["start"]).strftime("%Y-%m-%d")

    result = dg.materialize([correlations], partition_key=day, resources=resources, instance=instance)
    assert result.success
    (check,) = result.get_asset_check_evaluations()
    assert check.passed
    metadata = result.asset_materializations_for_node("correlations")[0].metadata
    assert metadata["incidents"].value >= 1
    assert "rate_limit_violation" in metadata["incidents_by_root_cause"].value

    # A range is one run (single-run backfill), day by day.
    start, end = _window(sim)
    tags = {
        "dagster/asset_partition_range_start": start.strftime("%Y-%m-%d"),
        "dagster/asset_partition_range_end": (end - timedelta(days=1)).strftime("%Y-%m-%d"),
    }
    result = dg.materialize([correlations], tags=tags, resources=resources, instance=instance)
    assert result.success
    assert result.asset_materializations_for_node("correlations")[0].metadata["days"].value == 4
    found = read_incidents(warehouse, start=start, end=end)
    assert match_scenarios(found, sim.scenarios).recall == 1.0

    # The reports of the scenario's day list its incident.
    incident = next(
        i
        for i in found
        if i["tenant_id"] == scenario["tenant_id"] and i["root_cause"] == "rate_limit_violation"
    )
    for name in ("operations", "compliance"):
        report, written = generate_report(
            warehouse, name, scenario["tenant_id"], day, root=tmp_path / "reports"
        )
        section = next(s for s in report.sections if s.id == "incidents")
        assert section.summary["incidents"] >= 1
        assert incident["title"] in written.markdown.read_text()
        assert "Incidents" in written.html.read_text()
    warehouse.engine.dispose()
