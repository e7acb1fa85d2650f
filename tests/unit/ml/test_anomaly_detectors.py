"""Detectors: the output contract, walk-forward (no look-ahead), and that they find what they should."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub_ml.anomaly import (
    EWMAControlChartDetector,
    IQRDetector,
    IsolationForestDetector,
    LSTMDetector,
    RollingZScoreDetector,
    SeasonalBaseline,
    SeasonalResidualDetector,
    infer_period,
)
from hub_ml.anomaly.base import OUTPUT_COLUMNS
from hub_ml.anomaly.synthetic import seasonal_counts

HISTORY_HOURS = 8 * 24
SPIKE = pd.Timestamp("2026-09-18 13:00", tz="UTC")

STATISTICAL = {
    "zscore": RollingZScoreDetector,
    "iqr": IQRDetector,
    "ewma": EWMAControlChartDetector,
    "seasonal": SeasonalResidualDetector,
}


def small_lstm(**kwargs) -> LSTMDetector:
    return LSTMDetector(hidden_size=16, epochs=6, refit_epochs=2, window=24, **kwargs)


FACTORIES = {
    **STATISTICAL,
    "iforest": lambda: IsolationForestDetector(n_estimators=50),
    "lstm": small_lstm,
}
# Detectors of single points (the EWMA chart ignores them by design: it is tested on a shift).
POINT = {name: factory for name, factory in FACTORIES.items() if name != "ewma"} | {"lstm": LSTMDetector}


def split(series: pd.Series) -> tuple[pd.Series, pd.Series]:
    return series.iloc[:HISTORY_HOURS], series.iloc[HISTORY_HOURS:]


@pytest.fixture(scope="module")
def scored() -> dict:
    """Each detector (the LSTM at its default size) fitted on 8 days and scoring the next 14."""
    history, rest = split(_anomaly_series())
    return {name: factory().fit(history).score(rest) for name, factory in {**FACTORIES, **POINT}.items()}


def _anomaly_series() -> pd.Series:
    """22 days of hourly requests, a x6 spike on day 12 (13:00-14:00) and a 4-hour gap on day 14."""
    series = seasonal_counts(22, seed=3)
    series.loc[SPIKE : SPIKE + pd.Timedelta(hours=1)] *= 6
    series.loc[pd.Timestamp("2026-09-20 02:00", tz="UTC") : pd.Timestamp("2026-09-20 05:00", tz="UTC")] = (
        np.nan
    )
    return series


@pytest.mark.parametrize("name", list(FACTORIES))
def test_output_contract(name, scored):
    out = scored[name]
    series = _anomaly_series()
    _, rest = split(series)
    assert out.index.equals(rest.index)
    assert list(out.columns[: len(OUTPUT_COLUMNS)]) == OUTPUT_COLUMNS
    assert out["is_anomaly"].dtype == bool
    np.testing.assert_array_equal(out["value"].to_numpy(), rest.to_numpy())
    scores = out["score"].dropna()
    assert ((scores >= 0) & (scores <= 1)).all()
    # A missing value gets no verdict but still an expected range.
    gap = out[rest.isna()]
    assert len(gap) == 4 and gap["score"].isna().all() and not gap["is_anomaly"].any()
    assert gap[["lower", "upper"]].notna().all().all()
    ranged = out.dropna(subset=["lower", "upper"])
    assert (ranged["lower"] <= ranged["upper"]).all()
    # Counts are non-negative, so is their expected range.
    assert (ranged["lower"] >= 0).all()
    # An anomaly is exactly a score at or above one half.
    np.testing.assert_array_equal(out["is_anomaly"], out["score"].fillna(0) >= 0.5)


@pytest.mark.parametrize("name", list(POINT))
def test_flags_the_spike_and_little_else(name, scored):
    out = scored[name]
    flagged = out.index[out["is_anomaly"]]
    in_spike = (flagged >= SPIKE) & (flagged < SPIKE + pd.Timedelta(hours=4))
    assert in_spike.any(), f"{name} missed a x6 spike"
    # 14 days of clean Poisson traffic otherwise: a detector that alarms on noise fails here.
    assert (~in_spike).sum() <= 3, (
        f"{name} raised {(~in_spike).sum()} false alarms: {list(flagged[~in_spike])}"
    )
    around = out.loc[SPIKE]
    assert around["value"] > around["upper"]


@pytest.mark.parametrize("name", list(STATISTICAL))
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=1, max_value=14 * 24 - 1), noise=st.floats(min_value=-50, max_value=500))
def test_statistical_detectors_are_walk_forward(name, cut, noise):
    """Rows a cut-short series shares with the full one are identical, whatever comes after the cut."""
    series = _anomaly_series()
    history, rest = split(series)
    full = STATISTICAL[name]().fit(history).score(rest)
    altered = rest.copy()
    altered.iloc[cut:] = np.maximum(altered.iloc[cut:] + noise, 0)  # a different future
    for candidate in (rest.iloc[:cut], altered):
        out = STATISTICAL[name]().fit(history).score(candidate)
        pd.testing.assert_frame_equal(out.iloc[:cut], full.iloc[:cut])


@pytest.mark.parametrize("name", ["iforest", "lstm"])
def test_learned_detectors_are_walk_forward(name):
    """Fresh detectors (no shared cache) on series cut before, at and after a refit boundary."""
    series = _anomaly_series().iloc[: HISTORY_HOURS + 10 * 24]
    history, rest = split(series)
    full = FACTORIES[name]().fit(history).score(rest)
    for cut in (30, 167, 168, 169, 200):
        out = FACTORIES[name]().fit(history).score(rest.iloc[:cut])
        pd.testing.assert_frame_equal(out, full.iloc[:cut])


@pytest.mark.parametrize("name", list(FACTORIES))
def test_history_overlapping_the_series_is_not_used(name):
    """Fitted on the whole series, a detector still scores it as if it had started with no history."""
    series = _anomaly_series().iloc[: 9 * 24]
    cheated = FACTORIES[name]().fit(series).score(series)
    honest = FACTORIES[name]().fit(series.iloc[:0]).score(series)
    pd.testing.assert_frame_equal(cheated, honest)
    # Warm-up: one week of data before any verdict.
    assert cheated["score"].iloc[: 7 * 24].isna().all()
    assert cheated["score"].iloc[7 * 24 :].notna().any()


@pytest.mark.parametrize("name", ["ewma", "seasonal"])
def test_flags_a_level_shift_and_not_its_end(name):
    """Latency-like noise, +80% for 30 hours: the shift is caught, its end raises no alarm."""
    rng = np.random.default_rng(2)
    index = pd.date_range("2026-09-07", periods=20 * 24, freq="h", tz="UTC")
    daily = 1 + 0.3 * np.sin(2 * np.pi * index.hour.to_numpy() / 24)
    latency = pd.Series(900 * daily * rng.lognormal(0, 0.1, len(index)), index=index)
    start = pd.Timestamp("2026-09-22 06:00", tz="UTC")
    end = start + pd.Timedelta(hours=30)
    latency[start : end - pd.Timedelta(hours=1)] *= 1.8
    out = FACTORIES[name]().fit(latency.iloc[: 8 * 24]).score(latency.iloc[8 * 24 :])
    flagged = out.index[out["is_anomaly"]]
    assert ((flagged >= start) & (flagged < end)).any(), f"{name} missed a 30-hour +80% shift"
    assert not (flagged >= end + pd.Timedelta(hours=3)).any(), "alarms after the shift ended"
    assert not (flagged < start).any()


def test_refits_follow_a_schedule_relative_to_the_series_start():
    """A level change inside the series reaches the expected values only from the next boundary on."""
    series = seasonal_counts(20, seed=5)
    history, rest = series.iloc[: 7 * 24], series.iloc[7 * 24 :].copy()
    rest.iloc[24:] *= 3  # the series is three times busier from its second day
    out = EWMAControlChartDetector(refit_every=72).fit(history).score(rest)
    expected = out["expected"]
    same_hours_before = expected.iloc[48:72].to_numpy()
    same_hours_after = expected.iloc[72:96].to_numpy()
    # EWMA's level is the training level: constant inside a segment, updated at the boundary (72).
    assert np.mean(same_hours_after / same_hours_before) > 1.2


def test_lstm_is_deterministic_and_leaves_the_global_rng_alone():
    series = _anomaly_series().iloc[: HISTORY_HOURS + 3 * 24]
    history, rest = split(series)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = small_lstm().fit(history).score(rest)
    after = torch.rand(1)
    assert torch.equal(before, after)
    second = small_lstm().fit(history).score(rest)
    pd.testing.assert_frame_equal(first, second)
    other_seed = small_lstm(seed=1).fit(history).score(rest)
    assert not np.allclose(other_seed["expected"], first["expected"])


def test_lstm_uses_cpu_without_cuda():
    detector = small_lstm().fit(_anomaly_series().iloc[:HISTORY_HOURS])
    fitted = next(v for v in detector._cache.values() if v is not None)
    expected_device = "cuda" if torch.cuda.is_available() else "cpu"
    assert detector.device == "auto"
    assert next(fitted.model.network.parameters()).device.type == "cpu"  # stored on CPU either way
    from hub_ml.anomaly.lstm import resolve_device

    assert resolve_device("auto").type == expected_device


def test_isolation_forest_takes_several_metrics():
    """Latency scored with the request count as context: the spike ranks first, the frame keeps the
    latency as its value."""
    requests = seasonal_counts(20, seed=7)
    rng = np.random.default_rng(7)
    latency = pd.Series(800 * rng.lognormal(0, 0.05, len(requests)), index=requests.index)
    frame = pd.DataFrame({"latency_ms": latency, "requests": requests})
    when = pd.Timestamp("2026-09-22 14:00", tz="UTC")
    frame.loc[when, "latency_ms"] *= 4
    detector = IsolationForestDetector(target="latency_ms", n_estimators=50)
    out = detector.fit(frame.iloc[: 8 * 24]).score(frame.iloc[8 * 24 :])
    assert out.index.equals(frame.index[8 * 24 :])
    np.testing.assert_array_equal(out["value"], frame["latency_ms"].iloc[8 * 24 :])
    assert out["score"].idxmax() == when
    assert out["is_anomaly"].sum() <= 3


def test_period_inference():
    assert infer_period(pd.Timedelta(hours=1)) == 24
    assert infer_period(pd.Timedelta(minutes=5)) == 288
    assert infer_period(pd.Timedelta(days=1)) == 7
    t = np.arange(600)
    values = 10 + np.sin(2 * np.pi * t / 13) + np.random.default_rng(0).normal(0, 0.1, 600)
    assert infer_period(pd.Timedelta(minutes=7), values) == 13
    assert infer_period(pd.Timedelta(minutes=7), np.random.default_rng(0).normal(size=600)) is None


def test_baseline_transform_keeps_noise_calibrated():
    index = pd.date_range("2026-09-01", periods=21 * 24, freq="h", tz="UTC")
    hours = index.hour.to_numpy()
    rng = np.random.default_rng(0)
    # Low counts: a square root stabilises Poisson noise, a log turns an empty hour into an outlier.
    counts = rng.poisson(3 * (0.2 + np.exp(-0.5 * ((hours - 14) / 3) ** 2))).astype(float)
    # Multiplicative noise on a big daily swing: the log makes it constant.
    latency = 300 * np.exp(1.5 * np.sin(2 * np.pi * hours / 24)) * rng.lognormal(0, 0.3, len(index))
    step = pd.Timedelta(hours=1)
    train = slice(0, 14 * 24)
    baseline = SeasonalBaseline.fit(counts[train], index[train], step)
    # An empty hour is ordinary for a count of ~1-3 an hour: never a 4-sigma drop.
    y = baseline.forward(counts)
    expected, _ = baseline.expected(y, index)
    z = (y - expected) / baseline.sigma(expected, index)
    assert np.abs(z[14 * 24 :][counts[14 * 24 :] == 0]).max() < 4
    assert SeasonalBaseline.fit(latency, index, step).transform == "log1p"
    assert SeasonalBaseline.fit(latency - 500, index, step).transform == "none"


def test_score_requires_fit_and_a_consistent_grid():
    detector = SeasonalResidualDetector()
    series = seasonal_counts(9, seed=1)
    with pytest.raises(RuntimeError):
        detector.score(series)
    detector.fit(series.iloc[: 8 * 24])
    shifted = series.iloc[8 * 24 :].copy()
    shifted.index = shifted.index + pd.Timedelta(minutes=30)
    with pytest.raises(ValueError):
        detector.score(shifted)


@pytest.mark.parametrize("seed", [0, 2, 3])
def test_ewma_adds_up_a_short_drop_in_a_low_count(seed):
    """A 3-hour fall to 15% of an error-like count (~20 an hour at the peak) is 3-5 sigma an hour: the
    chart must add it up (drops push it harder than spikes), and nothing else in the series alarms."""
    series = seasonal_counts(14, seed=seed, base=15.0)
    start = pd.Timestamp("2026-09-16 12:00", tz="UTC")  # a Wednesday afternoon
    end = start + pd.Timedelta(hours=3)
    inside = (series.index >= start) & (series.index < end)
    series[inside] = np.round(series[inside] * 0.15)
    history, rest = series.iloc[: 8 * 24], series.iloc[8 * 24 :]
    found = EWMAControlChartDetector().fit(history).score(rest)
    flagged = found.index[found["is_anomaly"]]
    assert len(flagged) and ((flagged >= start) & (flagged < end + pd.Timedelta(hours=3))).all()
    # Clipped as hard below the level as above it, the same chart does not see the drop.
    symmetric = EWMAControlChartDetector(drop_clip=3.0).fit(history).score(rest)
    assert not symmetric["is_anomaly"].any()
    assert found["deviation"].min() < symmetric["deviation"].min()
