"""Seasonal naive: next week looks like last week. The baseline every other model must beat."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hub_ml.forecast.base import Forecaster, z_value


class SeasonalNaiveForecaster(Forecaster):
    """Repeats the last full season (the longest seasonal period; the last value when there is none).

    Intervals follow Hyndman & Athanasopoulos (FPP3 5.5): the standard deviation of the in-sample
    seasonal differences, growing with the square root of the number of seasons ahead.
    """

    name = "seasonal_naive"

    def _fit(self, y: pd.Series) -> None:
        m = self.season_length
        values = y.to_numpy()
        self.last_season_ = values[-m:].copy()
        diffs = values[m:] - values[:-m]
        self.sigma_ = float(np.sqrt(np.mean(diffs**2))) if len(diffs) else 0.0

    def _predict(self, horizon: int, level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        m = self.season_length
        steps = np.arange(horizon)
        mean = self.last_season_[steps % m]
        seasons_ahead = steps // m + 1
        half_width = z_value(level) * self.sigma_ * np.sqrt(seasons_ahead)
        return mean, mean - half_width, mean + half_width

    def min_length(self) -> int:
        return max(2, self.season_length + 1)
