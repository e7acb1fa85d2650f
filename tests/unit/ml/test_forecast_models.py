"""The four forecasters behind one interface, and the metrics they are judged by."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from hub_ml.forecast import (
    LstmForecaster,
    ProphetForecaster,
    SarimaForecaster,
    SeasonalNaiveForecaster,
    coverage,
    mape,
    mase,
    rmse,
    seasonal_naive_scale,
    smape,
)
from hub_ml.forecast.lstm import _resolve_device
from hub_ml.forecast.sarima import fourier_design
from hub_ml.forecast.synthetic import synthetic_hourly_traffic

QUICK = {
    SeasonalNaiveForecaster: {},
    SarimaForecaster: {"max_p": 1, "max_q": 1, "max_P": 1, "max_Q": 0, "harmonic_grid": (0, 4, 12)},
    ProphetForecaster: {"uncertainty_samples": 50},
    LstmForecaster: {"epochs": 6, "hidden_size": 16, "max_windows": 400},
}


@pytest.fixture(scope="module")
def traffic() -> pd.DataFrame:
    return synthetic_hourly_traffic(days=63, seed=11, requests_per_hour=1000).set_index("ts")


@pytest.fixture(scope="module")
def hourly_split(traffic):
    requests = traffic["requests"]
    return requests.iloc[: 56 * 24], requests.iloc[56 * 24 :]


@pytest.mark.parametrize("model_class", list(QUICK), ids=lambda c: c.name)
def test_every_forecaster_shares_the_interface(model_class, hourly_split):
    train, test = hourly_split
    model = model_class(**QUICK[model_class]).fit(train)
    forecast = model.predict(len(test), level=0.9)
    assert list(forecast.columns) == ["timestamp", "mean", "lower", "upper"]
    assert forecast["timestamp"].iloc[0] == train.index[-1] + pd.Timedelta(hours=1)
    assert (forecast["timestamp"] == test.index).all()
    values = forecast[["mean", "lower", "upper"]].to_numpy()
    assert np.isfinite(values).all() and (values >= 0).all()
    assert (forecast["lower"] <= forecast["mean"] + 1e-9).all()
    assert (forecast["mean"] <= forecast["upper"] + 1e-9).all()
    assert model.periods_ == (24, 168)
    # Every model, the baseline included, is far better than guessing on this regular series.
    assert mape(test, forecast["mean"]) < 25
    # A wider level gives a wider interval.
    wide = model.predict(len(test), level=0.99)
    assert (wide["upper"] - wide["lower"] >= forecast["upper"] - forecast["lower"] - 1e-9).all()


def test_seasonal_naive_repeats_last_week():
    idx = pd.date_range("2026-01-01", periods=24 * 21, freq="h", tz="UTC")
    values = np.tile(np.arange(168, dtype=float), 3) + 1
    forecast = SeasonalNaiveForecaster().fit(pd.Series(values, index=idx)).predict(200)
    np.testing.assert_allclose(forecast["mean"].to_numpy(), np.tile(values[-168:], 2)[:200])


def test_sarima_chooses_orders_in_a_bounded_grid_and_handles_the_weekly_period(hourly_split):
    train, _ = hourly_split
    model = SarimaForecaster(**QUICK[SarimaForecaster]).fit(train)
    tuned = model.tuned_params()
    p, d, q = tuned["order"]
    assert p <= 1 and q <= 1 and d == 0
    # The 168-hour season goes through Fourier terms; the SARIMA seasonal period is the 24-hour one.
    assert tuned["seasonal_order"][3] in (0, 24)
    assert set(tuned["fourier_harmonics"]) == {24, 168}
    assert tuned["fourier_harmonics"][168] > 0
    # The tuned structure, passed back, refits without search to the same orders.
    again = SarimaForecaster(seasonal_periods=(24, 168), **tuned).fit(train)
    assert again.tuned_params() == tuned
    # Pickles small (the Kalman filter output is dropped) and predicts the same after a round trip.
    blob = pickle.dumps(model)
    assert len(blob) < 2_000_000
    np.testing.assert_allclose(pickle.loads(blob).predict(24)["mean"], model.predict(24)["mean"])


def test_fourier_terms_do_not_repeat_shared_frequencies():
    positions = np.arange(10.0)
    # The 7th weekly harmonic is the first daily one: 2 daily + 8 weekly harmonics give 9 frequencies.
    assert fourier_design(positions, {24: 2, 168: 8}).shape[1] == 2 * 9
    # Period 2 (Nyquist) has only a cosine.
    assert fourier_design(positions, {2: 1}).shape[1] == 1


def test_prophet_is_quiet_and_takes_holidays(hourly_split, capfd):
    train, _ = hourly_split
    daily = train.resample("D").sum()
    model = ProphetForecaster(holidays_country="US", uncertainty_samples=20).fit(daily)
    first = model.predict(14)
    out, err = capfd.readouterr()
    assert "cmdstanpy" not in out + err and "INFO" not in out + err
    # Seeded interval sampling: the same forecast every time, numpy's global state untouched.
    np.random.seed(123)
    expected_draw = np.random.rand()
    np.random.seed(123)
    pd.testing.assert_frame_equal(first, model.predict(14))
    assert np.random.rand() == expected_draw
    restored = pickle.loads(pickle.dumps(model))
    pd.testing.assert_frame_equal(first, restored.predict(14))


def test_lstm_is_seeded_and_runs_on_cpu_by_default(hourly_split):
    train, _ = hourly_split
    params = QUICK[LstmForecaster]
    first = LstmForecaster(seed=7, **params).fit(train).predict(200)
    second = LstmForecaster(seed=7, **params).fit(train).predict(200)
    pd.testing.assert_frame_equal(first, second)
    import torch

    assert _resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    model = LstmForecaster(seed=7, **params).fit(train)
    restored = pickle.loads(pickle.dumps(model))
    pd.testing.assert_frame_equal(restored.predict(200), first)


def test_lstm_on_daily_series(traffic):
    daily = traffic["spend_usd"].resample("D").sum()
    model = LstmForecaster(epochs=5).fit(daily.iloc[:56])
    assert (model.patch, model.block, model.lookback) == (7, 7, 28)
    forecast = model.predict(7)
    assert mape(daily.iloc[56:63], forecast["mean"]) < 20


def test_metrics_on_known_values():
    actual = np.array([100.0, 200.0, 0.0])
    forecast = np.array([110.0, 180.0, 5.0])
    assert mape(actual, forecast) == pytest.approx((10 + 10) / 2)  # zero actual left out
    assert smape([100.0, 0.0], [110.0, 0.0]) == pytest.approx(np.mean([10 / 105, 0]) * 100)
    assert rmse(actual, forecast) == pytest.approx(np.sqrt((100 + 400 + 25) / 3))
    history = np.array([1.0, 2.0, 3.0, 2.0, 3.0, 4.0])
    assert seasonal_naive_scale(history, 3) == pytest.approx(1.0)
    assert mase([5.0, 6.0], [4.0, 6.0], 1.0) == pytest.approx(0.5)
    assert coverage([1, 2, 3, 4], [0, 0, 0, 5], [2, 2, 4, 6]) == 0.75
    with pytest.raises(ValueError, match="length"):
        mape([1.0, 2.0], [1.0])


@pytest.mark.parametrize("model_class", list(QUICK), ids=lambda c: c.name)
def test_series_without_seasonality(model_class):
    idx = pd.date_range("2026-01-01", periods=80, freq="D", tz="UTC")
    series = pd.Series(50 + np.random.default_rng(2).normal(0, 2, 80), index=idx)
    model = model_class(**QUICK[model_class]).fit(series)
    assert model.periods_ == ()
    forecast = model.predict(10)
    assert np.isfinite(forecast[["mean", "lower", "upper"]].to_numpy()).all()
    assert mape(np.full(10, 50.0), forecast["mean"]) < 15
