"""Anomaly detection for hub's hourly LLM-traffic series (plain Python: no Dagster here).

Detectors share one walk-forward interface (``fit(history)`` then ``score(series)``, see
``hub_ml.anomaly.base``): ``RollingZScoreDetector``, ``IQRDetector``, ``EWMAControlChartDetector``,
``SeasonalResidualDetector``, ``IsolationForestDetector``, ``LSTMDetector``. ``AnomalyEnsemble`` votes
over them and emits ``AnomalyRecord``s; ``evaluate_windows`` measures window-based precision/recall;
``hub_ml.anomaly.model`` wraps a fitted ensemble as an MLflow pyfunc model and trains/promotes it.
"""

from hub_ml.anomaly.base import (
    OUTPUT_COLUMNS,
    SeasonalBaseline,
    WalkForwardDetector,
    infer_period,
)
from hub_ml.anomaly.ensemble import (
    RECORD_COLUMNS,
    AnomalyEnsemble,
    AnomalyRecord,
    combine,
    default_detectors,
    records_frame,
)
from hub_ml.anomaly.evaluation import DEFAULT_TOLERANCE, WindowMetrics, evaluate_windows, label_windows
from hub_ml.anomaly.isolation_forest import IsolationForestDetector
from hub_ml.anomaly.lstm import LSTMDetector
from hub_ml.anomaly.statistical import (
    EWMAControlChartDetector,
    IQRDetector,
    RollingZScoreDetector,
    SeasonalResidualDetector,
)

__all__ = [
    "OUTPUT_COLUMNS",
    "RECORD_COLUMNS",
    "DEFAULT_TOLERANCE",
    "AnomalyEnsemble",
    "AnomalyRecord",
    "EWMAControlChartDetector",
    "IQRDetector",
    "IsolationForestDetector",
    "LSTMDetector",
    "RollingZScoreDetector",
    "SeasonalBaseline",
    "SeasonalResidualDetector",
    "WalkForwardDetector",
    "WindowMetrics",
    "combine",
    "default_detectors",
    "evaluate_windows",
    "infer_period",
    "label_windows",
    "records_frame",
]
