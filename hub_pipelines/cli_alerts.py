"""`hub alerts`: list, acknowledge, silence and evaluate alerts, and check a rules file."""

from __future__ import annotations

import getpass
import json
from datetime import UTC, datetime

import click

from hub_pipelines import settings

_WAREHOUSE = click.option(
    "--warehouse-url", default=None, help="SQLAlchemy URL (default: HUB_WAREHOUSE_URL or the DuckDB file)."
)


def jsonable(row: dict) -> dict:
    from hub_pipelines.alerts.delivery import jsonable as convert

    return convert(row)


def _warehouse(url: str | None):
    from hub_pipelines.warehouse import Warehouse

    warehouse = Warehouse(url or settings.warehouse_url())
    warehouse.create_tables()
    return warehouse


def _when(value) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if isinstance(value, datetime) else ""


@click.group()
def alerts() -> None:
    """Alerts: list, acknowledge, silence, evaluate; check a rules file."""


@alerts.command("list")
@click.option(
    "--status",
    "status",
    default="active",
    show_default=True,
    type=click.Choice(["active", "open", "acknowledged", "resolved", "all"]),
    help="active = open or acknowledged.",
)
@click.option("--tenant", default=None, help="Only this tenant's alerts.")
@click.option("--rule", default=None, help="Only this rule's alerts.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1))
@click.option("--format", "fmt", default="table", show_default=True, type=click.Choice(["table", "json"]))
@_WAREHOUSE
def list_command(status, tenant, rule, limit, fmt, warehouse_url) -> None:
    """List alerts, newest first."""
    from hub_pipelines.alerts import ACTIVE, STATUSES, list_alerts

    statuses = {"active": ACTIVE, "all": STATUSES}.get(status, (status,))
    warehouse = _warehouse(warehouse_url)
    try:
        rows = list_alerts(warehouse, statuses=statuses, tenant_id=tenant, rule_id=rule, limit=limit)
    finally:
        warehouse.engine.dispose()
    if fmt == "json":
        click.echo(json.dumps([jsonable(r) for r in rows], indent=1, default=str))
        return
    if not rows:
        click.echo(f"no {status} alerts")
        return
    header = (
        f"{'ID':<12}  {'STATUS':<12}  {'SEVERITY':<8}  {'RULE':<24}  {'TENANT':<12}  {'OPENED':<16}  SUMMARY"
    )
    click.echo(header)
    for r in rows:
        click.echo(
            f"{r['alert_id']:<12}  {r['status']:<12}  {r['severity']:<8}  {r['rule_id'][:24]:<24}"
            f"  {str(r['tenant_id'])[:12]:<12}  {_when(r['opened_at']):<16}  {str(r['summary'])[:120]}"
        )


@alerts.command("ack")
@click.argument("alert_id")
@click.option("--by", default=None, help="Who acknowledges (default: the current user).")
@_WAREHOUSE
def ack_command(alert_id, by, warehouse_url) -> None:
    """Acknowledge an alert (no reminders; it still resolves when its condition clears)."""
    from hub_pipelines.alerts import AlertNotFound, acknowledge

    warehouse = _warehouse(warehouse_url)
    try:
        row = acknowledge(warehouse, alert_id, by=by or _user())
    except AlertNotFound as exc:
        raise click.ClickException(str(exc)) from None
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        warehouse.engine.dispose()
    click.echo(
        f"alert {row['alert_id']} ({row['rule_id']}, {row['tenant_id']}) acknowledged by {row['acknowledged_by']}"
    )


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        return "unknown"


@alerts.command("silence")
@click.argument("rule_id")
@click.option("--for", "duration", required=True, help="How long, e.g. 30m, 2h, 1d.")
@click.option("--tenant", default=None, help="Only this tenant (default: every tenant).")
@click.option("--reason", default="", help="Why (kept with the silence).")
@click.option(
    "--rules", "rules_path", default=None, help="Rules file (default: HUB_ALERT_RULES or the shipped one)."
)
@_WAREHOUSE
def silence_command(rule_id, duration, tenant, reason, rules_path, warehouse_url) -> None:
    """Silence a rule: its alerts are still opened and resolved, but not sent, until the silence ends."""
    from hub_pipelines.alerts import RuleFileError, load_rules, silence
    from hub_pipelines.alerts.rules import parse_duration

    try:
        ruleset = load_rules(rules_path)
        ruleset.rule(rule_id)
    except RuleFileError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyError:
        raise click.BadParameter(f"no rule {rule_id!r} in {ruleset.source}", param_hint="RULE_ID") from None
    try:
        span = parse_duration(duration)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--for") from None
    warehouse = _warehouse(warehouse_url)
    try:
        row = silence(warehouse, rule_id, span, tenant_id=tenant, reason=reason, by=_user())
    finally:
        warehouse.engine.dispose()
    click.echo(
        f"rule {rule_id} silenced{' for ' + tenant if tenant else ''} until {row['ends_at'].isoformat()}"
    )


@alerts.command("evaluate")
@click.option(
    "--rules", "rules_path", default=None, help="Rules file (default: HUB_ALERT_RULES or the shipped one)."
)
@click.option(
    "--as-of", "as_of", default="latest", show_default=True, help="latest, now, or an ISO-8601 time."
)
@click.option("--send/--no-send", default=True, show_default=True, help="Deliver notifications.")
@_WAREHOUSE
def evaluate_command(rules_path, as_of, send, warehouse_url) -> None:
    """Evaluate the rules once, as the alerts asset does, and print a JSON summary."""
    from hub_pipelines.alerts import RuleFileError, load_rules, run_alerts
    from hub_pipelines.query import QueryError

    try:
        ruleset = load_rules(rules_path)
    except RuleFileError as exc:
        raise click.ClickException(str(exc)) from None
    warehouse = _warehouse(warehouse_url)
    try:
        run = run_alerts(warehouse, ruleset, as_of=as_of, send=send)
    except QueryError as exc:
        raise click.BadParameter(str(exc), param_hint="--as-of") from None
    finally:
        warehouse.engine.dispose()
    click.echo(json.dumps(run.summary(), indent=2, default=str))


@alerts.command("validate")
@click.argument("path", required=False)
def validate_command(path) -> None:
    """Check a rules file (default: HUB_ALERT_RULES or the shipped one) and list its rules."""
    from hub_pipelines.alerts import RuleFileError, load_rules

    try:
        ruleset = load_rules(path)
    except RuleFileError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{ruleset.source}: {len(ruleset.rules)} rules, {len(ruleset.channels)} channels")
    for rule in ruleset.rules:
        channels = ", ".join(c.name for c in ruleset.channels_for(rule)) or "none"
        flags = [
            f for f, on in (("silenced", rule.silenced), ("composite input only", not rule.standalone)) if on
        ]
        click.echo(
            f"  {rule.id:<28} {rule.type:<15} {rule.severity:<8} -> {channels}"
            + (f" ({', '.join(flags)})" if flags else "")
        )


@alerts.command("deliveries")
@click.argument("alert_id", required=False)
@click.option("--format", "fmt", default="table", show_default=True, type=click.Choice(["table", "json"]))
@_WAREHOUSE
def deliveries_command(alert_id, fmt, warehouse_url) -> None:
    """Delivery attempts (all, or one alert's)."""
    from hub_pipelines.alerts import deliveries

    warehouse = _warehouse(warehouse_url)
    try:
        rows = deliveries(warehouse, alert_id)
    finally:
        warehouse.engine.dispose()
    if fmt == "json":
        click.echo(json.dumps([jsonable(r) for r in rows], indent=1, default=str))
        return
    for r in rows:
        click.echo(
            f"{_when(r['attempted_at'])}  {r['alert_id']:<12}  {r['notification']:<9}  {r['channel']:<16}"
            f"  #{r['attempt']}  {r['outcome']:<15}  {r['status_code'] or '':<4}  {r['error'] or ''}"
        )
