"""MLflow: runs found again by key, champion promotion by held-out metric, champion loaded elsewhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from hub_ml import tracking
from hub_ml.anomaly import AnomalyEnsemble, EWMAControlChartDetector, SeasonalResidualDetector
from hub_ml.anomaly.model import RECORD_COLUMNS, train_anomaly_model
from hub_ml.anomaly.synthetic import seasonal_counts

MODEL_NAME = "anomaly-test"
SPIKE = pd.Timestamp("2026-09-29 14:00", tz="UTC")


def good_ensemble() -> AnomalyEnsemble:
    return AnomalyEnsemble([SeasonalResidualDetector(), EWMAControlChartDetector()])


def blind_ensemble() -> AnomalyEnsemble:
    """Thresholds no anomaly reaches: it never flags anything, so its held-out F1 is 0."""
    return AnomalyEnsemble([SeasonalResidualDetector(threshold=1e6), EWMAControlChartDetector(threshold=1e6)])


def training_series() -> dict[str, pd.Series]:
    return {f"tenant-0{i}/requests": seasonal_counts(21, seed=20 + i) for i in (1, 2)}


def test_run_for_key_reuses_the_run_of_a_retried_step(anomaly_store):
    with tracking.run_for_key("hub-anomaly", "anomaly/2026-10-01") as first:
        tracking.log_params({"window": 72})
    with tracking.run_for_key("hub-anomaly", "anomaly/2026-10-01") as retry:
        tracking.log_params({"window": 72})  # the same value again is fine
        with pytest.raises(ValueError, match="write-once"):
            tracking.log_params({"window": 96})
    with tracking.run_for_key("hub-anomaly", "anomaly/2026-10-02") as other:
        pass
    assert retry.info.run_id == first.info.run_id
    assert other.info.run_id != first.info.run_id


def test_champion_stays_on_the_better_version_and_loads_in_a_fresh_process(anomaly_store, tmp_path):
    series = training_series()
    good = train_anomaly_model(
        series, model_name=MODEL_NAME, run_key="anomaly/good", make_ensemble=good_ensemble
    )
    assert good.decision.promoted and good.version == "1"
    assert good.metrics["holdout_f1"] > 0.5
    blind = train_anomaly_model(
        series, model_name=MODEL_NAME, run_key="anomaly/blind", make_ensemble=blind_ensemble
    )
    assert blind.version == "2"
    assert blind.metrics["holdout_f1"] == 0.0
    assert not blind.decision.promoted
    assert blind.decision.champion_version == "1"
    champion = tracking.champion_version(MODEL_NAME)
    assert str(champion.version) == "1"
    assert float(champion.tags["hub.metric.holdout_f1"]) == pytest.approx(good.metrics["holdout_f1"])
    # The loser's value is on its version too, so the decision can be audited.
    from mlflow import MlflowClient

    loser = MlflowClient().get_model_version(MODEL_NAME, "2")
    assert float(loser.tags["hub.metric.holdout_f1"]) == 0.0
    # A retried step (same run key) logs into the same run.
    assert tracking.find_run_id("hub-anomaly", "anomaly/good") == good.run_id

    # Score new data with the champion in a fresh interpreter: the spike must come back as a record.
    new = seasonal_counts(24, seed=21).iloc[21 * 24 :]
    new.loc[SPIKE] *= 8
    frame = pd.DataFrame({"timestamp": new.index.tz_localize(None), "value": new.to_numpy()})
    frame["series_key"] = "tenant-01/requests"
    payload = tmp_path / "input.json"
    frame.to_json(payload, orient="records", date_format="iso")
    script = textwrap.dedent(
        f"""
        import json, pandas as pd
        from hub_ml import tracking
        tracking.configure({anomaly_store!r})
        model = tracking.load_champion({MODEL_NAME!r})
        frame = pd.read_json({str(payload)!r}, orient="records")
        frame["timestamp"] = pd.to_datetime(frame["timestamp"])
        frame["value"] = frame["value"].astype(float)  # the signature says double
        out = model.predict(frame)
        print(json.dumps({{"columns": list(out.columns), "records": out.astype(str).to_dict("records")}}))
        """
    )
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["columns"] == RECORD_COLUMNS
    flagged = {pd.Timestamp(r["timestamp"]).tz_localize(None) for r in result["records"]}
    assert SPIKE.tz_localize(None) in flagged
    spike = next(
        r
        for r in result["records"]
        if pd.Timestamp(r["timestamp"]).tz_localize(None) == SPIKE.tz_localize(None)
    )
    assert spike["series_key"] == "tenant-01/requests"
    assert "flagged by" in spike["explanation"]


def test_a_better_model_takes_the_alias(anomaly_store):
    series = training_series()
    blind = train_anomaly_model(
        series, model_name=MODEL_NAME, run_key="anomaly/blind", make_ensemble=blind_ensemble
    )
    assert blind.decision.promoted  # no champion yet
    good = train_anomaly_model(
        series, model_name=MODEL_NAME, run_key="anomaly/good", make_ensemble=good_ensemble
    )
    assert good.decision.promoted and good.decision.previous_version == blind.version
    assert str(tracking.champion_version(MODEL_NAME).version) == good.version
    # A lower-is-better comparison is the same machinery the other way round.
    decision = tracking.promote_if_better(
        MODEL_NAME, blind.version, "false_alarms", 0.0, greater_is_better=False
    )
    assert decision.promoted  # the champion has no false_alarms tag to defend itself with
    again = tracking.promote_if_better(MODEL_NAME, good.version, "false_alarms", 3.0, greater_is_better=False)
    assert not again.promoted and again.champion_version == blind.version
