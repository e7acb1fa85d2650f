"""Isolation Forest over engineered, causal features of one or several metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.signal import lfilter
from sklearn.ensemble import IsolationForest

from hub_ml.anomaly.base import SeasonalBaseline, SegmentScores, WalkForwardDetector, signed_log1p


@dataclass
class _ForestModel:
    forest: IsolationForest
    center: float
    spread: float
    units: np.ndarray
    columns: int
    low: np.ndarray
    high: np.ndarray
    scale: np.ndarray


def _column_units(values: np.ndarray) -> np.ndarray:
    units = []
    for column in values.T:
        positive = np.abs(column[~np.isnan(column) & (column != 0)])
        units.append(float(np.median(positive)) / 20.0 if len(positive) else 1.0)
    return np.array(units)


class IsolationForestDetector(WalkForwardDetector):
    """Isolation Forest on features of the target and, given a DataFrame, of the other metrics.

    Features at t (all from values at or before t): for the target the residual standardised against
    the seasonal baseline, its EWMA (sustained shifts) and 3-point mean, the first difference and the
    difference from the same hour a day before (both in noise units), the transformed value, hour of
    day and day of week (sin/cos); for each further column of a DataFrame the transformed value, its
    first difference and its difference from a day before. The anomaly score is standardised by the
    training scores' median and MAD; an alarm is ``threshold`` robust sigmas above the median.
    lower/upper come from the seasonal baseline (a forest has no expected value of its own).

    A forest isolates a 5-sigma and a 50-sigma point at about the same depth, and it only isolates
    through splits on the features where a point stands out, so it is the ensemble's weakest member on
    single-metric spikes (tried: fewer features and tail-extrapolated thresholds did worse on the
    synthetic benchmark); its use is context the residual detectors do not see. Trees split only
    inside the training range, so a point beyond every training value of a feature is isolated no
    faster than the most extreme training point: the score is raised to ``excess / range_threshold``,
    where ``excess`` is how far the point's residual lies past its training range, in robust sigmas.
    """

    name = "iforest"

    def __init__(
        self,
        *,
        threshold: float = 12.0,
        n_estimators: int = 100,
        max_samples: int | str = 256,
        random_state: int = 0,
        range_sigmas: float = 4.0,
        range_threshold: float = 8.0,
        **base: Any,
    ) -> None:
        super().__init__(threshold=threshold, **base)
        self.range_threshold = range_threshold
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.random_state = random_state
        self.range_sigmas = range_sigmas

    def _features(
        self, values: np.ndarray, index: pd.DatetimeIndex, baseline: SeasonalBaseline, units: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        y = baseline.forward(values[:, 0])
        expected, _ = baseline.expected(y, index)
        sigma = baseline.sigma(expected, index)
        z = np.nan_to_num(np.clip((y - expected) / sigma, -50, 50), nan=0.0)
        period = baseline.period or 24
        lag = min(period, len(y) - 1) if len(y) > 1 else 1
        hours = index.hour.to_numpy() + index.minute.to_numpy() / 60.0
        dow = index.dayofweek.to_numpy()
        columns = [
            z,  # the value against its hour-of-day/day-of-week expectation
            lfilter([0.2], [1.0, -0.8], z),  # sustained shifts
            pd.Series(z).rolling(3, min_periods=1).mean().to_numpy(),  # short rolling mean
            _diff(y, 1) / sigma,
            _diff(y, lag) / sigma,  # change from the same hour a day before
            y,
            np.sin(2 * np.pi * hours / 24),
            np.cos(2 * np.pi * hours / 24),
            np.sin(2 * np.pi * dow / 7),
            np.cos(2 * np.pi * dow / 7),
        ]
        for j in range(1, values.shape[1]):
            other = signed_log1p(values[:, j] / units[j])
            columns += [other, _diff(other, 1), _diff(other, lag)]
        features = np.nan_to_num(np.column_stack(columns), nan=0.0)
        return features, expected, sigma

    def _fit_model(self, values, index, baseline, previous):
        units = _column_units(values)
        features, _, _ = self._features(values, index, baseline, units)
        rows = ~np.isnan(values[:, 0])
        forest = IsolationForest(
            n_estimators=self.n_estimators,
            max_samples=self.max_samples
            if isinstance(self.max_samples, str)
            else min(self.max_samples, rows.sum()),
            random_state=self.random_state,
            n_jobs=1,
        ).fit(features[rows])
        scores = -forest.score_samples(features[rows])
        center = float(np.median(scores))
        spread = float(1.4826 * np.median(np.abs(scores - center))) or float(np.std(scores)) or 1e-3
        train = features[rows]
        scale = 1.4826 * np.median(np.abs(train - np.median(train, axis=0)), axis=0)
        scale = np.where(scale > 0, scale, np.std(train, axis=0) + 1e-9)
        return _ForestModel(
            forest=forest,
            center=center,
            spread=spread,
            units=units,
            columns=values.shape[1],
            low=train.min(axis=0),
            high=train.max(axis=0),
            scale=scale,
        )

    def _score_segment(self, model: _ForestModel, baseline, values, index, start) -> SegmentScores:
        features, expected, sigma = self._features(values, index, baseline, model.units)
        y = baseline.forward(values[start:, 0])
        segment = features[start:]
        scores = -model.forest.score_samples(segment)
        strength = np.maximum((scores - model.center) / (self.threshold * model.spread), 0.0)
        # A tree splits only inside the training range, so a point beyond the most extreme training
        # value is isolated no faster than that value: add how far past the range its own residual
        # lies (the residual only: lagged and smoothed features would echo a past spike for hours).
        beyond = np.maximum(segment[:, 0] - model.high[0], model.low[0] - segment[:, 0]) / model.scale[0]
        strength = np.maximum(strength, beyond / self.range_threshold)
        direction = np.where(y >= expected[start:], 1.0, -1.0)
        exp_seg, sig_seg = expected[start:], sigma[start:]
        return SegmentScores(
            expected=exp_seg,
            lower=exp_seg - self.range_sigmas * sig_seg,
            upper=exp_seg + self.range_sigmas * sig_seg,
            deviation=direction * strength,
        )


def _diff(y: np.ndarray, lag: int) -> np.ndarray:
    out = np.full(len(y), np.nan)
    if lag < len(y):
        out[lag:] = y[lag:] - y[:-lag]
    return out
