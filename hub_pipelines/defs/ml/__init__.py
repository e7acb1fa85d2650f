"""ML: anomaly and forecast models trained into MLflow, the anomalies and forecasts their champions
produce, the weekly retrain_models schedule and the anomaly scoring automation."""

import dagster as dg

from hub_pipelines.defs.ml.assets import anomalies, anomaly_models, forecast_models, forecasts
from hub_pipelines.defs.ml.schedules import (
    ml_automation_sensor,
    retrain_models,
    score_anomalies_job,
    train_models_job,
)

defs = dg.Definitions(
    assets=[anomaly_models, anomalies, forecast_models, forecasts],
    jobs=[train_models_job, score_anomalies_job],
    schedules=[retrain_models],
    sensors=[ml_automation_sensor],
)
