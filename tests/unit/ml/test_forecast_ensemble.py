"""Rolling-origin backtests, weighting, fallback and conformal intervals."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest

from hub_ml.forecast import (
    ConformalIntervals,
    EnsembleConfig,
    EnsembleForecaster,
    ForecastInputError,
    HorizonBuckets,
    SeasonalNaiveForecaster,
    plan_origins,
    rolling_origin_backtest,
)
from hub_ml.forecast import ensemble as ensemble_module
from hub_ml.forecast.ensemble import (
    WEIGHTING_SCHEMES,
    combine,
    distinct_target_points,
    scheme_weights,
    stacking_supported,
)
from hub_ml.forecast.series import LogTransform
from hub_ml.forecast.synthetic import synthetic_hourly_traffic


class SpyForecaster(SeasonalNaiveForecaster):
    """Seasonal naive that records the last timestamp of every series it is fitted on."""

    name = "spy"
    seen: list[pd.Timestamp] = []

    def _fit(self, y: pd.Series) -> None:
        SpyForecaster.seen.append(y.index[-1])
        super()._fit(y)


@pytest.fixture(scope="module")
def daily_spend() -> pd.Series:
    traffic = synthetic_hourly_traffic(days=90, seed=5, requests_per_hour=400).set_index("ts")
    return traffic["spend_usd"].resample("D").sum()


def test_origins_leave_a_full_horizon_and_enough_training():
    assert plan_origins(100, 30, 3, 7, 40) == (56, 63, 70)
    assert plan_origins(100, 30, 10, 7, 40) == (42, 49, 56, 63, 70)
    with pytest.raises(ForecastInputError, match="at least 70 points"):
        plan_origins(50, 30, 3, 7, 40)


def test_backtest_fits_only_on_data_before_each_origin(daily_spend):
    SpyForecaster.seen.clear()
    result = rolling_origin_backtest(
        daily_spend,
        {"spy": functools.partial(SpyForecaster, seasonal_periods=(7,))},
        horizon=14,
        n_origins=4,
        origin_step=5,
    )
    origins = result.origin_timestamps
    assert len(SpyForecaster.seen) == 4
    for seen, origin in zip(SpyForecaster.seen, origins, strict=True):
        assert seen == origin - pd.Timedelta(days=1)
    np.testing.assert_allclose(result.actuals[-1], daily_spend.iloc[-14:].to_numpy())
    table = result.metrics([7, 14])
    assert set(table.columns) >= {"model", "horizon", "mape", "smape", "mase", "rmse", "coverage"}


def test_ensemble_members_never_see_past_their_origin(daily_spend, monkeypatch):
    SpyForecaster.seen.clear()
    monkeypatch.setitem(ensemble_module.MODEL_CLASSES, "spy", SpyForecaster)
    model = EnsembleForecaster(EnsembleConfig(models=("seasonal_naive", "spy"))).fit(daily_spend)
    origins = model.report.origins
    backtest_fits = SpyForecaster.seen[: len(origins)]
    assert all(seen < origin for seen, origin in zip(backtest_fits, origins, strict=True))
    assert model.backtest_.origins == tuple(daily_spend.index.get_indexer(origins))


def test_a_failing_member_is_dropped_with_its_reason(daily_spend, monkeypatch):
    class Broken(SeasonalNaiveForecaster):
        name = "broken"

        def _fit(self, y):
            raise ValueError("cannot fit this")

    monkeypatch.setitem(ensemble_module.MODEL_CLASSES, "broken", Broken)
    model = EnsembleForecaster(EnsembleConfig(models=("seasonal_naive", "broken"))).fit(daily_spend)
    assert "cannot fit this" in model.report.failures["broken"]
    assert model.report.members == ["seasonal_naive"]


def test_weights_favour_the_more_accurate_member():
    rng = np.random.default_rng(0)
    actuals = 100 + rng.normal(0, 1, (4, 20))
    good = actuals + rng.normal(0, 1, actuals.shape)
    bad = actuals + rng.normal(0, 10, actuals.shape)
    stacked = np.stack([good, bad])
    buckets = HorizonBuckets((7, 20))
    for scheme in ("inverse_mape", "inverse_mse", "stacking"):
        weights = scheme_weights(scheme, actuals, stacked, buckets)
        np.testing.assert_allclose(weights.sum(axis=1), 1.0)
        assert (weights >= 0).all()
        assert (weights[:, 0] > weights[:, 1]).all(), scheme
    np.testing.assert_allclose(scheme_weights("equal", actuals, stacked, buckets), 0.5)
    combined = combine(stacked, np.array([[1.0, 0.0], [0.0, 1.0]]), buckets)
    np.testing.assert_allclose(combined[:, :7], good[:, :7])
    np.testing.assert_allclose(combined[:, 7:], bad[:, 7:])


def test_fallback_to_the_best_single_model_when_the_ensemble_does_not_beat_it():
    # A noiseless weekly pattern: seasonal naive is exact, so no blend can beat it.
    idx = pd.date_range("2026-01-01", periods=120, freq="D", tz="UTC")
    week = np.tile([5.0, 9, 9, 9, 9, 9, 3], 20)
    series = pd.Series(week[:120], index=idx)
    config = EnsembleConfig.quick(models=("seasonal_naive", "sarima"))
    model = EnsembleForecaster(config).fit(series)
    assert model.report.fallback_model == "seasonal_naive"
    assert model.report.weighting == "fallback:seasonal_naive"
    assert list(model.fitted_members_) == ["seasonal_naive"]
    np.testing.assert_allclose(model.predict(14)["mean"].to_numpy(), week[120:134])


def test_buckets_merge_until_each_holds_enough_residuals():
    hourly = HorizonBuckets.for_horizon(720, pd.Timedelta(hours=1), 3)
    assert hourly.ends == (24, 168, 336, 720)
    daily = HorizonBuckets.for_horizon(30, pd.Timedelta(days=1), 8)
    assert daily.ends == (7, 14, 30)
    np.testing.assert_array_equal(daily.index(32)[[0, 6, 7, 13, 14, 29, 31]], [0, 0, 1, 1, 2, 2, 2])
    few = HorizonBuckets.for_horizon(30, pd.Timedelta(days=1), 2)
    assert few.ends == (30,)


def test_conformal_intervals_cover_at_the_nominal_rate():
    rng = np.random.default_rng(1)
    buckets = HorizonBuckets((10, 50))
    forecast = np.full((200, 50), 100.0)
    noise_scale = np.where(np.arange(50) < 10, 0.02, 0.1)  # the far bucket is noisier
    calibration = forecast * np.exp(rng.normal(0, noise_scale, forecast.shape))
    intervals = ConformalIntervals.calibrate(calibration, forecast, LogTransform(True), buckets)
    lower, upper = intervals.interval(np.full(50, 100.0), 0.9)
    assert upper[0] - lower[0] < upper[-1] - lower[-1]
    fresh = forecast * np.exp(rng.normal(0, noise_scale, forecast.shape))
    inside = (fresh >= lower) & (fresh <= upper)
    assert 0.87 < inside.mean() < 0.93


def test_ensemble_report_and_metrics_for_mlflow(daily_spend):
    model = EnsembleForecaster(EnsembleConfig.quick()).fit(daily_spend)
    report = model.report
    assert report.horizons == {"7d": 7, "30d": 30}
    assert len(report.origins) == 8
    metrics = report.as_metrics()
    for name in (
        "ensemble_7d_mape",
        "ensemble_30d_mase",
        "ensemble_30d_coverage",
        "sarima_30d_rmse",
        "weighting_inverse_mape_mape",
        "weighting_stacking_mape",
    ):
        assert np.isfinite(metrics[name]), name
    # The ensemble (validated leave-one-origin-out) is no worse than its best member on the backtest.
    best_single = min(v for k, v in report.weighting_errors.items() if k.startswith("single_"))
    ensemble_error = np.mean([metrics["ensemble_7d_mape"], metrics["ensemble_30d_mape"]])
    assert ensemble_error <= best_single + 1e-9
    assert "| model" in report.summary() or "model" in report.summary()
    forecast = model.predict(30)
    assert (forecast["lower"] <= forecast["mean"]).all() and (forecast["mean"] <= forecast["upper"]).all()


def test_stacking_needs_distinct_target_points_per_weight():
    # Daily: 8 origins 3 days apart, 30-day horizon, buckets of steps 1-7, 8-14, 15-30.
    daily = HorizonBuckets.for_horizon(30, pd.Timedelta(days=1), 8)
    origins = plan_origins(90, 30, 8, 3, 20)
    assert distinct_target_points(origins, daily) == [28, 28, 37]
    assert not stacking_supported(origins, daily, n_models=4, min_points=10)
    assert stacking_supported(origins, daily, n_models=2, min_points=10)
    # Hourly: 3 origins a week apart; the steps 1-24 bucket covers 72 distinct hours.
    hourly = HorizonBuckets.for_horizon(720, pd.Timedelta(hours=1), 3)
    origins = plan_origins(2160, 720, 3, 168, 336)
    assert min(distinct_target_points(origins, hourly)) == 72
    assert stacking_supported(origins, hourly, n_models=4, min_points=10)


@pytest.mark.parametrize("min_points", [0, 10])
def test_auto_weighting_leaves_out_stacking_on_few_distinct_days(daily_spend, min_points):
    config = EnsembleConfig.quick(
        models=("seasonal_naive", "sarima", "prophet"), min_stacking_points=min_points
    )
    report = EnsembleForecaster(config).fit(daily_spend).report
    errors = report.weighting_errors
    assert set(WEIGHTING_SCHEMES) <= set(errors)  # stacking is still judged and reported
    allowed = [s for s in WEIGHTING_SCHEMES if min_points == 0 or s != "stacking"]
    best = min(allowed, key=errors.get)
    best_single = min(v for k, v in errors.items() if k.startswith("single_"))
    if errors[best] < best_single:
        assert report.weighting == best
    else:
        assert report.weighting.startswith("fallback:")


def test_config_is_checked():
    with pytest.raises(ValueError, match="unknown models"):
        EnsembleConfig(models=("arima_xl",))
    with pytest.raises(ValueError, match="weighting"):
        EnsembleConfig(weighting="median")
    with pytest.raises(ValueError, match="model_params"):
        EnsembleConfig(models=("sarima",), model_params={"lstm": {"epochs": 1}})
