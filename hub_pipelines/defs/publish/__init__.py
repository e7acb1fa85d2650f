"""Publish: alerts (rules, lifecycle, delivery) and the compliance, forecast and operations reports."""

import dagster as dg

from hub_pipelines.defs.publish.assets import (
    ALERTS,
    alerts,
    alerts_job,
    compliance_report,
    forecast_report,
    operations_report,
    reports_job,
)
from hub_pipelines.defs.publish.schedules import daily_reports
from hub_pipelines.resources.notifiers import (
    EmailNotifierResource,
    SlackNotifierResource,
    WebhookNotifierResource,
)

publish_automation_sensor = dg.AutomationConditionSensorDefinition(
    "publish_automation_sensor",
    target=dg.AssetSelection.assets(ALERTS),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="Evaluates the alert rules after the rollups, anomalies or forecasts change.",
)

defs = dg.Definitions(
    assets=[alerts, compliance_report, forecast_report, operations_report],
    jobs=[alerts_job, reports_job],
    schedules=[daily_reports],
    sensors=[publish_automation_sensor],
    # Unset fields follow the environment at run time (hub_pipelines.resources.notifiers).
    resources={
        "webhook_notifier": WebhookNotifierResource(),
        "slack_notifier": SlackNotifierResource(),
        "email_notifier": EmailNotifierResource(),
    },
)
