"""Input handling: unusable series are refused with a message naming the reason; gaps are filled."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hub_ml.forecast import (
    EnsembleConfig,
    EnsembleForecaster,
    ForecastInputError,
    NotFittedError,
    SarimaForecaster,
    SeasonalNaiveForecaster,
    detect_seasonal_periods,
    prepare_series,
)
from hub_ml.forecast.series import LogTransform, replace_outliers
from hub_ml.forecast.synthetic import synthetic_hourly_traffic


def hourly(n: int = 24 * 21, seed: int = 0) -> pd.Series:
    idx = pd.date_range("2026-06-01", periods=n, freq="h", tz="UTC")
    rng = np.random.default_rng(seed)
    hours = np.arange(n)
    return pd.Series(100 + 30 * np.sin(2 * np.pi * hours / 24) + rng.normal(0, 3, n), index=idx)


def test_non_numeric_values_are_refused_by_name():
    series = hourly().astype(object)
    series.iloc[5] = "n/a"
    with pytest.raises(ForecastInputError, match="numeric"):
        SeasonalNaiveForecaster().fit(series)


def test_boolean_values_are_refused():
    series = pd.Series(True, index=hourly().index)
    with pytest.raises(ForecastInputError, match="numeric"):
        prepare_series(series)


def test_index_must_be_timestamps():
    with pytest.raises(ForecastInputError, match="DatetimeIndex"):
        prepare_series(pd.Series([1.0, 2.0, 3.0]))


def test_not_a_series_is_refused():
    with pytest.raises(ForecastInputError, match="pandas Series"):
        prepare_series(hourly().to_frame())


def test_empty_series_is_refused():
    with pytest.raises(ForecastInputError, match="empty"):
        prepare_series(pd.Series([], index=pd.DatetimeIndex([], tz="UTC"), dtype=float))


def test_duplicate_timestamps_are_refused():
    series = hourly()
    series = pd.concat([series, series.iloc[:2]])
    with pytest.raises(ForecastInputError, match="duplicate"):
        prepare_series(series)


def test_off_grid_timestamps_are_refused():
    series = hourly()
    index = series.index.tolist()
    index[10] = index[10] + pd.Timedelta(minutes=30)
    with pytest.raises(ForecastInputError, match="regular"):
        prepare_series(pd.Series(series.to_numpy(), index=pd.DatetimeIndex(index)))


def test_infinite_values_are_refused():
    series = hourly()
    series.iloc[3] = np.inf
    with pytest.raises(ForecastInputError, match="infinite"):
        prepare_series(series)


def test_mostly_missing_series_is_refused():
    series = hourly()
    series.iloc[: int(len(series) * 0.7)] = np.nan
    with pytest.raises(ForecastInputError, match="missing"):
        prepare_series(series)


def test_too_short_for_the_season_names_the_season():
    with pytest.raises(ForecastInputError, match=r"needs at least .*seasonal periods \(24,\)"):
        SarimaForecaster(seasonal_periods=(24,)).fit(hourly(30))


def test_too_short_for_the_horizon_names_the_horizon():
    # 21 days cannot hold training data plus a 30-day backtest horizon.
    with pytest.raises(ForecastInputError, match=r"720-step backtest horizon \(30 days"):
        EnsembleForecaster(EnsembleConfig.quick()).fit(hourly(24 * 21))


def test_predict_before_fit_and_bad_arguments():
    model = SeasonalNaiveForecaster()
    with pytest.raises(NotFittedError):
        model.predict(3)
    model.fit(hourly())
    with pytest.raises(ForecastInputError, match="horizon"):
        model.predict(0)
    with pytest.raises(ForecastInputError, match="horizon"):
        model.predict(2.5)
    with pytest.raises(ForecastInputError, match="level"):
        model.predict(3, level=95)


def test_gaps_and_nans_are_filled_on_the_grid():
    series = hourly()
    holes = series.drop(series.index[100:130])  # 30 missing rows
    holes.iloc[200:203] = np.nan  # and a few NaNs
    prepared = prepare_series(holes, fill_period=24)
    assert len(prepared) == len(series)
    assert prepared.notna().all()
    assert prepared.index.freq == pd.Timedelta(hours=1)
    # A long gap takes the previous day's shape, not a straight line.
    np.testing.assert_allclose(prepared.iloc[100:124].to_numpy(), series.iloc[76:100].to_numpy(), atol=1e-9)
    forecast = SarimaForecaster(max_p=1, max_q=1, max_P=0, max_Q=0).fit(holes).predict(48)
    assert np.isfinite(forecast[["mean", "lower", "upper"]].to_numpy()).all()


def test_naive_timestamps_are_read_as_utc_and_other_zones_converted():
    series = hourly()
    naive = pd.Series(series.to_numpy(), index=series.index.tz_localize(None))
    assert prepare_series(naive).index.tz is not None
    paris = pd.Series(series.to_numpy(), index=series.index.tz_convert("Europe/Paris"))
    assert prepare_series(paris).index[0] == series.index[0]


def test_seasonal_periods_are_found_from_the_data():
    traffic = synthetic_hourly_traffic(days=42, seed=3).set_index("ts")["requests"]
    assert detect_seasonal_periods(traffic.to_numpy(), (24, 168)) == (24, 168)
    daily = traffic.resample("D").sum()
    assert detect_seasonal_periods(daily.to_numpy(), (7,)) == (7,)
    noise = np.random.default_rng(0).normal(10, 1, 24 * 42)
    assert detect_seasonal_periods(noise, (24, 168)) == ()


def test_log_transform_round_trips_and_handles_zeros():
    values = np.array([0.0, 1.0, 10.0])
    transform = LogTransform.for_values(values)
    assert transform.enabled and transform.offset == 1.0
    np.testing.assert_allclose(transform.inverse(transform.forward(values)), values)
    assert not LogTransform.for_values(np.array([-1.0, 2.0])).enabled
    with pytest.raises(ForecastInputError, match="negative"):
        LogTransform.for_values(np.array([-1.0, 2.0]), "log")


def test_anomalies_in_training_data_are_replaced_by_the_usual_shape():
    traffic = synthetic_hourly_traffic(days=42, seed=8, requests_per_hour=2000).set_index("ts")["requests"]
    assert replace_outliers(traffic, 168)[1] <= 3  # almost nothing flagged on clean traffic
    spiked = traffic.copy()
    spiked.iloc[400:403] *= 6  # a 3-hour spike
    spiked.iloc[700:706] *= 0.1  # a 6-hour drop
    cleaned, count = replace_outliers(spiked, 168)
    assert count >= 9
    np.testing.assert_allclose(cleaned.iloc[400:403], traffic.iloc[400:403], rtol=0.25)
    np.testing.assert_allclose(cleaned.iloc[700:706], traffic.iloc[700:706], rtol=0.25)
    model = SeasonalNaiveForecaster(outlier_limit=6).fit(spiked)
    assert model.outliers_replaced_ == count
