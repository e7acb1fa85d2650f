"""Ensemble: weighted voting, weights from validation precision, records, walk-forward."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from hub_ml.anomaly import (
    RECORD_COLUMNS,
    AnomalyEnsemble,
    EWMAControlChartDetector,
    IQRDetector,
    IsolationForestDetector,
    LSTMDetector,
    RollingZScoreDetector,
    SeasonalResidualDetector,
    combine,
    records_frame,
)
from hub_ml.anomaly.ensemble import SEVERITY_LEVELS, explain, format_number, severity_of
from hub_ml.anomaly.synthetic import seasonal_counts

SPIKE = pd.Timestamp("2026-09-22 14:00", tz="UTC")  # a Tuesday afternoon


def statistical() -> list:
    return [RollingZScoreDetector(), IQRDetector(), EWMAControlChartDetector(), SeasonalResidualDetector()]


def all_detectors() -> list:
    return [
        *statistical(),
        IsolationForestDetector(n_estimators=50),
        LSTMDetector(hidden_size=16, epochs=6, refit_epochs=2, window=24),
    ]


class NoisySeasonal(SeasonalResidualDetector):
    """A seasonal detector with a hair trigger: many false alarms, so low validation precision."""

    name = "noisy"

    def __init__(self, **kwargs):
        super().__init__(**{"threshold": 1.5, **kwargs})


def spiked_series(days: int = 24) -> pd.Series:
    series = seasonal_counts(days, seed=11)
    series.loc[SPIKE] *= 7
    return series


@pytest.fixture(scope="module")
def fitted() -> tuple[AnomalyEnsemble, pd.DataFrame]:
    series = spiked_series()
    ensemble = AnomalyEnsemble(all_detectors).fit(series.iloc[: 10 * 24])
    return ensemble, ensemble.score(series.iloc[10 * 24 :])


def test_ensemble_flags_the_spike_with_a_full_record(fitted):
    ensemble, scored = fitted
    records = ensemble.detect(spiked_series().iloc[10 * 24 :], series_key="tenant-01/gpt-4o/requests")
    spike = [r for r in records if r.timestamp == SPIKE]
    assert spike, "the x7 spike was not flagged"
    record = spike[0]
    assert record.series_key == "tenant-01/gpt-4o/requests"
    assert record.value > record.upper >= record.expected >= record.lower >= 0
    assert 0.5 <= record.score <= 1
    assert record.severity in SEVERITY_LEVELS and record.severity in {"high", "critical"}
    assert 0 < record.confidence <= 1
    names = {d.name for d in ensemble.detectors}
    assert record.detected_by and set(record.detected_by) <= names
    assert "seasonal" in record.detected_by
    pattern = (
        r"^requests [\d,]+ at 2026-09-22 14:00 UTC is \d+\.\dx the expected [\d,.]+ "
        r"\(range [\d,.]+-[\d,.]+\); flagged by [a-z, ]+$"
    )
    assert re.match(pattern, record.explanation), record.explanation
    frame = records_frame(records)
    assert list(frame.columns) == RECORD_COLUMNS
    assert len(frame) == len(records) <= 4  # the spike and at most a few echoes in 14 days
    # Every flagged point has a verdict that the weights explain.
    flagged = scored[scored["is_anomaly"]]
    assert (flagged["score"] >= ensemble.vote_threshold).all()
    assert flagged["detected_by"].map(len).min() >= 1


def test_weights_come_from_validation_precision():
    series = seasonal_counts(21, seed=4)
    ensemble = AnomalyEnsemble([SeasonalResidualDetector(), NoisySeasonal()], seed=1).fit(series)
    assert ensemble.weight_source == "injected"
    by_name = {v.name: v for v in ensemble.validation}
    noisy, calm = by_name["noisy"], by_name["seasonal"]
    assert noisy.metrics.false_positives > calm.metrics.false_positives
    assert calm.weight > noisy.weight
    m = calm.metrics
    assert calm.weight == pytest.approx((m.true_positives + 1) / (m.true_positives + m.false_positives + 2))


def test_labels_replace_the_proxy_and_short_histories_get_equal_weights():
    series = seasonal_counts(21, seed=4)
    window = (series.index[-30], series.index[-27])
    series.loc[window[0] : window[1]] *= 5
    labelled = AnomalyEnsemble(statistical()).fit(series, labels=[window])
    assert labelled.weight_source == "labels"
    assert sum(v.metrics.windows for v in labelled.validation) == len(labelled.detectors)
    short = AnomalyEnsemble(statistical()).fit(series.iloc[: 8 * 24])
    assert short.weight_source == "uniform"
    assert set(short.weights.values()) == {1.0}


def _detector_frame(scores: list[float], values: list[float] | float = 10.0) -> pd.DataFrame:
    """One detector's score frame, hourly from 2026-10-01, expected 10 in a 5-15 range."""
    scores_arr = np.array(scores)
    return pd.DataFrame(
        {
            "value": values,
            "score": scores_arr,
            "lower": 5.0,
            "upper": 15.0,
            "is_anomaly": scores_arr >= 0.5,
            "expected": 10.0,
            "deviation": scores_arr / (1 - scores_arr),
        },
        index=pd.date_range("2026-10-01", periods=len(scores), freq="h", tz="UTC"),
    )


def test_soft_vote_weights_decide():
    def frame(scores):
        return _detector_frame(scores, values=[10.0, 50.0, 10.0])

    outputs = {"a": frame([0.1, 0.9, 0.6]), "b": frame([0.1, 0.3, 0.2])}
    equal = combine(outputs, {"a": 1.0, "b": 1.0})
    assert equal["is_anomaly"].tolist() == [False, True, False]
    assert equal["detected_by"].iloc[1] == ["a"]
    assert equal["confidence"].iloc[1] == pytest.approx(0.5)
    distrust_a = combine(outputs, {"a": 1.0, "b": 4.0})
    assert not distrust_a["is_anomaly"].any()
    assert "5.0x the expected 10" in equal["explanation"].iloc[1]


def test_sustained_alarms_count_once_the_point_detectors_corroborate_them():
    frame = _detector_frame

    # The chart alarms on two runs, 1-4 and 7-8; the point detector stirs (0.25) only at 3.
    outputs = {
        "point": frame([0.0, 0.1, 0.1, 0.25, 0.1, 0.0, 0.0, 0.1, 0.1, 0.0]),
        "chart": frame([0.1, 0.6, 0.7, 0.7, 0.6, 0.2, 0.1, 0.8, 0.8, 0.1]),
    }
    roles = {"point": "point", "chart": "sustained"}
    out = combine(outputs, {"point": 1.0, "chart": 1.0}, roles=roles)
    # Causal: the run counts from the corroborating point on, never before it.
    assert out["is_anomaly"].tolist() == [False] * 3 + [True, True] + [False] * 5
    assert (out["score"][~out["is_anomaly"]] < 0.5).all()
    assert out["detected_by"].iloc[7] == ["chart"]  # the chart's own verdict is still reported
    off = combine(outputs, {"point": 1.0, "chart": 1.0}, roles=roles, corroboration=0.0)
    assert off["is_anomaly"].tolist() == (outputs["chart"]["score"] >= 0.5).tolist()
    # A sustained detector on its own (no point role) needs no corroboration.
    alone = combine({"chart": outputs["chart"]}, {"chart": 1.0}, roles=roles)
    assert alone["is_anomaly"].tolist() == off["is_anomaly"].tolist()


def test_ensemble_is_walk_forward():
    series = spiked_series(22)
    history, rest = series.iloc[: 9 * 24], series.iloc[9 * 24 :]
    full = AnomalyEnsemble(all_detectors).fit(history).score(rest)
    for cut in (100, 7 * 24 + 1):
        short = AnomalyEnsemble(all_detectors).fit(history).score(rest.iloc[:cut])
        pd.testing.assert_frame_equal(short, full.iloc[:cut])


def test_ensemble_ignores_history_after_the_series_start():
    series = spiked_series(16)
    cheated = AnomalyEnsemble(statistical()).fit(series).score(series)
    honest = AnomalyEnsemble(statistical()).fit(series.iloc[:0]).score(series)
    pd.testing.assert_frame_equal(cheated, honest)


def test_severity_and_number_formatting():
    assert [severity_of(x) for x in (1.0, 2.0, 3.0, 9.0)] == list(SEVERITY_LEVELS)
    assert severity_of(1.0, ratio=0.2) == "critical"  # a drop to a fifth
    assert severity_of(3.0, ratio=1.1) == "high"
    assert format_number(4310.2) == "4,310"
    assert format_number(12.5) == "12.5"
    assert format_number(0.01234) == "0.0123"
    text = explain(
        "latency_p95_ms",
        pd.Timestamp("2026-10-01 14:00", tz="UTC"),
        4310,
        830,
        610,
        1050,
        ["seasonal", "iforest", "lstm"],
    )
    assert text == (
        "latency_p95_ms 4,310 at 2026-10-01 14:00 UTC is 5.2x the expected 830 (range 610-1,050); "
        "flagged by seasonal, iforest, lstm"
    )
