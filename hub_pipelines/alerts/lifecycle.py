"""Alert lifecycle: firings become stored alerts; alerts are suppressed, acknowledged and resolved.

An alert is one rule firing for one group (its fingerprint: the rule id and the labels). Each
evaluation (`apply`), in one transaction:

- a firing with no active alert opens one (status open) and is sent, unless the rule is silenced
  (in the rules file, or by `hub alerts silence`): then it is counted in `silenced_suppressed` and
  not sent; it is sent by a later evaluation once the silence is over and it still fires;
- a firing of an active alert (open or acknowledged) is a duplicate: counted in
  `duplicates_suppressed`, not sent, while the last notification is less than the rule's
  `dedup_window` old (data time); past the window an open alert is sent again as a reminder
  (an acknowledged one never is);
- a firing of an alert resolved within the window re-opens it, counted as a duplicate and not
  sent (a flapping condition sends one notification per window);
- an active alert whose rule was evaluated and no longer fires for its group is resolved
  (automatically: the condition cleared), and the resolution is sent if the opening was; so is
  an alert whose rule left the rules file. Alerts of a rule that failed to evaluate stay as
  they are.

Opened, fired and resolved times are the evaluation's as-of (data time); silences and
acknowledgements are wall-clock.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from hub_pipelines.alerts.evaluate import Evaluation, Firing
from hub_pipelines.alerts.rules import RuleSet
from hub_pipelines.warehouse import tables
from hub_pipelines.warehouse.store import Warehouse

OPEN, ACKNOWLEDGED, RESOLVED = "open", "acknowledged", "resolved"
ACTIVE = (OPEN, ACKNOWLEDGED)
STATUSES = (OPEN, ACKNOWLEDGED, RESOLVED)


class AlertNotFound(LookupError):
    pass


@dataclass
class Notification:
    """A message to send about an alert: opened, reminder (still firing past the window) or resolved."""

    kind: str
    alert: dict[str, Any]
    channels: list[str]


@dataclass
class LifecycleOutcome:
    evaluation_id: str
    as_of: datetime
    firing: int = 0
    opened: list[str] = field(default_factory=list)
    reopened: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    duplicates_suppressed: int = 0
    silenced_suppressed: int = 0
    notifications: list[Notification] = field(default_factory=list)


def new_id() -> str:
    return uuid.uuid4().hex[:12]


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def active_silences(conn, now: datetime) -> list[dict]:
    table = tables.alert_silences
    rows = conn.execute(sa.select(table).where(table.c.starts_at <= now, table.c.ends_at > now)).mappings()
    return [dict(r) for r in rows]


def _silenced(rule, firing: Firing, silences: list[dict], now: datetime) -> bool:
    if rule.is_silenced(now):
        return True
    return any(
        s["rule_id"] == rule.id and (s["tenant_id"] is None or s["tenant_id"] == firing.tenant_id)
        for s in silences
    )


def apply(
    warehouse: Warehouse,
    ruleset: RuleSet,
    evaluation: Evaluation,
    *,
    now: datetime | None = None,
    evaluation_id: str | None = None,
) -> LifecycleOutcome:
    """Store the evaluation's firings as alerts (see the module docstring); returns what changed
    and the notifications to send. Nothing is sent here."""
    now = _utc(now) or datetime.now(UTC)
    as_of = evaluation.as_of
    outcome = LifecycleOutcome(evaluation_id=evaluation_id or new_id(), as_of=as_of)
    firings = evaluation.alerting(ruleset)
    outcome.firing = len(firings)
    rules = {r.id: r for r in ruleset.rules}
    table = tables.alerts
    longest = max([ruleset.dedup_window(r) for r in ruleset.rules] or [timedelta(0)])
    with warehouse.begin() as conn:
        silences = active_silences(conn, now)
        active = {
            row["fingerprint"]: dict(row)
            for row in conn.execute(sa.select(table).where(table.c.status.in_(ACTIVE))).mappings()
        }
        recent_resolved: dict[str, dict] = {}
        for row in conn.execute(
            sa.select(table)
            .where(table.c.status == RESOLVED, table.c.resolved_at >= as_of - longest)
            .order_by(table.c.resolved_at)
        ).mappings():
            recent_resolved[row["fingerprint"]] = dict(row)  # the newest per fingerprint wins

        fired: set[str] = set()
        for firing in firings:
            rule = rules[firing.rule_id]
            key = firing.fingerprint
            if key in fired:
                continue
            fired.add(key)
            window = ruleset.dedup_window(rule)
            silenced = _silenced(rule, firing, silences, now)
            observed = _observed(firing, as_of, now)
            existing = active.get(key)
            if existing is not None:
                update = {**observed, "fired_count": existing["fired_count"] + 1}
                last = _utc(existing["last_notified_at"])
                kind = None
                if silenced:
                    update["silenced_suppressed"] = existing["silenced_suppressed"] + 1
                elif existing["status"] == ACKNOWLEDGED:
                    update["duplicates_suppressed"] = existing["duplicates_suppressed"] + 1
                elif last is None:
                    kind = "opened"
                elif as_of - last < window:
                    update["duplicates_suppressed"] = existing["duplicates_suppressed"] + 1
                else:
                    kind = "reminder"
                conn.execute(
                    sa.update(table).where(table.c.alert_id == existing["alert_id"]).values(**update)
                )
                if silenced:
                    outcome.silenced_suppressed += 1
                elif kind is None:
                    outcome.duplicates_suppressed += 1
                else:
                    outcome.notifications.append(
                        Notification(
                            kind, {**existing, **update}, [c.name for c in ruleset.channels_for(rule)]
                        )
                    )
                continue
            previous = recent_resolved.get(key)
            last = _utc(previous["last_notified_at"]) if previous else None
            if previous is not None and last is not None and as_of - last < window:
                update = {
                    **observed,
                    "status": OPEN,
                    "resolved_at": None,
                    "fired_count": previous["fired_count"] + 1,
                }
                if silenced:
                    update["silenced_suppressed"] = previous["silenced_suppressed"] + 1
                    outcome.silenced_suppressed += 1
                else:
                    update["duplicates_suppressed"] = previous["duplicates_suppressed"] + 1
                    outcome.duplicates_suppressed += 1
                conn.execute(
                    sa.update(table).where(table.c.alert_id == previous["alert_id"]).values(**update)
                )
                outcome.reopened.append(previous["alert_id"])
                continue
            row = {
                "alert_id": new_id(),
                "fingerprint": key,
                "rule_id": firing.rule_id,
                "rule_type": firing.rule_type,
                "tenant_id": firing.tenant_id,
                "labels": json.dumps(firing.labels, sort_keys=True, default=str),
                "status": OPEN,
                "opened_at": as_of,
                "resolved_at": None,
                "acknowledged_at": None,
                "acknowledged_by": None,
                "last_notified_at": None,
                "fired_count": 1,
                "notifications_sent": 0,
                "duplicates_suppressed": 0,
                "silenced_suppressed": 1 if silenced else 0,
                "created_at": now,
                **observed,
            }
            conn.execute(sa.insert(table).values(**row))
            outcome.opened.append(row["alert_id"])
            if silenced:
                outcome.silenced_suppressed += 1
            else:
                outcome.notifications.append(
                    Notification("opened", row, [c.name for c in ruleset.channels_for(rule)])
                )

        for key, row in active.items():
            if key in fired or _utc(row["last_fired_at"]) > as_of:
                continue
            rule = rules.get(row["rule_id"])
            if rule is not None and rule.standalone and row["rule_id"] in evaluation.errors:
                continue  # unknown: the rule could not be evaluated
            if rule is not None and rule.standalone and row["rule_id"] not in evaluation.firings:
                continue  # not evaluated at all
            update = {"status": RESOLVED, "resolved_at": as_of, "updated_at": now}
            conn.execute(sa.update(table).where(table.c.alert_id == row["alert_id"]).values(**update))
            outcome.resolved.append(row["alert_id"])
            notify = rule is None or (rule.notify_resolved and not rule.is_silenced(now))
            if notify and row["last_notified_at"] is not None:
                channels = [c.name for c in ruleset.channels_for(rule)] if rule is not None else []
                outcome.notifications.append(Notification("resolved", {**row, **update}, channels))
    return outcome


def _observed(firing: Firing, as_of: datetime, now: datetime) -> dict[str, Any]:
    return {
        "severity": firing.severity,
        "summary": firing.summary,
        "details": json.dumps(firing.details, sort_keys=True, default=str),
        "value": firing.value,
        "threshold": firing.threshold,
        "last_fired_at": as_of,
        "updated_at": now,
    }


def mark_notified(warehouse: Warehouse, alert_id: str, as_of: datetime, kind: str) -> None:
    """After a notification was delivered (to every configured channel): the dedup window starts
    again from this evaluation (openings and reminders; resolutions only count)."""
    table = tables.alerts
    with warehouse.begin() as conn:
        values: dict[str, Any] = {"notifications_sent": table.c.notifications_sent + 1}
        if kind != "resolved":
            values["last_notified_at"] = as_of
        conn.execute(sa.update(table).where(table.c.alert_id == alert_id).values(**values))


def record_evaluation(
    warehouse: Warehouse,
    outcome: LifecycleOutcome,
    evaluation: Evaluation,
    ruleset: RuleSet,
    *,
    sent: int,
    failed: int,
    run_id: str | None = None,
    now: datetime | None = None,
) -> None:
    with warehouse.begin() as conn:
        conn.execute(
            sa.insert(tables.alert_evaluations).values(
                evaluation_id=outcome.evaluation_id,
                as_of=outcome.as_of,
                evaluated_at=_utc(now) or datetime.now(UTC),
                rules_file=ruleset.source,
                rules_evaluated=len(evaluation.firings),
                rule_errors=json.dumps(evaluation.errors, sort_keys=True),
                firing=outcome.firing,
                opened=len(outcome.opened),
                reopened=len(outcome.reopened),
                duplicates_suppressed=outcome.duplicates_suppressed,
                silenced_suppressed=outcome.silenced_suppressed,
                resolved=len(outcome.resolved),
                notifications_sent=sent,
                notifications_failed=failed,
                run_id=run_id,
            )
        )


# -- reading and acting on alerts (the CLI, the reports) ---------------------------------------------


def _resolve_id(conn, alert_id: str) -> dict:
    table = tables.alerts
    alert_id = (alert_id or "").strip().lower()
    if not re.fullmatch(r"[0-9a-f]{1,32}", alert_id):
        raise AlertNotFound(f"{alert_id!r} is not an alert id (hex digits; hub alerts list shows them)")
    rows = conn.execute(sa.select(table).where(table.c.alert_id.like(f"{alert_id}%"))).mappings().all()
    if not rows:
        raise AlertNotFound(f"no alert with id {alert_id!r} (hub alerts list shows them)")
    exact = [r for r in rows if r["alert_id"] == alert_id]
    if exact:
        return dict(exact[0])
    if len(rows) > 1:
        raise AlertNotFound(f"{alert_id!r} is the start of {len(rows)} alert ids; give more of it")
    return dict(rows[0])


def acknowledge(
    warehouse: Warehouse, alert_id: str, by: str | None = None, now: datetime | None = None
) -> dict:
    """Mark an active alert acknowledged (no reminders; it still resolves when the condition clears)."""
    now = _utc(now) or datetime.now(UTC)
    table = tables.alerts
    with warehouse.begin() as conn:
        row = _resolve_id(conn, alert_id)
        if row["status"] == RESOLVED:
            raise ValueError(f"alert {row['alert_id']} is already resolved (at {row['resolved_at']})")
        if row["status"] == ACKNOWLEDGED:
            return row
        update = {"status": ACKNOWLEDGED, "acknowledged_at": now, "acknowledged_by": by, "updated_at": now}
        conn.execute(sa.update(table).where(table.c.alert_id == row["alert_id"]).values(**update))
        return {**row, **update}


def list_alerts(
    warehouse: Warehouse,
    *,
    statuses: tuple[str, ...] | list[str] = ACTIVE,
    tenant_id: str | None = None,
    rule_id: str | None = None,
    limit: int | None = 200,
) -> list[dict]:
    table = tables.alerts
    clauses = [table.c.status.in_(list(statuses))]
    if tenant_id is not None:
        clauses.append(table.c.tenant_id == tenant_id)
    if rule_id is not None:
        clauses.append(table.c.rule_id == rule_id)
    statement = sa.select(table).where(*clauses).order_by(table.c.opened_at.desc(), table.c.alert_id)
    if limit is not None:
        statement = statement.limit(limit)
    with warehouse.connect() as conn:
        return [dict(r) for r in conn.execute(statement).mappings()]


def open_at(warehouse: Warehouse, moment: datetime, tenant_id: str | None = None) -> list[dict]:
    """Alerts that were active at `moment` (data time): opened at or before it and not resolved by
    then. (An acknowledged alert is active.)"""
    table = tables.alerts
    clauses = [
        table.c.opened_at <= moment,
        sa.or_(table.c.resolved_at.is_(None), table.c.resolved_at > moment),
    ]
    if tenant_id is not None:
        clauses.append(table.c.tenant_id == tenant_id)
    with warehouse.connect() as conn:
        rows = conn.execute(sa.select(table).where(*clauses).order_by(table.c.opened_at, table.c.alert_id))
        return [dict(r) for r in rows.mappings()]


def opened_between(
    warehouse: Warehouse, start: datetime, end: datetime, tenant_id: str | None = None
) -> list[dict]:
    """Alerts first opened in (start, end] (data time: an evaluation as of the end of a day looked
    at that day's data, so its alerts belong to that day, as in `open_at`)."""
    table = tables.alerts
    clauses = [table.c.opened_at > start, table.c.opened_at <= end]
    if tenant_id is not None:
        clauses.append(table.c.tenant_id == tenant_id)
    with warehouse.connect() as conn:
        rows = conn.execute(sa.select(table).where(*clauses).order_by(table.c.opened_at, table.c.alert_id))
        return [dict(r) for r in rows.mappings()]


def deliveries(warehouse: Warehouse, alert_id: str | None = None) -> list[dict]:
    table = tables.alert_deliveries
    statement = sa.select(table).order_by(table.c.attempted_at, table.c.attempt)
    if alert_id is not None:
        statement = statement.where(table.c.alert_id == alert_id)
    with warehouse.connect() as conn:
        return [dict(r) for r in conn.execute(statement).mappings()]


def silence(
    warehouse: Warehouse,
    rule_id: str,
    duration: timedelta,
    *,
    tenant_id: str | None = None,
    reason: str = "",
    by: str | None = None,
    now: datetime | None = None,
) -> dict:
    """Silence a rule (for one tenant, or all) for `duration` from now (wall-clock)."""
    now = _utc(now) or datetime.now(UTC)
    row = {
        "silence_id": new_id(),
        "rule_id": rule_id,
        "tenant_id": tenant_id,
        "starts_at": now,
        "ends_at": now + duration,
        "reason": reason,
        "created_by": by,
        "created_at": now,
    }
    with warehouse.begin() as conn:
        conn.execute(sa.insert(tables.alert_silences).values(**row))
    return row
