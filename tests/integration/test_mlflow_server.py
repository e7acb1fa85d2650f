"""The production MLflow shape: `mlflow server` (deploy/mlflow/mlflow-server.sh) on 127.0.0.1 with a
PostgreSQL backend store and artifacts on an S3-compatible server (moto), serving artifacts itself.
The Dagster assets `anomaly_models` and `forecast_models` train one detector and one forecaster there
(one series each, from the generated traffic of `ml_data`) with nothing but MLFLOW_TRACKING_URI
changed (no S3 credentials on the client side), and the champion of each loads by alias over HTTP in
a fresh process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa
from mlflow import MlflowClient

from hub_pipelines.definitions import defs
from hub_pipelines.defs.ml.assets import (
    ANOMALY_MODELS,
    FORECAST_MODELS,
    AnomalyModelsConfig,
    ForecastModelsConfig,
)
from hub_pipelines.ml_training.series import load_series
from hub_pipelines.warehouse import Warehouse
from hub_pipelines.warehouse.store import normalise_url

ROOT = Path(__file__).resolve().parents[2]
SERVER_SCRIPT = ROOT / "deploy" / "mlflow" / "mlflow-server.sh"
TENANT, MODEL = "tenant-01", "mistral-large"  # the busiest LLM model of `ml_data`
DETECTOR_KEY = f"{TENANT}|requests|{MODEL}"
DETECTOR = f"hub-anomaly.{TENANT}.requests.{MODEL}"
FORECASTER = f"hub-forecast.{TENANT}.spend_usd.all"
SPIKE = 10  # the hour of the new day the detector is shown a spike

pytestmark = pytest.mark.postgres


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(postgres_url, s3_bucket, s3_endpoint, tmp_path):
    bucket, client = s3_bucket
    port = _free_port()
    log = tmp_path / "mlflow-server.log"
    env = os.environ | {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_BACKEND_STORE_URI": normalise_url(postgres_url),
        "MLFLOW_ARTIFACTS_DESTINATION": f"s3://{bucket}/mlflow",
        "MLFLOW_S3_ENDPOINT_URL": s3_endpoint,
        "MLFLOW_HOST": "127.0.0.1",
        "MLFLOW_PORT": str(port),
        "MLFLOW_WORKERS": "1",
    }
    process = subprocess.Popen(
        ["/bin/sh", str(SERVER_SCRIPT)],
        env=env,
        cwd=tmp_path,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the server and its uvicorn worker
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180  # a fresh database is migrated on start
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"mlflow server exited {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not up after 180 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url, bucket, client, postgres_url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:  # uvicorn waits for idle keep-alive connections of the client: do not wait long
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def test_assets_train_on_the_server_and_the_champions_load_over_http(
    mlflow_server, ml_data, ml_warehouse_url, monkeypatch, tmp_path
):
    url, bucket, s3, postgres_url = mlflow_server
    # The client side: only the tracking URI. No S3 endpoint or credentials: artifacts go through the server.
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "MLFLOW_S3_ENDPOINT_URL",
        "AWS_DEFAULT_REGION",
        "HUB_MLFLOW_ARTIFACT_ROOT",
        "MLFLOW_REGISTRY_URI",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("HUB_WAREHOUSE_URL", ml_warehouse_url)
    monkeypatch.setenv("HUB_HOME", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)

    run_config = dg.RunConfig(
        ops={
            ANOMALY_MODELS.to_python_identifier(): AnomalyModelsConfig(
                metrics=["requests"],
                tenants=[TENANT],
                models=[MODEL],
                lookback_days=21,
                labels_path=str(ml_data.labels),
                detectors=["seasonal", "ewma"],
            ),
            FORECAST_MODELS.to_python_identifier(): ForecastModelsConfig(
                hourly_metrics=[],
                spend_levels=["tenant"],
                tenants=[TENANT],
                hourly_lookback_days=21,
                daily_lookback_days=21,
                members=["seasonal_naive"],
                quick=True,
            ),
        }
    )
    result = defs.resolve_job_def("train_models_job").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(),
        run_config=run_config,
        asset_selection=[ANOMALY_MODELS, FORECAST_MODELS],
    )
    assert result.success
    for asset in (ANOMALY_MODELS, FORECAST_MODELS):
        (materialization,) = result.asset_materializations_for_node(asset.to_python_identifier())
        metadata = {k: v.value for k, v in materialization.metadata.items()}
        assert metadata["series_trained"] == 1 and metadata["versions_promoted"] == 1
        assert metadata["mlflow_tracking_uri"] == url
    client = MlflowClient(tracking_uri=url, registry_uri=url)
    (detector_run,) = client.search_runs([client.get_experiment_by_name("hub-anomaly").experiment_id])
    assert detector_run.data.tags["hub.run_key"] == f"anomaly_models/{DETECTOR_KEY}/{result.run_id}"

    # A day after the training data: the detector's last day again, with a spike planted.
    warehouse = Warehouse(ml_warehouse_url)
    try:
        (history,) = load_series(
            warehouse, "requests", start=ml_data.end - timedelta(days=1), end=ml_data.end,
            filters={"tenant_id": TENANT, "model": MODEL},
        ).values()  # fmt: skip
    finally:
        warehouse.engine.dispose()
    new = history.shift(freq=timedelta(days=1))
    new.iloc[SPIKE] = max(new.max(), 10.0) * 8
    (tmp_path / "new.json").write_text(
        json.dumps({"timestamp": [t.isoformat() for t in new.index], "value": new.tolist()})
    )

    # Loaded by alias, over HTTP, in a fresh interpreter that knows only the tracking URI.
    script = textwrap.dedent(
        f"""
        import json, mlflow, pandas as pd
        forecaster = mlflow.pyfunc.load_model("models:/{FORECASTER}@champion")
        detector = mlflow.pyfunc.load_model("models:/{DETECTOR}@champion")
        forecast = forecaster.predict(pd.DataFrame({{"horizon": [7]}}))
        new = json.load(open("new.json"))
        frame = pd.DataFrame({{"timestamp": pd.to_datetime(new["timestamp"]).tz_localize(None), "value": new["value"]}})
        frame["series_key"] = "{DETECTOR_KEY}"
        flagged = detector.predict(frame)
        print(json.dumps({{"forecast": forecast["forecast"].tolist(), "first": str(forecast["timestamp"].iloc[0]),
                          "flagged": [str(t) for t in flagged["timestamp"]], "source": mlflow.get_tracking_uri()}}))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_S3"))}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(loaded["forecast"]) == 7 and all(v == v and v >= 0 for v in loaded["forecast"])
    assert pd.Timestamp(loaded["first"]) == pd.Timestamp(ml_data.end)  # it goes on from the training data
    flagged = [pd.Timestamp(t) for t in loaded["flagged"]]
    assert new.index[SPIKE] in flagged and len(flagged) <= 3  # the spike, not the ordinary hours around it
    assert loaded["source"] == url

    # The registry and runs are in PostgreSQL, the model files in the bucket, nothing on local disk.
    engine = sa.create_engine(normalise_url(postgres_url))
    with engine.connect() as conn:
        aliases = dict(conn.execute(sa.text("SELECT name, version FROM registered_model_aliases")).all())
        experiments = {
            row[0]: row[1] for row in conn.execute(sa.text("SELECT name, artifact_location FROM experiments"))
        }
    engine.dispose()
    assert aliases == {FORECASTER: 1, DETECTOR: 1}
    assert experiments["hub-forecast"].startswith("mlflow-artifacts:")
    assert experiments["hub-anomaly"].startswith("mlflow-artifacts:")
    keys = [
        obj["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="mlflow/")
        for obj in page.get("Contents", [])
    ]
    assert len([k for k in keys if k.endswith("MLmodel")]) >= 2
    assert any(k.endswith("evaluation/holdout.png") for k in keys)  # the detector's evaluation plot
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / "hub" / "mlflow").exists()
    assert shutil.which("mlflow", path=str(Path(sys.executable).parent))
