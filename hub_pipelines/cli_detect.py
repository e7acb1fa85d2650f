"""`hub detect`: anomalies in any CSV time series, with hub's detectors (hub_ml.anomaly).

Walk-forward: every row's verdict uses only the rows before and at it (the detectors refit on the
past at fixed boundaries from the first row), so the same file cut short gives the same verdicts on
the rows both have. The first week of points (one seasonal cycle x 7; 7 weeks for daily data) is
warm-up and gets no verdict. With no earlier history to weigh the detectors on, the ensemble votes
with equal weights.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

METHODS = ("ensemble", "zscore", "iqr", "ewma", "seasonal", "iforest", "lstm")
OUTPUT_COLUMNS = ["timestamp", "value", "score", "is_anomaly", "severity", "detected_by"]


def _detector(method: str):
    from hub_ml.anomaly import (
        AnomalyEnsemble,
        EWMAControlChartDetector,
        IQRDetector,
        IsolationForestDetector,
        LSTMDetector,
        RollingZScoreDetector,
        SeasonalResidualDetector,
    )

    single = {
        "zscore": RollingZScoreDetector,
        "iqr": IQRDetector,
        "ewma": EWMAControlChartDetector,
        "seasonal": SeasonalResidualDetector,
        "iforest": IsolationForestDetector,
        "lstm": LSTMDetector,
    }
    if method == "ensemble":
        return AnomalyEnsemble()
    return single[method]()


def detect_series(series, method: str = "ensemble"):
    """Walk-forward verdicts for every point of `series` (UTC index on a grid, NaN = missing):
    a frame with OUTPUT_COLUMNS, one row per non-missing point."""
    import numpy as np
    import pandas as pd

    from hub_ml.anomaly.ensemble import severity_of

    detector = _detector(method)
    detector.fit(series.iloc[:0])
    scored = detector.score(series)
    if method == "ensemble":
        severity = scored["severity"].where(scored["is_anomaly"], None)
        detected_by = [
            ";".join(names) if flagged else ""
            for names, flagged in zip(scored["detected_by"], scored["is_anomaly"], strict=True)
        ]
    else:
        deviation = scored["deviation"].abs().to_numpy()
        ratio = (scored["value"] / scored["expected"]).to_numpy()
        severity = [
            severity_of(float(d), float(r) if np.isfinite(r) and r > 0 else None) if flagged else None
            for d, r, flagged in zip(deviation, ratio, scored["is_anomaly"], strict=True)
        ]
        detected_by = [method if flagged else "" for flagged in scored["is_anomaly"]]
    out = pd.DataFrame(
        {
            "timestamp": scored.index,
            "value": scored["value"].to_numpy(dtype=float),
            "score": scored["score"].to_numpy(dtype=float),
            "is_anomaly": scored["is_anomaly"].to_numpy(dtype=bool),
            "severity": list(severity),
            "detected_by": detected_by,
        }
    )
    return out[out["value"].notna()].reset_index(drop=True)


@click.command("detect")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--time-col", required=True, help="Column holding the timestamps.")
@click.option("--value-col", required=True, help="Column holding the values.")
@click.option(
    "--method", default="ensemble", show_default=True, type=click.Choice(METHODS), help="Detector to use."
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the CSV here (default: stdout).",
)
@click.option("--freq", default=None, help="Grid step, e.g. 1h, 15min, 1d (default: inferred).")
@click.option(
    "--agg",
    default="mean",
    show_default=True,
    type=click.Choice(["mean", "sum", "last", "max", "min", "median"]),
    help="How rows falling on the same grid point are combined.",
)
def detect(file, time_col, value_col, method, output, freq, agg) -> None:
    """Score every row of a CSV time series: timestamp, value, score, is_anomaly, severity, detected_by."""
    import warnings

    from hub_pipelines.ml_training.csv_series import SeriesFileError, read_series_csv

    try:
        data = read_series_csv(file, time_col, value_col, step=freq, agg=agg)
    except SeriesFileError as exc:
        raise click.ClickException(str(exc)) from exc
    if len(data.series) < 2:
        raise click.ClickException(f"{file}: {len(data.series)} point(s): at least two are needed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            result = detect_series(data.series, method)
        except ValueError as exc:
            raise click.ClickException(f"{file}: {exc}") from exc
    result["timestamp"] = result["timestamp"].map(lambda t: t.isoformat())
    judged = int(result["score"].notna().sum())
    flagged = result[result["is_anomaly"]]
    by = flagged["severity"].value_counts().to_dict()
    note = (
        f"{file}: {data.describe()}; method {method}; {judged} points judged ({len(result) - judged} in the"
        f" warm-up); {len(flagged)} anomalies"
        + (f" ({', '.join(f'{k} {v}' for k, v in sorted(by.items()))})" if by else "")
    )
    if judged == 0:
        note += "; the series is shorter than the detectors' warm-up, so no point could be judged"
    if output is not None:
        result.to_csv(output, index=False, columns=OUTPUT_COLUMNS)
        click.echo(note)
        click.echo(f"wrote {len(result)} rows to {output}")
    else:
        click.echo(result.to_csv(index=False, columns=OUTPUT_COLUMNS), nl=False)
        click.echo(note, err=True)
    sys.stdout.flush()
