"""The ML assets through Dagster, in process, on three weeks of generated traffic (one tenant, seed 1,
ingested and rolled up into DuckDB) with a local SQLite MLflow store, both named by the environment
as a deployment names them (HUB_WAREHOUSE_URL, MLFLOW_TRACKING_URI).

`train_models_job` trains the anomaly models (requests and spend of the tenant's busiest LLM model,
against the generator's labels, an ensemble with Isolation Forest and a few-epoch LSTM) and the
forecast models (that model's requests and the tenant's spend, quick two-member ensembles), and
stores the champions' forecasts with a what-if scenario (request volume x2). `score_anomalies_job`
scores a range of hours. What is checked is what MLflow, the registry and the warehouse tables hold,
not only what the assets say they did; the anomalies and forecasts are also written to PostgreSQL.
"""

from __future__ import annotations

import base64
import json
import math
import re
import uuid
from datetime import timedelta

import dagster as dg
import mlflow
import pandas as pd
import pytest
import sqlalchemy as sa
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from mlflow import MlflowClient

from hub_ml import tracking
from hub_pipelines.definitions import defs
from hub_pipelines.defs.ml.assets import (
    ANOMALY_MODELS,
    FORECAST_MODELS,
    FORECASTS,
    ROOT_RUN_TAG,
    AnomalyModelsConfig,
    ForecastModelsConfig,
    ForecastsConfig,
    ScenarioConfig,
)
from hub_pipelines.ml_training.anomaly import SEVERITIES
from hub_pipelines.warehouse import Warehouse, tables

TENANT = "tenant-01"
BUSIEST = "mistral-large"  # the tenant's busiest LLM model in `ml_data`
ANOMALY_KEYS = (f"{TENANT}|requests|{BUSIEST}", f"{TENANT}|spend_usd|{BUSIEST}")
REQUESTS_KEY, SPEND_KEY = f"{TENANT}|requests|{BUSIEST}", f"{TENANT}|spend_usd|*"
FORECASTERS = {
    REQUESTS_KEY: f"hub-forecast.{TENANT}.requests.{BUSIEST}",
    SPEND_KEY: f"hub-forecast.{TENANT}.spend_usd.all",
}
MEMBERS = ("seasonal_naive", "sarima")
END = pd.Timestamp("2026-10-01", tz="UTC")  # the end of `ml_data` (tests/integration/conftest.py)
SCENARIO_START = END + timedelta(days=1)
# Hours scored: the last four days, with the labelled spike of the busiest model's requests.
SCORED = (END - timedelta(days=4), END)


def anomaly_config(
    labels_path, detectors=("seasonal", "ewma", "iforest", "lstm"), metrics=("requests", "spend_usd")
):
    return AnomalyModelsConfig(
        metrics=list(metrics),
        lookback_days=21,
        tenants=[TENANT],
        max_models_per_tenant=1,
        labels_path=str(labels_path),
        detectors=list(detectors),
        lstm_epochs=3,
    )


FORECAST_CONFIG = ForecastModelsConfig(
    hourly_metrics=["requests"],
    hourly_lookback_days=21,
    daily_lookback_days=21,
    spend_levels=["tenant"],
    max_models_per_tenant=1,
    members=list(MEMBERS),
    quick=True,
)
FORECASTS_CONFIG = ForecastsConfig(
    scenarios=[ScenarioConfig(name="requests_x2", start=SCENARIO_START.isoformat(), multiplier=2.0)],
    scenario_lookback_days=21,
)


def _metadata(result: dg.ExecuteInProcessResult, asset: dg.AssetKey) -> dict:
    """The metadata of the asset's materialisation (a range run materialises every partition of the
    range with the same metadata)."""
    materializations = result.asset_materializations_for_node(asset.to_python_identifier())
    assert materializations and all(m.metadata == materializations[0].metadata for m in materializations)
    return {k: v.value for k, v in materializations[0].metadata.items()}


def _md_rows(markdown: str) -> list[dict[str, str]]:
    """The rows of a markdown table as {header: cell} (escaped pipes kept in the cell)."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]

    def cells(line: str) -> list[str]:
        return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]

    headers = cells(lines[0])
    return [dict(zip(headers, cells(line), strict=True)) for line in lines[2:]]


def _runs(client: MlflowClient, experiment: str, filter_string: str = "") -> list:
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], filter_string=filter_string, max_results=1000)


def _score(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    """score_anomalies_job over the SCORED hours, one run (the asset's single-run backfill policy)."""
    start, end = SCORED
    return defs.resolve_job_def("score_anomalies_job").execute_in_process(
        instance=instance,
        tags={
            ASSET_PARTITION_RANGE_START_TAG: start.strftime("%Y-%m-%d-%H:%M"),
            ASSET_PARTITION_RANGE_END_TAG: (end - timedelta(hours=1)).strftime("%Y-%m-%d-%H:%M"),
        },
    )


def _table(url: str, table: sa.Table, order: list[str]) -> pd.DataFrame:
    warehouse = Warehouse(url)
    try:
        with warehouse.connect() as conn:
            frame = pd.DataFrame(
                conn.execute(sa.select(table)).all(), columns=[c.name for c in table.columns]
            )
    finally:
        warehouse.engine.dispose()
    for column in ("ts", "target_ts"):
        if column in frame:
            frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame.sort_values(order).reset_index(drop=True)


# What a scoring run writes (all but when it ran): the same on every run and every database.
ANOMALY_COLUMNS = ["series_key", "ts", "severity", "detected_by", "value", "expected_low", "expected_high"]
ANOMALY_COLUMNS += ["score", "confidence", "explanation", "model_version"]
FORECAST_ORDER = ["scenario", "series_key", "horizon_days", "target_ts"]


@pytest.fixture(scope="module")
def ml(ml_warehouse_url, ml_data, tmp_path_factory):
    """The environment of a deployment (HUB_HOME, the warehouse, the MLflow store) and a Dagster
    instance. The MLflow store is this module's own: SQLite at the embedded store's place under
    HUB_HOME, where its artifacts go too."""
    home = tmp_path_factory.mktemp("ml_home")
    (home / "mlflow").mkdir()
    uri = f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HUB_HOME", str(home))
        patch.setenv("HUB_WAREHOUSE_URL", ml_warehouse_url)
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        for name in ("HUB_MLFLOW_ARTIFACT_ROOT", "HUB_ANOMALY_LABELS", "MLFLOW_REGISTRY_URI"):
            patch.delenv(name, raising=False)
        yield {
            "uri": uri,
            "url": ml_warehouse_url,
            "labels": ml_data.labels,
            "instance": dg.DagsterInstance.ephemeral(),
            "client": MlflowClient(tracking_uri=uri, registry_uri=uri),
        }


@pytest.fixture(scope="module")
def trained(ml):
    """One train_models_job run, as the weekly schedule starts it."""
    run_config = dg.RunConfig(
        ops={
            ANOMALY_MODELS.to_python_identifier(): anomaly_config(ml["labels"]),
            FORECAST_MODELS.to_python_identifier(): FORECAST_CONFIG,
            FORECASTS.to_python_identifier(): FORECASTS_CONFIG,
        }
    )
    result = defs.resolve_job_def("train_models_job").execute_in_process(
        instance=ml["instance"], run_config=run_config
    )
    assert result.success
    return result


@pytest.fixture(scope="module")
def scored(ml, trained):
    """The SCORED hours scored once, and the anomalies table after it."""
    result = _score(ml["instance"])
    assert result.success
    return result, _table(ml["url"], tables.anomalies, ["series_key", "ts"])


def test_anomaly_models_train_log_register_and_promote(ml, ml_data, trained):
    metadata = _metadata(trained, ANOMALY_MODELS)
    client = ml["client"]
    assert ml_data.end == END and metadata["series_trained"] == 2 and metadata["series_skipped"] == 0
    assert metadata["versions_promoted"] == 2  # no champion before: both first versions promoted
    assert metadata["labels"] == "labels.json" and metadata["mlflow_experiment"] == "hub-anomaly"
    assert metadata["holdout_windows"] >= 1  # the labelled spike lies in the held-out tail
    for name in ("holdout_precision", "holdout_recall", "holdout_f1"):
        assert 0.0 <= metadata[name] <= 1.0
    p, r = metadata["holdout_precision"], metadata["holdout_recall"]
    assert metadata["holdout_f1"] == pytest.approx(2 * p * r / (p + r) if p + r else 0.0)

    evaluation = {row["series"]: row for row in _md_rows(metadata["evaluation"])}
    assert sorted(evaluation) == sorted(ANOMALY_KEYS)
    detectors = {row["detector"] for row in _md_rows(metadata["detectors"])}
    assert detectors == {"ensemble", "seasonal", "ewma", "iforest", "lstm"}
    image = re.search(r"!\[[^\]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", metadata["evaluation_plot"])
    assert image and base64.b64decode(image.group(1)).startswith(b"\x89PNG\r\n\x1a\n")

    runs = {run.data.tags["hub.anomaly_series_key"]: run for run in _runs(client, "hub-anomaly")}
    assert sorted(runs) == sorted(ANOMALY_KEYS)  # one run per series, nothing else
    for key, run in runs.items():
        tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
        assert run.info.status == "FINISHED"
        assert tags["hub.run_key"] == f"anomaly_models/{key}/{trained.run_id}"
        assert tags["dagster.run_id"] == trained.run_id and tags["hub.kind"] == "anomaly_training"
        assert set(params["detectors"].split(",")) == {"seasonal", "ewma", "iforest", "lstm"}
        assert params["lstm.epochs"] == "3" and params["comparison_metric"] == "holdout_f1"
        for name in ("holdout_precision", "holdout_recall", "holdout_f1", "weight_lstm", "weight_iforest"):
            assert math.isfinite(metrics[name])
        row = evaluation[key]
        assert (row["precision"], row["recall"], row["F1"]) == tuple(
            f"{metrics[f'holdout_{m}']:.3f}" for m in ("precision", "recall", "f1")
        )
        assert {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")} == {
            "evaluation/holdout.png",
            "evaluation/holdout.md",
        }

        name = f"hub-anomaly.{key.replace('|', '.')}"
        champion = client.get_model_version_by_alias(name, "champion")
        assert str(champion.version) == "1" and champion.run_id == run.info.run_id
        assert champion.tags["hub.run_key"] == tags["hub.run_key"]
        assert float(champion.tags["hub.metric.holdout_f1"]) == metrics["holdout_f1"]
        assert client.get_registered_model(name).tags["hub.series_key"] == key
        tracking.configure(ml["uri"])  # another test may have pointed this process elsewhere
        signature = mlflow.models.get_model_info(f"models:/{name}/1").signature
        assert signature.inputs.input_names() == ["timestamp", "value", "series_key"]
        assert "severity" in signature.outputs.input_names()


def test_reexecution_reuses_the_mlflow_runs(ml, trained):
    """A re-executed run (same root run id) finds its MLflow runs by run key and trains nothing."""
    client = ml["client"]
    before = {exp: {r.info.run_id for r in _runs(client, exp)} for exp in ("hub-anomaly", "hub-forecast")}
    versions = {
        m.name: len(client.search_model_versions(f"name = '{m.name}'"))
        for m in client.search_registered_models()
    }
    result = dg.materialize(
        [defs.get_assets_def(ANOMALY_MODELS), defs.get_assets_def(FORECAST_MODELS)],
        instance=ml["instance"],
        resources={"warehouse": defs.resources["warehouse"], "mlflow": defs.resources["mlflow"]},
        run_config=dg.RunConfig(
            ops={
                ANOMALY_MODELS.to_python_identifier(): anomaly_config(ml["labels"]),
                FORECAST_MODELS.to_python_identifier(): FORECAST_CONFIG,
            }
        ),
        tags={ROOT_RUN_TAG: trained.run_id, "dagster/parent_run_id": trained.run_id},
    )
    assert result.success
    for asset in (ANOMALY_MODELS, FORECAST_MODELS):
        metadata = _metadata(result, asset)
        assert metadata["series_trained"] == 2 and metadata["versions_promoted"] == 0
        table = metadata["evaluation" if asset == ANOMALY_MODELS else "backtest"]
        assert table.count("reused: this run key already finished") >= 2
    assert {exp: {r.info.run_id for r in _runs(client, exp)} for exp in before} == before
    assert {
        m.name: len(client.search_model_versions(f"name = '{m.name}'"))
        for m in client.search_registered_models()
    } == versions


def test_champion_moves_only_for_a_better_held_out_f1(ml, monkeypatch, tmp_path):
    """In a store of its own: a retried step logs into the MLflow run its first attempt opened; each
    training registers a version and `champion` goes to it only when its held-out F1 beats the
    champion's, as recorded on the versions."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    job = defs.resolve_job_def("train_models_job")
    name = f"hub-anomaly.{ANOMALY_KEYS[0].replace('|', '.')}"
    weak, strong = ("ewma",), ("seasonal",)

    def train(detectors, run_id=None):
        config = anomaly_config(ml["labels"], detectors=detectors, metrics=["requests"])
        result = job.execute_in_process(
            instance=ml["instance"],
            run_config=dg.RunConfig(ops={ANOMALY_MODELS.to_python_identifier(): config}),
            asset_selection=[ANOMALY_MODELS],
            run_id=run_id,
        )
        assert result.success
        versions = client.search_model_versions(f"name = '{name}'")
        f1 = {str(v.version): float(v.tags["hub.metric.holdout_f1"]) for v in versions}
        champion = str(client.get_model_version_by_alias(name, "champion").version)
        return _metadata(result, ANOMALY_MODELS), f1, champion

    # The first attempt of a step opened its MLflow run, then the step failed; the retry (same
    # Dagster run, so the same run key) logs into that run.
    run_id = str(uuid.uuid4())
    experiment = client.create_experiment("hub-anomaly", artifact_location=str(tmp_path / "artifacts"))
    opened = client.create_run(experiment, tags={"hub.run_key": f"anomaly_models/{ANOMALY_KEYS[0]}/{run_id}"})
    client.set_terminated(opened.info.run_id, status="FAILED")
    metadata, f1, champion = train(weak, run_id)
    assert metadata["versions_promoted"] == 1 and champion == "1"  # no champion yet
    assert client.get_model_version(name, "1").run_id == opened.info.run_id
    assert client.get_run(opened.info.run_id).info.status == "FINISHED"
    assert len(_runs(client, "hub-anomaly")) == 1

    metadata, f1, champion = train(strong)
    # The seasonal detector finds the spike; the EWMA chart, built for shifts, does not.
    assert f1["2"] > f1["1"]
    assert metadata["versions_promoted"] == 1 and champion == "2"
    assert metadata["holdout_f1"] == f1["2"]

    metadata, f1, champion = train(weak)
    assert f1["3"] == f1["1"] < f1["2"]
    assert metadata["versions_promoted"] == 0 and champion == "2"
    assert "does not beat champion v2" in _md_rows(metadata["evaluation"])[0]["decision"]
    assert len(_runs(client, "hub-anomaly")) == 3


def test_anomalies_over_a_partition_range(ml, scored):
    result, stored = scored
    metadata = _metadata(result, dg.AssetKey("anomalies"))
    start, end = (pd.Timestamp(t) for t in SCORED)
    partitions = {m.partition for m in result.asset_materializations_for_node("anomalies")}
    assert partitions == {
        f"{t:%Y-%m-%d-%H:%M}" for t in pd.date_range(start, end, freq="h", inclusive="left")
    }
    assert metadata["partition_range"] == f"{start.isoformat()}..{end.isoformat()}"
    assert metadata["series_scored"] == 2 and metadata["series_without_data"] == 0
    assert len(stored) == metadata["anomalies"] == metadata["dagster/row_count"] > 0
    assert set(stored["series_key"]) <= set(ANOMALY_KEYS)
    assert stored["ts"].between(start, end, inclusive="left").all()
    assert (stored["ts"] == stored["ts"].dt.floor("h")).all()
    assert set(stored["severity"]) <= set(SEVERITIES)
    for detected_by in map(json.loads, stored["detected_by"]):
        assert detected_by and set(detected_by) <= {"seasonal", "ewma", "iforest", "lstm"}
    bands = stored.dropna(subset=["expected_low", "expected_high"])
    assert len(bands) > 0 and (bands["expected_low"] <= bands["expected_high"]).all()
    assert (
        stored["model_version"] == stored["series_key"].map(lambda k: f"hub-anomaly.{k.replace('|', '.')}/1")
    ).all()
    counts = stored["severity"].value_counts().to_dict()
    assert metadata["by_severity"] == {s: counts.get(s, 0) for s in SEVERITIES}
    assert {s: metadata[f"severity_{s}"] for s in SEVERITIES} == metadata["by_severity"]
    # The labelled spike of the busiest model's requests (2026-09-27 14:00-17:00) is among them.
    (spike,) = [
        lb
        for lb in json.loads(ml["labels"].read_text())
        if lb.get("model") == BUSIEST
        and "requests" in lb["metrics"]
        and start <= pd.Timestamp(lb["start"]) < end
    ]
    flagged = stored[stored["series_key"] == REQUESTS_KEY]["ts"]
    assert flagged.between(pd.Timestamp(spike["start"]), pd.Timestamp(spike["end"]), inclusive="left").any()

    # Scoring the range again replaces its rows with the same ones.
    again = _score(ml["instance"])
    assert _metadata(again, dg.AssetKey("anomalies"))["by_severity"] == metadata["by_severity"]
    rescored = _table(ml["url"], tables.anomalies, ["series_key", "ts"])
    pd.testing.assert_frame_equal(rescored[ANOMALY_COLUMNS], stored[ANOMALY_COLUMNS])
    assert (rescored["scored_at"] > stored["scored_at"]).all()


def test_forecast_models_and_forecasts_with_a_what_if(ml, trained):
    client = ml["client"]
    training = _metadata(trained, FORECAST_MODELS)
    assert training["series_trained"] == 2 and training["versions_promoted"] == 2
    parents = {
        r.data.tags["hub.series_key"]: r
        for r in _runs(client, "hub-forecast", "tags.`hub.kind` = 'forecast_training'")
    }
    assert sorted(parents) == sorted([REQUESTS_KEY, SPEND_KEY])
    backtest = _md_rows(training["backtest"])
    labels = {
        REQUESTS_KEY: f"{TENANT} requests {BUSIEST} (hourly)",
        SPEND_KEY: f"{TENANT} spend_usd (hourly)",
    }
    for key, parent in parents.items():
        assert parent.data.tags["hub.run_key"] == f"forecast_models/{key}|hour/{trained.run_id}"
        children = _runs(client, "hub-forecast", f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
        assert sorted(c.data.tags["hub.member"] for c in children) == sorted(MEMBERS)
        horizons = parent.data.tags["hub.backtest_horizons"].split(",")
        for child in children:
            assert child.info.status == "FINISHED" and child.data.tags["hub.kind"] == "forecast_member"
            assert {f"{h}_mape" for h in horizons} | {"weight"} <= set(child.data.metrics)
        rows = {row["horizon"]: row for row in backtest if row["series"] == labels[key]}
        assert sorted(rows) == sorted(horizons)
        metrics = parent.data.metrics
        for h, row in rows.items():
            assert row["MAPE %"] == f"{metrics[f'ensemble_{h}_mape']:.2f}" and float(row["MAPE %"]) > 0
            assert row["MASE"] == f"{metrics[f'ensemble_{h}_mase']:.3f}" and float(row["MASE"]) > 0
            assert row["coverage 95%"] == f"{metrics[f'ensemble_{h}_coverage']:.3f}"
            assert 0.5 <= float(row["coverage 95%"]) <= 1.0
        champion = client.get_model_version_by_alias(FORECASTERS[key], "champion")
        assert str(champion.version) == "1" and champion.run_id == parent.info.run_id

    metadata = _metadata(trained, FORECASTS)
    stored = _table(ml["url"], tables.forecasts, FORECAST_ORDER)
    baseline = stored[stored["scenario"] == "baseline"]
    assert metadata["series"] == 2 and metadata["rows_baseline"] == len(baseline)
    assert metadata["horizons_days"] == [7, 14, 30]
    for key in (REQUESTS_KEY, SPEND_KEY):
        mine = baseline[baseline["series_key"] == key]
        for horizon in (7, 14, 30):
            steps = mine[mine["horizon_days"] == horizon]["target_ts"]
            assert list(steps) == list(pd.date_range(END, periods=horizon * 24, freq="h"))
        assert (mine["lower"] <= mine["forecast"]).all() and (mine["forecast"] <= mine["upper"]).all()
        assert (mine["lower"] < mine["upper"]).any() and (mine["level"] == 0.95).all()
        assert set(mine["model_version"]) == {f"{FORECASTERS[key]}/1"}

    # The what-if: twice the requests from SCENARIO_START on, the dependent spend recomputed.
    scenario = stored[stored["scenario"] == "requests_x2"]
    assert set(scenario["series_key"]) == {SPEND_KEY}
    assert metadata["rows_scenarios"] == len(scenario)
    assert sorted(scenario["horizon_days"].unique()) == [7, 14, 30]
    month = scenario[scenario["horizon_days"] == 30].set_index("target_ts")
    base = baseline[(baseline["series_key"] == SPEND_KEY) & (baseline["horizon_days"] == 30)].set_index(
        "target_ts"
    )
    after = month.index >= SCENARIO_START
    assert month.loc[after, "forecast"].sum() > 1.5 * base.loc[month.index[after], "forecast"].sum()
    assert (month["lower"] <= month["forecast"]).all() and (month["forecast"] <= month["upper"]).all()
    what_if = _md_rows(metadata["what_if"])[0]
    assert what_if["scenario"] == "requests_x2 (x2)"
    difference = metadata["what_if_requests_x2_difference_total"]
    assert difference > 0
    assert float(what_if["difference"].replace(",", "")) == pytest.approx(difference, abs=0.01)
    assert 50 < float(what_if["difference %"].rstrip("%")) <= 100


@pytest.mark.postgres
def test_anomalies_and_forecasts_are_written_to_postgresql(
    ml, ml_data, trained, scored, postgres_url, monkeypatch
):
    """The same champions score and forecast from a PostgreSQL warehouse holding the same data: the
    same anomaly and forecast rows are written there."""
    ml_data.load(postgres_url).engine.dispose()
    monkeypatch.setenv("HUB_WAREHOUSE_URL", postgres_url)
    _, expected = scored
    result = _score(ml["instance"])
    stored = _table(postgres_url, tables.anomalies, ["series_key", "ts"])
    assert len(stored) == _metadata(result, dg.AssetKey("anomalies"))["anomalies"] > 0
    pd.testing.assert_frame_equal(stored[ANOMALY_COLUMNS], expected[ANOMALY_COLUMNS], rtol=1e-4)

    result = defs.resolve_job_def("train_models_job").execute_in_process(
        instance=ml["instance"],
        run_config=dg.RunConfig(ops={FORECASTS.to_python_identifier(): FORECASTS_CONFIG}),
        asset_selection=[FORECASTS],
    )
    metadata = _metadata(result, FORECASTS)
    on_postgres = _table(postgres_url, tables.forecasts, FORECAST_ORDER)
    on_duckdb = _table(ml["url"], tables.forecasts, FORECAST_ORDER)
    keys = ["scenario", "series_key", "horizon_days", "target_ts", "model_version"]
    values = ["forecast", "lower", "upper"]
    baseline = on_postgres["scenario"] == "baseline"
    assert baseline.sum() == metadata["rows_baseline"] and (~baseline).sum() == metadata["rows_scenarios"]
    pd.testing.assert_frame_equal(on_postgres[keys], on_duckdb[keys])
    # The champions' own forecasts are the same numbers. The what-if refits its driver ensembles on
    # the warehouse's series (DuckDB keeps metric values in single precision, and the fits amplify
    # such differences a little): the same totals within 5%.
    pd.testing.assert_frame_equal(on_postgres[baseline][values], on_duckdb[baseline][values])
    totals = [
        frame[frame["scenario"] != "baseline"].groupby(["series_key", "horizon_days"])["forecast"].sum()
        for frame in (on_postgres, on_duckdb)
    ]
    pd.testing.assert_series_equal(*totals, rtol=0.05)
