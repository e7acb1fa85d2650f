"""Forecast training benchmark: the full ensemble (with its backtests) on one hourly series of 90 days.

    python benchmarks/forecast_training.py [--seed 1] [--series requests] [--json out.json]

Fits ``EnsembleForecaster()`` at full size (default config: full SARIMA grid, full LSTM epochs,
3 rolling origins at a 30-day horizon) on 90 days of one (tenant, model) hourly series, scores it on
the following 30 days it never saw, and does the same for the seasonal naive baseline in the same
process. Prints timings, accuracy, interval coverage, the weighting-scheme comparison, and the
ratios against the baseline. Target: ensemble training under 60 s on the 2-core hub machine.

Data: ``hub_pipelines.generator`` (one tenant, no anomalies, requests_per_hour=REQUESTS_PER_HOUR).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import pandas as pd

from hub_ml.forecast import (
    WEIGHTING_SCHEMES,
    EnsembleForecaster,
    SeasonalNaiveForecaster,
    coverage,
    mae,
    mape,
    mase,
    seasonal_naive_scale,
)
from hub_ml.forecast.conformal import ConformalIntervals
from hub_ml.forecast.ensemble import combine, scheme_weights
from hub_pipelines.generator import GeneratorConfig, hourly_series, simulate

HISTORY_DAYS, FUTURE_DAYS = 90, 30
# A modest production LLM service: ~1,000 requests an hour on a tenant's busiest model, so Poisson noise
# is a few percent of volume, as in real traffic, rather than the tens of percent of a toy rate.
REQUESTS_PER_HOUR = 1000


def generated_hourly_series(seed: int, column: str) -> tuple[pd.Series, str]:
    """One (tenant, model) hourly series of HISTORY_DAYS + FUTURE_DAYS days, and where it came from."""
    sim = simulate(
        GeneratorConfig(
            days=HISTORY_DAYS + FUTURE_DAYS,
            tenants=1,
            seed=seed,
            end="2026-11-01T00:00:00Z",
            anomalies=False,
            requests_per_hour=REQUESTS_PER_HOUR,
        )
    )
    frame = hourly_series(sim, by=("tenant_id", "model"))
    # The busiest model of the tenant: the series a capacity planner would forecast first.
    busiest = frame.groupby("model")["requests"].sum().idxmax()
    series = frame[frame["model"] == busiest].set_index("ts")[column].sort_index()
    return (
        series,
        f"hub_pipelines.generator (seed {seed}, model {busiest}, requests_per_hour {REQUESTS_PER_HOUR})",
    )


def held_out_scores(train, test, forecast, season) -> dict[str, float]:
    scale = seasonal_naive_scale(train.to_numpy(), season)
    h7 = 7 * 24
    return {
        "mape_7d": mape(test[:h7], forecast["mean"][:h7]),
        "mape_30d": mape(test, forecast["mean"]),
        "mase_30d": mase(test, forecast["mean"], scale),
        "mae_30d": mae(test, forecast["mean"]),
        "coverage_30d": coverage(test, forecast["lower"], forecast["upper"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--series", default="requests", help="hourly_series column (requests, tokens_total, ...)"
    )
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    series, source = generated_hourly_series(args.seed, args.series)
    split = HISTORY_DAYS * 24
    train, test = series.iloc[:split], series.iloc[split : split + FUTURE_DAYS * 24]
    horizon = len(test)
    print(f"series: {args.series} from {source}")
    print(f"history {train.index[0]} .. {train.index[-1]} ({len(train)} h), scored on the next {horizon} h")
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")

    started = time.perf_counter()
    baseline = SeasonalNaiveForecaster().fit(train)
    baseline_forecast = baseline.predict(horizon)
    baseline_seconds = time.perf_counter() - started

    started = time.perf_counter()
    ensemble = EnsembleForecaster().fit(train)
    ensemble_seconds = time.perf_counter() - started
    forecast = ensemble.predict(horizon)
    report = ensemble.report
    season = max(ensemble.periods_)

    print(f"\nseasonal naive: fit+predict {baseline_seconds * 1000:.1f} ms")
    print(f"ensemble: fit with backtests {ensemble_seconds:.1f} s  (target < 60 s)")
    for name, seconds in report.seconds.items():
        print(f"  {name:28s} {seconds:6.2f} s")
    print(f"  members kept {report.members}, weighting {report.weighting}, tuned {report.tuned_params}")

    print("\nbacktest (rolling origins, data before each origin only; ensemble leave-one-origin-out):")
    print(report.backtest.round(3).to_string(index=False))

    # Held-out comparison of every member and every weighting scheme (members the chosen weights
    # leave out are refitted here for the comparison only).
    members = {name: model for name, model in ensemble.fitted_members_.items()}
    for name in ensemble.members_:
        if name not in members:
            members[name] = ensemble.member_factory(name)().fit(train)
    member_forecasts = {name: model.predict(horizon) for name, model in members.items()}
    rows = {name: held_out_scores(train, test, f, season) for name, f in member_forecasts.items()}
    rows["baseline: seasonal naive"] = held_out_scores(train, test, baseline_forecast, season)
    backtest = ensemble.backtest_
    stacked_backtest = np.stack([backtest.means[m] for m in ensemble.members_])
    stacked_future = np.stack([member_forecasts[m]["mean"].to_numpy() for m in ensemble.members_])
    for scheme in WEIGHTING_SCHEMES:
        weights = scheme_weights(scheme, backtest.actuals, stacked_backtest, ensemble.buckets_)
        mean = combine(stacked_future, weights, ensemble.buckets_)
        intervals = ConformalIntervals.calibrate(
            backtest.actuals,
            combine(stacked_backtest, weights, ensemble.buckets_),
            ensemble.transform_,
            ensemble.buckets_,
        )
        lower, upper = intervals.interval(mean, 0.95)
        frame = pd.DataFrame({"mean": mean, "lower": lower, "upper": upper}, index=test.index)
        rows[f"weights:{scheme}"] = {
            **held_out_scores(train, test, frame, season),
            "backtest_loo_mape": report.weighting_errors[scheme],
        }
    rows["ENSEMBLE (chosen)"] = held_out_scores(train, test, forecast, season)
    table = pd.DataFrame(rows).T
    print(f"\nheld-out next {FUTURE_DAYS} days (MAPE %, MASE vs in-sample seasonal naive m={season}):")
    print(table.round(3).to_string())

    ours, naive = rows["ENSEMBLE (chosen)"], rows["baseline: seasonal naive"]
    ratios = {
        "mae_30d_ensemble_over_naive": ours["mae_30d"] / naive["mae_30d"],
        "mape_7d_ensemble_over_naive": ours["mape_7d"] / naive["mape_7d"],
        "mape_30d_ensemble_over_naive": ours["mape_30d"] / naive["mape_30d"],
        "train_seconds_ensemble_over_naive": ensemble_seconds / baseline_seconds,
    }
    print("\nratios against the seasonal naive baseline (same process, same data):")
    for name, value in ratios.items():
        print(f"  {name:36s} {value:10.3f}")
    print(
        f"\nRESULT ensemble_train_seconds={ensemble_seconds:.1f} under_60s={ensemble_seconds < 60} "
        f"mape_30d={ours['mape_30d']:.2f} mase_30d={ours['mase_30d']:.3f} coverage_30d={ours['coverage_30d']:.3f} "
        f"mae_ratio_vs_naive={ratios['mae_30d_ensemble_over_naive']:.3f}"
    )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                {
                    "source": source,
                    "ensemble_seconds": ensemble_seconds,
                    "baseline_seconds": baseline_seconds,
                    "held_out": rows,
                    "ratios": ratios,
                    "backtest_metrics": report.as_metrics(),
                },
                handle,
                indent=2,
                default=float,
            )


if __name__ == "__main__":
    main()
