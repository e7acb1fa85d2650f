"""Acceptance: the ensemble on generated series, 90 days of history, scored on the 30 days after.

Series (docs/GENERATOR_SPEC.md): requests, tokens and p95 latency per model hourly; spend per tenant
and project daily; several seeds. For every series: MAPE under 15% at 7 and 30 days, and the
ensemble at least as good as the best single model; pooled over all series, 95% interval coverage
between 0.90 and 0.98. The same figures are what ``EnsembleReport.as_metrics()`` logs to MLflow.

MASE (scale: in-sample seasonal naive with the weekly period) is under 1 on average over the series
at each horizon, as forecasting competitions report it, and for every single series whose scored
window holds at least MIN_MASE_POINTS points (every hourly window, and 30 days of a daily one). A
daily series at 7 days is 7 points of 1-2% white noise against a scale about 1.1x that noise: even
its true expected value (known from the generator) scores MASE > 1 in about 5% of noise draws, and
least squares on exactly the generator's model in about 8% (docs/BENCHMARKS.md), so one such window
in a dozen over 1 measures the luck of that week, not the model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hub_ml.forecast import EnsembleConfig, EnsembleForecaster, coverage, mape, mase, seasonal_naive_scale
from hub_pipelines.generator import GeneratorConfig, hourly_series, simulate

SEEDS = (1, 2, 3)
HISTORY_DAYS, FUTURE_DAYS = 90, 30
# The generator's requests_per_hour is the mean hourly volume of a tenant's busiest model (its other
# models run at 15-60% of it). 1,000 (24k requests a day, about 0.3 a second) is a modest production
# service: hourly Poisson noise is ~3% at the mean and 6-15% in quiet weekend nights, and a p95 is
# taken over dozens to hundreds of requests an hour. The default 120 (2 a minute) is a toy rate whose
# night hours hold a handful of requests; 2,000+ makes the 120-day simulation too slow for a test.
REQUESTS_PER_HOUR = 1000
HOURLY_METRICS = ("requests", "tokens_total", "latency_p95_ms")
# Fewer scored points than this and a single series' MASE is mostly noise (see the docstring).
MIN_MASE_POINTS = 30


def _generated(seed: int) -> dict[str, pd.Series]:
    """name -> series of HISTORY_DAYS + FUTURE_DAYS days for one seed."""
    sim = simulate(
        GeneratorConfig(
            days=HISTORY_DAYS + FUTURE_DAYS,
            tenants=2,
            seed=seed,
            end="2026-11-01T00:00:00Z",
            # Anomalies in the scored month would measure the anomalies, not the forecast; robustness
            # to anomalies in the history is the members' outlier_limit (test_forecast_inputs).
            anomalies=False,
            requests_per_hour=REQUESTS_PER_HOUR,
        )
    )
    out: dict[str, pd.Series] = {}
    per_model = hourly_series(sim, by=("model",))
    # One model per seed, rotating through the busiest ones, keeps the test within its time budget.
    ranked = per_model.groupby("model")["requests"].sum().sort_values(ascending=False).index
    model = ranked[(seed - 1) % min(3, len(ranked))]
    rows = per_model[per_model["model"] == model].set_index("ts").sort_index()
    for metric in HOURLY_METRICS:
        out[f"{metric}[{model}]"] = rows[metric]
    per_project = hourly_series(sim, by=("tenant_id", "project"))
    daily = per_project.groupby(["tenant_id", "project", pd.Grouper(key="ts", freq="D")])["spend_usd"].sum()
    busiest = daily.groupby(["tenant_id", "project"]).sum().sort_values(ascending=False).index[:2]
    for tenant, project in busiest:
        out[f"spend_daily[{tenant}/{project}]"] = daily.loc[(tenant, project)]
    return out


def _evaluate(name: str, seed: int, series: pd.Series) -> dict:
    steps_per_day = round(pd.Timedelta(days=1) / (series.index[1] - series.index[0]))
    split = HISTORY_DAYS * steps_per_day
    train, test = series.iloc[:split], series.iloc[split : split + FUTURE_DAYS * steps_per_day]
    model = EnsembleForecaster(EnsembleConfig.quick()).fit(train)
    forecast = model.predict(len(test))
    members = {m: f["mean"] for m, f in model.predict_members(len(test)).items()}
    # Members the weights leave out are refitted only to compare against them.
    for m in model.members_:
        if m not in members:
            members[m] = model.member_factory(m)().fit(train).predict(len(test))["mean"]
    scale = seasonal_naive_scale(train.to_numpy(), max(model.periods_))
    row = {"series": name, "seed": seed, "weighting": model.report.weighting, "steps_per_day": steps_per_day}
    for label, days in (("7d", 7), ("30d", 30)):
        h = days * steps_per_day
        a = test.iloc[:h]
        row[f"mape_{label}"] = mape(a, forecast["mean"][:h])
        row[f"mase_{label}"] = mase(a, forecast["mean"][:h], scale)
        row[f"inside_{label}"] = coverage(a, forecast["lower"][:h], forecast["upper"][:h]) * h
        for m, mean in members.items():
            row[f"{m}_mape_{label}"] = mape(a, mean[:h])
    row["members"] = list(members)
    metrics = model.report.as_metrics()
    row["backtest_ensemble_error"] = float(
        np.mean([metrics["ensemble_7d_mape"], metrics["ensemble_30d_mape"]])
    )
    row["backtest_best_single_error"] = min(
        v for k, v in model.report.weighting_errors.items() if k.startswith("single_")
    )
    row["backtest_coverage_30d"] = metrics["ensemble_30d_coverage"]
    return row


@pytest.fixture(scope="module")
def results() -> pd.DataFrame:
    rows = [_evaluate(name, seed, series) for seed in SEEDS for name, series in _generated(seed).items()]
    table = pd.DataFrame(rows)
    columns = ["series", "seed", "weighting", "mape_7d", "mape_30d", "mase_7d", "mase_30d"]
    print("\n" + table[columns].round(3).to_string(index=False))
    return table


def test_mape_under_15_percent_at_7_and_30_days(results):
    assert (results["mape_7d"] < 15).all(), results[["series", "seed", "mape_7d"]]
    assert (results["mape_30d"] < 15).all(), results[["series", "seed", "mape_30d"]]


def test_mase_under_1_against_seasonal_naive(results):
    for label, days in (("7d", 7), ("30d", 30)):
        column = f"mase_{label}"
        assert results[column].mean() < 1, (label, results[column].mean())
        measurable = results[days * results["steps_per_day"] >= MIN_MASE_POINTS]
        assert len(measurable) > 0
        assert (measurable[column] < 1).all(), measurable[["series", "seed", column]]


def test_ensemble_at_least_as_good_as_the_best_single_model(results):
    # On validation (how the ensemble is chosen): never worse than its best member, by construction.
    assert (results["backtest_ensemble_error"] <= results["backtest_best_single_error"] + 1e-9).all()
    # On the unseen 30 days, averaged over all series and seeds: no single model type does better.
    for label in ("7d", "30d"):
        ensemble = results[f"mape_{label}"].mean()
        for member in ("seasonal_naive", "sarima", "prophet", "lstm"):
            column = f"{member}_mape_{label}"
            assert ensemble <= results[column].mean(), (label, member, ensemble, results[column].mean())


def test_95_percent_intervals_cover_between_90_and_98_percent(results):
    for label, days in (("7d", 7), ("30d", 30)):
        points = (days * results["steps_per_day"]).sum()
        pooled = results[f"inside_{label}"].sum() / points
        assert 0.90 <= pooled <= 0.98, (label, pooled)
    # The coverage the library measures itself (leave-one-origin-out on the backtest) agrees.
    assert 0.90 <= results["backtest_coverage_30d"].mean() <= 0.98


def test_acceptance_numbers_are_logged_to_mlflow(results, tmp_path):
    """The figures above are not only asserted: they are an MLflow run anyone can open."""
    from mlflow.tracking import MlflowClient

    from hub_ml import tracking

    tracking.configure(tracking.local_tracking_uri(tmp_path))
    measured = {f"ensemble_mape_{h}": float(results[f"mape_{h}"].mean()) for h in ("7d", "30d")}
    measured |= {f"ensemble_mase_{h}_mean": float(results[f"mase_{h}"].mean()) for h in ("7d", "30d")}
    measured |= {f"ensemble_mase_{h}_max": float(results[f"mase_{h}"].max()) for h in ("7d", "30d")}
    for label, days in (("7d", 7), ("30d", 30)):
        points = (days * results["steps_per_day"]).sum()
        measured[f"coverage_{label}"] = float(results[f"inside_{label}"].sum() / points)
    for member in ("seasonal_naive", "sarima", "prophet", "lstm"):
        measured[f"{member}_mape_30d"] = float(results[f"{member}_mape_30d"].mean())
    with tracking.run_for_key(
        "acceptance", "forecast-acceptance", artifact_location=str(tmp_path / "artifacts")
    ):
        tracking.log_params({"seeds": ",".join(map(str, SEEDS)), "requests_per_hour": REQUESTS_PER_HOUR})
        tracking.log_metrics(measured)
    run = MlflowClient().get_run(tracking.find_run_id("acceptance", "forecast-acceptance"))
    assert run.data.metrics == pytest.approx(measured)
