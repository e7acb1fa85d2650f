"""Rollups: hourly and daily partitioned aggregates, kept current as late events land, and retention."""

import dagster as dg

from hub_pipelines.defs.rollups.assets import (
    daily_rollups,
    daily_rollups_job,
    hourly_rollups,
    hourly_rollups_job,
)
from hub_pipelines.defs.rollups.checks import (
    hourly_rollups_current,
    rollups_checks_job,
    rollups_checks_schedule,
)
from hub_pipelines.defs.rollups.retention import retention_job, retention_schedule
from hub_pipelines.defs.rollups.sensors import late_events_rollup_sensor, rollups_automation_sensor

defs = dg.Definitions(
    assets=[hourly_rollups, daily_rollups],
    asset_checks=[hourly_rollups_current],
    jobs=[hourly_rollups_job, daily_rollups_job, rollups_checks_job, retention_job],
    sensors=[late_events_rollup_sensor, rollups_automation_sensor],
    schedules=[retention_schedule, rollups_checks_schedule],
)
