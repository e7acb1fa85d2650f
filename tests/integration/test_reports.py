"""The reports, materialised through Dagster (as the demo and the daily_reports schedule do), on DuckDB
and PostgreSQL: a test reads every number back from the Markdown and compares it with the answer of
the query interface for the same tenant and range (and, for what the query interface does not
cover, with the table it comes from: dead letters, alerts, forecasts, MLflow).

Data: 3 days of generated traffic for 2 tenants with 3% bad records, rolled up; alerts evaluated
over the last two days; forecasts written for tenant-01 only (tenant-02's forecast report must say
there are none yet); an MLflow store with a backtest run for one of tenant-01's series.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from hub_pipelines.alerts import open_at, parse_rules, run_alerts
from hub_pipelines.alerts.lifecycle import opened_between
from hub_pipelines.definitions import defs
from hub_pipelines.defs.publish.demo import run_publish
from hub_pipelines.defs.publish.partitions import TENANTS
from hub_pipelines.defs.publish.schedules import daily_reports
from hub_pipelines.generator import GeneratorConfig, simulate, write_batches
from hub_pipelines.ingestion import ingest_files
from hub_pipelines.landing import LocalFolder
from hub_pipelines.query import query
from hub_pipelines.reports import Section, Table, build_report, register_section, to_html, to_markdown
from hub_pipelines.reports.base import _SECTIONS, ReportContext
from hub_pipelines.resources import WarehouseResource
from hub_pipelines.warehouse import Warehouse, tables
from hub_pipelines.warehouse.rollups import refresh_daily, refresh_hourly
from hub_pipelines.warehouse.store import normalise_url

END = datetime(2026, 11, 20, tzinfo=UTC)
DAY = date(2026, 11, 19)  # the last day of data: the day the demo reports on
START = END - timedelta(days=3)
DAY_START = datetime(2026, 11, 19, tzinfo=UTC)
HOUR = timedelta(hours=1)
MLFLOW_SERIES = "tenant-01|spend_usd"
ALERT_RULES = """
rules:
  - {id: threats-seen, type: threshold, severity: warning, metric: threats, op: ">=", value: 2, for: 1h}
  - {id: busy-models, type: threshold, severity: info, metric: requests, group_by: [model], op: ">", value: 2, for: 1h}
"""


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reports_generated")
    config = GeneratorConfig(
        days=3, tenants=2, seed=21, end=END, requests_per_hour=6, policy_fraction=0.3, corrupt_rate=0.03
    )
    write_batches(simulate(config), out)
    return out


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory) -> str:
    """A real MLflow store with a forecast run tagged with its series and a champion alias."""
    from mlflow import MlflowClient

    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(uri, uri)
    experiment = client.create_experiment("hub-forecasts", artifact_location=str(folder / "artifacts"))
    run = client.create_run(
        experiment, tags={"hub.series_key": MLFLOW_SERIES, "hub.model": "hub-forecast-spend"}
    )
    for name, value in {
        "ensemble_7d_mape": 0.1234,
        "ensemble_7d_smape": 0.1111,
        "ensemble_7d_mase": 0.8765,
        "ensemble_7d_coverage": 0.9412,
        "sarima_7d_mape": 0.2345,
        "weight_sarima": 0.4,
    }.items():
        client.log_metric(run.info.run_id, name, value)
    client.set_terminated(run.info.run_id)
    client.create_registered_model("hub-forecast-spend")
    for _ in range(2):
        version = client.create_model_version(
            "hub-forecast-spend", source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id
        )
    client.set_registered_model_alias("hub-forecast-spend", "champion", version.version)
    return uri


def _forecasts() -> list[dict]:
    rows = []
    trained = END
    for key, metric, model, granularity, count, base in (
        ("tenant-01|spend_usd", "spend_usd", None, "day", 30, 4.0),
        ("tenant-01|requests", "requests", None, "hour", 168, 60.0),
        ("tenant-01|latency_p95_ms|gpt-4o", "latency_p95_ms", "gpt-4o", "hour", 168, 2500.0),
    ):
        step = HOUR if granularity == "hour" else timedelta(days=1)
        for i in range(count):
            value = base * (1 + 0.1 * math.sin(i / 5))
            rows.append(
                {
                    "series_key": key, "horizon_days": 30 if granularity == "day" else 7,
                    "target_ts": END + i * step, "scenario": "baseline", "tenant_id": "tenant-01",
                    "metric": metric, "model": model, "project": None, "granularity": granularity,
                    "forecast": value, "lower": value * 0.7, "upper": value * 1.3, "level": 0.95,
                    "model_name": "ensemble", "model_version": "3", "trained_at": trained,
                }
            )  # fmt: skip
    return rows


@pytest.fixture(scope="module", params=["duckdb", "postgres"])
def published(request, generated, mlflow_uri, tmp_path_factory):
    """Data ingested and rolled up, alerts evaluated, forecasts written; then run_publish (the demo's
    publish step) through Dagster. Yields (warehouse, PublishResult)."""
    admin = None
    home = tmp_path_factory.mktemp("hub_home")
    if request.param == "duckdb":
        url = f"duckdb:///{home / 'warehouse.duckdb'}"
    else:
        server = request.getfixturevalue("postgres_server")
        name = f"hub_test_reports_{uuid.uuid4().hex[:10]}"
        admin = sa.create_engine(normalise_url(server), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        url = server.rsplit("/", 1)[0] + "/" + name
    warehouse = Warehouse(url)
    warehouse.create_tables()
    zone = LocalFolder(generated)
    keys = [f.key for f in zone.list_pending() if f.key.endswith(".jsonl")]
    report = ingest_files(warehouse, zone, keys, archive=False, received_at=END + timedelta(minutes=20))
    assert report.summary["dead_lettered"] > 50
    refresh_hourly(warehouse, START, END)
    refresh_daily(warehouse, START, END)
    rules = parse_rules(ALERT_RULES)
    moment = DAY_START - timedelta(hours=20)
    while moment < END:  # hourly evaluations over the day before and the report day
        run_alerts(warehouse, rules, as_of=moment, env={})
        moment += 4 * HOUR
    with warehouse.begin() as conn:
        conn.execute(sa.insert(tables.forecasts), _forecasts())
    rules_file = home / "rules.yaml"
    rules_file.write_text(ALERT_RULES)
    patch = pytest.MonkeyPatch()
    patch.setenv("HUB_HOME", str(home))
    patch.setenv("HUB_WAREHOUSE_URL", url)
    patch.setenv("HUB_ALERT_RULES", str(rules_file))
    patch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    for name_ in ("HUB_ALERT_WEBHOOK_URL", "HUB_ALERT_SLACK_WEBHOOK_URL", "HUB_SMTP_HOST"):
        patch.delenv(name_, raising=False)
    instance = dg.DagsterInstance.ephemeral()
    try:
        result = run_publish(instance)
        yield warehouse, result, instance
    finally:
        patch.undo()
        warehouse.engine.dispose()
        if admin is not None:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.dispose()


# -- reading the Markdown back -------------------------------------------------------------------------


def _sections(markdown: str) -> dict[str, dict]:
    """{section title: {"tables": [list of row dicts], "text": str}}."""
    out: dict[str, dict] = {}
    current = None
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            current = out.setdefault(line[3:].strip(), {"tables": [], "text": ""})
        elif (
            current is not None
            and line.startswith("| ")
            and i + 1 < len(lines)
            and lines[i + 1].startswith("|-")
        ):
            headers = _cells(line)
            rows = []
            i += 2
            while i < len(lines) and lines[i].startswith("| "):
                rows.append(dict(zip(headers, _cells(lines[i]), strict=True)))
                i += 1
            current["tables"].append(rows)
            continue
        elif current is not None:
            current["text"] += line + "\n"
        i += 1
    return out


def _cells(line: str) -> list[str]:
    parts = re.split(r"(?<!\\)\|", line.strip()[1:-1])
    return [p.strip().replace("\\|", "|") for p in parts]


def _number(cell: str) -> tuple[float, float] | None:
    """(value, tolerance): the tolerance is half a unit of the last digit shown."""
    if cell == "n/a":
        return None
    text = cell.replace("$", "").replace(",", "").strip()
    percent = text.endswith("%")
    text = text.rstrip("%")
    value = float(text)
    decimals = len(text.split(".")[1]) if "." in text else 0
    tolerance = 0.5 * 10**-decimals + 1e-12
    if percent:
        value, tolerance = value / 100, tolerance / 100
    return value, tolerance


def assert_shows(cell: str, expected: float | None, what: str) -> None:
    parsed = _number(cell)
    if expected is None or (isinstance(expected, float) and math.isnan(expected)):
        assert parsed is None, f"{what}: report shows {cell}, the source has no value"
        return
    assert parsed is not None, f"{what}: report shows n/a, the source says {expected}"
    value, tolerance = parsed
    assert abs(value - expected) <= tolerance * 1.000001, (
        f"{what}: report shows {cell}, the source says {expected}"
    )


def _q(warehouse, tenant, metric, start, end, **kwargs) -> pd.DataFrame:
    return query(warehouse, metric, start=start, end=end, bucket="1d",
                 filters={"tenant_id": tenant, **kwargs.pop("filters", {})}, **kwargs)  # fmt: skip


def _total(warehouse, tenant, metric, start, end, agg=None) -> float | None:
    frame = _q(warehouse, tenant, metric, start, end, agg=agg)
    return float(frame["value"].iloc[0]) if len(frame) else None


def _by(frame: pd.DataFrame, *columns: str) -> dict:
    keys = [
        tuple("(none)" if v is None else str(v) for v in row)
        for row in frame[list(columns)].itertuples(index=False)
    ]
    keys = [k[0] if len(k) == 1 else k for k in keys]
    return dict(zip(keys, frame["value"].astype(float), strict=True))


def _markdown(result, tenant: str, report: str) -> str:
    (entry,) = [r for r in result.reports if r["tenant"] == tenant and r["report"] == f"{report}_report"]
    return Path(entry["markdown"]).read_text()


TENANTS_ = ("tenant-01", "tenant-02")
DAY_RANGE = (DAY_START, DAY_START + timedelta(days=1))
BEFORE_RANGE = (DAY_START - timedelta(days=1), DAY_START)


# -- the tests ----------------------------------------------------------------------------------------------


def test_publish_writes_every_report_for_every_tenant(published):
    warehouse, result, instance = published
    assert result.day == DAY.isoformat()
    assert sorted((r["tenant"], r["report"]) for r in result.reports) == sorted(
        (t, f"{n}_report") for t in TENANTS_ for n in ("compliance", "forecast", "operations")
    )
    for entry in result.reports:
        html, markdown = Path(entry["html"]), Path(entry["markdown"])
        assert html.is_file() and markdown.is_file()
        assert html.parent == result.reports_dir / entry["tenant"] / DAY.isoformat()
        text = html.read_text()
        assert '<img src="data:image/png;base64,' in text
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", text), "the HTML must not load anything"
    # The alerts fired at the last evaluation (as of the end of the data) are reported.
    assert result.as_of == END.isoformat()
    assert {a["rule_id"] for a in result.fired} <= {"threats-seen", "busy-models"} and result.fired
    assert sorted(instance.get_dynamic_partitions(TENANTS.name)) == list(TENANTS_)
    assert any("operations_report" in line for line in result.lines())


@pytest.mark.parametrize("tenant", TENANTS_)
def test_operations_numbers_equal_the_query_interface(published, tenant):
    warehouse, result, _instance = published
    sections = _sections(_markdown(result, tenant, "operations"))
    (headline,) = sections["Headline"]["tables"]
    metrics = {
        "Requests": ("requests", None),
        "p95 latency (ms)": ("latency_ms", "p95"),
        "Error rate": ("error_rate", None),
        "Spend (USD)": ("spend_usd", None),
        "Cost per request (USD)": ("cost_per_request", None),
        "Security detections": ("threats", None),
        "Compliance rate": ("compliance_rate", None),
    }
    day, before = DAY.isoformat(), (DAY - timedelta(days=1)).isoformat()
    rows = {r["measure"]: r for r in headline}
    for label, (metric, agg) in metrics.items():
        assert_shows(
            rows[label][day], _total(warehouse, tenant, metric, *DAY_RANGE, agg=agg), f"{tenant} {label}"
        )
        assert_shows(
            rows[label][before], _total(warehouse, tenant, metric, *BEFORE_RANGE, agg=agg), f"{label} before"
        )
    assert_shows(
        rows["Open alerts (end of day)"][day], len(open_at(warehouse, DAY_RANGE[1], tenant)), "open alerts"
    )
    assert_shows(
        rows["Open alerts (end of day)"][before], len(open_at(warehouse, DAY_RANGE[0], tenant)), "open before"
    )
    assert_shows(rows["Alerts opened"][day], len(opened_between(warehouse, *DAY_RANGE, tenant)), "opened")
    assert_shows(
        rows["Alerts opened"][before], len(opened_between(warehouse, *BEFORE_RANGE, tenant)), "opened before"
    )
    assert int(rows["Alerts opened"][day]) + int(rows["Alerts opened"][before]) > 0
    # Change column: from the two values shown.
    requests = rows["Requests"]
    now_, then = _number(requests[day])[0], _number(requests[before])[0]
    assert requests["change"] == f"{(now_ - then) / then * 100:+.1f}%"

    (models,) = sections["By model"]["tables"]
    columns = {
        "requests": ("requests", None),
        "p95 latency (ms)": ("latency_ms", "p95"),
        "error rate": ("error_rate", None),
        "spend (USD)": ("spend_usd", None),
        "cost per request (USD)": ("cost_per_request", None),
    }
    expected = {
        column: _by(_q(warehouse, tenant, metric, *DAY_RANGE, agg=agg, group_by=["model"]), "model")
        for column, (metric, agg) in columns.items()
    }
    assert {r["model"] for r in models} == set(expected["requests"]) | set(expected["spend (USD)"])
    for row in models:
        for column in columns:
            assert_shows(row[column], expected[column].get(row["model"]), f"{tenant} {row['model']} {column}")
    # The open alerts listed are those active at the end of the day.
    listed = sections["Open alerts"]["tables"]
    active = open_at(warehouse, DAY_RANGE[1], tenant)
    assert sorted(r["alert"] for r in (listed[0] if listed else [])) == sorted(a["alert_id"] for a in active)


@pytest.mark.parametrize("tenant", TENANTS_)
def test_compliance_numbers_equal_the_query_interface(published, tenant):
    warehouse, result, _instance = published
    sections = _sections(_markdown(result, tenant, "compliance"))

    (categories,) = sections["Compliance by policy category"]["tables"]
    evaluations = _by(
        _q(warehouse, tenant, "policy_evaluations", *DAY_RANGE, group_by=["policy_category"]),
        "policy_category",
    )
    failed = _by(
        _q(warehouse, tenant, "policy_failed", *DAY_RANGE, group_by=["policy_category"]), "policy_category"
    )
    rate = _by(
        _q(warehouse, tenant, "compliance_rate", *DAY_RANGE, group_by=["policy_category"]), "policy_category"
    )
    before = _by(
        _q(warehouse, tenant, "compliance_rate", *BEFORE_RANGE, group_by=["policy_category"]),
        "policy_category",
    )
    assert len(categories) >= 4
    for row in categories:
        category = row["policy category"]
        if category == "all categories":
            assert_shows(
                row["evaluations"],
                _total(warehouse, tenant, "policy_evaluations", *DAY_RANGE),
                "all evaluations",
            )
            assert_shows(row["failed"], _total(warehouse, tenant, "policy_failed", *DAY_RANGE), "all failed")
            assert_shows(
                row["compliance rate"], _total(warehouse, tenant, "compliance_rate", *DAY_RANGE), "all rate"
            )
            assert_shows(
                row["day before"], _total(warehouse, tenant, "compliance_rate", *BEFORE_RANGE), "all before"
            )
            continue
        assert_shows(row["evaluations"], evaluations.get(category, 0.0), f"{category} evaluations")
        assert_shows(row["failed"], failed.get(category, 0.0), f"{category} failed")
        assert_shows(row["compliance rate"], rate.get(category), f"{category} rate")
        assert_shows(row["day before"], before.get(category), f"{category} before")

    (trend,) = sections["Compliance trend (7 days)"]["tables"]
    frame = _q(
        warehouse,
        tenant,
        "compliance_rate",
        DAY_START - timedelta(days=6),
        DAY_RANGE[1],
        group_by=["policy_category"],
    )
    overall = _q(warehouse, tenant, "compliance_rate", DAY_START - timedelta(days=6), DAY_RANGE[1])
    cells = {
        (t.date().isoformat(), c): float(v)
        for t, c, v in frame[["bucket_start", "policy_category", "value"]].itertuples(index=False)
    }
    totals = {
        t.date().isoformat(): float(v) for t, v in overall[["bucket_start", "value"]].itertuples(index=False)
    }
    assert len(trend) == 7
    shown = 0
    for row in trend:
        for column, cell in row.items():
            if column == "day":
                continue
            expected = (
                totals.get(row["day"]) if column == "all categories" else cells.get((row["day"], column))
            )
            assert_shows(cell, expected, f"trend {row['day']} {column}")
            shown += cell != "n/a"
    assert shown >= 10

    violations = sections["Violations"]
    frame = _q(
        warehouse, tenant, "policy_failed", *DAY_RANGE, group_by=["policy_id", "policy_category", "asset_id"]
    )
    expected = _by(frame[frame["value"] > 0], "policy_id", "policy_category", "asset_id")
    rows = violations["tables"][0] if violations["tables"] else []
    assert {(r["policy"], r["category"], r["asset"]) for r in rows} == set(expected)
    for row in rows:
        assert_shows(
            row["failures"], expected[(row["policy"], row["category"], row["asset"])], f"violations {row}"
        )
    total = re.search(r"([\d,]+) failed policy evaluations", violations["text"]).group(1)
    assert_shows(total, sum(expected.values()), "violations total")

    (security,) = sections["Security detections"]["tables"]
    frame = _q(warehouse, tenant, "threats", *DAY_RANGE, group_by=["threat_type", "severity"])
    cell = _by(frame, "threat_type", "severity")
    assert security, "the generator always produces detections"
    for row in security:
        for severity, value in row.items():
            if severity in ("threat type",):
                continue
            if row["threat type"] == "all threat types":
                expected = (_total(warehouse, tenant, "threats", *DAY_RANGE) if severity == "total"
                            else sum(v for (t, s), v in cell.items() if s == severity))  # fmt: skip
            elif severity == "total":
                expected = sum(v for (t, s), v in cell.items() if t == row["threat type"])
            else:
                expected = cell.get((row["threat type"], severity), 0.0)
            assert_shows(value, expected, f"security {row['threat type']} {severity}")
    day_total = re.search(r"([\d,]+) security detections", sections["Security detections"]["text"]).group(1)
    assert_shows(day_total, _total(warehouse, tenant, "threats", *DAY_RANGE), "detections")

    (quality,) = sections["Data quality"]["tables"]
    expected_day = _dead_letters(warehouse, tenant, *DAY_RANGE)
    expected_before = _dead_letters(warehouse, tenant, *BEFORE_RANGE)
    assert sum(expected_day.values()) > 0
    for row in quality:
        reason = row["reason"]
        if reason == "all reasons":
            assert_shows(row[DAY.isoformat()], sum(expected_day.values()), "dead letters")
            assert_shows(row["day before"], sum(expected_before.values()), "dead letters before")
        else:
            assert_shows(row[DAY.isoformat()], expected_day.get(reason, 0), f"dead letters {reason}")
            assert_shows(row["day before"], expected_before.get(reason, 0), f"dead letters before {reason}")
    assert {r["reason"] for r in quality} - {"all reasons"} == set(expected_day) | set(expected_before)

    audit = sections["Audit summary"]
    steps = {r["step"]: r for r in audit["tables"][0]}
    assert steps["hourly rollups"]["what ran"] == "24 of 24 hours rolled up"
    assert steps["daily rollups"]["what ran"] == "day rolled up"
    assert "Latest materialisation" in audit["text"]  # from the Dagster instance


def _dead_letters(warehouse, tenant, start, end) -> dict[str, int]:
    """Independently of the report: a dead letter's day is its batch's newest event time."""
    with warehouse.connect() as conn:
        dead = pd.read_sql(
            sa.text("SELECT batch_id, tenant_id, primary_reason, received_at FROM dead_letter_events"), conn
        )
        ledger = pd.read_sql(sa.text("SELECT batch_id, max_event_time FROM ingest_ledger"), conn)
    frame = dead.merge(ledger, on="batch_id", how="left")
    moment = pd.to_datetime(frame["max_event_time"], utc=True).fillna(
        pd.to_datetime(frame["received_at"], utc=True)
    )
    frame = frame[(frame["tenant_id"] == tenant) & (moment >= start) & (moment < end)]
    return {k: int(v) for k, v in frame.groupby("primary_reason").size().items()}


def test_forecast_report_numbers_and_backtest_scores(published):
    warehouse, result, _instance = published
    sections = _sections(_markdown(result, "tenant-01", "forecast"))
    section = sections["Key series"]
    series_table, scores_table = section["tables"]
    rows = {r["series"]: r for r in series_table}
    assert list(rows) == ["tenant-01|requests", "tenant-01|spend_usd", "tenant-01|latency_p95_ms|gpt-4o"]
    with warehouse.connect() as conn:
        stored = pd.read_sql(
            sa.text("SELECT series_key, target_ts, forecast, lower, upper FROM forecasts"), conn
        )
    stored["target_ts"] = pd.to_datetime(stored["target_ts"], utc=True)
    actual = {
        "tenant-01|requests": _total(warehouse, "tenant-01", "requests", *DAY_RANGE),
        "tenant-01|spend_usd": _total(warehouse, "tenant-01", "spend_usd", *DAY_RANGE),
        "tenant-01|latency_p95_ms|gpt-4o": float(
            _q(warehouse, "tenant-01", "latency_ms", *DAY_RANGE, agg="p95", filters={"model": "gpt-4o"})[
                "value"
            ].iloc[0]
        ),
    }
    for key, row in rows.items():
        assert_shows(row[f"actual {DAY.isoformat()}"], actual[key], f"{key} actual")
        series = stored[stored["series_key"] == key].sort_values("target_ts")
        step = timedelta(days=1) if key.endswith("spend_usd") else HOUR
        for column, target in (
            ("next point [95% band]", END),
            ("+7 days [95% band]", END + timedelta(days=7) - step),
        ):
            point = series[series["target_ts"] == pd.Timestamp(target)].iloc[0]
            shown = re.match(r"^(\S+) \[(\S+), (\S+)\]$", row[column]).groups()
            for cell, name in zip(shown, ("forecast", "lower", "upper"), strict=True):
                assert_shows(cell, float(point[name]), f"{key} {column} {name}")
        assert row["forecast model"] == "ensemble v3"
    assert rows["tenant-01|spend_usd"]["champion (MLflow)"] == "2"
    assert rows["tenant-01|requests"]["champion (MLflow)"] == "n/a"
    scores = {r["model / horizon"]: r for r in scores_table if r["series"] == MLFLOW_SERIES}
    assert_shows(scores["ensemble 7d"]["MAPE"], 0.1234, "MAPE")
    assert_shows(scores["ensemble 7d"]["coverage"], 0.9412, "coverage")
    assert_shows(scores["sarima 7d"]["MAPE"], 0.2345, "sarima MAPE")

    # No forecasts for tenant-02: said plainly, with the history the forecasts will be trained on.
    other = _sections(_markdown(result, "tenant-02", "forecast"))["Key series"]
    assert "No forecasts exist yet for tenant-02" in other["text"]
    (history,) = other["tables"]
    values = {r["measure"]: r[DAY.isoformat()] for r in history}
    assert_shows(values["requests"], _total(warehouse, "tenant-02", "requests", *DAY_RANGE), "requests")
    assert_shows(values["spend (USD)"], _total(warehouse, "tenant-02", "spend_usd", *DAY_RANGE), "spend")


def test_report_assets_metadata_and_the_daily_reports_schedule(published):
    warehouse, result, instance = published
    key = dg.AssetKey("operations_report")
    event = instance.get_latest_materialization_event(key)
    metadata = event.asset_materialization.metadata
    assert metadata["html"].value.endswith("operations.html") and metadata["charts"].value >= 3
    assert "Headline" in metadata["report"].value and "requests" in metadata
    # The schedule asks for one run per tenant with data on the day before its tick, adding the
    # tenants as partitions first.
    with dg.instance_for_test() as fresh:
        resources = {"warehouse": WarehouseResource(url=warehouse.url)}
        context = dg.build_schedule_context(
            instance=fresh, scheduled_execution_time=datetime(2026, 11, 20, 1, 30, tzinfo=UTC),
            resources=resources, repository_def=defs.get_repository_def(),
        )  # fmt: skip
        requests = daily_reports.evaluate_tick(context).run_requests
        assert sorted(r.partition_key for r in requests) == [f"{DAY.isoformat()}|{t}" for t in TENANTS_]
        assert len({r.run_key for r in requests}) == 2
        assert sorted(fresh.get_dynamic_partitions(TENANTS.name)) == list(TENANTS_)
        empty = dg.build_schedule_context(
            instance=fresh, scheduled_execution_time=datetime(2027, 1, 5, 1, 30, tzinfo=UTC),
            resources=resources, repository_def=defs.get_repository_def(),
        )  # fmt: skip
        assert daily_reports.evaluate_tick(empty).skip_message == "no tenant has data on 2027-01-04"


def test_another_module_can_append_a_section(published):
    warehouse, _result, _instance = published

    @register_section("compliance", order=70, name="test.appended")
    def appended(ctx: ReportContext) -> Section:
        return Section(
            "appended", "Appended section", [Table(["item", "opened"], [["inc-1", ctx.day.isoformat()]])]
        )

    try:
        ctx = ReportContext(warehouse, "tenant-01", DAY, datetime.now(UTC))
        report = build_report("compliance", ctx)
        titles = [s.title for s in report.sections]
        assert titles.index("Data quality") < titles.index("Appended section") < titles.index("Audit summary")
        assert "Appended section" in to_html(report) and "| inc-1 |" in to_markdown(report)
    finally:
        _SECTIONS["compliance"].pop("test.appended")
    json.dumps(report.summary)  # headline numbers are plain values
