"""`hub detect` and `hub forecast` through the installed `hub` console script, on CSV files that hub
did not write: other column names, extra columns, a semicolon delimiter, timestamps off the grid by a
few minutes and some in a +02:00 offset, missing hours and days; hourly and daily. Plus the files a
user gets wrong: a missing column, too little history, values that are not numbers.

Cheap methods (z-score, seasonal naive, SARIMA with --quick) keep it to well under a minute and a
half on two cores; the ensemble runs once, with --quick.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

HUB = Path(sys.executable).parent / "hub"
HOUR, DAY = pd.Timedelta(hours=1), pd.Timedelta(days=1)
DETECT_COLUMNS = ["timestamp", "value", "score", "is_anomaly", "severity", "detected_by"]
FORECAST_COLUMNS = ["timestamp", "forecast", "lower", "upper"]


def hub(*args) -> subprocess.CompletedProcess:
    assert HUB.exists(), f"the hub console script is not installed next to {sys.executable}"
    return subprocess.run([str(HUB), *map(str, args)], capture_output=True, text=True, timeout=300)


def foreign_series(step: pd.Timedelta, periods: int, *, seed: int, spike_at: int | None = None) -> pd.Series:
    """Daily cycle (hourly) or weekly cycle (daily) with noise, on a nominal UTC grid."""
    rng = np.random.default_rng(seed)
    grid = pd.date_range("2024-03-01", periods=periods, freq=step, tz="UTC")
    if step == HOUR:
        shape = 40 * np.sin(2 * np.pi * (grid.hour.to_numpy() - 6) / 24)
    else:
        shape = -30 * (grid.dayofweek.to_numpy() >= 5)
    values = 120 + shape + rng.normal(0, 4, periods)
    if spike_at is not None:
        values[spike_at] *= 5
    return pd.Series(values.round(2), index=grid)


def write_foreign_csv(
    path: Path,
    series: pd.Series,
    *,
    time_col: str,
    value_col: str,
    seed: int,
    keep: list[int] | None = None,
    sep: str = ",",
) -> Path:
    """The series as a file from elsewhere: jittered times, every 7th in +02:00, ~5% of rows and one
    longer stretch missing, extra columns. Rows in `keep` are never dropped."""
    rng = np.random.default_rng(seed)
    step = series.index[1] - series.index[0]
    jitter = pd.to_timedelta(rng.integers(-4, 5, len(series)) * (1 if step == HOUR else 5), unit="min")
    times = series.index + jitter
    text = [
        t.tz_convert("Etc/GMT-2").isoformat() if i % 7 == 3 else t.isoformat() for i, t in enumerate(times)
    ]
    present = rng.random(len(series)) > 0.05
    present[len(series) // 3 : len(series) // 3 + 4] = False  # a longer outage
    present[[0, -1, *(keep or [])]] = True
    frame = pd.DataFrame(
        {"region": "eu-west", time_col: text, value_col: series.to_numpy(), "note": "ok"}
    ).loc[present]
    frame.to_csv(path, index=False, sep=sep)
    return path


def read_csv_output(text: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text))


def assert_forecast_frame(frame: pd.DataFrame, last_observed: pd.Timestamp, step: pd.Timedelta, rows: int):
    assert list(frame.columns) == FORECAST_COLUMNS
    assert len(frame) == rows
    times = pd.to_datetime(frame["timestamp"], utc=True)
    expected = pd.date_range(last_observed + step, periods=rows, freq=step, tz="UTC")
    assert (times.to_numpy() == expected.to_numpy()).all()
    assert np.isfinite(frame[["forecast", "lower", "upper"]].to_numpy()).all()
    assert (frame["lower"] <= frame["forecast"] + 1e-9).all()
    assert (frame["forecast"] <= frame["upper"] + 1e-9).all()
    assert (frame["upper"] > frame["lower"]).any()


# -- detect ----------------------------------------------------------------------------------------
def test_detect_flags_a_spike_in_a_foreign_hourly_file_and_is_walk_forward(tmp_path):
    spike = 24 * 17 + 10
    series = foreign_series(HOUR, 24 * 21, seed=1, spike_at=spike)
    path = write_foreign_csv(
        tmp_path / "traffic.csv", series, time_col="when", value_col="reqs", seed=1, keep=[spike]
    )
    out = tmp_path / "verdicts.csv"
    result = hub("detect", path, "--time-col", "when", "--value-col", "reqs", "--method", "zscore", "-o", out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "anomalies" in result.stdout
    verdicts = pd.read_csv(out)
    assert list(verdicts.columns) == DETECT_COLUMNS
    times = pd.to_datetime(verdicts["timestamp"], utc=True)
    assert times.diff().dropna().min() >= HOUR  # on the hourly grid, one row per point
    near = verdicts[(times - series.index[spike]).abs() <= 2 * HOUR]
    assert near["is_anomaly"].any(), near
    flagged = near[near["is_anomaly"]].iloc[0]
    assert flagged["severity"] == "critical"  # five times the usual level
    assert flagged["detected_by"] == "zscore"
    # Hardly anything else is flagged on a clean daily cycle.
    assert verdicts["is_anomaly"].sum() <= 5

    # Walk-forward: the same file cut after the spike gives the same verdicts on the rows both have.
    cut_rows = pd.read_csv(path).iloc[: int(len(pd.read_csv(path)) * 0.9)]
    cut = tmp_path / "traffic_cut.csv"
    cut_rows.to_csv(cut, index=False)
    shorter = hub("detect", cut, "--time-col", "when", "--value-col", "reqs", "--method", "zscore")
    assert shorter.returncode == 0, shorter.stderr[-3000:]
    partial = read_csv_output(shorter.stdout)
    assert "anomalies" in shorter.stderr  # the summary goes to stderr when the CSV goes to stdout
    both = verdicts.merge(partial, on="timestamp", suffixes=("_full", "_cut"))
    assert len(both) == len(partial)
    assert (both["is_anomaly_full"] == both["is_anomaly_cut"]).all()
    np.testing.assert_allclose(both["score_full"], both["score_cut"], equal_nan=True)


def test_detect_daily_semicolon_file(tmp_path):
    spike = 120
    series = foreign_series(DAY, 150, seed=2, spike_at=spike)
    path = write_foreign_csv(
        tmp_path / "spend.csv",
        series,
        time_col="Date",
        value_col="Spend (USD)",
        seed=2,
        keep=[spike],
        sep=";",
    )
    result = hub("detect", path, "--time-col", "Date", "--value-col", "Spend (USD)", "--method", "zscore")
    assert result.returncode == 0, result.stderr[-3000:]
    verdicts = read_csv_output(result.stdout)
    assert list(verdicts.columns) == DETECT_COLUMNS
    times = pd.to_datetime(verdicts["timestamp"], utc=True)
    assert (times.dt.hour == 0).all()  # a 1d grid: jittered and +02:00 times land on midnight UTC
    flagged = verdicts[(times - series.index[spike]).abs() <= DAY]
    assert flagged["is_anomaly"].any(), flagged


def test_detect_names_the_missing_column(tmp_path):
    path = write_foreign_csv(
        tmp_path / "traffic.csv", foreign_series(HOUR, 48, seed=3), time_col="when", value_col="reqs", seed=3
    )
    result = hub("detect", path, "--time-col", "when", "--value-col", "requests")
    assert result.returncode != 0
    assert "'requests'" in result.stderr and str(path) in result.stderr
    assert "'reqs'" in result.stderr  # the columns the file does have
    assert "Traceback" not in result.stderr


# -- forecast --------------------------------------------------------------------------------------
def test_forecast_hourly_sarima_with_a_duration_horizon(tmp_path):
    series = foreign_series(HOUR, 24 * 28, seed=4)
    path = write_foreign_csv(tmp_path / "traffic.csv", series, time_col="when", value_col="reqs", seed=4)
    out = tmp_path / "forecast.csv"
    result = hub(
        "forecast", path, "--time-col", "when", "--value-col", "reqs", "--horizon", "48h",
        "--model", "sarima", "--quick", "-o", out,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert_forecast_frame(pd.read_csv(out), series.index[-1], HOUR, 48)
    for metric in ("MAPE", "sMAPE", "MASE", "RMSE", "coverage"):
        assert metric in result.stdout
    assert "sarima" in result.stdout


def test_forecast_daily_naive_to_stdout(tmp_path):
    series = foreign_series(DAY, 120, seed=5)
    path = write_foreign_csv(
        tmp_path / "spend.csv", series, time_col="Date", value_col="Spend (USD)", seed=5, sep=";"
    )
    result = hub(
        "forecast", path, "--time-col", "Date", "--value-col", "Spend (USD)", "--horizon", "14",
        "--model", "naive", "--level", "80",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert_forecast_frame(read_csv_output(result.stdout), series.index[-1], DAY, 14)
    assert "seasonal_naive" in result.stderr and "80% interval" in result.stderr


def test_forecast_quick_ensemble_reports_members_and_the_ensemble(tmp_path):
    series = foreign_series(HOUR, 24 * 28, seed=6)
    path = write_foreign_csv(tmp_path / "traffic.csv", series, time_col="when", value_col="reqs", seed=6)
    result = hub(
        "forecast", path, "--time-col", "when", "--value-col", "reqs", "--horizon", "1d", "--quick"
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert_forecast_frame(read_csv_output(result.stdout), series.index[-1], HOUR, 24)
    table = result.stderr
    for name in ("seasonal_naive", "sarima", "prophet", "lstm", "ensemble"):
        assert name in table, table
    assert "fell back to the best single model" in table or "weighting" in table


def test_forecast_refuses_unusable_files_clearly(tmp_path):
    series = foreign_series(HOUR, 24 * 3, seed=7)
    short = write_foreign_csv(tmp_path / "short.csv", series, time_col="when", value_col="reqs", seed=7)
    result = hub(
        "forecast", short, "--time-col", "when", "--value-col", "reqs", "--horizon", "7d", "--model", "naive"
    )  # fmt: skip
    assert result.returncode != 0
    assert str(short) in result.stderr and "too short" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr

    words = pd.read_csv(short, dtype=str)
    words.loc[words.index[5], "reqs"] = "lots"
    bad = tmp_path / "words.csv"
    words.to_csv(bad, index=False)
    result = hub("forecast", bad, "--time-col", "when", "--value-col", "reqs", "--horizon", "24")
    assert result.returncode != 0
    assert str(bad) in result.stderr and "not numeric" in result.stderr and "'lots'" in result.stderr

    result = hub("forecast", short, "--time-col", "timestamp", "--value-col", "reqs", "--horizon", "24")
    assert result.returncode != 0
    assert "'timestamp'" in result.stderr and "--time-col" in result.stderr

    result = hub("forecast", short, "--time-col", "when", "--value-col", "reqs", "--horizon", "soon")
    assert result.returncode != 0 and "--horizon" in result.stderr


@pytest.mark.parametrize("horizon, steps", [("2d", 48), ("90min", 2)])
def test_horizon_durations_round_up_to_whole_steps(horizon, steps):
    from hub_pipelines.cli_forecast import horizon_in_steps

    assert horizon_in_steps(horizon, HOUR) == steps
