"""`hub forecast`: a forecast with an interval for any CSV time series, with hub's forecasters
(hub_ml.forecast).

The file is read as `hub detect` reads it (hub_pipelines.ml_training.csv_series: any column names,
timestamps snapped to the inferred grid step, rows on the same grid point aggregated) and laid on the
full grid, so gaps are gaps that the forecasters fill. Every model goes through the forecast
ensemble's machinery (`EnsembleForecaster`): a rolling-origin backtest at the requested horizon, each
fit on the data before its origin, then a refit on the whole series. A single `--model` is the
ensemble of that one member, so its intervals are, like the ensemble's, split-conformal from the
backtest residuals, and the coverage printed is that of the intervals written.
"""

from __future__ import annotations

import math
import sys
from dataclasses import replace
from pathlib import Path

import click

# CLI name -> hub_ml.forecast member name; "ensemble" uses all of them.
MODELS = {"naive": "seasonal_naive", "sarima": "sarima", "prophet": "prophet", "lstm": "lstm"}
MODEL_CHOICES = ("ensemble", *MODELS)
OUTPUT_COLUMNS = ["timestamp", "forecast", "lower", "upper"]
METRIC_COLUMNS = (("mape", "MAPE %"), ("smape", "sMAPE %"), ("mase", "MASE"), ("rmse", "RMSE"))


def _parse_horizon(text: str):
    """A number of steps (int) or a duration (Timedelta); ValueError when it is neither."""
    import pandas as pd

    text = text.strip()
    if text.isdigit():
        if int(text) < 1:
            raise ValueError("must be at least one step")
        return int(text)
    try:
        duration = pd.Timedelta(text)
    except (ValueError, TypeError) as exc:
        raise ValueError("give a number of steps (e.g. 24) or a duration (7d, 48h)") from exc
    if duration <= pd.Timedelta(0):
        raise ValueError("the duration must be positive")
    return duration


def _horizon_option(ctx, param, value: str) -> str:
    # Checked here so a typo fails before the file is read; resolved against the grid step later.
    try:
        _parse_horizon(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r}: {exc}") from exc
    return value.strip()


def _level_option(ctx, param, value: float) -> float:
    # 95 and 0.95 both mean a 95% interval.
    level = value / 100 if value > 1 else value
    if not 0 < level < 1:
        raise click.BadParameter(f"{value}: give a probability in (0, 1) or a percentage in (1, 100)")
    return level


def horizon_in_steps(horizon: str, step) -> int:
    """Steps of `step` covering `horizon` (a step count, or a duration rounded up to whole steps)."""
    parsed = _parse_horizon(horizon)
    if isinstance(parsed, int):
        return parsed
    return max(1, math.ceil(parsed / step))


def _ensemble_configs(config, step):
    """The config as given, then (for a history too short for the longest season, e.g. under three
    weeks of hours with a weekly season) with only the shortest natural season of the grid."""
    from hub_ml.forecast.series import default_periods

    yield config
    natural = default_periods(step)
    yield replace(config, seasonal_periods=natural[:1] if len(natural) > 1 else ())


def _too_short(exc: Exception) -> bool:
    # As hub_pipelines.ml_training.forecast tells them apart (importing that module loads MLflow).
    text = str(exc)
    return "needs at least" in text or "too short" in text


def _points_needed(config, step) -> int:
    """Fewest grid points `config` (with fixed seasonal periods) fits and backtests on."""
    from hub_ml.forecast import EnsembleForecaster

    # The ensemble's own length check, asked before any fit (as ml_training.forecast.choose_config does).
    probe = EnsembleForecaster(config)
    probe.step_, probe.periods_ = step, config.seasonal_periods
    return probe.min_length()


def fit_forecaster(series, step, horizon: int, model: str, level: float, quick: bool):
    """The fitted `EnsembleForecaster` (all members, or the one `model`) with its backtest at
    `horizon` steps. Raises ForecastInputError when the series cannot be forecast."""
    import pandas as pd

    from hub_ml.forecast import EnsembleConfig, EnsembleForecaster, ForecastInputError

    members = tuple(MODELS.values()) if model == "ensemble" else (MODELS[model],)
    make = EnsembleConfig.quick if quick else EnsembleConfig
    config = make(models=members, horizon_days=(horizon * step / pd.Timedelta(days=1),), coverage_level=level)
    for attempt in _ensemble_configs(config, step):
        try:
            return EnsembleForecaster(attempt).fit(series)
        except ForecastInputError as exc:
            if not _too_short(exc):
                raise
    # Even the least demanding attempt (the last one) did not fit: say what it needs.
    needed = _points_needed(attempt, step)
    periods = attempt.seasonal_periods or "(none)"
    raise ForecastInputError(
        f"too short: a {horizon}-step forecast with {model} and its rolling-origin backtest needs at least"
        f" {needed} grid points ({needed - horizon} to train with seasonal periods {periods}, then {horizon}"
        f" to score), the file spans {len(series)}"
    )


def _options_of_detect(*names: str):
    """Add `hub detect`'s own options `names` to a command, so both read and write CSV files alike."""
    from hub_pipelines.cli_detect import detect

    def add(command: click.Command) -> click.Command:
        command.params.extend(p for p in detect.params if p.name in names)
        return command

    return add


def _number(value: float) -> str:
    # Fixed decimals for the usual range; exponent form so a degenerate MASE cannot break the columns.
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.3f}" if abs(value) < 1e6 else f"{value:.3g}"


def backtest_lines(forecaster, model: str, level: float) -> list[str]:
    """The backtest table of what was chosen, and how the ensemble weighed its members."""
    report = forecaster.report
    origins = report.origins
    steps = int(report.backtest["steps"].iloc[0])
    span = f"{origins[0]:%Y-%m-%d %H:%M}" + (f"..{origins[-1]:%Y-%m-%d %H:%M}" if len(origins) > 1 else "")
    lines = [
        f"rolling-origin backtest: {len(origins)} origin{'s' if len(origins) > 1 else ''} ({span} UTC), each"
        f" fit on the data before it, scored over {steps} steps; seasonal periods"
        f" {report.seasonal_periods or '(none)'}",
        f"  {'model':<16}" + "".join(f" {title:>10}" for _, title in METRIC_COLUMNS) + f" {'coverage':>10}",
    ]
    rows = report.backtest.to_dict("records")
    if model != "ensemble":
        # The one-member ensemble is the model with conformal intervals: that row is what was written.
        rows = [dict(r, model=MODELS[model]) for r in rows if r["model"] == "ensemble"]
    for row in rows:
        cells = "".join(f" {_number(row[name]):>10}" for name, _ in METRIC_COLUMNS)
        lines.append(f"  {row['model']:<16}{cells} {_number(row['coverage']):>10}")
    if model == "ensemble":
        lines.append(
            f"  coverage: members' own 95% intervals; the ensemble's {level:.0%} conformal interval, each origin"
            " calibrated on the others"
        )
        if report.fallback_model:
            lines.append(
                f"  the ensemble fell back to the best single model, {report.fallback_model}: no weighting"
                " beat it in the backtest"
            )
        else:
            weights = report.weights.mean().round(3).to_dict()
            lines.append(
                f"  weighting {report.weighting}; mean weights "
                + ", ".join(f"{m} {w:g}" for m, w in weights.items())
            )
    else:
        lines.append(
            f"  coverage: of its {level:.0%} conformal interval, each origin calibrated on the others"
        )
    for name, why in report.failures.items():
        lines.append(f"  {name} failed the backtest and was left out: {why[:200]}")
    return lines


@_options_of_detect("output", "freq", "agg")
@click.command("forecast")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--time-col", required=True, help="Column holding the timestamps.")
@click.option("--value-col", required=True, help="Column holding the values.")
@click.option(
    "--horizon",
    required=True,
    callback=_horizon_option,
    help="How far ahead: a number of grid steps (24) or a duration (7d, 48h).",
)
@click.option(
    "--model",
    default="ensemble",
    show_default=True,
    type=click.Choice(MODEL_CHOICES),
    help="Forecaster to use.",
)
@click.option(
    "--level",
    default=0.95,
    show_default=True,
    type=float,
    callback=_level_option,
    help="Interval probability (0.8 or 80).",
)
@click.option(
    "--quick", is_flag=True, help="Small search grids and few training epochs (seconds, not a minute)."
)
def forecast(file, time_col, value_col, horizon, model, level, output, freq, agg, quick) -> None:
    """Forecast a CSV time series: timestamp, forecast, lower, upper; prints the backtest scores."""
    import warnings

    from hub_ml.forecast import ForecastInputError
    from hub_pipelines.ml_training.csv_series import SeriesFileError, _format_step, read_series_csv

    try:
        data = read_series_csv(file, time_col, value_col, step=freq, agg=agg)
    except SeriesFileError as exc:
        raise click.ClickException(str(exc)) from exc
    steps = horizon_in_steps(horizon, data.step)
    # Gaps become missing grid points, so the forecasters see the real step and fill them.
    series = data.series.asfreq(data.step)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels' convergence chatter; the backtest judges the fits
        try:
            forecaster = fit_forecaster(series, data.step, steps, model, level, quick)
            result = forecaster.predict(steps, level)
        except ForecastInputError as exc:
            raise click.ClickException(f"{file}: {data.describe()}: {exc}") from exc
    result = result.rename(columns={"mean": "forecast"})
    result["timestamp"] = result["timestamp"].map(lambda t: t.isoformat())
    asked = f"{steps} steps" if horizon.isdigit() else f"{horizon} ({steps} steps)"
    note = [
        f"{file}: {data.describe()}; forecast {asked} of {_format_step(data.step)} with {model}"
        f"{' (--quick)' if quick else ''}, {level:.0%} interval",
        *backtest_lines(forecaster, model, level),
    ]
    if output is not None:
        result.to_csv(output, index=False, columns=OUTPUT_COLUMNS)
        click.echo("\n".join(note))
        click.echo(f"wrote {len(result)} rows to {output}")
    else:
        click.echo(result.to_csv(index=False, columns=OUTPUT_COLUMNS), nl=False)
        click.echo("\n".join(note), err=True)
    sys.stdout.flush()
