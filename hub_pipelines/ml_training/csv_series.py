"""A time series from a CSV file hub did not write, for `hub detect` and `hub forecast`.

Whatever the file's column names, delimiter (comma, semicolon, tab), time format (ISO-8601 with or
without an offset, common date-time layouts, Unix seconds or milliseconds) or spacing: timestamps
are read as UTC (naive ones are taken as UTC), snapped to the nearest point of a regular grid
(the step is inferred from the typical spacing, rounded to a usual one: 1 min, 5 min, 15 min, 1 h,
1 day, ...; or given), and rows falling on the same grid point are aggregated. Gaps stay gaps:
the detectors and forecasters handle them. Problems a user can fix are `SeriesFileError`s whose
message names the file, the column and an example.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

MISSING_TOKENS = {"", "na", "n/a", "nan", "null", "none", "-", "?"}
AGGREGATIONS = ("mean", "sum", "last", "max", "min", "median")
NICE_STEPS = tuple(
    pd.Timedelta(s)
    for s in (
        "1s", "5s", "10s", "15s", "30s", "1min", "2min", "5min", "10min", "15min", "30min",
        "1h", "2h", "3h", "4h", "6h", "12h", "1D", "7D",
    )
)  # fmt: skip


class SeriesFileError(ValueError):
    """The file cannot be read as the series asked for; the message says why."""


@dataclass
class SeriesFile:
    series: pd.Series  # UTC DatetimeIndex on the grid (gaps absent), float values (NaN = missing)
    step: pd.Timedelta
    rows: int  # data rows in the file
    dropped_times: int  # rows whose time could not be read
    merged: int  # rows aggregated into a grid point shared with another row
    moved: int  # rows whose timestamp was not on the grid (snapped to the nearest point)
    gaps: int  # grid points between the first and the last with no row

    def describe(self) -> str:
        parts = [f"{len(self.series)} points on a {_format_step(self.step)} grid from {self.rows} rows"]
        if self.gaps:
            parts.append(f"{self.gaps} missing grid points")
        if self.moved:
            parts.append(f"{self.moved} timestamps snapped to the grid")
        if self.merged:
            parts.append(f"{self.merged} rows merged into shared grid points")
        if self.dropped_times:
            parts.append(f"{self.dropped_times} rows with an unreadable time dropped")
        return ", ".join(parts)


def _format_step(step: pd.Timedelta) -> str:
    seconds = int(step.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def parse_step(text: str) -> pd.Timedelta:
    """'1h', '15min', '1d', '30s' -> Timedelta."""
    try:
        step = pd.Timedelta(text.strip().replace("d", "D") if text.strip().endswith("d") else text.strip())
    except (ValueError, TypeError) as exc:
        raise SeriesFileError(f"--freq {text!r}: use e.g. 1h, 15min, 1d") from exc
    if step <= pd.Timedelta(0):
        raise SeriesFileError(f"--freq {text!r} must be positive")
    return step


def _read_table(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise SeriesFileError(f"{path}: no such file")
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            sample = handle.read(64 * 1024)
        if not sample.strip():
            raise SeriesFileError(f"{path}: the file is empty")
        try:
            delimiter = csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
        except csv.Error:
            delimiter = ","
        return pd.read_csv(path, sep=delimiter, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except SeriesFileError:
        raise
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise SeriesFileError(f"{path}: not a readable CSV file ({exc})") from exc


def _column(frame: pd.DataFrame, name: str, path: Path, option: str) -> pd.Series:
    if name in frame.columns:
        return frame[name]
    folded = {c.strip().lower(): c for c in frame.columns}
    if name.strip().lower() in folded:
        return frame[folded[name.strip().lower()]]
    columns = ", ".join(repr(c) for c in frame.columns)
    raise SeriesFileError(f"{path}: no column {name!r} ({option}); the file's columns are {columns}")


def parse_times(raw: pd.Series) -> pd.Series:
    """Timestamps as UTC (NaT where unreadable): ISO-8601, other layouts, or Unix epochs."""
    text = raw.astype(str).str.strip()
    numeric = pd.to_numeric(text, errors="coerce")
    if numeric.notna().mean() > 0.9 and numeric.dropna().between(1e8, 1e14).all():
        unit = "ms" if numeric.dropna().median() > 1e11 else "s"
        return pd.to_datetime(numeric, unit=unit, utc=True, errors="coerce")
    parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    if parsed.isna().mean() > 0.1:
        mixed = pd.to_datetime(text, utc=True, errors="coerce", format="mixed")
        if mixed.notna().sum() > parsed.notna().sum():
            parsed = mixed
    return parsed


def parse_values(raw: pd.Series, path: Path, column: str, times: pd.Series) -> pd.Series:
    """Floats; blanks and the usual missing markers are NaN; anything else that is not a number is
    an error naming the first offending row."""
    text = raw.astype(str).str.strip()
    missing = text.str.lower().isin(MISSING_TOKENS)
    values = pd.to_numeric(text.where(~missing), errors="coerce")
    bad = values.isna() & ~missing
    if bad.any():
        first = int(np.flatnonzero(bad.to_numpy())[0])
        examples = ", ".join(repr(v) for v in text[bad].unique()[:3])
        raise SeriesFileError(
            f"{path}: column {column!r} is not numeric: {int(bad.sum())} of {len(text)} rows are not numbers"
            f" (e.g. {examples}; first at data row {first + 1}, time {raw.index[first] if times is None else times.iloc[first]})"
        )
    if not np.isfinite(values.dropna().to_numpy()).all():
        raise SeriesFileError(f"{path}: column {column!r} holds infinite values")
    return values.astype(float)


def infer_step(index: pd.DatetimeIndex) -> pd.Timedelta:
    """The typical spacing (median of positive differences), rounded to the nearest usual step."""
    diffs = np.diff(index.asi8)
    diffs = diffs[diffs > 0]
    if len(diffs) == 0:
        raise SeriesFileError("all rows have the same timestamp: no time step to infer")
    typical = float(np.median(diffs)) / 1e9
    candidates = np.array([s.total_seconds() for s in NICE_STEPS])
    best = int(np.argmin(np.abs(np.log(candidates) - np.log(typical))))
    return NICE_STEPS[best]


def read_series_csv(
    path: str | Path,
    time_col: str,
    value_col: str,
    *,
    step: pd.Timedelta | str | None = None,
    agg: str = "mean",
) -> SeriesFile:
    """Read `value_col` over `time_col` from a CSV file as a series on a regular UTC grid."""
    path = Path(path)
    if agg not in AGGREGATIONS:
        raise SeriesFileError(f"--agg {agg!r}: use one of {', '.join(AGGREGATIONS)}")
    frame = _read_table(path)
    if frame.empty:
        raise SeriesFileError(f"{path}: the file has a header but no rows")
    raw_times = _column(frame, time_col, path, "--time-col")
    raw_values = _column(frame, value_col, path, "--value-col")
    times = parse_times(raw_times)
    unreadable = times.isna()
    if unreadable.mean() > 0.5:
        examples = ", ".join(repr(v) for v in raw_times[unreadable].unique()[:3])
        raise SeriesFileError(
            f"{path}: column {time_col!r} does not hold timestamps ({int(unreadable.sum())} of {len(times)}"
            f" rows unreadable, e.g. {examples})"
        )
    values = parse_values(raw_values[~unreadable], path, value_col, times[~unreadable])
    times = times[~unreadable]
    order = np.argsort(times.to_numpy(), kind="stable")
    times, values = times.iloc[order], values.iloc[order]
    index = pd.DatetimeIndex(times)
    if step is None:
        step = infer_step(index)
    elif isinstance(step, str):
        step = parse_step(step)
    snapped = index.round(step)
    moved = int((snapped != index).sum())
    grouped = pd.Series(values.to_numpy(), index=snapped).groupby(level=0)
    series = getattr(grouped, agg)() if agg != "last" else grouped.last()
    series = series.astype(float).sort_index()
    merged = len(values) - len(series)
    if series.notna().sum() == 0:
        raise SeriesFileError(f"{path}: column {value_col!r} has no values")
    span = int(round((series.index[-1] - series.index[0]) / step)) + 1 if len(series) else 0
    series.index = pd.DatetimeIndex(series.index, tz="UTC") if series.index.tz is None else series.index
    series.name = value_col
    return SeriesFile(
        series=series,
        step=pd.Timedelta(step),
        rows=len(frame),
        dropped_times=int(unreadable.sum()),
        merged=merged,
        moved=moved,
        gaps=max(0, span - len(series)),
    )
