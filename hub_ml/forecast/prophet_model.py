"""Prophet with daily and weekly seasonality, optional country holidays, and quiet logging."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from hub_ml.forecast.base import Forecaster
from hub_ml.forecast.series import LogTransform


def _import_prophet():
    # prophet.plot warns at import that plotly is missing (we never plot): silence that logger only.
    logging.getLogger("prophet.plot").setLevel(logging.CRITICAL)
    from prophet import Prophet  # imported lazily: ~1 s

    return Prophet


class ProphetForecaster(Forecaster):
    """Prophet fitted on the log scale (multiplicative seasonality becomes additive there).

    Daily seasonality is on for sub-daily series, weekly when a weekly period is found (or given).
    ``holidays_country`` (e.g. "US") adds that country's public holidays from the ``holidays``
    package (installed with prophet, no download). Interval sampling is seeded, so ``predict`` is
    deterministic and leaves numpy's global random state as it found it.
    """

    name = "prophet"

    def __init__(
        self,
        *,
        seasonal_periods: tuple[int, ...] | None = None,
        outlier_limit: float | None = None,
        holidays_country: str | None = None,
        changepoint_prior_scale: float = 0.05,
        daily_fourier_order: int = 8,
        weekly_fourier_order: int | None = None,
        seasonality_prior_scale: float = 10.0,
        uncertainty_samples: int = 200,
        transform: str = "auto",
        seed: int = 0,
    ) -> None:
        super().__init__(seasonal_periods=seasonal_periods, outlier_limit=outlier_limit)
        self.holidays_country = holidays_country
        self.changepoint_prior_scale = changepoint_prior_scale
        self.daily_fourier_order = daily_fourier_order
        self.weekly_fourier_order = weekly_fourier_order
        self.seasonality_prior_scale = seasonality_prior_scale
        self.uncertainty_samples = uncertainty_samples
        self.transform = transform
        self.seed = seed

    def min_length(self) -> int:
        return max(14, 2 * self.season_length)

    def _fit(self, y: pd.Series) -> None:
        import cmdstanpy

        Prophet = _import_prophet()  # noqa: N806 (a class)

        self.transform_ = LogTransform.for_values(y.to_numpy(), self.transform)
        sub_daily = self.step_ < pd.Timedelta(days=1)
        week = int(pd.Timedelta(days=7) / self.step_)
        day = int(pd.Timedelta(days=1) / self.step_) if sub_daily else 0
        periods = set(self.periods_ or ())
        # Prophet's defaults (orders 4 and 3) are made for daily data; hourly traffic has a sharp
        # business-hours peak and a weekend step that need more harmonics.
        weekly_order = self.weekly_fourier_order or (10 if sub_daily else 3)
        model = Prophet(
            daily_seasonality=self.daily_fourier_order
            if sub_daily and (day in periods or week in periods)
            else False,
            weekly_seasonality=weekly_order if week in periods else False,
            yearly_seasonality=False,
            changepoint_prior_scale=self.changepoint_prior_scale,
            seasonality_prior_scale=self.seasonality_prior_scale,
            uncertainty_samples=self.uncertainty_samples,
        )
        if self.holidays_country:
            model.add_country_holidays(country_name=self.holidays_country)
        frame = pd.DataFrame(
            {"ds": y.index.tz_convert("UTC").tz_localize(None), "y": self.transform_.forward(y.to_numpy())}
        )
        # cmdstanpy logs every Stan run at INFO; mute it for this fit only.
        with cmdstanpy.disable_logging():
            model.fit(frame)
        self.model_ = model

    # Prophet's own JSON serialisation is the supported way to store a fitted model (pickles of it
    # are not guaranteed to load across versions); the fitted object is rebuilt from it on load.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if "model_" in state:
            from prophet.serialize import model_to_json

            state["model_"] = model_to_json(state["model_"])
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if isinstance(state.get("model_"), str):
            _import_prophet()
            from prophet.serialize import model_from_json

            state["model_"] = model_from_json(state["model_"])
        self.__dict__.update(state)

    def _predict(self, horizon: int, level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        future = self.model_.make_future_dataframe(periods=horizon, freq=self.step_, include_history=False)
        self.model_.interval_width = level
        saved_state = np.random.get_state()
        np.random.seed(self.seed)
        try:
            predicted = self.model_.predict(future)
        finally:
            np.random.set_state(saved_state)
        inverse = self.transform_.inverse
        return (
            inverse(predicted["yhat"].to_numpy()),
            inverse(predicted["yhat_lower"].to_numpy()),
            inverse(predicted["yhat_upper"].to_numpy()),
        )
