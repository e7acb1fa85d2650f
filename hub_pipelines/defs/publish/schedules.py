"""The daily_reports schedule: after a UTC day ends (and its rollups have caught up), the
compliance, forecast and operations reports of every tenant with data on that day."""

from datetime import UTC, timedelta

import dagster as dg

from hub_pipelines.defs.publish.assets import reports_job
from hub_pipelines.defs.publish.partitions import ensure_tenants, report_partition_key
from hub_pipelines.reports import tenants_with_data
from hub_pipelines.resources import WarehouseResource

SCHEDULE_NAME = "daily_reports"


@dg.schedule(
    name=SCHEDULE_NAME,
    job=reports_job,
    cron_schedule="30 1 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every day at 01:30 UTC: the reports of the day before, one run per tenant with data on it.",
)
def daily_reports(context: dg.ScheduleEvaluationContext, warehouse: WarehouseResource):
    day = (context.scheduled_execution_time.astimezone(UTC) - timedelta(days=1)).date().isoformat()
    tenants = tenants_with_data(warehouse.warehouse, day)
    if not tenants:
        return dg.SkipReason(f"no tenant has data on {day}")
    # Schedules cannot return dynamic-partition requests (sensors can): add the new tenants here so
    # the run requests below resolve to existing partitions.
    added = ensure_tenants(context.instance, tenants)
    if added:
        context.log.info(f"new tenant partitions: {', '.join(added)}")
    return [
        dg.RunRequest(run_key=f"reports-{day}-{tenant}", partition_key=report_partition_key(day, tenant))
        for tenant in tenants
    ]
