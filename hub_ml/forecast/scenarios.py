"""What-if scenarios: change a driver forecast (request volume) and recompute the cost forecast.

Cost is modelled as ``requests x cost per request`` with the two forecast separately (volume is
seasonal and growing; the unit cost moves with the model mix and prices), so a scenario on volume
changes cost through the product and leaves the unit cost alone::

    requests = EnsembleForecaster().fit(hourly_requests)
    unit_cost = EnsembleForecaster().fit(cost_per_request_series(hourly_spend, hourly_requests))
    result = cost_what_if(requests.predict(720), unit_cost.predict(720),
                          Scenario("launch doubles traffic", start="2026-11-10", multiplier=2.0))
    result.summary   # baseline and scenario totals, the difference, in USD and percent
    result.frame     # per timestamp: baseline and scenario cost with intervals, and the difference

Intervals of the product combine the two forecasts' intervals as independent log-normal errors
(half-widths added in quadrature on the log scale).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import norm

from hub_ml.forecast.errors import ForecastInputError


@dataclass(frozen=True)
class Scenario:
    """Scale (``multiplier``) and/or shift (``offset``) the driver from ``start`` until ``end``
    (exclusive; None = to the end of the forecast). Example: request volume x2 from a date."""

    name: str
    start: str | pd.Timestamp
    end: str | pd.Timestamp | None = None
    multiplier: float = 1.0
    offset: float = 0.0

    def __post_init__(self) -> None:
        if not np.isfinite(self.multiplier) or self.multiplier < 0:
            raise ValueError(
                f"scenario multiplier must be a finite non-negative number, got {self.multiplier}"
            )
        if self.end is not None and _utc(self.end) <= _utc(self.start):
            raise ValueError(f"scenario end {self.end} is not after its start {self.start}")

    def active(self, timestamps: pd.Series | pd.DatetimeIndex) -> np.ndarray:
        ts = pd.DatetimeIndex(timestamps)
        ts = ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")
        mask = ts >= _utc(self.start)
        if self.end is not None:
            mask &= ts < _utc(self.end)
        return np.asarray(mask)


def _utc(value: str | pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")


def _check_forecast(frame: pd.DataFrame, what: str) -> None:
    missing = {"timestamp", "mean", "lower", "upper"} - set(frame.columns)
    if missing:
        raise ForecastInputError(f"{what} forecast lacks columns {sorted(missing)}")


def apply_scenario(forecast: pd.DataFrame, scenario: Scenario) -> pd.DataFrame:
    """The forecast with mean, lower and upper scaled and shifted where the scenario is active."""
    _check_forecast(forecast, "driver")
    out = forecast.copy()
    active = scenario.active(out["timestamp"])
    if not active.any():
        raise ForecastInputError(
            f"scenario {scenario.name!r} ({scenario.start} to {scenario.end or 'open end'}) does not "
            f"overlap the forecast ({out['timestamp'].iloc[0]} to {out['timestamp'].iloc[-1]})"
        )
    for column in ("mean", "lower", "upper"):
        changed = out.loc[active, column] * scenario.multiplier + scenario.offset
        out.loc[active, column] = np.maximum(changed, 0.0)
    return out


def cost_per_request_series(spend: pd.Series, requests: pd.Series) -> pd.Series:
    """Spend / requests per timestamp; hours without requests are left missing (the forecasters
    fill gaps), since a unit cost of 0/0 is not zero."""
    aligned_spend, aligned_requests = spend.align(requests, join="inner")
    ratio = aligned_spend / aligned_requests.where(aligned_requests > 0)
    return ratio.rename("cost_per_request")


def product_forecast(driver: pd.DataFrame, unit: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Forecast of driver x unit: mean is the product; the interval treats the two relative errors
    as independent log-normals (log half-widths added in quadrature)."""
    _check_forecast(driver, "driver")
    _check_forecast(unit, "unit cost")
    left = driver.set_index("timestamp")
    right = unit.set_index("timestamp")
    common = left.index.intersection(right.index)
    if len(common) == 0:
        raise ForecastInputError("driver and unit-cost forecasts share no timestamps")
    left, right = left.loc[common], right.loc[common]
    mean = left["mean"].to_numpy() * right["mean"].to_numpy()
    z = norm.ppf(0.5 + level / 2)

    def log_sigma(frame: pd.DataFrame) -> np.ndarray:
        lo = np.maximum(frame["lower"].to_numpy(), 1e-12)
        hi = np.maximum(frame["upper"].to_numpy(), 1e-12)
        return (np.log(hi) - np.log(lo)) / (2 * z)

    sigma = np.sqrt(log_sigma(left) ** 2 + log_sigma(right) ** 2)
    return pd.DataFrame(
        {
            "timestamp": common,
            "mean": mean,
            "lower": mean * np.exp(-z * sigma),
            "upper": mean * np.exp(z * sigma),
        }
    )


@dataclass
class ScenarioResult:
    scenario: Scenario
    frame: pd.DataFrame
    summary: dict[str, float]


def cost_what_if(
    driver_forecast: pd.DataFrame,
    unit_cost_forecast: pd.DataFrame,
    scenario: Scenario,
    level: float = 0.95,
) -> ScenarioResult:
    """Apply ``scenario`` to the driver forecast and recompute cost = driver x unit cost.

    ``frame``: timestamp, baseline_cost (+ _lower/_upper), scenario_cost (+ _lower/_upper),
    difference, driver_baseline, driver_scenario. ``summary``: baseline_total, scenario_total,
    difference_total, difference_pct, over the whole forecast and over the scenario's window.
    """
    baseline = product_forecast(driver_forecast, unit_cost_forecast, level)
    changed_driver = apply_scenario(driver_forecast, scenario)
    changed = product_forecast(changed_driver, unit_cost_forecast, level)
    drivers = driver_forecast.set_index("timestamp")["mean"]
    changed_drivers = changed_driver.set_index("timestamp")["mean"]
    frame = pd.DataFrame(
        {
            "timestamp": baseline["timestamp"],
            "driver_baseline": drivers.reindex(baseline["timestamp"]).to_numpy(),
            "driver_scenario": changed_drivers.reindex(baseline["timestamp"]).to_numpy(),
            "baseline_cost": baseline["mean"],
            "baseline_cost_lower": baseline["lower"],
            "baseline_cost_upper": baseline["upper"],
            "scenario_cost": changed["mean"],
            "scenario_cost_lower": changed["lower"],
            "scenario_cost_upper": changed["upper"],
        }
    )
    frame["difference"] = frame["scenario_cost"] - frame["baseline_cost"]
    window = scenario.active(frame["timestamp"])
    baseline_total = float(frame["baseline_cost"].sum())
    scenario_total = float(frame["scenario_cost"].sum())
    window_baseline = float(frame.loc[window, "baseline_cost"].sum())
    summary = {
        "baseline_total": baseline_total,
        "scenario_total": scenario_total,
        "difference_total": scenario_total - baseline_total,
        "difference_pct": (scenario_total / baseline_total - 1) * 100 if baseline_total else float("nan"),
        "window_baseline_total": window_baseline,
        "window_difference_total": float(frame.loc[window, "difference"].sum()),
        "window_steps": float(window.sum()),
    }
    return ScenarioResult(scenario=scenario, frame=frame, summary=summary)
