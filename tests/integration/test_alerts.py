"""Alert rules on generated traffic, on DuckDB and PostgreSQL: each rule type fires where the
generator's labels say something happened and nowhere else; the lifecycle suppresses duplicates
within the window, counts silenced firings, resolves alerts when their condition clears and lets
`hub alerts ack` acknowledge them.

Data: 10 days of the generator's traffic for 2 tenants (seed 5) ingested and rolled up through the
real code. The labels it injects in the last days include a 4-hour threat burst for tenant-01, a
latency spike of tenant-01's claude-sonnet and a request drop of tenant-02's llama-3-70b. Anomaly
and forecast rows are written by the test (the ML assets that write them come later).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from hub_pipelines.alerts import apply, evaluate, list_alerts, parse_rules, run_alerts
from hub_pipelines.alerts.evaluate import hold_open
from hub_pipelines.alerts.lifecycle import silence
from hub_pipelines.cli import main
from hub_pipelines.generator import GeneratorConfig, simulate, write_batches
from hub_pipelines.ingestion import ingest_files
from hub_pipelines.landing import LocalFolder
from hub_pipelines.query import query
from hub_pipelines.warehouse import Warehouse, tables
from hub_pipelines.warehouse.rollups import refresh_daily, refresh_hourly
from hub_pipelines.warehouse.store import normalise_url

END = datetime(2026, 11, 20, tzinfo=UTC)
START = END - timedelta(days=10)
SWEEP_FROM = datetime(2026, 11, 17, tzinfo=UTC)  # three days of hourly evaluations
HOUR = timedelta(hours=1)


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("alerts_generated")
    config = GeneratorConfig(days=10, tenants=2, seed=5, end=END, requests_per_hour=8, policy_fraction=0.2)
    simulation = simulate(config)
    write_batches(simulation, out)
    return out, simulation.labels


@pytest.fixture(scope="module", params=["duckdb", "postgres"])
def populated(request, generated, tmp_path_factory):
    folder, labels = generated
    admin = None
    if request.param == "duckdb":
        url = f"duckdb:///{tmp_path_factory.mktemp('alerts_wh') / 'warehouse.duckdb'}"
    else:
        server = request.getfixturevalue("postgres_server")
        name = f"hub_test_alerts_{uuid.uuid4().hex[:10]}"
        admin = sa.create_engine(normalise_url(server), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        url = server.rsplit("/", 1)[0] + "/" + name
    warehouse = Warehouse(url)
    warehouse.create_tables()
    zone = LocalFolder(folder)
    keys = [f.key for f in zone.list_pending() if f.key.endswith(".jsonl")]
    report = ingest_files(warehouse, zone, keys, archive=False, received_at=END + timedelta(minutes=30))
    assert report.summary["stored"] > 20000
    refresh_hourly(warehouse, START, END)
    refresh_daily(warehouse, START, END)
    try:
        yield warehouse, labels
    finally:
        warehouse.engine.dispose()
        if admin is not None:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.dispose()


@pytest.fixture
def clean(populated):
    """The populated warehouse with no alerts, anomalies or forecasts left by another test."""
    warehouse, labels = populated
    with warehouse.begin() as conn:
        for table in (
            tables.alerts,
            tables.alert_deliveries,
            tables.alert_evaluations,
            tables.alert_silences,
            tables.anomalies,
            tables.forecasts,
        ):
            conn.execute(sa.delete(table))
    return warehouse, labels


def _labels(labels, kind, tenant=None):
    return [lb for lb in labels if lb["kind"] == kind and (tenant is None or lb["tenant_id"] == tenant)]


def _overlaps(window_start, window_end, label) -> bool:
    return window_start < _t(label["end"]) and _t(label["start"]) < window_end


def _sweep(warehouse, ruleset):
    """(as_of, rule_id, labels, firing) for every hourly evaluation of the sweep range."""
    out = []
    moment = SWEEP_FROM + HOUR
    with hold_open(warehouse):
        while moment <= END:
            evaluation = evaluate(warehouse, ruleset, moment)
            assert not evaluation.errors, evaluation.errors
            for rule_id, firings in evaluation.firings.items():
                out += [(moment, rule_id, f.labels, f) for f in firings]
            moment += HOUR
    return out


SWEEP_RULES = """
rules:
  - id: threats-burst
    type: threshold
    metric: threats
    op: ">="
    value: 4
    for: 2h
  - id: p95-latency
    type: threshold
    scope: {source: llm-observatory}
    metric: latency_ms
    agg: p95
    group_by: [model]
    op: ">"
    value: 29000
    for: 2h
  - id: request-drop
    type: rate_of_change
    metric: requests
    group_by: [model]
    compare_to: 1d
    direction: down
    change_pct: 80
    min_base: 12
  - id: token-surge
    type: rate_of_change
    metric: tokens_total
    group_by: [model]
    bucket: 1d
    compare_to: 7d
    direction: up
    change_pct: 60
  - id: token-slump
    type: rate_of_change
    metric: tokens_total
    group_by: [model]
    bucket: 1d
    compare_to: 7d
    direction: down
    change_pct: 20
  - id: token-swing
    type: rate_of_change
    metric: tokens_total
    group_by: [model]
    bucket: 1d
    compare_to: 7d
    direction: either
    change_pct: 20
"""


def test_threshold_and_rate_of_change_fire_only_where_the_labels_are(clean):
    warehouse, labels = clean
    fired = _sweep(warehouse, parse_rules(SWEEP_RULES))

    threats = [(t, lb) for t, rule, lb, _f in fired if rule == "threats-burst"]
    bursts = _labels(labels, "threat_burst")
    assert threats, "the 4-hour threat burst of tenant-01 was not caught"
    for as_of, group in threats:
        assert any(
            lb["tenant_id"] == group["tenant_id"] and _overlaps(as_of - 2 * HOUR, as_of, lb) for lb in bursts
        ), f"threats-burst fired for {group} at {as_of} outside every labelled burst"
    assert {g["tenant_id"] for _t, g in threats} == {"tenant-01"}  # tenant-02's burst lasts 1 hour only

    latency = [(t, lb, f) for t, rule, lb, f in fired if rule == "p95-latency"]
    spikes = [
        lb for lb in labels if lb["kind"] in ("spike", "level_shift") and "latency_p95_ms" in lb["metrics"]
    ]
    assert latency
    for as_of, group, firing in latency:
        assert all(v > 29000 for v in firing.details["values"])
        assert any(
            lb["tenant_id"] == group["tenant_id"] and lb["model"] == group["model"]
            and _overlaps(as_of - 2 * HOUR, as_of, lb)
            for lb in spikes
        ), f"p95-latency fired for {group} at {as_of} outside every labelled latency anomaly"  # fmt: skip

    drops = [(t, lb, f) for t, rule, lb, f in fired if rule == "request-drop"]
    drop_labels = _labels(labels, "drop")
    assert drops
    for as_of, group, firing in drops:
        assert firing.details["change_pct"] <= -80
        assert any(
            lb["tenant_id"] == group["tenant_id"] and lb["model"] == group["model"]
            and _overlaps(as_of - HOUR, as_of, lb)
            for lb in drop_labels
        ), f"request-drop fired for {group} at {as_of} outside every labelled drop"  # fmt: skip

    # Up, a day against the same weekday a week before: the token level shift and the cost runaway.
    surges = [(lb, f) for _when, rule, lb, f in fired if rule == "token-surge"]
    token_labels = [lb for lb in labels if "tokens_total" in lb["metrics"] and lb["model"]]
    surged = {(g["tenant_id"], g["model"], f.details["bucket_start"][:10]) for g, f in surges}
    assert surged == {
        ("tenant-01", "llama-3-70b", "2026-11-17"),  # level shift from 11-17 03:00
        ("tenant-01", "llama-3-70b", "2026-11-18"),
        ("tenant-01", "gpt-4o", "2026-11-18"),  # cost runaway from 11-18 14:00
    }
    for group, firing in surges:
        day = _t(firing.details["bucket_start"])
        assert firing.details["change_pct"] >= 60
        assert any(
            lb["tenant_id"] == group["tenant_id"] and lb["model"] == group["model"]
            and _overlaps(day, day + timedelta(days=1), lb)
            for lb in token_labels
        ), f"token-surge fired for {group} on {day:%Y-%m-%d} outside every labelled token anomaly"  # fmt: skip

    # Either way: everything the down rule saw at the same threshold, and the rises too.
    def days(rule):
        return {
            (g["tenant_id"], g["model"], f.details["bucket_start"][:10], f.details["change_pct"] > 0)
            for _when, r, g, f in fired
            if r == rule
        }

    swings, slumps = days("token-swing"), days("token-slump")
    assert slumps and not any(up for *_, up in slumps)
    assert {s for s in swings if not s[3]} == slumps
    assert {s[:3] for s in swings if s[3]} >= surged  # every surge is a rise of at least 20% too
    for _when, rule, _g, firing in fired:
        if rule == "token-swing":
            assert abs(firing.details["change_pct"]) >= 20


def test_threshold_values_are_the_query_interfaces(clean):
    warehouse, _labels_ = clean
    as_of = _t("2026-11-19T17:00:00Z")
    evaluation = evaluate(warehouse, parse_rules(SWEEP_RULES), as_of)
    (firing,) = evaluation.firings["threats-burst"]
    frame = query(warehouse, "threats", start=as_of - 2 * HOUR, end=as_of, filters={"tenant_id": "tenant-01"})
    assert firing.details["values"] == frame["value"].tolist()
    assert firing.value == frame["value"].iloc[-1] and firing.threshold == 4


def _anomaly_rows(labels) -> list[dict]:
    """An anomaly row for every labelled hour (severity high, or critical for the largest) and a few
    low and medium ones elsewhere: what the detectors would write."""
    rows = []
    scored = datetime(2026, 11, 20, 1, tzinfo=UTC)
    for label in labels:
        if label["kind"] == "threat_burst":
            continue
        metric = label["metrics"][-1] if label["kind"] != "drop" else "requests"
        moment = _t(label["start"])
        while moment < _t(label["end"]):
            rows.append(_anomaly(label["tenant_id"], metric, label["model"], moment, "high", 0.9, scored))
            moment += HOUR
    for hour in range(0, 72, 7):  # noise: low and medium scores on days without labels
        moment = datetime(2026, 11, 12, tzinfo=UTC) + timedelta(hours=hour)
        rows.append(
            _anomaly("tenant-01", "requests", "gpt-4o", moment, "low" if hour % 2 else "medium", 0.4, scored)
        )
    return rows


def _anomaly(tenant, metric, model, moment, severity, score, scored) -> dict:
    return {
        "series_key": f"{tenant}|{metric}|{model or '*'}",
        "ts": moment,
        "tenant_id": tenant,
        "metric": metric,
        "model": model,
        "project": None,
        "value": 100.0,
        "expected_low": 10.0,
        "expected_high": 50.0,
        "score": score,
        "severity": severity,
        "confidence": 0.8,
        "detected_by": json.dumps(["zscore", "iqr"]),
        "explanation": f"{metric} far above its seasonal baseline",
        "model_version": "3",
        "scored_at": scored,
    }


def test_anomaly_rule_fires_on_high_severity_rows_in_the_lookback(clean):
    warehouse, labels = clean
    with warehouse.begin() as conn:
        conn.execute(sa.insert(tables.anomalies), _anomaly_rows(labels))
    ruleset = parse_rules(
        """
rules:
  - {id: anomaly-high, type: anomaly, min_severity: high, lookback: 2h}
  - {id: anomaly-any, type: anomaly, min_severity: low, lookback: 2h}
  - {id: anomaly-latency-t1, type: anomaly, min_severity: high, lookback: 2h, metrics: [latency_p95_ms],
     scope: {tenant: tenant-01}}
"""
    )
    labelled = [lb for lb in labels if lb["kind"] != "threat_burst"]
    for label in labelled:
        inside = _t(label["start"]) + HOUR
        firings = evaluate(warehouse, ruleset, inside).firings
        groups = {(f.labels["tenant_id"], f.labels["model"]) for f in firings["anomaly-high"]}
        assert (label["tenant_id"], label["model"]) in groups
        latency = firings["anomaly-latency-t1"]
        expected = label["tenant_id"] == "tenant-01" and label["metrics"][-1] == "latency_p95_ms"
        if expected:
            assert label["model"] in {f.labels["model"] for f in latency}
        assert all(
            f.labels["tenant_id"] == "tenant-01" and f.labels["metric"] == "latency_p95_ms" for f in latency
        )
    # Days with only low and medium rows: the high rule is quiet, the low rule is not.
    quiet = datetime(2026, 11, 12, 15, tzinfo=UTC)
    firings = evaluate(warehouse, ruleset, quiet).firings
    assert firings["anomaly-high"] == [] and firings["anomaly-any"]
    # Long after every label: nothing.
    assert evaluate(warehouse, ruleset, END + timedelta(days=1)).firings["anomaly-any"] == []


def _forecast_rows(
    series_key, tenant, metric, granularity, start, values, upper=None, horizon=30
) -> list[dict]:
    step = HOUR if granularity == "hour" else timedelta(days=1)
    return [
        {
            "series_key": series_key,
            "horizon_days": horizon,
            "target_ts": start + i * step,
            "scenario": "baseline",
            "tenant_id": tenant,
            "metric": metric,
            "model": None,
            "project": None,
            "granularity": granularity,
            "forecast": value,
            "lower": value * 0.8,
            "upper": (upper[i] if upper else value * 1.2),
            "level": 0.95,
            "model_name": "ensemble",
            "model_version": "7",
            "trained_at": start,
        }
        for i, value in enumerate(values)
    ]


def test_predictive_rules_budget_exhaustion_and_capacity(clean):
    warehouse, _labels_ = clean
    as_of = END
    spent = {
        tenant: float(
            query(warehouse, "spend_usd", start=datetime(2026, 11, 1, tzinfo=UTC), end=as_of, bucket="1d",
                  filters={"tenant_id": tenant})["value"].sum()
        )
        for tenant in ("tenant-01", "tenant-02")
    }  # fmt: skip
    assert spent["tenant-01"] > 0
    daily = 10.0
    rows = _forecast_rows("tenant-01|spend_usd", "tenant-01", "spend_usd", "day", as_of, [daily] * 30)
    rows += _forecast_rows("tenant-02|spend_usd", "tenant-02", "spend_usd", "day", as_of, [0.01] * 30)
    # Requests: the upper band reaches 500 an hour 50 hours ahead.
    upper = [400.0] * 50 + [520.0] * 118
    rows += _forecast_rows(
        "tenant-01|requests", "tenant-01", "requests", "hour", as_of, [300.0] * 168, upper=upper, horizon=7
    )
    # An older training of the same series that would cross at once: superseded, never read.
    rows += [
        r | {"trained_at": as_of - timedelta(days=2), "forecast": 1e6, "horizon_days": 14}
        for r in _forecast_rows("tenant-01|spend_usd", "tenant-01", "spend_usd", "day", as_of, [1e6] * 5)
    ]
    with warehouse.begin() as conn:
        conn.execute(sa.insert(tables.forecasts), rows)
    limit = spent["tenant-01"] + 5.5 * daily  # reached during the 6th forecast day
    ruleset = parse_rules(
        f"""
rules:
  - {{id: budget-7d, type: predictive, metric: spend_usd, mode: cumulative, period: month, limit: {limit},
      within_days: 7, scope: {{dimensions: {{model: null}}}}}}
  - {{id: budget-3d, type: predictive, metric: spend_usd, mode: cumulative, period: month, limit: {limit},
      within_days: 3}}
  - {{id: capacity-3d, type: predictive, metric: requests, mode: level, band: upper, limit: 500, within_days: 3}}
  - {{id: capacity-1d, type: predictive, metric: requests, mode: level, band: upper, limit: 500, within_days: 1}}
  - {{id: capacity-forecast, type: predictive, metric: requests, mode: level, limit: 500, within_days: 7}}
"""
    )
    firings = evaluate(warehouse, ruleset, as_of).firings
    (budget,) = firings["budget-7d"]
    assert budget.tenant_id == "tenant-01"
    assert budget.details["actual_to_date"] == pytest.approx(spent["tenant-01"])
    crossing = _t(budget.details["crossing_at"])
    assert as_of + timedelta(days=5) < crossing <= as_of + timedelta(days=6)
    assert firings["budget-3d"] == []
    (capacity,) = firings["capacity-3d"]
    assert _t(capacity.details["crossing_at"]) == as_of + 50 * HOUR and capacity.value == 520.0
    assert firings["capacity-1d"] == [] and firings["capacity-forecast"] == []


def test_composite_and_or(clean):
    warehouse, _labels_ = clean
    ruleset = parse_rules(
        SWEEP_RULES
        + """
  - {id: busy, type: threshold, metric: requests, op: ">", value: 0, for: 1h, standalone: false}
  - {id: threats-and-busy, type: composite, operator: and, rules: [threats-burst, busy]}
  - {id: threats-and-latency, type: composite, operator: and, rules: [threats-burst, p95-latency]}
  - {id: threats-or-latency, type: composite, operator: or, rules: [threats-burst, p95-latency]}
"""
    )
    during_threats = _t("2026-11-19T17:00:00Z")
    during_latency = _t("2026-11-19T21:00:00Z")
    quiet = _t("2026-11-18T08:00:00Z")
    at_threats = evaluate(warehouse, ruleset, during_threats)
    at_latency = evaluate(warehouse, ruleset, during_latency)
    at_quiet = evaluate(warehouse, ruleset, quiet)

    def tenants(evaluation, rule):
        return sorted(f.labels["tenant_id"] for f in evaluation.firings[rule])

    assert tenants(at_threats, "threats-and-busy") == ["tenant-01"]
    assert tenants(at_threats, "threats-and-latency") == []  # latency is normal during the burst
    assert tenants(at_latency, "threats-and-latency") == []  # and the burst is over during the spike
    assert tenants(at_threats, "threats-or-latency") == ["tenant-01"]
    assert tenants(at_latency, "threats-or-latency") == ["tenant-01"]
    assert tenants(at_quiet, "threats-or-latency") == [] and tenants(at_quiet, "threats-and-busy") == []
    assert len(tenants(at_quiet, "busy")) == 2  # the input fires, but is not an alert of its own
    standalone = {f.rule_id for f in at_threats.alerting(ruleset)}
    assert "busy" not in standalone and "threats-and-busy" in standalone


LIFECYCLE_RULES = """
defaults: {dedup_window: 3h}
rules:
  - {id: threats-burst, type: threshold, metric: threats, op: ">=", value: 4, for: 1h}
  - {id: threats-silenced, type: threshold, metric: threats, op: ">=", value: 4, for: 1h, silenced: true}
"""


def test_lifecycle_duplicates_silences_auto_resolution_and_ack(clean, monkeypatch):
    warehouse, _labels_ = clean
    ruleset = parse_rules(LIFECYCLE_RULES)
    now = datetime(2026, 11, 20, 12, tzinfo=UTC)

    def step(as_of: str):
        return run_alerts(warehouse, ruleset, as_of=as_of, now=now, send=True, env={})

    # tenant-01's burst: hourly counts 5, 7, 6 from 14:00; 3 at 17:00.
    first = step("2026-11-19T15:00:00Z")
    assert len(first.outcome.opened) == 2  # one per rule
    assert [n.kind for n in first.outcome.notifications] == ["opened"]  # the silenced rule sends nothing
    assert first.outcome.silenced_suppressed == 1
    (alert,) = list_alerts(warehouse, rule_id="threats-burst")
    assert (
        alert["status"] == "open" and alert["last_notified_at"] is not None
    )  # no channels: nothing to wait for

    again = step("2026-11-19T15:00:00Z")  # the same evaluation re-run: a duplicate
    assert again.outcome.opened == [] and again.outcome.notifications == []
    assert again.outcome.duplicates_suppressed == 1 and again.outcome.silenced_suppressed == 1
    later = step("2026-11-19T16:00:00Z")  # still firing, within the 3h window
    assert later.outcome.duplicates_suppressed == 1 and later.outcome.notifications == []
    (alert,) = list_alerts(warehouse, rule_id="threats-burst")
    assert alert["fired_count"] == 3 and alert["duplicates_suppressed"] == 2

    # Acknowledged from the command line, as an on-call engineer would.
    monkeypatch.setenv("HUB_WAREHOUSE_URL", warehouse.url)
    runner = CliRunner()
    listed = runner.invoke(main, ["alerts", "list", "--format", "json"])
    assert listed.exit_code == 0, listed.output
    assert {a["alert_id"] for a in json.loads(listed.output)} >= {alert["alert_id"]}
    acked = runner.invoke(main, ["alerts", "ack", alert["alert_id"][:6], "--by", "oncall"])
    assert acked.exit_code == 0, acked.output
    (alert,) = list_alerts(warehouse, rule_id="threats-burst")
    assert alert["status"] == "acknowledged" and alert["acknowledged_by"] == "oncall"
    missing = runner.invoke(main, ["alerts", "ack", "ffffffffffff"])
    assert missing.exit_code != 0 and "no alert" in missing.output

    # 17:00 counts 3: the condition cleared, both alerts resolve by themselves; the notified one
    # sends its resolution.
    cleared = step("2026-11-19T18:00:00Z")
    assert len(cleared.outcome.resolved) == 2
    assert [n.kind for n in cleared.outcome.notifications] == ["resolved"]
    assert list_alerts(warehouse) == []
    resolved = list_alerts(warehouse, statuses=("resolved",), rule_id="threats-burst")
    assert resolved[0]["resolved_at"] == _t("2026-11-19T18:00:00Z")
    assert json.loads(runner.invoke(main, ["alerts", "list", "--format", "json"]).output) == []

    # A silence (as `hub alerts silence` sets): counted, not sent, until it ends.
    with warehouse.begin() as conn:
        conn.execute(sa.delete(tables.alerts))
    silence(warehouse, "threats-burst", timedelta(hours=2), tenant_id="tenant-01", now=now)
    silenced = step("2026-11-19T15:00:00Z")
    assert silenced.outcome.notifications == [] and silenced.outcome.silenced_suppressed == 2
    after = run_alerts(warehouse, ruleset, as_of="2026-11-19T16:00:00Z", now=now + timedelta(hours=3), env={})
    assert [n.kind for n in after.outcome.notifications] == ["opened"]  # sent once the silence is over

    assert _count(warehouse, tables.alert_evaluations) == 6


def test_flapping_is_reopened_silently_and_a_long_firing_alert_is_reminded(clean):
    warehouse, _labels_ = clean
    scored = END
    hours = ["2026-11-15T10:00:00Z", "2026-11-15T13:00:00Z", "2026-11-15T22:00:00Z"]
    hours += [f"2026-11-14T{h:02d}:00:00Z" for h in range(1, 10)]
    rows = [_anomaly("tenant-01", "requests", "gpt-4o", _t(h), "high", 0.9, scored) for h in hours]
    with warehouse.begin() as conn:
        conn.execute(sa.insert(tables.anomalies), rows)
    ruleset = parse_rules(
        "defaults: {dedup_window: 6h}\nrules: [{id: anomaly-high, type: anomaly, min_severity: high, lookback: 1h}]"
    )

    def kinds(as_of: str):
        run = run_alerts(warehouse, ruleset, as_of=as_of, env={})
        return [n.kind for n in run.outcome.notifications], run.outcome

    # Firing every hour from 01:00 to 09:00: opened, then duplicates, then a reminder 6 hours on.
    assert kinds("2026-11-14T02:00:00Z")[0] == ["opened"]
    for hour in range(3, 8):
        sent, outcome = kinds(f"2026-11-14T{hour:02d}:00:00Z")
        assert sent == [] and outcome.duplicates_suppressed == 1
    assert kinds("2026-11-14T08:00:00Z")[0] == ["reminder"]
    assert kinds("2026-11-14T10:00:00Z")[0] == []  # the 09:00 row is in the last hour
    assert kinds("2026-11-14T11:00:00Z")[0] == ["resolved"]
    # A day later (past the window): a new alert, opened and sent.
    assert kinds("2026-11-15T11:00:00Z")[0] == ["opened"]
    (alert,) = list_alerts(warehouse)
    assert alert["fired_count"] == 1
    # Flapping: cleared, then back within the window of the last notification: re-opened, not sent.
    assert kinds("2026-11-15T12:00:00Z")[0] == ["resolved"]
    sent, outcome = kinds("2026-11-15T14:00:00Z")
    assert sent == [] and outcome.reopened == [alert["alert_id"]] and outcome.duplicates_suppressed == 1
    assert kinds("2026-11-15T15:00:00Z")[0] == ["resolved"]
    # Past the window: a new alert, sent.
    sent, outcome = kinds("2026-11-15T23:00:00Z")
    assert sent == ["opened"] and len(outcome.opened) == 1 and outcome.opened != [alert["alert_id"]]


def test_a_rule_that_fails_leaves_its_alerts_alone(clean):
    warehouse, _labels_ = clean
    ruleset = parse_rules(LIFECYCLE_RULES)
    outcome = apply(warehouse, ruleset, evaluate(warehouse, ruleset, _t("2026-11-19T15:00:00Z")))
    assert len(outcome.opened) == 2
    broken = evaluate(warehouse, ruleset, _t("2026-11-19T18:00:00Z"))
    broken.errors["threats-burst"] = "OperationalError: the warehouse went away"
    del broken.firings["threats-burst"]
    result = apply(warehouse, ruleset, broken)
    assert len(result.resolved) == 1  # only the silenced rule's alert, which was evaluated
    assert [a["rule_id"] for a in list_alerts(warehouse)] == ["threats-burst"]


def _count(warehouse, table) -> int:
    with warehouse.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
