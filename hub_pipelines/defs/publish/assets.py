"""Publish: the `alerts` asset and the compliance, forecast and operations report assets.

`alerts` evaluates the rules file after the rollups, anomalies or forecasts change (declarative
automation, `publish_automation_sensor`); the reports are partitioned by UTC day and tenant and
materialised by the `daily_reports` schedule for the day before. The domain logic lives in
hub_pipelines.alerts and hub_pipelines.reports (no Dagster there).
"""

from collections import Counter
from datetime import UTC, date, datetime

import dagster as dg
import sqlalchemy as sa
from pydantic import Field

from hub_pipelines.alerts import RuleFileError, load_rules, run_alerts
from hub_pipelines.defs.ingest.assets import DEAD_LETTER_EVENTS
from hub_pipelines.defs.publish.partitions import REPORT_PARTITIONS
from hub_pipelines.defs.rollups.assets import (
    DAILY_COMPLIANCE,
    DAILY_COST,
    DAILY_METRICS,
    DAILY_SECURITY,
    HOURLY,
)
from hub_pipelines.reports import ReportContext, build_report, reports_dir, to_markdown, write_report
from hub_pipelines.resources import WarehouseResource
from hub_pipelines.resources.notifiers import (
    EmailNotifierResource,
    SlackNotifierResource,
    WebhookNotifierResource,
    delivery_settings,
)
from hub_pipelines.warehouse import tables

ALERTS = dg.AssetKey("alerts")
# Written by the ML assets (hub_pipelines.defs.ml); declared here so alerts and reports follow them.
ANOMALIES = dg.AssetKey("anomalies")
FORECASTS = dg.AssetKey("forecasts")
COMPLIANCE_REPORT = dg.AssetKey("compliance_report")
FORECAST_REPORT = dg.AssetKey("forecast_report")
OPERATIONS_REPORT = dg.AssetKey("operations_report")
REPORT_KEYS = (COMPLIANCE_REPORT, FORECAST_REPORT, OPERATIONS_REPORT)
PUBLISH_GROUP = "publish"

# Alerts are evaluated when any hour of the rollups, or the anomalies or forecasts, were
# materialised since the last evaluation, once none of them is still being written. (Not eager():
# most hourly partitions are never materialised, which eager() would wait for.)
ALERTS_CONDITION = (
    dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("evaluate_when_data_changes")


class AlertsConfig(dg.Config):
    rules_path: str | None = Field(
        default=None, description="Rules file; unset: HUB_ALERT_RULES, else the rules shipped with hub."
    )
    as_of: str = Field(
        default="latest",
        description="latest: the end of the newest rolled-up hour; now: the clock; or an ISO-8601 time.",
    )
    send: bool = Field(default=True, description="Deliver notifications (false: evaluate and store only).")
    max_attempts: int = Field(default=4, ge=1, description="Delivery attempts per notification and channel.")
    backoff_s: float = Field(default=0.5, ge=0, description="First retry delay; doubles each attempt.")
    backoff_max_s: float = Field(
        default=30.0, ge=0, description="Cap on a retry delay (Retry-After included)."
    )
    timeout_s: float = Field(default=10.0, gt=0, description="Per delivery attempt.")


def _alerts_table(rows: list[dict], limit: int = 50) -> str:
    if not rows:
        return "_no active alerts_"
    lines = [
        "| alert | rule | severity | tenant | status | opened | summary |",
        "|---|---|---|---|---|---|---|",
    ]
    for a in rows[:limit]:
        summary = str(a["summary"]).replace("|", "\\|")
        lines.append(
            f"| {a['alert_id']} | {a['rule_id']} | {a['severity']} | {a['tenant_id']} | {a['status']} |"
            f" {a['opened_at']:%Y-%m-%d %H:%M} | {summary[:200]} |"
        )
    if len(rows) > limit:
        lines.append(f"\n_{len(rows) - limit} more_")
    return "\n".join(lines)


@dg.asset(
    key=ALERTS,
    group_name=PUBLISH_GROUP,
    kinds={"sql"},
    description="Alert rules (YAML) evaluated on the rollups, anomalies and forecasts: alerts opened,"
    " de-duplicated, silenced, acknowledged and resolved in the alerts table; notifications delivered to"
    " webhooks, Slack and email with every attempt in alert_deliveries.",
    deps=[HOURLY, ANOMALIES, FORECASTS],
    automation_condition=ALERTS_CONDITION,
    check_specs=[
        dg.AssetCheckSpec(
            "alert_rules_evaluated",
            asset=ALERTS,
            description="Every rule of the rules file could be evaluated.",
        ),
        dg.AssetCheckSpec(
            "alert_deliveries_succeeded",
            asset=ALERTS,
            description="Every notification reached every configured channel (after retries).",
        ),
    ],
    op_tags={"hub/kind": "alerts"},
)
def alerts(
    context: dg.AssetExecutionContext,
    config: AlertsConfig,
    warehouse: WarehouseResource,
    webhook_notifier: WebhookNotifierResource,
    slack_notifier: SlackNotifierResource,
    email_notifier: EmailNotifierResource,
):
    """Evaluate the alert rules and carry out the alert lifecycle and delivery."""
    try:
        ruleset = load_rules(config.rules_path)
    except RuleFileError as exc:
        raise dg.Failure(description=str(exc)) from None
    settings = delivery_settings(
        webhook_notifier, slack_notifier, email_notifier, timeout_s=config.timeout_s,
        max_attempts=config.max_attempts, backoff_s=config.backoff_s, backoff_max_s=config.backoff_max_s,
    )  # fmt: skip
    wh = warehouse.warehouse
    run = run_alerts(
        wh, ruleset, as_of=config.as_of, send=config.send, settings=settings, run_id=context.run_id,
        logger=context.log,
    )  # fmt: skip
    summary = run.summary()
    with wh.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(tables.alerts)).scalar_one()
    yield dg.MaterializeResult(
        asset_key=ALERTS,
        metadata={
            "as_of": summary["as_of"],
            "rules_file": summary["rules_file"],
            "rules_evaluated": summary["rules_evaluated"],
            "firing": summary["firing"],
            "opened": summary["opened"],
            "reopened": summary["reopened"],
            "resolved": summary["resolved"],
            "duplicates_suppressed": summary["duplicates_suppressed"],
            "silenced_suppressed": summary["silenced_suppressed"],
            "notifications_delivered": summary["notifications_delivered"],
            "notifications_failed": summary["notifications_failed"],
            "delivery_attempts": summary["delivery_attempts"],
            "channels_not_configured": summary["channels_not_configured"],
            "active_alerts": summary["active_alerts"],
            "opened_alert_ids": dg.MetadataValue.json(run.outcome.opened),
            "dagster/row_count": int(total),
            "active": dg.MetadataValue.md(_alerts_table(run.active)),
        },
    )
    errors = run.evaluation.errors
    yield dg.AssetCheckResult(
        check_name="alert_rules_evaluated",
        asset_key=ALERTS,
        passed=not errors,
        metadata={"rules_evaluated": summary["rules_evaluated"], "errors": dg.MetadataValue.json(errors)},
    )
    yield dg.AssetCheckResult(
        check_name="alert_deliveries_succeeded",
        asset_key=ALERTS,
        passed=run.delivery.notifications_failed == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "notifications_delivered": run.delivery.notifications_delivered,
            "notifications_failed": run.delivery.notifications_failed,
            "channels_not_configured": run.delivery.not_configured,
        },
    )


# -- reports ------------------------------------------------------------------------------------------------

_DATE = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="date")
REPORT_DEPS = {
    "compliance": [
        dg.AssetDep(DAILY_COMPLIANCE, partition_mapping=_DATE),
        dg.AssetDep(DAILY_SECURITY, partition_mapping=_DATE),
        dg.AssetDep(DEAD_LETTER_EVENTS),
        dg.AssetDep(ALERTS),
    ],
    "forecast": [dg.AssetDep(FORECASTS), dg.AssetDep(DAILY_METRICS, partition_mapping=_DATE)],
    "operations": [
        dg.AssetDep(DAILY_METRICS, partition_mapping=_DATE),
        dg.AssetDep(DAILY_COST, partition_mapping=_DATE),
        dg.AssetDep(DAILY_SECURITY, partition_mapping=_DATE),
        dg.AssetDep(DAILY_COMPLIANCE, partition_mapping=_DATE),
        dg.AssetDep(ALERTS),
    ],
}
REPORT_DESCRIPTIONS = {
    "compliance": "Compliance report per tenant and day: compliance rate by policy category and its 7-day"
    " trend, violations with the assets and policies involved, security detections by severity and threat"
    " type, dead letters by reason, and an audit summary of what ran. HTML and Markdown under"
    " $HUB_HOME/reports/<tenant>/<day>/.",
    "forecast": "Forecast report per tenant and day: for the key series, history, the newest forecast and its"
    " 95% band, backtest scores and the champion model version (forecasts table, MLflow).",
    "operations": "Operations summary per tenant and day: requests, p95 latency, error rate, spend, cost per"
    " request, security detections, compliance and alerts, each against the day before.",
}


class ReportConfig(dg.Config):
    output_dir: str | None = Field(
        default=None, description="Where reports are written; unset: $HUB_HOME/reports."
    )


def _audit_extras(context: dg.AssetExecutionContext, start: datetime, end: datetime, deps) -> dict:
    """Dagster's side of the audit summary: runs started on the day, and each dependency's latest
    materialisation."""
    records = context.instance.get_run_records(
        filters=dg.RunsFilter(created_after=start, created_before=end), limit=5000
    )
    counts = Counter((r.dagster_run.job_name, r.dagster_run.status.value) for r in records)
    runs = [{"job": j, "status": s.lower(), "runs": n} for (j, s), n in sorted(counts.items())]
    latest = []
    for dep in deps:
        event = context.instance.get_latest_materialization_event(dep.asset_key)
        if event is not None:
            at = datetime.fromtimestamp(event.timestamp, UTC)
            latest.append(
                {
                    "asset": dep.asset_key.to_user_string(),
                    "at": f"{at:%Y-%m-%d %H:%M UTC}",
                    "run_id": event.run_id[:8],
                }
            )
    return {"dagster_runs": runs, "materializations": latest}


def _report_asset(name: str):
    key = dg.AssetKey(f"{name}_report")

    @dg.asset(
        key=key,
        group_name=PUBLISH_GROUP,
        kinds={"html", "markdown"},
        description=REPORT_DESCRIPTIONS[name],
        deps=REPORT_DEPS[name],
        partitions_def=REPORT_PARTITIONS,
        op_tags={"hub/kind": "report"},
    )
    def _report(context: dg.AssetExecutionContext, config: ReportConfig, warehouse: WarehouseResource):
        keys = context.partition_key.keys_by_dimension
        day = date.fromisoformat(keys["date"])
        tenant_id = keys["tenant"]
        ctx = ReportContext(warehouse.warehouse, tenant_id, day, datetime.now(UTC))
        ctx.extras.update(_audit_extras(context, ctx.start, ctx.end, REPORT_DEPS[name]))
        report = build_report(name, ctx)
        root = config.output_dir or str(reports_dir())
        written = write_report(report, root)
        context.log.info(f"{name} report for {tenant_id} {day}: {written.html}")
        numbers = {k: float(v) for k, v in report.summary.items() if isinstance(v, (int, float)) and v == v}
        return dg.MaterializeResult(
            metadata={
                "tenant": tenant_id,
                "day": day.isoformat(),
                "html": dg.MetadataValue.path(str(written.html)),
                "markdown": dg.MetadataValue.path(str(written.markdown)),
                "charts": written.charts,
                "sections": ", ".join(s.title for s in report.sections),
                **numbers,
                "report": dg.MetadataValue.md(to_markdown(report)),
            }
        )

    _report.__name__ = f"{name}_report"
    return _report


compliance_report = _report_asset("compliance")
forecast_report = _report_asset("forecast")
operations_report = _report_asset("operations")

alerts_job = dg.define_asset_job(
    "alerts_job", selection=dg.AssetSelection.assets(ALERTS), description="Evaluate the alert rules now."
)
reports_job = dg.define_asset_job(
    "reports_job",
    selection=dg.AssetSelection.assets(*REPORT_KEYS),
    description="The compliance, forecast and operations reports of one day and tenant (daily_reports).",
)
