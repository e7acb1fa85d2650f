"""Forecast models per series: train with backtests, log to MLflow, register, promote; forecast with
the champions; what-if scenarios on the cost forecast.

Plain Python over `hub_ml.forecast` (the Dagster assets in `hub_pipelines.defs.ml` call this).

Training one series (`train_series`): `hub_ml.forecast.mlflow_model.train_and_register` fits the
validation-weighted ensemble with its rolling-origin backtests and logs it into the parent run found
by `run_key` (a retried step reuses it; a run that already registered its model is reused as it
is), registers `hub-forecast.<tenant>.<metric>.<model or all>[.<project>][.daily]` and moves
`champion` only when the backtest MAPE at the longest backtest horizon beats the champion's. Then
one child run per member (seasonal naive, SARIMA, Prophet, LSTM; found again by `<run_key>/<member>`)
gets that member's backtest metrics, weight and tuned settings, and the parent gets the forecast plot.

Backtest horizons adapt to the history (`plan_configs`): 7 and 30 days when there is enough data,
else the longest of 7+14, 7, 3 or 1 days that fits, with the weekly season dropped if two weeks of
training data are not there. The stored forecasts always reach 7, 14 and 30 days; steps past the
backtest horizon reuse its last weights and interval quantiles (an extrapolated band), which the run
tags (`hub.backtest_horizons`) make visible.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from hub_ml import tracking
from hub_ml.forecast import (
    MODEL_CLASSES,
    EnsembleConfig,
    EnsembleForecaster,
    ForecastInputError,
    Scenario,
    cost_what_if,
)
from hub_ml.forecast.series import horizon_steps
from hub_pipelines.ml_training import FORECAST_HOURLY_METRICS, FORECAST_MEMBERS, plots, registry
from hub_pipelines.ml_training.series import DAY, HOUR, SeriesSpec, md_cell, registered_model_name, utc
from hub_pipelines.warehouse import Warehouse, tables

KIND = "forecast"
MODEL_PREFIX = "hub-forecast."
STORED_HORIZONS = (7, 14, 30)
LEVEL = 0.95
HOURLY_METRICS = FORECAST_HOURLY_METRICS
# Backtest horizon plans, longest first (days).
HORIZON_PLANS: tuple[tuple[float, ...], ...] = ((7.0, 30.0), (7.0, 14.0), (7.0,), (3.0,), (1.0,))
# Daily spend needs a weekly season and a 7-day backtest: about 45 days. Shorter histories forecast
# spend hourly ("auto").
MIN_DAILY_HISTORY_DAYS = 45
# Names of the forecasts table's model_name column.
TABLE_MODEL_NAMES = {"seasonal_naive": "naive"}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ForecastSettings:
    """Which members, how big their grids, at what interval level."""

    members: tuple[str, ...] = tuple(MODEL_CLASSES)
    quick: bool = False
    level: float = LEVEL

    def __post_init__(self) -> None:
        assert set(FORECAST_MEMBERS) == set(MODEL_CLASSES), (
            "hub_pipelines.ml_training.FORECAST_MEMBERS is stale"
        )
        unknown = set(self.members) - set(MODEL_CLASSES)
        if unknown or not self.members:
            raise ValueError(
                f"unknown forecast models {sorted(unknown)}; choose from {', '.join(MODEL_CLASSES)}"
            )

    def base_config(self, **overrides: Any) -> EnsembleConfig:
        if self.quick:
            return EnsembleConfig.quick(models=self.members, **overrides)
        return EnsembleConfig(models=self.members, **overrides)


def short_periods(step: pd.Timedelta) -> tuple[int, ...]:
    """The shortest natural season of a grid: a day of hours, none for days (the weekly season
    needs more history than a short series has)."""
    return (24,) if step == HOUR else ()


def plan_configs(base: EnsembleConfig, step: pd.Timedelta) -> Iterator[EnsembleConfig]:
    """Configs to try, longest backtest first: each horizon plan with the seasons found in the data,
    then with only the short season."""
    for horizons in HORIZON_PLANS:
        yield replace(base, horizon_days=horizons)
        if base.seasonal_periods is None:
            yield replace(base, horizon_days=horizons, seasonal_periods=short_periods(step))


def _too_short(exc: ForecastInputError) -> bool:
    text = str(exc)
    return "needs at least" in text or "too short" in text


def fit_adaptive(series: pd.Series, base: EnsembleConfig) -> tuple[EnsembleForecaster, EnsembleConfig]:
    """The ensemble fitted with the first config of `plan_configs` the series is long enough for.
    Raises ForecastInputError (with the shortest plan's reason) when none is."""
    from hub_ml.forecast.series import prepare_series

    step = prepare_series(series).index.freq
    last: ForecastInputError | None = None
    for config in plan_configs(base, pd.Timedelta(step)):
        try:
            return EnsembleForecaster(config).fit(series), config
        except ForecastInputError as exc:
            if not _too_short(exc):
                raise
            last = exc
    raise ForecastInputError(f"series too short for any backtest plan: {last}")


def choose_config(series: pd.Series, base: EnsembleConfig) -> EnsembleConfig:
    """The config `fit_adaptive` would use, found without fitting the ensemble: the first plan whose
    length requirement the series meets (the ensemble's own check, run on its input)."""
    from hub_ml.forecast.series import default_periods, detect_seasonal_periods, prepare_series

    y = prepare_series(series)
    step = pd.Timedelta(y.index.freq)
    for config in plan_configs(base, step):
        probe = EnsembleForecaster(config)
        probe.step_ = step
        probe.periods_ = (
            tuple(config.seasonal_periods)
            if config.seasonal_periods is not None
            else detect_seasonal_periods(y.to_numpy(), default_periods(step))
        )
        if len(y) >= probe.min_length():
            return config
    raise ForecastInputError(
        f"series of {len(y)} points at step {step} is too short for any backtest plan: even "
        f"{HORIZON_PLANS[-1][-1]:g} day(s) ahead with the season {short_periods(step) or '(none)'} needs "
        f"{probe.min_length()} points ({probe.length_requirement()})"
    )


@dataclass
class SeriesTraining:
    spec: SeriesSpec
    model_name: str
    run_id: str
    run_key: str
    version: str
    promoted: bool
    reason: str
    champion_version: str | None
    metrics: dict[str, float]
    horizons: tuple[str, ...]
    weighting: str
    points: int
    seconds: float
    reused: bool = False
    child_runs: dict[str, str] = field(default_factory=dict)
    forecast: pd.DataFrame | None = field(default=None, repr=False)
    history: pd.Series | None = field(default=None, repr=False)

    def metric(self, model: str, horizon: str, name: str) -> float:
        return float(self.metrics.get(f"{model}_{horizon}_{name}", float("nan")))


def train_series(
    spec: SeriesSpec,
    series: pd.Series,
    *,
    experiment: str,
    run_key: str,
    settings: ForecastSettings | None = None,
    tags: Mapping[str, Any] | None = None,
    artifact_location: str | None = None,
) -> SeriesTraining:
    """Fit, backtest, log (parent + child runs), register and (maybe) promote one series' ensemble.

    MLflow must already point at the store; raises ForecastInputError when the series cannot be
    forecast (too short, mostly missing).
    """
    from hub_ml.forecast.mlflow_model import comparison_metric, train_and_register

    settings = settings or ForecastSettings()
    model_name = registered_model_name(KIND, spec)
    done = registry.completed_run(experiment, run_key)
    if done is not None:
        return _reused(spec, model_name, run_key, done)
    started = time.perf_counter()
    series = series.astype(float).sort_index()
    series.name = spec.metric
    base = settings.base_config()
    configs = list(plan_configs(base, pd.Timedelta(spec.step)))
    chosen = choose_config(series, base)
    train_end = series.index[-1] + spec.step
    outcome = None
    for config in configs[configs.index(chosen) :]:
        run_tags = {
            "hub.kind": "forecast_training",
            **spec.tags(),
            "hub.train_start": series.index[0].isoformat(),
            "hub.train_end": train_end.isoformat(),
            "hub.backtest_horizons": ",".join(f"{d:g}d" for d in config.horizon_days),
            "hub.seasonal_periods_config": "detected"
            if config.seasonal_periods is None
            else ",".join(map(str, config.seasonal_periods)) or "none",
            **(tags or {}),
        }
        try:
            # Fits before it opens the run: a plan the data turns out too short for leaves no trace.
            outcome = train_and_register(
                series,
                model_name=model_name,
                experiment=experiment,
                run_key=run_key,
                config=config,
                tags=run_tags,
                artifact_location=artifact_location,
            )
            break
        except ForecastInputError as exc:
            if not _too_short(exc):
                raise
            log.info("%s: %s; trying a shorter backtest", spec.key, exc)
    if outcome is None:
        raise ForecastInputError(f"{spec.key}: too short for any backtest plan ({len(series)} points)")
    forecaster = outcome.forecaster
    report = forecaster.report
    history = series.iloc[-_history_points(spec) :]
    forecast = forecaster.predict(horizon_steps(max(STORED_HORIZONS), forecaster.step_), settings.level)
    forecast = forecast.rename(columns={"mean": "forecast"})
    png = plots.forecast_plot([(f"{spec.label}: forecast with 95% band", history, forecast)], dpi=80)
    params = {
        "members": ",".join(settings.members),
        "quick": settings.quick,
        "level": settings.level,
        "granularity": spec.granularity,
        "comparison_metric": comparison_metric(report),
    }
    children = _log_children(experiment, outcome.run_id, run_key, forecaster, spec)
    with tracking.run_for_key(experiment, run_key, artifact_location=artifact_location):
        tracking.log_params(params)
        _log_bytes(png, "forecast", "forecast.png")
        tracking.set_tags(
            {
                "hub.promoted": outcome.promotion.promoted,
                "hub.decision": outcome.promotion.reason,
                registry.REGISTERED_VERSION_TAG: outcome.version,
            }
        )
    registry.tag_version(
        model_name,
        outcome.version,
        {
            "hub.series_key": spec.key,
            "hub.train_start": run_tags["hub.train_start"],
            "hub.train_end": run_tags["hub.train_end"],
            "hub.fallback_model": report.fallback_model or "",
            "hub.backtest_horizons": run_tags["hub.backtest_horizons"],
        },
    )
    registry.tag_registered_model(model_name, {"hub.kind": KIND, **spec.tags()})
    return SeriesTraining(
        spec=spec,
        model_name=model_name,
        run_id=outcome.run_id,
        run_key=run_key,
        version=outcome.version,
        promoted=outcome.promotion.promoted,
        reason=outcome.promotion.reason,
        champion_version=outcome.promotion.champion_version,
        metrics=outcome.metrics,
        horizons=tuple(report.horizons),
        weighting=report.weighting,
        points=len(series),
        seconds=time.perf_counter() - started,
        child_runs=children,
        forecast=forecast,
        history=history,
    )


def _history_points(spec: SeriesSpec) -> int:
    return 21 * 24 if spec.granularity == "hour" else 90


def _log_bytes(data: bytes, artifact_dir: str, filename: str) -> None:
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / filename
        path.write_bytes(data)
        mlflow.log_artifact(str(path), artifact_dir)


def _log_children(
    experiment: str, parent_run_id: str, run_key: str, forecaster: EnsembleForecaster, spec: SeriesSpec
) -> dict[str, str]:
    """One child run per member: its backtest metrics at each horizon, its weight, its tuned
    settings; a member that failed the backtest gets a FAILED child with the reason."""
    from mlflow.entities import Metric, Param, RunTag

    client = registry.client()
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    report = forecaster.report
    now = int(time.time() * 1000)
    out: dict[str, str] = {}
    members = list(dict.fromkeys([*report.backtest["model"].unique(), *report.failures]))
    for member in members:
        if member == "ensemble":
            continue
        key = f"{run_key}/{member}"
        run_id = tracking.find_run_id(experiment, key)
        tags = {
            tracking.RUN_KEY_TAG: key,
            "mlflow.parentRunId": parent_run_id,
            "mlflow.runName": member,
            "hub.kind": "forecast_member",
            "hub.member": member,
            "hub.parent_series_key": spec.key,
            "hub.tuned": str(report.tuned_params.get(member, {})),
        }
        new = run_id is None
        if new:
            run_id = client.create_run(experiment_id, tags=tags, run_name=member).info.run_id
        metrics = []
        rows = report.backtest[report.backtest["model"] == member]
        for row in rows.to_dict("records"):
            for name in ("mape", "smape", "mase", "rmse", "coverage", "mae_vs_naive"):
                value = row.get(name)
                if value is not None and np.isfinite(value):
                    metrics.append(Metric(f"{row['horizon']}_{name}", float(value), now, 0))
        if member in report.weights.columns:
            metrics.append(Metric("weight", float(report.weights[member].mean()), now, 0))
        seconds = report.seconds.get(f"backtest_{member}")
        if seconds is not None:
            metrics.append(Metric("backtest_seconds", float(seconds), now, 0))
        params = [Param("member", member), Param("granularity", spec.granularity)] if new else []
        run_tags = [RunTag(k, str(v)) for k, v in tags.items() if k != "mlflow.runName"]
        if member in report.failures:
            run_tags.append(RunTag("hub.failure", report.failures[member][:4000]))
        client.log_batch(run_id, metrics=metrics, params=params, tags=run_tags)
        client.set_terminated(run_id, status="FAILED" if member in report.failures else "FINISHED")
        out[member] = run_id
    return out


def _reused(spec: SeriesSpec, model_name: str, run_key: str, run) -> SeriesTraining:
    tags = run.data.tags
    champion = tracking.champion_version(model_name)
    horizons = tuple(h for h in tags.get("hub.backtest_horizons", "").split(",") if h)
    return SeriesTraining(
        spec=spec,
        model_name=model_name,
        run_id=run.info.run_id,
        run_key=run_key,
        version=str(tags[registry.REGISTERED_VERSION_TAG]),
        promoted=tags.get("hub.promoted") == "True",
        reason=tags.get("hub.decision", "") + " (reused: this run key already finished)",
        champion_version=str(champion.version) if champion is not None else None,
        metrics=dict(run.data.metrics),
        horizons=horizons,
        weighting=tags.get("forecast.weighting", ""),
        points=0,
        seconds=0.0,
        reused=True,
    )


def backtest_table(results: Sequence[SeriesTraining]) -> str:
    """One row per series and backtest horizon: the ensemble's MAPE, sMAPE, MASE, RMSE, coverage and
    the best member's MAPE (markdown)."""
    lines = [
        "| series | horizon | MAPE % | sMAPE % | MASE | RMSE | coverage 95% | best member (MAPE) | weighting |"
        " version | champion | decision |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for h in r.horizons:
            best = _best_member(r, h)
            lines.append(
                f"| {r.spec.label} | {h} | {r.metric('ensemble', h, 'mape'):.2f} | {r.metric('ensemble', h, 'smape'):.2f} |"
                f" {r.metric('ensemble', h, 'mase'):.3f} | {r.metric('ensemble', h, 'rmse'):.4g} |"
                f" {r.metric('ensemble', h, 'coverage'):.3f} | {best} | {r.weighting} | v{r.version} |"
                f" v{r.champion_version} | {md_cell(r.reason)} |"
            )
    return "\n".join(lines)


def _best_member(r: SeriesTraining, horizon: str) -> str:
    scores = {
        m: r.metric(m, horizon, "mape") for m in MODEL_CLASSES if np.isfinite(r.metric(m, horizon, "mape"))
    }
    if not scores:
        return ""
    best = min(scores, key=scores.get)
    return f"{best} ({scores[best]:.2f})"


# -- forecasting with the champions --------------------------------------------------------------


@dataclass
class ChampionForecast:
    champion: registry.Champion
    frame: pd.DataFrame  # timestamp, forecast, lower, upper: 30 days from the end of training
    origin: pd.Timestamp  # first forecast step (= end of the training series)
    model_name: str  # ensemble, or the member it fell back to

    def rows(self, trained_at: datetime, level: float = LEVEL, scenario: str = "baseline") -> list[dict]:
        return forecast_rows(self.champion.spec, self.frame, self.origin, trained_at, level, scenario,
                             self.model_name, f"{self.champion.name}/{self.champion.version}")  # fmt: skip


def forecast_champion(champion: registry.Champion, model: Any, level: float = LEVEL) -> ChampionForecast:
    """The champion's forecast of the longest stored horizon (30 days) from the end of its training."""
    step = champion.spec.step
    steps = horizon_steps(max(STORED_HORIZONS), pd.Timedelta(step))
    frame = model.predict(pd.DataFrame({"horizon": [steps], "level": [float(level)]}))
    frame = frame.copy()
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    origin = frame["timestamp"].iloc[0]
    fallback = champion.tags.get("hub.fallback_model") or ""
    model_name = TABLE_MODEL_NAMES.get(fallback, fallback) if fallback else "ensemble"
    return ChampionForecast(champion, frame, origin, model_name)


def forecast_rows(
    spec: SeriesSpec,
    frame: pd.DataFrame,
    origin: pd.Timestamp,
    trained_at: datetime,
    level: float,
    scenario: str,
    model_name: str,
    model_version: str | None,
) -> list[dict]:
    """Rows of the `forecasts` table: for each stored horizon H (7, 14, 30 days), the forecast steps
    within H days of the origin."""
    rows = []
    origin = utc(origin)
    for horizon in STORED_HORIZONS:
        limit = origin + pd.Timedelta(days=horizon)
        part = frame[pd.to_datetime(frame["timestamp"], utc=True) < limit]
        for r in part.itertuples(index=False):
            rows.append(
                {
                    "series_key": spec.key,
                    "horizon_days": horizon,
                    "target_ts": utc(r.timestamp).to_pydatetime(),
                    "scenario": scenario,
                    "tenant_id": spec.tenant_id,
                    "metric": spec.metric,
                    "model": spec.model,
                    "project": spec.project,
                    "granularity": spec.granularity,
                    "forecast": float(r.forecast),
                    "lower": float(r.lower),
                    "upper": float(r.upper),
                    "level": float(level),
                    "model_name": model_name[:32],
                    "model_version": model_version,
                    "trained_at": trained_at,
                }
            )
    return rows


def write_forecasts(warehouse: Warehouse, rows: Sequence[dict], *, scenario: str) -> int:
    """Replace the `scenario` forecasts of the series in `rows` with `rows` (one transaction)."""
    table = tables.forecasts
    keys = sorted({r["series_key"] for r in rows})
    with warehouse.begin() as conn:
        for i in range(0, len(keys), 500):
            conn.execute(
                sa.delete(table).where(
                    table.c.scenario == scenario, table.c.series_key.in_(keys[i : i + 500])
                )
            )
        for i in range(0, len(rows), 5000):
            conn.execute(table.insert(), list(rows[i : i + 5000]))
    return len(rows)


# -- what-if ---------------------------------------------------------------------------------------


@dataclass
class WhatIf:
    """A scenario applied to one spend series: cost = requests x cost per request, both forecast."""

    spec: SeriesSpec
    scenario: Scenario
    frame: pd.DataFrame  # hub_ml.forecast.cost_what_if frame
    summary: dict[str, float]
    origin: pd.Timestamp
    baseline_total: float | None = None  # the stored (direct) spend forecast over the same steps

    def rows(self, trained_at: datetime, level: float = LEVEL) -> list[dict]:
        frame = self.frame.rename(
            columns={
                "scenario_cost": "forecast",
                "scenario_cost_lower": "lower",
                "scenario_cost_upper": "upper",
            }
        )[["timestamp", "forecast", "lower", "upper"]]
        return forecast_rows(self.spec, frame, self.origin, trained_at, level, self.scenario.name,
                             "ensemble", None)  # fmt: skip


def what_if(
    spec: SeriesSpec,
    requests: pd.Series,
    cost_per_request: pd.Series,
    scenario: Scenario,
    settings: ForecastSettings,
) -> WhatIf:
    """Fit the driver (requests) and the unit cost (spend / requests) of a spend series, apply the
    scenario to the driver and recompute the cost forecast (`hub_ml.forecast.cost_what_if`)."""
    base = settings.base_config()
    driver, _ = fit_adaptive(requests, base)
    unit, _ = fit_adaptive(cost_per_request, base)
    steps = horizon_steps(max(STORED_HORIZONS), driver.step_)
    driver_forecast = driver.predict(steps, settings.level)
    unit_forecast = unit.predict(steps, settings.level)
    result = cost_what_if(driver_forecast, unit_forecast, scenario, settings.level)
    return WhatIf(
        spec=spec,
        scenario=scenario,
        frame=result.frame,
        summary=result.summary,
        origin=utc(result.frame["timestamp"].iloc[0]),
    )


def what_if_table(results: Sequence[WhatIf]) -> str:
    lines = [
        "| series | scenario | window | baseline cost (model) | scenario cost | difference | difference % |"
        " stored baseline forecast |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        s = r.summary
        window = (
            f"{utc(r.scenario.start):%Y-%m-%d} .. {utc(r.scenario.end):%Y-%m-%d}"
            if r.scenario.end
            else (f"from {utc(r.scenario.start):%Y-%m-%d}")
        )
        stored = "" if r.baseline_total is None else f"{r.baseline_total:,.2f}"
        lines.append(
            f"| {r.spec.label} | {r.scenario.name} (x{r.scenario.multiplier:g}"
            f"{f' {r.scenario.offset:+g}' if r.scenario.offset else ''}) | {window} | {s['baseline_total']:,.2f} |"
            f" {s['scenario_total']:,.2f} | {s['difference_total']:+,.2f} | {s['difference_pct']:+.1f}% | {stored} |"
        )
    return "\n".join(lines)


def driver_specs(spec: SeriesSpec) -> tuple[SeriesSpec, SeriesSpec]:
    """The requests and cost-per-request series behind a spend series."""
    return replace(spec, metric="requests"), replace(spec, metric="cost_per_request")


def spend_granularity(days_of_history: float, setting: str = "auto") -> str:
    if setting in ("hour", "day"):
        return setting
    return "day" if days_of_history >= MIN_DAILY_HISTORY_DAYS else "hour"


__all__ = [
    "DAY",
    "HOURLY_METRICS",
    "KIND",
    "MODEL_PREFIX",
    "STORED_HORIZONS",
    "ChampionForecast",
    "ForecastSettings",
    "SeriesTraining",
    "WhatIf",
    "backtest_table",
    "choose_config",
    "driver_specs",
    "fit_adaptive",
    "forecast_champion",
    "forecast_rows",
    "plan_configs",
    "spend_granularity",
    "train_series",
    "what_if",
    "what_if_table",
    "write_forecasts",
]


def champion_backtest_table(forecasts: Sequence[ChampionForecast]) -> tuple[str, dict[str, float]]:
    """The backtest scores of the champions in use (from their MLflow runs), as a markdown table,
    and the mean ensemble figures per metric over the series (for numeric metadata)."""
    lines = [
        "| series | champion | model | backtest horizon | MAPE % | sMAPE % | MASE | RMSE | coverage 95% |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    collected: dict[str, list[float]] = {}
    for f in forecasts:
        metrics = registry.run_metrics(f.champion.run_id)
        horizons = [h for h in f.champion.tags.get("hub.backtest_horizons", "").split(",") if h]
        for h in horizons:
            values = {
                n: metrics.get(f"ensemble_{h}_{n}", float("nan"))
                for n in ("mape", "smape", "mase", "rmse", "coverage")
            }
            for n, v in values.items():
                if np.isfinite(v):
                    collected.setdefault(f"{n}_{h}", []).append(v)
            lines.append(
                f"| {f.champion.spec.label} | {f.champion.name} v{f.champion.version} | {f.model_name} | {h} |"
                f" {values['mape']:.2f} | {values['smape']:.2f} | {values['mase']:.3f} | {values['rmse']:.4g} |"
                f" {values['coverage']:.3f} |"
            )
    means = {f"mean_ensemble_{k}": float(np.mean(v)) for k, v in collected.items()}
    return "\n".join(lines), means
