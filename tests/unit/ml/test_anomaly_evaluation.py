"""Window-based precision/recall: the rules the acceptance figures are computed with."""

from __future__ import annotations

import pandas as pd
import pytest

from hub_ml.anomaly.evaluation import WindowMetrics, evaluate_windows, label_windows

INDEX = pd.date_range("2026-10-01", periods=48, freq="h", tz="UTC")


def flags_at(*hours: int) -> pd.Series:
    flags = pd.Series(False, index=INDEX)
    flags.iloc[list(hours)] = True
    return flags


def window(start_hour: int, end_hour: int) -> tuple[pd.Timestamp, pd.Timestamp]:
    return INDEX[0] + pd.Timedelta(hours=start_hour), INDEX[0] + pd.Timedelta(hours=end_hour)


def test_a_window_counts_once_however_many_points_fall_in_it():
    result = evaluate_windows(flags_at(10, 11, 12), [window(10, 13)])
    assert (result.true_positives, result.false_negatives, result.false_positives) == (1, 0, 0)
    assert result.precision == result.recall == result.f1 == 1.0


def test_consecutive_false_alarms_merge_into_one_event_and_gaps_split_them():
    result = evaluate_windows(flags_at(1, 2, 3, 7, 30), [window(20, 22)])
    assert result.false_positives == 3
    assert result.false_negatives == 1
    assert result.precision == 0.0 and result.recall == 0.0 and result.f1 == 0.0


def test_tolerance_after_the_window_end_is_a_detection_not_a_false_alarm():
    windows = [window(10, 12)]
    late = flags_at(13)  # one hour after the (exclusive) end
    assert evaluate_windows(late, windows, tolerance=pd.Timedelta(hours=3)).true_positives == 1
    strict = evaluate_windows(late, windows, tolerance=pd.Timedelta(0))
    assert (strict.true_positives, strict.false_positives) == (0, 1)


def test_early_alarm_is_a_false_positive():
    result = evaluate_windows(flags_at(9), [window(10, 12)])
    assert (result.true_positives, result.false_positives, result.false_negatives) == (0, 1, 1)


def test_windows_outside_the_scored_span_are_ignored():
    result = evaluate_windows(flags_at(5), [window(5, 6), window(100, 102)])
    assert result.windows == 1


def test_metrics_pool_by_addition():
    total = WindowMetrics(3, 1, 1) + WindowMetrics(1, 1, 0)
    assert (total.true_positives, total.false_negatives, total.false_positives) == (4, 2, 1)
    assert total.precision == pytest.approx(0.8)
    assert total.recall == pytest.approx(4 / 6)


def test_label_windows_select_by_metric_and_series():
    labels = [
        {
            "tenant_id": "t1",
            "model": "m1",
            "metrics": ["requests"],
            "start": "2026-10-01T02:00:00Z",
            "end": "2026-10-01T04:00:00Z",
        },
        {
            "tenant_id": "t1",
            "model": None,
            "metrics": ["requests"],
            "start": "2026-10-02T02:00:00Z",
            "end": "2026-10-02T03:00:00Z",
        },
        {
            "tenant_id": "t2",
            "model": "m1",
            "metrics": ["requests"],
            "start": "2026-10-01T05:00:00Z",
            "end": "2026-10-01T06:00:00Z",
        },
        {
            "tenant_id": "t1",
            "model": "m1",
            "metrics": ["latency_p95_ms"],
            "start": "2026-10-01T07:00:00Z",
            "end": "2026-10-01T08:00:00Z",
        },
    ]
    windows = label_windows(labels, metric="requests", tenant_id="t1", model="m1")
    assert windows == [
        (pd.Timestamp("2026-10-01T02:00:00Z"), pd.Timestamp("2026-10-01T04:00:00Z")),
        (pd.Timestamp("2026-10-02T02:00:00Z"), pd.Timestamp("2026-10-02T03:00:00Z")),
    ]
