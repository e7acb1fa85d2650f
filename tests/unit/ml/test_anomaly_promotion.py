"""Champion and candidate anomaly models are compared on the same held-out data: a champion trained
on an earlier span is re-scored on the candidate's held-out part, and that figure, not the one it
was registered with, decides whether the alias moves."""

from __future__ import annotations

import pandas as pd
import pytest

from hub_ml import tracking
from hub_ml.anomaly import evaluate_windows
from hub_ml.anomaly.evaluation import DEFAULT_TOLERANCE
from hub_ml.anomaly.synthetic import seasonal_counts
from hub_pipelines.ml_training import registry
from hub_pipelines.ml_training.anomaly import AnomalySettings, holdout_evaluation, train_series
from hub_pipelines.ml_training.series import SeriesSpec

SPEC = SeriesSpec(metric="requests", tenant_id="tenant-01", model="gpt-4o")
SETTINGS = AnomalySettings(detectors=("seasonal", "ewma"))


def _train(series: pd.Series, run_key: str):
    return train_series(
        SPEC, series, experiment="hub-anomaly", run_key=run_key, settings=SETTINGS, include_code=False
    )


def test_the_champion_is_rescored_on_the_candidates_held_out_window(anomaly_store):
    series = seasonal_counts(42, seed=3)
    first = _train(series.iloc[: 21 * 24], "anomaly/weeks-1-3")
    assert first.promoted and "champion_holdout_f1" not in first.metrics

    second = _train(series, "anomaly/weeks-1-6")
    # What the champion scores on the second run's held-out part, computed here independently.
    holdout = holdout_evaluation(
        series.astype(float), SETTINGS.make_ensemble, holdout_fraction=0.25, windows=None, seed=0
    )
    assert holdout.values.index[0] >= series.index[21 * 24]  # after the champion's training span
    model = registry.load_model(f"models:/{first.model_name}/{first.version}")
    context = pd.concat([holdout.train[holdout.train.index >= series.index[21 * 24]], holdout.values])
    scored = model.predict(
        pd.DataFrame(
            {
                "timestamp": context.index.tz_localize(None),
                "value": context.to_numpy(),
                "series_key": SPEC.key,
            }
        ),
        params={"all_points": True},
    )
    flags = pd.Series(
        scored["is_anomaly"].to_numpy(bool), index=pd.to_datetime(scored["timestamp"], utc=True)
    )
    expected = evaluate_windows(
        flags[flags.index >= holdout.values.index[0]], holdout.windows, tolerance=DEFAULT_TOLERANCE
    ).f1

    assert second.metrics["champion_holdout_f1"] == pytest.approx(expected)
    assert "re-scored on this held-out window" in second.reason
    assert f"{expected:.6g}" in second.reason
    better = second.metrics["holdout_f1"] > expected
    assert second.promoted == better
    assert str(tracking.champion_version(first.model_name).version) == (
        second.version if better else first.version
    )


def test_a_champion_that_saw_the_held_out_part_keeps_its_registered_figure(anomaly_store):
    series = seasonal_counts(28, seed=4)
    first = _train(series, "anomaly/all")
    again = _train(series, "anomaly/all-again")
    assert "champion_holdout_f1" not in again.metrics
    assert "re-scored" not in again.reason
    # Same data, same settings, same figure: a tie keeps the champion.
    assert again.metrics["holdout_f1"] == pytest.approx(first.metrics["holdout_f1"])
    assert not again.promoted and again.champion_version == first.version
