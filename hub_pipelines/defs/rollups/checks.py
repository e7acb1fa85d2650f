"""Checks on the rollups that run on their own (the write-time totals checks are on the assets)."""

from datetime import UTC, datetime, timedelta

import dagster as dg
from pydantic import Field

from hub_pipelines.defs.rollups.assets import HOURLY
from hub_pipelines.resources import WarehouseResource
from hub_pipelines.warehouse import rollups


class RollupsCurrentConfig(dg.Config):
    lookback_hours: int = Field(default=72, description="Hours before the last ended one that are checked.")
    grace_hours: int = Field(
        default=1, description="Ended hours younger than this may still be waiting for their refresh run."
    )


@dg.asset_check(
    asset=HOURLY,
    description="Every recent hour with events is rolled up from the events it has now: no hour made stale by"
    " late events and left so, none never rolled up.",
)
def hourly_rollups_current(config: RollupsCurrentConfig, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    now = datetime.now(UTC)
    end = rollups.floor_to(now, timedelta(hours=1)) - timedelta(hours=config.grace_hours)
    start = end - timedelta(hours=config.lookback_hours)
    stale = rollups.stale_hours(warehouse.warehouse, start, end)
    return dg.AssetCheckResult(
        passed=not stale,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "checked_from": start.isoformat(),
            "checked_to": end.isoformat(),
            "stale_hours": len(stale),
            "examples": dg.MetadataValue.json(stale[:20]),
        },
    )


rollups_checks_job = dg.define_asset_job(
    "rollups_checks_job",
    selection=dg.AssetSelection.checks(hourly_rollups_current),
    description="Check that recent hours are rolled up from the events they have now.",
)
rollups_checks_schedule = dg.ScheduleDefinition(
    name="rollups_checks_schedule",
    job=rollups_checks_job,
    cron_schedule="40 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Hourly at :40, after the refresh runs of late events have had their time.",
)
