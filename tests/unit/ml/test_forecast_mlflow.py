"""The fitted ensemble as an MLflow pyfunc model: registered, promoted by alias, loaded elsewhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from hub_ml import tracking
from hub_ml.forecast import EnsembleConfig, ForecastInputError
from hub_ml.forecast.mlflow_model import forecast_for_request, model_signature, train_and_register
from hub_ml.forecast.synthetic import synthetic_hourly_traffic

MODEL_NAME = "spend_forecast_tenant_01"


@pytest.fixture()
def mlflow_store(tmp_path):
    uri = tracking.local_tracking_uri(tmp_path / "mlflow")
    tracking.configure(uri)
    yield uri, str(tmp_path / "artifacts")


@pytest.fixture(scope="module")
def daily_spend() -> pd.Series:
    traffic = synthetic_hourly_traffic(days=90, seed=21, requests_per_hour=400).set_index("ts")
    return traffic["spend_usd"].resample("D").sum()


def test_champion_loads_by_alias_in_a_fresh_process(mlflow_store, daily_spend, tmp_path):
    uri, artifacts = mlflow_store
    first = train_and_register(
        daily_spend,
        model_name=MODEL_NAME,
        experiment="forecast-test",
        run_key="forecast/spend/v1",
        config=EnsembleConfig.quick(),
        artifact_location=artifacts,
    )
    assert first.promotion.promoted and first.version == "1"
    assert first.metrics["ensemble_30d_mape"] > 0

    # A weaker model (the baseline alone) is registered but does not take the alias.
    second = train_and_register(
        daily_spend,
        model_name=MODEL_NAME,
        experiment="forecast-test",
        run_key="forecast/spend/v2",
        config=EnsembleConfig(models=("seasonal_naive",)),
        artifact_location=artifacts,
    )
    assert second.version == "2" and not second.promotion.promoted
    assert str(tracking.champion_version(MODEL_NAME).version) == "1"

    script = textwrap.dedent(
        f"""
        import json, mlflow, pandas as pd
        mlflow.set_tracking_uri({uri!r}); mlflow.set_registry_uri({uri!r})
        model = mlflow.pyfunc.load_model("models:/{MODEL_NAME}@champion")
        by_horizon = model.predict(pd.DataFrame({{"horizon": [14]}}))
        by_time = model.predict(pd.DataFrame({{"timestamp": pd.to_datetime(["{daily_spend.index[-1] + pd.Timedelta(days=3):%Y-%m-%d}"])}}))
        print(json.dumps({{
            "columns": list(by_horizon.columns),
            "forecast": by_horizon["forecast"].tolist(),
            "first_timestamp": str(by_horizon["timestamp"].iloc[0]),
            "by_time": by_time["forecast"].tolist(),
            "inputs": [c.name for c in model.metadata.signature.inputs.inputs],
        }}))
        """
    )
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["columns"] == ["timestamp", "forecast", "lower", "upper"]
    assert answer["inputs"] == ["horizon", "timestamp", "level"]
    expected = first.forecaster.predict(14)
    assert answer["forecast"] == pytest.approx(expected["mean"].tolist())
    assert pd.Timestamp(answer["first_timestamp"]) == daily_spend.index[-1] + pd.Timedelta(days=1)
    assert answer["by_time"] == pytest.approx([expected["mean"].iloc[2]])


def test_request_handling_without_mlflow(daily_spend):
    from hub_ml.forecast import SeasonalNaiveForecaster

    model = SeasonalNaiveForecaster().fit(daily_spend)
    out = forecast_for_request(model, pd.DataFrame({"horizon": [5], "level": [0.8]}))
    assert len(out) == 5 and list(out.columns) == ["timestamp", "forecast", "lower", "upper"]
    with pytest.raises(ForecastInputError, match="after the training data"):
        forecast_for_request(model, pd.DataFrame({"timestamp": [daily_spend.index[-1]]}))
    with pytest.raises(ForecastInputError, match="grid"):
        forecast_for_request(
            model, pd.DataFrame({"timestamp": [daily_spend.index[-1] + pd.Timedelta(hours=29)]})
        )
    with pytest.raises(ForecastInputError, match="horizon"):
        forecast_for_request(model, pd.DataFrame({"other": [1]}))
    assert [c.name for c in model_signature().outputs.inputs] == ["timestamp", "forecast", "lower", "upper"]
