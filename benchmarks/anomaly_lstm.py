"""LSTM anomaly detector: training time for one hourly series of 90 days, against the z-score fit.

    python benchmarks/anomaly_lstm.py [--days 90] [--threads 2] [--repeat 3]

Prints the LSTM fit time (budget: 60 s on the 2-core CPU machine), the rolling z-score fit time in
the same process and their ratio, and the LSTM's walk-forward scoring time for the last 14 days.
The series is the generator's busiest (tenant, model) request count when ``hub_pipelines.generator``
is importable, otherwise the synthetic one of ``hub_ml.anomaly.synthetic``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import pandas as pd
import torch

from hub_ml.anomaly import LSTMDetector, RollingZScoreDetector
from hub_ml.anomaly.base import clear_baseline_cache

BUDGET_S = 60.0


def ninety_day_series(days: int) -> tuple[pd.Series, str]:
    try:
        from hub_pipelines.generator import GeneratorConfig, hourly_series, simulate
    except ImportError:
        from hub_ml.anomaly.synthetic import seasonal_counts

        return seasonal_counts(days, seed=0), "synthetic"
    sim = simulate(GeneratorConfig(days=days, tenants=1, seed=0))
    frame = hourly_series(sim, by=("tenant_id", "model"))
    busiest = frame.groupby("model")["requests"].sum().idxmax()
    series = frame[frame["model"] == busiest].set_index("ts")["requests"].astype(float)
    return series, f"generator ({busiest})"


def timed(action, repeat: int) -> float:
    """Median wall time; the shared baseline cache is emptied first so each fit pays for its own."""
    times = []
    for _ in range(repeat):
        clear_baseline_cache()
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: the detector's own)"
    )
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    series, source = ninety_day_series(args.days)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"series: {len(series)} hourly points from {source}; device {device}; torch {torch.__version__}")

    # max_train=None: train on all 90 days (the detector's default keeps the last 28 for refits).
    threads = {"num_threads": args.threads} if args.threads else {}

    def make_lstm() -> LSTMDetector:
        return LSTMDetector(max_train=None, **threads)

    make_lstm().fit(series.iloc[: 8 * 24])  # warm-up: first-call allocations are not training
    lstm_fit = timed(lambda: make_lstm().fit(series), args.repeat)
    zscore_fit = timed(lambda: RollingZScoreDetector().fit(series), args.repeat)
    history, recent = series.iloc[: -14 * 24], series.iloc[-14 * 24 :]
    fitted = make_lstm().fit(history)
    score_time = timed(lambda: fitted.score(recent), 1)

    detector = make_lstm()
    windows = len(series) - detector.window
    print(
        f"LSTM fit ({detector.epochs} epochs, {windows} windows of {detector.window}, hidden "
        f"{detector.hidden_size}): {lstm_fit:.2f} s (budget {BUDGET_S:.0f} s)"
    )
    print(f"z-score fit (baseline):  {zscore_fit:.3f} s")
    print(f"ratio LSTM / z-score:    {lstm_fit / zscore_fit:.0f}x")
    print(f"LSTM walk-forward scoring of the last 14 days (2 refits): {score_time:.2f} s")
    if lstm_fit > BUDGET_S:
        print("OVER BUDGET", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
