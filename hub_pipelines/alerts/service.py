"""One evaluation end to end: load the rules, evaluate them as of a moment, update the alerts,
deliver the notifications, record the evaluation. What the `alerts` asset, `hub alerts evaluate`
and the demo call."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from hub_pipelines.alerts.delivery import DeliveryReport, DeliverySettings, deliver
from hub_pipelines.alerts.evaluate import Evaluation, evaluate, hold_open, resolve_as_of
from hub_pipelines.alerts.lifecycle import LifecycleOutcome, apply, list_alerts, record_evaluation
from hub_pipelines.alerts.rules import RuleSet, load_rules
from hub_pipelines.warehouse.store import Warehouse

log = logging.getLogger(__name__)


@dataclass
class AlertRun:
    ruleset: RuleSet
    evaluation: Evaluation
    outcome: LifecycleOutcome
    delivery: DeliveryReport
    seconds: float
    active: list[dict] = field(default_factory=list)

    @property
    def as_of(self) -> datetime:
        return self.evaluation.as_of

    def summary(self) -> dict:
        return {
            "evaluation_id": self.outcome.evaluation_id,
            "as_of": self.as_of.isoformat(),
            "rules_file": self.ruleset.source,
            "rules_evaluated": len(self.evaluation.firings),
            "rule_errors": dict(self.evaluation.errors),
            "firing": self.outcome.firing,
            "opened": len(self.outcome.opened),
            "reopened": len(self.outcome.reopened),
            "resolved": len(self.outcome.resolved),
            "duplicates_suppressed": self.outcome.duplicates_suppressed,
            "silenced_suppressed": self.outcome.silenced_suppressed,
            "notifications": len(self.outcome.notifications),
            "notifications_delivered": self.delivery.notifications_delivered,
            "notifications_failed": self.delivery.notifications_failed,
            "delivery_attempts": self.delivery.attempts,
            "channels_not_configured": self.delivery.not_configured,
            "active_alerts": len(self.active),
            "seconds": round(self.seconds, 3),
        }


def run_alerts(
    warehouse: Warehouse,
    ruleset: RuleSet | None = None,
    *,
    rules_path: str | None = None,
    as_of: str | datetime | None = "latest",
    now: datetime | None = None,
    send: bool = True,
    settings: DeliverySettings | None = None,
    env: Mapping[str, str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    run_id: str | None = None,
    logger: logging.Logger | None = None,
) -> AlertRun:
    """Evaluate the rules (the given RuleSet, else the file at rules_path / HUB_ALERT_RULES / the
    shipped default) as of `as_of` and carry out the lifecycle; send notifications unless
    send=False (then they are left unsent: the next evaluation sends what is still due)."""
    logger = logger or log
    started = time.perf_counter()
    ruleset = ruleset or load_rules(rules_path)
    now = now or datetime.now(UTC)
    # The embedded DuckDB file stays open while the rules are evaluated and the alerts updated,
    # and is let go during delivery (retries may wait seconds; other processes need the file).
    with hold_open(warehouse):
        moment = resolve_as_of(warehouse, as_of, now=now)
        evaluation = evaluate(warehouse, ruleset, moment)
        outcome = apply(warehouse, ruleset, evaluation, now=now)
    if send:
        report = deliver(warehouse, outcome, ruleset, settings, env=env, sleep=sleep, logger=logger)
    else:
        report = DeliveryReport()
    with hold_open(warehouse):
        record_evaluation(
            warehouse, outcome, evaluation, ruleset,
            sent=report.notifications_delivered, failed=report.notifications_failed, run_id=run_id, now=now,
        )  # fmt: skip
        active = list_alerts(warehouse, limit=None)
    run = AlertRun(ruleset, evaluation, outcome, report, time.perf_counter() - started, active)
    logger.info(
        "alerts as of %s: %d firing, %d opened, %d resolved, %d duplicates and %d silenced suppressed",
        moment.isoformat(), outcome.firing, len(outcome.opened), len(outcome.resolved),
        outcome.duplicates_suppressed, outcome.silenced_suppressed,
    )  # fmt: skip
    return run
