"""SARIMA (statsmodels) as a regression with seasonal ARMA errors.

The seasonal state-space SARIMA of statsmodels cannot take a period of 168 (a week of hours: the
state vector grows with the period and one fit takes minutes), and even (1,1,1)(1,1,1,24) costs about
7 s on 720 points. So the model is split in two, both stages chosen by information criterion:

1. deterministic part, by OLS on the log scale: intercept, linear trend and Fourier terms for every
   seasonal period (the number of harmonics per period chosen by BIC from a bounded grid); the weekly
   period is handled here, as the task's "Fourier exogenous terms";
2. SARIMA(p,0,q)(P,0,Q,s) on the residuals, s the shortest seasonal period when it is small enough
   (24 hourly, 7 daily), orders chosen by AIC over a bounded grid and estimated with statsmodels'
   ``innovations_mle`` (seconds, not minutes).

Forecast = extrapolated deterministic part + ARMA forecast of the residuals; the interval is the
ARMA forecast interval, mapped back through the log.
"""

from __future__ import annotations

import itertools
import warnings
from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd
from statsmodels.tsa.arima.model import ARIMA

from hub_ml.forecast.base import Forecaster, z_value
from hub_ml.forecast.series import LogTransform

DEFAULT_HARMONIC_GRID = (0, 2, 4, 8, 16, 24)


def fourier_design(positions: np.ndarray, harmonics: dict[int, int]) -> np.ndarray:
    """Sine/cosine columns for each period's first K harmonics, without duplicate frequencies.

    Frequencies are compared exactly (k/period as a fraction): the 7th weekly harmonic is the first
    daily one, so it appears once even when both periods ask for it.
    """
    seen: set[Fraction] = set()
    columns = []
    for period, k_max in sorted(harmonics.items()):
        for k in range(1, min(k_max, period // 2) + 1):
            frequency = Fraction(k, period)
            if frequency in seen:
                continue
            seen.add(frequency)
            angle = 2 * np.pi * float(frequency) * positions
            if frequency == Fraction(1, 2):
                # sin(pi t) is identically zero on an integer grid: only the cosine carries information.
                columns.append(np.cos(angle))
            else:
                columns.extend((np.sin(angle), np.cos(angle)))
    if not columns:
        return np.empty((len(positions), 0))
    return np.column_stack(columns)


class SarimaForecaster(Forecaster):
    """Regression on trend + Fourier terms with SARIMA errors; orders by information criterion.

    ``order``/``seasonal_order``/``fourier_harmonics`` fix the structure (no search); otherwise the
    grids are searched: harmonics per period from ``harmonic_grid`` (BIC), then (p, q) up to
    ``max_p``/``max_q`` and (P, Q) up to ``max_P``/``max_Q`` (AIC).
    """

    name = "sarima"

    def __init__(
        self,
        *,
        seasonal_periods: tuple[int, ...] | None = None,
        outlier_limit: float | None = None,
        order: tuple[int, int, int] | None = None,
        seasonal_order: tuple[int, int, int, int] | None = None,
        fourier_harmonics: dict[int, int] | None = None,
        max_p: int = 2,
        max_q: int = 2,
        max_P: int = 1,  # noqa: N803 (Box-Jenkins notation: capital letters are the seasonal orders)
        max_Q: int = 1,  # noqa: N803
        harmonic_grid: tuple[int, ...] = DEFAULT_HARMONIC_GRID,
        max_sarima_period: int = 24,
        trend: bool = True,
        transform: str = "auto",
    ) -> None:
        super().__init__(seasonal_periods=seasonal_periods, outlier_limit=outlier_limit)
        self.order = tuple(order) if order is not None else None
        self.seasonal_order = tuple(seasonal_order) if seasonal_order is not None else None
        self.fourier_harmonics = dict(fourier_harmonics) if fourier_harmonics is not None else None
        self.max_p, self.max_q, self.max_P, self.max_Q = max_p, max_q, max_P, max_Q
        self.harmonic_grid = tuple(harmonic_grid)
        self.max_sarima_period = max_sarima_period
        self.trend = trend
        self.transform = transform
        self._arma_results = None

    # Fitted statsmodels results hold the Kalman filter output (hundreds of MB for s=24); keep only
    # what is needed to rebuild them, and refilter lazily after unpickling.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_arma_results"] = None
        return state

    def tuned_params(self) -> dict[str, Any]:
        return {
            "order": self.order_,
            "seasonal_order": self.seasonal_order_,
            "fourier_harmonics": dict(self.harmonics_),
        }

    def min_length(self) -> int:
        return max(16, 2 * self.season_length)

    # -- fit --------------------------------------------------------------------------------------
    def _design(self, positions: np.ndarray, harmonics: dict[int, int]) -> np.ndarray:
        base = [np.ones_like(positions, dtype=float)]
        if self.trend:
            base.append(positions / self.n_train_)
        return np.column_stack([*base, fourier_design(positions, harmonics)])

    def _fit(self, y: pd.Series) -> None:
        self.transform_ = LogTransform.for_values(y.to_numpy(), self.transform)
        z = self.transform_.forward(y.to_numpy())
        self.n_train_ = len(z)
        positions = np.arange(len(z), dtype=float)
        self.harmonics_ = (
            {int(p): int(k) for p, k in self.fourier_harmonics.items()}
            if self.fourier_harmonics is not None
            else self._select_harmonics(z, positions)
        )
        design = self._design(positions, self.harmonics_)
        self.coef_, *_ = np.linalg.lstsq(design, z, rcond=None)
        residuals = z - design @ self.coef_
        self.sarima_period_ = next(
            (p for p in (self.periods_ or ()) if p <= self.max_sarima_period and p < len(z) // 3), 0
        )
        if self.order is not None:
            self.order_ = tuple(self.order)
            self.seasonal_order_ = tuple(self.seasonal_order) if self.seasonal_order else (0, 0, 0, 0)
            self._arma_results = self._fit_arma(residuals, self.order_, self.seasonal_order_)
        else:
            self.order_, self.seasonal_order_, self._arma_results = self._select_orders(residuals)
        self.residuals_ = residuals
        self.arma_params_ = np.asarray(self._arma_results.params)
        self.aic_ = float(self._arma_results.aic)

    def _select_harmonics(self, z: np.ndarray, positions: np.ndarray) -> dict[int, int]:
        """Harmonics per period, shortest period first, each by BIC given the ones already chosen."""
        chosen: dict[int, int] = {}
        for period in self.periods_ or ():
            best_k, best_bic = 0, np.inf
            for k in sorted({min(k, period // 2) for k in self.harmonic_grid}):
                design = self._design(positions, {**chosen, period: k})
                coef, *_ = np.linalg.lstsq(design, z, rcond=None)
                rss = float(np.sum((z - design @ coef) ** 2))
                n = len(z)
                bic = n * np.log(max(rss, 1e-300) / n) + design.shape[1] * np.log(n)
                if bic < best_bic:
                    best_k, best_bic = k, bic
            chosen[period] = best_k
        return chosen

    @staticmethod
    def _fit_arma(residuals: np.ndarray, order: tuple, seasonal_order: tuple):
        with warnings.catch_warnings():
            # Convergence chatter from the optimiser: a poor fit loses on AIC anyway.
            warnings.simplefilter("ignore")
            model = ARIMA(residuals, order=order, seasonal_order=seasonal_order, trend="n")
            if not any(order) and not any(seasonal_order[:3]):
                # White noise: nothing to optimise (innovations_mle needs at least one ARMA term).
                return model.fit(method="statespace")
            return model.fit(method="innovations_mle")

    def _select_orders(self, residuals: np.ndarray):
        best = None
        for p, q in itertools.product(range(self.max_p + 1), range(self.max_q + 1)):
            best = self._keep_better(best, residuals, (p, 0, q), (0, 0, 0, 0))
        s = self.sarima_period_
        if s:
            order = best[0]
            for sp, sq in itertools.product(range(self.max_P + 1), range(self.max_Q + 1)):
                if sp or sq:
                    best = self._keep_better(best, residuals, order, (sp, 0, sq, s))
        return best

    def _keep_better(self, best, residuals, order, seasonal_order):
        try:
            results = self._fit_arma(residuals, order, seasonal_order)
        except (ValueError, np.linalg.LinAlgError):
            return best
        if not np.isfinite(results.aic):
            return best
        if best is None or results.aic < best[2].aic:
            return (order, seasonal_order, results)
        return best

    # -- predict ----------------------------------------------------------------------------------
    @property
    def arma_results(self):
        if self._arma_results is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = ARIMA(
                    self.residuals_, order=self.order_, seasonal_order=self.seasonal_order_, trend="n"
                )
                self._arma_results = model.filter(self.arma_params_)
        return self._arma_results

    def _predict(self, horizon: int, level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        positions = np.arange(self.n_train_, self.n_train_ + horizon, dtype=float)
        deterministic = self._design(positions, self.harmonics_) @ self.coef_
        forecast = self.arma_results.get_forecast(horizon)
        arma_mean = np.asarray(forecast.predicted_mean)
        se = np.sqrt(np.asarray(forecast.var_pred_mean))
        center = deterministic + arma_mean
        half = z_value(level) * se
        inverse = self.transform_.inverse
        return inverse(center), inverse(center - half), inverse(center + half)
