"""Forecast accuracy metrics. MAPE and sMAPE are in percent; MASE is unitless; coverage a fraction."""

from __future__ import annotations

import numpy as np

# Actuals this close to zero are left out of MAPE: a percentage error of zero requests is undefined.
ZERO_TOLERANCE = 1e-9


def _arrays(actual, forecast) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(actual, dtype=float).ravel()
    f = np.asarray(forecast, dtype=float).ravel()
    if a.shape != f.shape:
        raise ValueError(f"actual and forecast differ in length: {a.shape} vs {f.shape}")
    return a, f


def mape(actual, forecast) -> float:
    """Mean absolute percentage error (percent), over the points whose actual is not zero."""
    a, f = _arrays(actual, forecast)
    keep = np.abs(a) > ZERO_TOLERANCE
    if not keep.any():
        return float("nan")
    return float(np.mean(np.abs(a[keep] - f[keep]) / np.abs(a[keep])) * 100)


def smape(actual, forecast) -> float:
    """Symmetric MAPE (percent, 0-200): |a - f| / ((|a| + |f|) / 2); 0/0 counts as 0."""
    a, f = _arrays(actual, forecast)
    denominator = (np.abs(a) + np.abs(f)) / 2
    ratio = np.divide(np.abs(a - f), denominator, out=np.zeros_like(a), where=denominator > 0)
    return float(np.mean(ratio) * 100)


def rmse(actual, forecast) -> float:
    a, f = _arrays(actual, forecast)
    return float(np.sqrt(np.mean((a - f) ** 2)))


def mae(actual, forecast) -> float:
    a, f = _arrays(actual, forecast)
    return float(np.mean(np.abs(a - f)))


def seasonal_naive_scale(history, season: int) -> float:
    """In-sample MAE of the seasonal naive forecast (y_t - y_{t-m}): the MASE denominator."""
    y = np.asarray(history, dtype=float)
    m = max(1, int(season))
    if len(y) <= m:
        raise ValueError(f"MASE needs more than one season ({m}) of history, got {len(y)} points")
    return float(np.mean(np.abs(y[m:] - y[:-m])))


def mase(actual, forecast, scale: float) -> float:
    """Mean absolute scaled error (Hyndman & Koehler 2006): MAE / in-sample seasonal naive MAE."""
    if not scale > 0:
        return float("nan")
    return mae(actual, forecast) / scale


def coverage(actual, lower, upper) -> float:
    """Fraction of actuals inside [lower, upper]."""
    a = np.asarray(actual, dtype=float).ravel()
    lo = np.asarray(lower, dtype=float).ravel()
    hi = np.asarray(upper, dtype=float).ravel()
    return float(np.mean((a >= lo) & (a <= hi)))
