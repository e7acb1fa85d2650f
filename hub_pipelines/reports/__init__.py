"""Reports people read: compliance, forecast and operations, per tenant and day, in self-contained
HTML (charts embedded as PNG data URIs) and Markdown. Plain Python: no Dagster import here; the
report assets (hub_pipelines.defs.publish) and the demo call `generate_report`.

Sections come from providers registered with `register_section(report, order=...)`, so another
module can add one (see hub_pipelines.reports.base).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from hub_pipelines.reports.base import (
    REPORT_SECTION_MODULES,
    REPORTS,
    Chart,
    Note,
    Paragraph,
    Report,
    ReportContext,
    Section,
    SectionProvider,
    Table,
    build_report,
    register_section,
    section_providers,
)
from hub_pipelines.reports.render import WrittenReport, to_html, to_markdown, write_report
from hub_pipelines.warehouse import tables
from hub_pipelines.warehouse.store import Warehouse

__all__ = [
    "REPORTS",
    "REPORT_SECTION_MODULES",
    "Chart",
    "Note",
    "Paragraph",
    "Report",
    "ReportContext",
    "Section",
    "SectionProvider",
    "Table",
    "WrittenReport",
    "build_report",
    "generate_report",
    "register_section",
    "reports_dir",
    "section_providers",
    "tenants_with_data",
    "to_html",
    "to_markdown",
    "write_report",
]


def reports_dir() -> Path:
    """$HUB_HOME/reports (read when called)."""
    from hub_pipelines import settings

    return settings.hub_home() / "reports"


def generate_report(
    warehouse: Warehouse,
    name: str,
    tenant_id: str,
    day: date | str,
    *,
    root: Path | None = None,
    extras: dict[str, Any] | None = None,
    generated_at: datetime | None = None,
) -> tuple[Report, WrittenReport]:
    """Build report `name` (compliance, forecast, operations) for a tenant and a UTC day, and write
    it under root (default $HUB_HOME/reports)."""
    day = date.fromisoformat(day) if isinstance(day, str) else day
    ctx = ReportContext(warehouse, tenant_id, day, generated_at or datetime.now(UTC), dict(extras or {}))
    report = build_report(name, ctx)
    return report, write_report(report, root or reports_dir())


def tenants_with_data(warehouse: Warehouse, day: date | str) -> list[str]:
    """Tenants with events (or rollups) on a UTC day: the tenants that get reports for it."""
    day = date.fromisoformat(day) if isinstance(day, str) else day
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    end = start + timedelta(days=1)
    parts = [
        sa.select(t.c.tenant_id).where(t.c.bucket_start >= start, t.c.bucket_start < end).distinct()
        for t in (
            tables.rollup_metrics_hourly,
            tables.rollup_usage_hourly,
            tables.rollup_security_hourly,
            tables.rollup_policy_hourly,
        )
    ]
    events = tables.events
    parts.append(
        sa.select(events.c.tenant_id)
        .where(events.c.event_time >= start, events.c.event_time < end)
        .distinct()
    )
    with warehouse.connect() as conn:
        found = {row[0] for row in conn.execute(sa.union(*parts)) if row[0] is not None}
    return sorted(found)
