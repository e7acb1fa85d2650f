"""Alerts: rules from YAML, evaluation on the query interface and the ML tables, the lifecycle of
stored alerts (open, acknowledged, resolved; duplicates and silenced rules suppressed and counted)
and delivery to webhooks, Slack and email with retries. Plain Python: no Dagster import here; the
`alerts` asset (hub_pipelines.defs.publish) and `hub alerts` are built on `run_alerts`.

    from hub_pipelines.alerts import load_rules, run_alerts
    run = run_alerts(warehouse, load_rules("rules.yaml"), as_of="latest")
    run.summary()
"""

from hub_pipelines.alerts.delivery import DeliveryReport, DeliverySettings, build_transport, deliver
from hub_pipelines.alerts.evaluate import Evaluation, Firing, evaluate, latest_forecasts, resolve_as_of
from hub_pipelines.alerts.lifecycle import (
    ACTIVE,
    STATUSES,
    AlertNotFound,
    acknowledge,
    apply,
    deliveries,
    list_alerts,
    open_at,
    silence,
)
from hub_pipelines.alerts.rules import (
    RULES_ENV,
    RuleFileError,
    RuleSet,
    default_rules_path,
    load_rules,
    parse_rules,
    rules_path,
)
from hub_pipelines.alerts.service import AlertRun, run_alerts

__all__ = [
    "ACTIVE",
    "RULES_ENV",
    "STATUSES",
    "AlertNotFound",
    "AlertRun",
    "DeliveryReport",
    "DeliverySettings",
    "Evaluation",
    "Firing",
    "RuleFileError",
    "RuleSet",
    "acknowledge",
    "apply",
    "build_transport",
    "default_rules_path",
    "deliver",
    "deliveries",
    "evaluate",
    "latest_forecasts",
    "list_alerts",
    "load_rules",
    "open_at",
    "parse_rules",
    "resolve_as_of",
    "rules_path",
    "run_alerts",
    "silence",
]
