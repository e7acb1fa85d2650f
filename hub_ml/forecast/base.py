"""The one interface every forecaster implements: ``fit(series)`` then ``predict(horizon, level)``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
from scipy.stats import norm

from hub_ml.forecast.errors import ForecastInputError, NotFittedError
from hub_ml.forecast.series import (
    default_periods,
    detect_seasonal_periods,
    future_index,
    prepare_series,
    replace_outliers,
)

FORECAST_COLUMNS = ("timestamp", "mean", "lower", "upper")


def z_value(level: float) -> float:
    """Two-sided normal quantile for a central interval of probability ``level``."""
    return float(norm.ppf(0.5 + level / 2))


def check_level(level: float) -> float:
    level = float(level)
    if not 0 < level < 1:
        raise ForecastInputError(f"level must be a probability in (0, 1), got {level}")
    return level


def check_horizon(horizon: int) -> int:
    if isinstance(horizon, bool) or not isinstance(horizon, int | np.integer) or horizon < 1:
        raise ForecastInputError(f"horizon must be a positive integer number of steps, got {horizon!r}")
    return int(horizon)


def forecast_frame(index: pd.DatetimeIndex, mean, lower, upper) -> pd.DataFrame:
    """The forecast table every ``predict`` returns: timestamp, mean, lower, upper."""
    return pd.DataFrame(
        {
            "timestamp": index,
            "mean": np.asarray(mean, dtype=float),
            "lower": np.asarray(lower, dtype=float),
            "upper": np.asarray(upper, dtype=float),
        }
    )


class Forecaster(ABC):
    """Base class: input validation, seasonal periods, the future grid and the output table.

    Subclasses implement ``_fit(y)`` on a prepared (regular, gap-free, float) series and
    ``_predict(horizon, level)`` returning mean, lower and upper arrays on the original scale.
    ``seasonal_periods=None`` finds the periods from the data (day and week for hourly series, week
    for daily ones); pass a tuple to fix them (``()`` for none).
    """

    name: ClassVar[str] = "forecaster"

    def __init__(
        self, *, seasonal_periods: tuple[int, ...] | None = None, outlier_limit: float | None = None
    ) -> None:
        self.seasonal_periods = None if seasonal_periods is None else tuple(int(p) for p in seasonal_periods)
        self.outlier_limit = outlier_limit
        self.periods_: tuple[int, ...] | None = None
        self.step_: pd.Timedelta | None = None
        self.last_timestamp_: pd.Timestamp | None = None
        self.non_negative_: bool = False

    # -- public interface -------------------------------------------------------------------------
    def fit(self, series: pd.Series) -> Self:
        y = prepare_series(series, fill_period=self.seasonal_periods[0] if self.seasonal_periods else None)
        self.step_ = y.index.freq
        self.last_timestamp_ = y.index[-1]
        self.non_negative_ = bool((y >= 0).all())
        if self.seasonal_periods is not None:
            self.periods_ = tuple(sorted(self.seasonal_periods))
        else:
            self.periods_ = detect_seasonal_periods(y.to_numpy(), default_periods(self.step_))
        needed = self.min_length()
        if len(y) < needed:
            raise ForecastInputError(
                f"{self.name} needs at least {needed} points ({self.length_requirement()}), "
                f"the series has {len(y)}"
            )
        self.outliers_replaced_ = 0
        if self.outlier_limit:
            y, self.outliers_replaced_ = replace_outliers(y, self.season_length, self.outlier_limit)
        self._fit(y)
        return self

    def predict(self, horizon: int, level: float = 0.95) -> pd.DataFrame:
        if self.last_timestamp_ is None:
            raise NotFittedError(f"{self.name}: call fit() before predict()")
        horizon = check_horizon(horizon)
        level = check_level(level)
        mean, lower, upper = self._predict(horizon, level)
        if self.non_negative_:
            # Volumes, spend and latency cannot go below zero; neither should their forecasts.
            mean, lower, upper = (np.maximum(np.asarray(a, dtype=float), 0.0) for a in (mean, lower, upper))
        return forecast_frame(future_index(self.last_timestamp_, self.step_, horizon), mean, lower, upper)

    def min_length(self) -> int:
        """Fewest points ``fit`` accepts, given the seasonal periods in use."""
        return max(8, 2 * self.season_length)

    def length_requirement(self) -> str:
        """Why ``min_length`` is what it is, for the error message."""
        return f"two cycles of the seasonal periods {self._periods_in_use or '(none)'} at step {self.step_}"

    def tuned_params(self) -> dict[str, Any]:
        """Hyperparameters chosen during ``fit`` (e.g. ARIMA orders), as constructor arguments.

        Backtests fit once with search, then pass these to later fits so the search runs only on data
        before the earliest origin.
        """
        return {}

    # -- helpers for subclasses -------------------------------------------------------------------
    @property
    def _periods_in_use(self) -> tuple[int, ...]:
        # Before fit, the periods given to the constructor (so min_length works on a fresh instance).
        return self.periods_ if self.periods_ is not None else (self.seasonal_periods or ())

    @property
    def season_length(self) -> int:
        """The longest seasonal period in use (1 when the series shows none)."""
        return max(self._periods_in_use, default=1)

    @property
    def short_period(self) -> int:
        """The shortest seasonal period in use (1 when the series shows none)."""
        return min(self._periods_in_use, default=1)

    @abstractmethod
    def _fit(self, y: pd.Series) -> None: ...

    @abstractmethod
    def _predict(self, horizon: int, level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...
