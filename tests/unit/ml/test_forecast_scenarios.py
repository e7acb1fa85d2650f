"""What-if scenarios on a driver forecast, recomputing the dependent cost forecast."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hub_ml.forecast import (
    EnsembleConfig,
    EnsembleForecaster,
    ForecastInputError,
    Scenario,
    apply_scenario,
    cost_per_request_series,
    cost_what_if,
    product_forecast,
)
from hub_ml.forecast.base import forecast_frame
from hub_ml.forecast.synthetic import synthetic_hourly_traffic


def flat_forecast(value: float, days: int = 10, spread: float = 0.1) -> pd.DataFrame:
    idx = pd.date_range("2026-11-01", periods=days, freq="D", tz="UTC")
    mean = np.full(days, value)
    return forecast_frame(idx, mean, mean * (1 - spread), mean * (1 + spread))


def test_doubling_requests_from_a_date_doubles_cost_from_that_date():
    requests = flat_forecast(1000.0)
    unit_cost = flat_forecast(0.002)
    scenario = Scenario("launch", start="2026-11-06", multiplier=2.0)
    result = cost_what_if(requests, unit_cost, scenario)
    frame = result.frame
    before = frame["timestamp"] < pd.Timestamp("2026-11-06", tz="UTC")
    np.testing.assert_allclose(frame.loc[before, "difference"], 0.0)
    np.testing.assert_allclose(frame.loc[~before, "scenario_cost"], 2 * frame.loc[~before, "baseline_cost"])
    np.testing.assert_allclose(frame["baseline_cost"], 2.0)
    summary = result.summary
    assert summary["baseline_total"] == pytest.approx(20.0)
    assert summary["difference_total"] == pytest.approx(10.0)  # 5 days x 2 USD extra
    assert summary["difference_pct"] == pytest.approx(50.0)
    assert summary["window_steps"] == 5
    assert (frame["scenario_cost_lower"] <= frame["scenario_cost"]).all()
    assert (frame["scenario_cost"] <= frame["scenario_cost_upper"]).all()


def test_scenario_window_end_and_offset():
    requests = flat_forecast(100.0)
    scenario = Scenario("outage", start="2026-11-03", end="2026-11-05", multiplier=0.0, offset=10.0)
    changed = apply_scenario(requests, scenario)
    np.testing.assert_allclose(changed["mean"].to_numpy(), [100, 100, 10, 10, 100, 100, 100, 100, 100, 100])


def test_product_interval_is_wider_than_either_factor_alone():
    product = product_forecast(flat_forecast(100.0, spread=0.1), flat_forecast(2.0, spread=0.1))
    np.testing.assert_allclose(product["mean"], 200.0)
    relative_width = (product["upper"] - product["lower"]) / product["mean"]
    assert (relative_width > 0.2).all() and (relative_width < 0.4).all()


def test_invalid_scenarios_are_refused():
    with pytest.raises(ValueError, match="multiplier"):
        Scenario("bad", start="2026-11-01", multiplier=-1)
    with pytest.raises(ValueError, match="not after"):
        Scenario("bad", start="2026-11-05", end="2026-11-01")
    with pytest.raises(ForecastInputError, match="does not overlap"):
        apply_scenario(flat_forecast(1.0), Scenario("late", start="2027-01-01", multiplier=2))
    with pytest.raises(ForecastInputError, match="lacks columns"):
        apply_scenario(pd.DataFrame({"timestamp": []}), Scenario("x", start="2026-11-01"))


def test_what_if_with_fitted_forecasters():
    traffic = synthetic_hourly_traffic(days=90, seed=4, requests_per_hour=500).set_index("ts")
    daily_requests = traffic["requests"].resample("D").sum()
    daily_spend = traffic["spend_usd"].resample("D").sum()
    unit_cost_series = cost_per_request_series(daily_spend, daily_requests)
    config = EnsembleConfig.quick(models=("seasonal_naive", "sarima"))
    requests_model = EnsembleForecaster(config).fit(daily_requests)
    unit_cost_model = EnsembleForecaster(config).fit(unit_cost_series)
    start = daily_requests.index[-1] + pd.Timedelta(days=8)
    result = cost_what_if(
        requests_model.predict(30),
        unit_cost_model.predict(30),
        Scenario("x2 volume", start=start, multiplier=2.0),
    )
    # Doubling volume from day 8 (23 of 30 days) adds exactly the baseline cost of those days.
    assert result.summary["window_steps"] == 23
    assert result.summary["difference_total"] == pytest.approx(result.summary["window_baseline_total"])
    assert 0 < result.summary["difference_pct"] < 100
    # Cost per request is roughly tokens x price: stable around its mean, no zero-request hours here.
    assert unit_cost_series.notna().all()
