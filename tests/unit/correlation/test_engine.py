"""The engine as the asset runs it: windows own the incidents that start in them, rows of the
anomalies table join the incidents, and empty input is no incident."""

from __future__ import annotations

import pandas as pd

from hub_ml.correlation import CorrelationInput, cells_from_events, correlate
from hub_ml.correlation.schema import EVENT_COLUMNS
from hub_pipelines.generator import GeneratorConfig, simulate
from hub_pipelines.generator.frames import events_frame


def test_an_incident_is_reported_by_the_window_it_starts_in_only(scenario_sim):
    sim = scenario_sim
    scenario = next(s for s in sim.scenarios if s["kind"] == "rate_limit_cascade")
    tenant = scenario["tenant_id"]
    events = events_frame(sim, [tenant])
    cells = cells_from_events(events)
    start = pd.Timestamp(scenario["start"])
    # Two consecutive windows that cut the scenario in two: the one it starts in reports it, whole.
    reported = []
    for first in (start - pd.Timedelta(hours=10), start + pd.Timedelta(hours=2)):
        window = CorrelationInput(tenant, first, first + pd.Timedelta(hours=12), events, cells=cells)
        reported += correlate(window).incidents
    mine = [i for i in reported if i.kind == "rate_limit_violation"]
    assert len(mine) == 1
    assert mine[0].start == start and mine[0].end >= pd.Timestamp(scenario["end"]) - pd.Timedelta(hours=1)


def test_rows_of_the_anomalies_table_join_the_incidents():
    sim = simulate(GeneratorConfig(days=6, tenants=1, seed=4, requests_per_hour=40, anomalies=False))
    events = events_frame(sim)
    day = pd.Timestamp(sim.config.start_utc) + pd.Timedelta(days=4)
    hours = [day + pd.Timedelta(hours=h) for h in (14, 15)]

    def anomaly(metric: str, model: str, ts, value: float, low: float, high: float) -> dict:
        return {
            "series_key": f"tenant-01|{metric}|{model}", "ts": ts, "tenant_id": "tenant-01", "metric": metric,
            "model": model, "project": None, "value": value, "expected_low": low, "expected_high": high,
            "score": 0.9, "severity": "high", "confidence": 0.8, "detected_by": '["zscore"]', "explanation": "",
        }  # fmt: skip

    model = sim.catalogue.models[sim.catalogue.tenants[0].models[0]].name
    rows = [anomaly("latency_p95_ms", model, ts, 9000.0, 2000.0, 3000.0) for ts in hours]
    rows += [anomaly("spend_usd", model, ts, 40.0, 5.0, 8.0) for ts in hours]
    data = CorrelationInput(
        "tenant-01", day, day + pd.Timedelta(days=1), events, anomalies=pd.DataFrame(rows)
    )
    incidents = correlate(data).incidents
    assert len(incidents) == 1  # the clean day has nothing else
    incident = incidents[0]
    assert incident.start == hours[0] and incident.anomaly_count == 4
    assert set(incident.modules) == {"llm-observatory", "llm-costops"}
    anomaly_ids = incident.member_ids("anomaly")
    assert f"tenant-01|latency_p95_ms|{model}@{hours[0].isoformat()}" in anomaly_ids
    assert {h.cause for h in incident.hypotheses} >= {"provider_degradation", "cost_runaway"}
    # Without the table's rows, the same day is quiet.
    data = CorrelationInput("tenant-01", day, day + pd.Timedelta(days=1), events)
    assert correlate(data).incidents == []


def test_no_events_no_incidents():
    empty = pd.DataFrame({c: pd.Series(dtype=object) for c in EVENT_COLUMNS})
    empty["event_time"] = pd.Series(dtype="datetime64[ns, UTC]")
    day = pd.Timestamp("2026-10-10T00:00:00Z")
    result = correlate(CorrelationInput("tenant-01", day, day + pd.Timedelta(days=1), empty))
    assert result.incidents == [] and result.correlations == []
