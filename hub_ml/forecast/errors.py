"""Errors raised by the forecasting library."""

from __future__ import annotations


class ForecastInputError(ValueError):
    """The series (or a request against a fitted model) cannot be forecast; the message says why."""


class NotFittedError(RuntimeError):
    """``predict`` was called before ``fit``."""
