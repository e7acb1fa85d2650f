"""The production MLflow shape: `mlflow server` (deploy/mlflow/mlflow-server.sh) on 127.0.0.1 with a
PostgreSQL backend store and artifacts on an S3-compatible server (moto), serving artifacts itself.
hub's training code logs, registers and promotes a forecaster and an anomaly detector there with
nothing but MLFLOW_TRACKING_URI changed (no S3 credentials on the client side), and the champion
of each loads by alias over HTTP in a fresh process.

hub_pipelines/defs/ml (the forecast_models and anomaly_models assets) did not exist when this test
was written, so it trains through hub_ml's own MLflow flows (hub_ml.forecast.mlflow_model and
hub_ml.anomaly.model), the code those assets are to call.
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
from pathlib import Path

import pytest
import sqlalchemy as sa

from hub_pipelines.warehouse.store import normalise_url

ROOT = Path(__file__).resolve().parents[2]
SERVER_SCRIPT = ROOT / "deploy" / "mlflow" / "mlflow-server.sh"
FORECASTER = "hub_test_spend_forecast"
DETECTOR = "hub_test_requests_anomaly"

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


def test_models_register_on_the_server_and_the_champion_loads_over_http(mlflow_server, monkeypatch, tmp_path):
    url, bucket, s3, postgres_url = mlflow_server
    # The client side: only the tracking URI. No S3 endpoint or credentials: artifacts go through the server.
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "MLFLOW_S3_ENDPOINT_URL",
        "AWS_DEFAULT_REGION",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.chdir(tmp_path)

    from hub_ml import tracking
    from hub_ml.anomaly import AnomalyEnsemble, EWMAControlChartDetector, SeasonalResidualDetector
    from hub_ml.anomaly.model import train_anomaly_model
    from hub_ml.anomaly.synthetic import seasonal_counts
    from hub_ml.forecast import EnsembleConfig
    from hub_ml.forecast.mlflow_model import train_and_register
    from hub_ml.forecast.synthetic import synthetic_hourly_traffic

    tracking.configure(os.environ["MLFLOW_TRACKING_URI"])
    spend = synthetic_hourly_traffic(days=60, seed=5, requests_per_hour=300).set_index("ts")["spend_usd"]
    forecast = train_and_register(
        spend.resample("D").sum(),
        model_name=FORECASTER,
        experiment="hub-forecast",
        run_key="forecast/spend/tenant-01",
        config=EnsembleConfig.quick(models=("seasonal_naive",)),
    )
    assert forecast.promotion.promoted and forecast.version == "1"
    detector = train_anomaly_model(
        {f"tenant-0{i}/requests": seasonal_counts(21, seed=30 + i) for i in (1, 2)},
        model_name=DETECTOR,
        run_key="anomaly/requests",
        experiment="hub-anomaly",
        make_ensemble=lambda: AnomalyEnsemble([SeasonalResidualDetector(), EWMAControlChartDetector()]),
    )
    assert detector.decision.promoted and detector.version == "1"

    # Loaded by alias, over HTTP, in a fresh interpreter that knows only the tracking URI.
    script = textwrap.dedent(
        f"""
        import json, mlflow, pandas as pd
        from hub_ml.anomaly.synthetic import seasonal_counts
        forecaster = mlflow.pyfunc.load_model("models:/{FORECASTER}@champion")
        detector = mlflow.pyfunc.load_model("models:/{DETECTOR}@champion")
        forecast = forecaster.predict(pd.DataFrame({{"horizon": [7]}}))
        new = seasonal_counts(22, seed=31).iloc[21 * 24 :]
        new.iloc[10] *= 8
        frame = pd.DataFrame({{"timestamp": new.index.tz_localize(None), "value": new.to_numpy(dtype=float)}})
        frame["series_key"] = "tenant-01/requests"
        flagged = detector.predict(frame)
        print(json.dumps({{"forecast": forecast["forecast"].tolist(), "flagged": len(flagged),
                          "source": mlflow.get_tracking_uri()}}))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_S3"))}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(loaded["forecast"]) == 7 and all(v == v for v in loaded["forecast"])
    assert loaded["flagged"] >= 1 and loaded["source"] == url

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
    keys = [
        obj["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="mlflow/")
        for obj in page.get("Contents", [])
    ]
    assert any(k.endswith("MLmodel") for k in keys) and len([k for k in keys if k.endswith("MLmodel")]) >= 2
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()
    assert shutil.which("mlflow", path=str(Path(sys.executable).parent))
