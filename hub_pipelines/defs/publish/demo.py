"""The publish step of `hub demo`: evaluate the alerts, then materialise the reports of the last day
with data for every tenant, through Dagster on the given instance.

    from hub_pipelines.defs.publish.demo import run_publish
    result = run_publish(instance)          # after ingest, rollups (and the ML assets, if any)
    for line in result.lines():
        click.echo(line)
"""

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import sqlalchemy as sa

from hub_pipelines import settings
from hub_pipelines.alerts.evaluate import resolve_as_of
from hub_pipelines.defs.publish.assets import ALERTS, AlertsConfig, ReportConfig
from hub_pipelines.defs.publish.partitions import ensure_tenants, report_partition_key
from hub_pipelines.reports import reports_dir, tenants_with_data
from hub_pipelines.warehouse import Warehouse, tables

# The demo prints its own summary; the runs' DEBUG events stay in the instance (the UI shows them).
QUIET = {"console": {"config": {"log_level": "WARNING"}}}


@dataclass
class PublishResult:
    reports_dir: Path
    day: str | None
    as_of: str
    reports: list[dict] = field(default_factory=list)  # tenant, report, html, markdown
    fired: list[dict] = field(default_factory=list)  # alerts firing at the evaluation: id, rule, ...
    alerts_summary: dict = field(default_factory=dict)
    run_ids: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        s = self.alerts_summary
        out = [
            f"alerts as of {self.as_of}: {s.get('firing', 0)} firing, {s.get('opened', 0)} opened,"
            f" {s.get('resolved', 0)} resolved, {s.get('duplicates_suppressed', 0)} duplicates suppressed,"
            f" {s.get('notifications_delivered', 0)} notifications delivered"
            f" ({s.get('channels_not_configured', 0)} channel deliveries not configured)",
        ]
        for alert in self.fired:
            out.append(
                f"   [{alert['severity']}] {alert['alert_id']} {alert['status']:<12} {alert['rule_id']}: {alert['summary']}"
            )
        if self.day is None:
            out.append("reports: no data to report on")
        else:
            out.append(f"reports for {self.day} under {self.reports_dir}:")
            for report in self.reports:
                out.append(f"   {report['tenant']} {report['report']}: {report['html']}")
        return out


def _metadata(result) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        entry = out.setdefault(materialization.asset_key.to_user_string(), {})
        entry[materialization.partition or ""] = {k: v.value for k, v in materialization.metadata.items()}
    return out


def run_publish(
    instance: dg.DagsterInstance | None = None,
    *,
    definitions: dg.Definitions | None = None,
    rules_path: str | None = None,
    as_of: str = "latest",
    send: bool = True,
    output_dir: str | None = None,
    warehouse_url: str | None = None,
    replay_hours: int = 0,
) -> PublishResult:
    """Materialise `alerts` (alerts_job) and the reports of the last day with data (reports_job, one
    run per tenant) on `instance` (default: DagsterInstance.get()). Returns where the reports are
    and which alerts fired.

    replay_hours > 0 first evaluates the rules as of each hour of that many hours before the end
    of the data (plain Python, as the alerts asset would have run live, about 0.3 s an hour on the
    demo's data), so alerts of a generated history open, repeat and resolve before the reports
    are written; `fired` then lists every alert that fired in that window."""
    if definitions is None:
        from hub_pipelines.definitions import defs as definitions
    instance = instance or dg.DagsterInstance.get()
    if replay_hours > 0:
        _replay(warehouse_url, rules_path, replay_hours, send)
    alerts_config = AlertsConfig(rules_path=rules_path, as_of=as_of, send=send)
    result = definitions.resolve_job_def("alerts_job").execute_in_process(
        instance=instance,
        run_config=dg.RunConfig(ops={ALERTS.to_python_identifier(): alerts_config}, loggers=QUIET),
        raise_on_error=True,
    )
    summary = _metadata(result).get("alerts", {}).get("", {})
    warehouse = Warehouse(warehouse_url or settings.warehouse_url())
    run_ids = [result.run_id]
    try:
        moment = (
            datetime.fromisoformat(summary["as_of"]) if summary.get("as_of") else resolve_as_of(warehouse)
        )
        fired = _fired(warehouse, moment, moment - timedelta(hours=replay_hours))
        day = (moment.astimezone(UTC) - timedelta(microseconds=1)).date().isoformat()
        tenants = tenants_with_data(warehouse, day)
    finally:
        warehouse.engine.dispose()
    root = Path(output_dir) if output_dir else reports_dir()
    out = PublishResult(
        root, day if tenants else None, moment.isoformat(), fired=fired, alerts_summary=summary
    )
    ensure_tenants(instance, tenants)
    job = definitions.resolve_job_def("reports_job")
    config = ReportConfig(output_dir=str(root))
    for tenant in tenants:
        run = job.execute_in_process(
            instance=instance,
            partition_key=report_partition_key(day, tenant),
            run_config=dg.RunConfig(
                ops={f"{name}_report": config for name in ("compliance", "forecast", "operations")},
                loggers=QUIET,
            ),
            raise_on_error=True,
        )
        run_ids.append(run.run_id)
        for asset, partitions in sorted(_metadata(run).items()):
            for meta in partitions.values():
                out.reports.append(
                    {
                        "tenant": tenant,
                        "report": asset,
                        "html": str(meta["html"]),
                        "markdown": str(meta["markdown"]),
                    }
                )
    out.run_ids = run_ids
    return out


def _replay(warehouse_url: str | None, rules_path: str | None, hours: int, send: bool) -> None:
    from hub_pipelines.alerts import load_rules, run_alerts
    from hub_pipelines.alerts.evaluate import hold_open

    warehouse = Warehouse(warehouse_url or settings.warehouse_url())
    warehouse.create_tables()
    # A missing channel would be noted once per replayed hour; the alerts run after the replay notes it once.
    quiet = logging.getLogger("hub_pipelines.alerts.replay")
    quiet.setLevel(logging.ERROR)
    try:
        ruleset = load_rules(rules_path)
        end = resolve_as_of(warehouse)
        with hold_open(warehouse):
            for back in range(hours, 0, -1):
                run_alerts(warehouse, ruleset, as_of=end - timedelta(hours=back), send=send, logger=quiet)
    finally:
        warehouse.engine.dispose()


def _fired(warehouse: Warehouse, as_of: datetime, since: datetime) -> list[dict]:
    """Alerts firing as of `as_of`, and any that fired after `since` (a replay)."""
    table = tables.alerts
    when = table.c.last_fired_at == as_of if since >= as_of else table.c.last_fired_at > since
    with warehouse.connect() as conn:
        rows = conn.execute(
            sa.select(table).where(when).order_by(table.c.opened_at, table.c.rule_id)
        ).mappings()
        return [dict(r) for r in rows]
