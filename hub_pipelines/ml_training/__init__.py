"""Plain-Python glue between the warehouse, hub_ml and MLflow: training series from the rollups,
per-series anomaly and forecast models trained, registered and promoted, their champions' outputs
written to the anomalies and forecasts tables, and the CSV readers of `hub detect`/`hub forecast`.

Importing this package is cheap (the Dagster code location does it at load); `anomaly`, `forecast`
and `registry` import MLflow, torch and statsmodels and are imported where they run.
"""

# Names the Dagster configs default to, kept here so that loading the code location does not
# import the model libraries.
ANOMALY_DETECTORS = ("zscore", "iqr", "ewma", "seasonal", "iforest", "lstm")
ANOMALY_METRICS = ("requests", "error_rate", "latency_p95_ms", "tokens_total", "spend_usd")
FORECAST_MEMBERS = ("seasonal_naive", "sarima", "prophet", "lstm")
FORECAST_HOURLY_METRICS = ("requests", "tokens_total", "latency_p95_ms")
