"""Jobs, the weekly `retrain_models` schedule and the automation sensor of the ML assets."""

import dagster as dg

from hub_pipelines.defs.ml.assets import (
    ANOMALIES,
    ANOMALY_MODELS,
    FORECAST_MODELS,
    FORECASTS,
    TRAINING_TAGS,
)

train_models_job = dg.define_asset_job(
    "train_models_job",
    selection=dg.AssetSelection.assets(ANOMALY_MODELS, FORECAST_MODELS, FORECASTS),
    tags=TRAINING_TAGS,
    description="Retrain the anomaly and forecast models (MLflow; champions promoted only when better),"
    " then store the champions' forecasts. Run by the retrain_models schedule, or on demand.",
)

score_anomalies_job = dg.define_asset_job(
    "score_anomalies_job",
    selection=dg.AssetSelection.assets(ANOMALIES),
    tags={"hub/kind": "scoring"},
    description="Score hours with the champion anomaly models (a partition or a backfill range).",
)

retrain_models = dg.ScheduleDefinition(
    name="retrain_models",
    job=train_models_job,
    cron_schedule="0 3 * * 1",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    tags=TRAINING_TAGS,
    description="Every Monday at 03:00 UTC: retrain the anomaly and forecast models on the newest rollups"
    " and refresh the forecasts.",
)

ml_automation_sensor = dg.AutomationConditionSensorDefinition(
    "ml_automation_sensor",
    target=dg.AssetSelection.assets(ANOMALIES),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    run_tags={"hub/kind": "scoring"},
    description="Scores each hour with the champion anomaly models once its hourly rollup is written"
    " (again when late events refresh it).",
)
