"""ML training on the demo's data: full forecast ensembles for every series the demo trains, and the
LSTM anomaly detector, timed on data that went through ingest and the rollups.

    python benchmarks/ml_demo_training.py [--days 90] [--tenants 2] [--seed 7] [--quick] [--json PATH]

1. Data as `hub demo` makes it (hub_pipelines.generator, seed 7, 2 tenants, corrupt rate 0.02; but
   90 days by default, enough history for 30-day backtests and daily spend series), written as batch
   files, ingested with `hub_pipelines.ingestion.ingest_files` into the DuckDB warehouse of a
   temporary HUB_HOME and rolled up with `refresh_hourly`/`refresh_daily` (what the hourly and daily
   rollup assets run).
2. The series `train_models_job` trains forecast models for in the demo (`forecast_series` with the
   `ForecastModelsConfig` that `hub_pipelines.defs.ml.demo.run_ml` passes: each tenant's busiest LLM
   model for requests, tokens and p95 latency, hourly, and spend per tenant), each fitted as
   `forecast_models` fits it (`fit_adaptive`, backtest plan by history) but with FULL ensembles
   (`quick=False`; the demo itself uses quick ones) and without MLflow logging.
3. Reported: (a) the full ensemble on one hourly series (the busiest tenant's requests; target
   < 60 s), (b) seconds per series and in total (target < 10 min), (c) the LSTM anomaly detector
   fitted on the same hourly series, all of its history (target < 60 s; as benchmarks/anomaly_lstm.py).

--quick (quick ensembles, a 2-epoch LSTM) with e.g. --days 21 is a smoke run of the whole path; its
figures say nothing about the targets. Results go to benchmarks/results/ml_demo_training.json (a
--quick run to ml_demo_training_quick.json) unless --json says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd
import torch
from anomaly_lstm import BUDGET_S, timed  # benchmarks/anomaly_lstm.py: median fit time, caches cleared

RESULTS = Path(__file__).resolve().parent / "results"
# A fixed end keeps the data, and so the series, the same from run to run (the demo uses today).
END = "2026-11-01T00:00:00Z"
SERIES_BUDGET_S = 60.0
ALL_SERIES_BUDGET_S = 600.0


def build_warehouse(home: Path, days: int, tenants: int, seed: int) -> tuple[object, dict]:
    """Generate, ingest and roll up; returns the warehouse and the setup figures."""
    from hub_pipelines.generator import GeneratorConfig, simulate, write_batches
    from hub_pipelines.ingestion import ingest_files
    from hub_pipelines.landing import LocalFolder
    from hub_pipelines.warehouse import Warehouse
    from hub_pipelines.warehouse.rollups import refresh_daily, refresh_hourly

    setup: dict = {}
    config = GeneratorConfig(days=days, tenants=tenants, seed=seed, end=END, corrupt_rate=0.02)
    started = time.perf_counter()
    manifest = write_batches(simulate(config), home / "landing")
    setup["generate_seconds"] = time.perf_counter() - started
    setup["events_written"] = manifest.get("events_written")

    warehouse = Warehouse(f"duckdb:///{home / 'warehouse.duckdb'}")
    warehouse.create_tables()
    zone = LocalFolder(home / "landing")
    started = time.perf_counter()
    report = ingest_files(warehouse, zone, [f.key for f in zone.list_pending()], archive=False)
    setup["ingest_seconds"] = time.perf_counter() - started
    setup["events_stored"] = report.summary["stored"]

    started = time.perf_counter()
    refresh_hourly(warehouse, config.start_utc, config.end_utc)
    refresh_daily(warehouse, config.start_utc, config.end_utc)
    setup["rollup_seconds"] = time.perf_counter() - started
    return warehouse, setup


def demo_forecast_series(warehouse, days: int) -> dict:
    """The series `forecast_models` trains in `hub demo` over a `days`-day window."""
    from hub_pipelines.defs.ml.assets import ForecastModelsConfig, forecast_series
    from hub_pipelines.ml_training.series import data_end

    # As hub_pipelines.defs.ml.demo.run_ml configures forecast_models (forecast_models_per_tenant=1).
    config = ForecastModelsConfig(
        hourly_lookback_days=days,
        daily_lookback_days=days,
        spend_levels=["tenant"],
        max_models_per_tenant=1,
    )
    return forecast_series(warehouse, config, data_end(warehouse, "hour"))


def fit_series(values: pd.Series, quick: bool) -> dict:
    """One series fitted as forecast_models fits it (minus MLflow); seconds and what the fit chose."""
    from hub_pipelines.ml_training.forecast import ForecastSettings, fit_adaptive

    values = values.astype(float).sort_index()
    started = time.perf_counter()
    forecaster, config = fit_adaptive(values, ForecastSettings(quick=quick).base_config())
    seconds = time.perf_counter() - started
    report = forecaster.report
    longest = list(report.horizons)[-1]
    return {
        "points": int(values.notna().sum()),
        "seconds": seconds,
        "backtest_horizons": list(report.horizons),
        "seasonal_periods": list(report.seasonal_periods),
        "weighting": report.weighting,
        "failures": report.failures,
        f"ensemble_{longest}_mape": report.metric("ensemble", longest, "mape"),
        f"ensemble_{longest}_coverage": report.metric("ensemble", longest, "coverage"),
        "stage_seconds": {k: round(v, 2) for k, v in report.seconds.items()},
    }


def warm_up(series: pd.Series) -> None:
    """A quick fit on a slice, so the first timed fit does not pay for importing Prophet, Stan and
    torch (a demo pays it once, not per series)."""
    from hub_ml.forecast import EnsembleConfig, EnsembleForecaster

    EnsembleForecaster(EnsembleConfig.quick(horizon_days=(1.0,), seasonal_periods=(24,))).fit(
        series.iloc[-24 * 10 :]
    )


def lstm_detector_fit(series: pd.Series, quick: bool, repeat: int) -> dict:
    from hub_ml.anomaly import LSTMDetector

    # max_train=None: all of the history (the detector's default keeps the last 28 days for refits).
    options = {"max_train": None, **({"epochs": 2} if quick else {})}
    LSTMDetector(**options).fit(series.iloc[: 8 * 24])  # first-call allocations are not training
    seconds = timed(lambda: LSTMDetector(**options).fit(series), repeat)
    detector = LSTMDetector(**options)
    return {"points": len(series), "epochs": detector.epochs, "window": detector.window, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--tenants", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="quick ensembles and LSTM: a smoke run")
    parser.add_argument("--repeat", type=int, default=1, help="LSTM detector fits to take the median of")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    target = args.json or RESULTS / ("ml_demo_training_quick.json" if args.quick else "ml_demo_training.json")
    warnings.simplefilter("ignore")  # statsmodels' convergence chatter over hundreds of fits

    with tempfile.TemporaryDirectory(prefix="hub-ml-bench-") as tmp:
        home = Path(tmp)
        os.environ["HUB_HOME"] = str(home)
        print(f"{args.days} days x {args.tenants} tenants (seed {args.seed}) into {home} ...", flush=True)
        warehouse, setup = build_warehouse(home, args.days, args.tenants, args.seed)
        print(
            f"setup: generated {setup['events_written']} events in {setup['generate_seconds']:.0f}s, ingested"
            f" {setup['events_stored']} in {setup['ingest_seconds']:.0f}s, rolled up in"
            f" {setup['rollup_seconds']:.0f}s",
            flush=True,
        )
        candidates = demo_forecast_series(warehouse, args.days)
        warehouse.engine.dispose()

    hourly_requests = {
        s: v for s, v in candidates.items() if s.metric == "requests" and s.granularity == "hour"
    }
    headline = max(hourly_requests, key=lambda s: hourly_requests[s].sum())
    warm_up(candidates[headline].astype(float))

    rows = []
    for spec, values in sorted(candidates.items(), key=lambda kv: kv[0].key):
        row = {"series": spec.label, "key": spec.key, "granularity": spec.granularity}
        row.update(fit_series(values, args.quick))
        rows.append(row)
        print(
            f"  {spec.label:<52} {row['points']:>5} points {row['seconds']:7.1f}s  {row['weighting']}",
            flush=True,
        )
    total = sum(r["seconds"] for r in rows)
    one = next(r for r in rows if r["key"] == headline.key)
    lstm = lstm_detector_fit(candidates[headline].astype(float), args.quick, args.repeat)

    results = {
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, python {platform.python_version()},"
        f" torch {torch.__version__} ({'cuda' if torch.cuda.is_available() else 'cpu'})",
        "load_average_at_end": os.getloadavg(),
        "days": args.days,
        "tenants": args.tenants,
        "seed": args.seed,
        "quick": args.quick,
        "setup": setup,
        "a_one_hourly_ensemble": {
            "series": one["series"],
            "points": one["points"],
            "seconds": one["seconds"],
            "budget_seconds": SERIES_BUDGET_S,
            "within_budget": one["seconds"] < SERIES_BUDGET_S,
        },
        "b_all_demo_series": {
            "series": rows,
            "count": len(rows),
            "total_seconds": total,
            "mean_seconds_per_series": total / len(rows),
            "budget_seconds": ALL_SERIES_BUDGET_S,
            "within_budget": total < ALL_SERIES_BUDGET_S,
        },
        "c_lstm_anomaly_detector": {
            "series": one["series"],
            **lstm,
            "budget_seconds": BUDGET_S,
            "within_budget": lstm["seconds"] < BUDGET_S,
        },
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(results, indent=2, default=float))

    kind = "quick" if args.quick else "full"
    table = [
        (f"(a) {kind} ensemble, {one['series']}", one["seconds"], SERIES_BUDGET_S),
        (f"(b) {kind} ensembles, all {len(rows)} demo series", total, ALL_SERIES_BUDGET_S),
        ("    mean per series", total / len(rows), None),
        (
            f"(c) LSTM anomaly detector, {lstm['epochs']} epochs, {lstm['points']} points",
            lstm["seconds"],
            BUDGET_S,
        ),
    ]
    print(f"\n{'what':<64} {'seconds':>8} {'target':>8}  ok")
    for what, seconds, budget in table:
        verdict = f"{f'< {budget:.0f}':>8}  {seconds < budget}" if budget else ""
        print(f"{what:<64} {seconds:>8.1f} {verdict}")
    print(f"\nwrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
