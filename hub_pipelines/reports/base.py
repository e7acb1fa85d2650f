"""The pieces every report is made of, and the registry of section providers.

A report is a list of sections; a section is a list of blocks (paragraphs, notes, tables, charts)
rendered once into Markdown and once into HTML from the same strings, so both show the same
numbers. Sections come from providers registered per report:

    from hub_pipelines.reports import Section, Table, register_section

    @register_section("compliance", order=60)
    def incidents(ctx: ReportContext) -> Section | None:
        rows = ...  # read with ctx.warehouse / ctx.query for ctx.tenant_id and ctx.start..ctx.end
        return Section("incidents", "Incidents", [Table(["incident", "opened"], rows)])

A provider returns None to leave its section out. Built-in sections use orders 10-50 (and 90 for
the audit summary), so another module's section with order 60 lands after them. The module that
registers must be imported before reports are built (the publish defs import it, or put it in
REPORT_SECTION_MODULES below).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd

from hub_pipelines.alerts.evaluate import hold_open
from hub_pipelines.query import query
from hub_pipelines.warehouse.store import Warehouse

REPORTS = {
    "compliance": "Compliance report",
    "forecast": "Forecast report",
    "operations": "Operations summary",
}
# Modules imported before a report is built, so their register_section calls have run. Other
# issues' modules can be added here (or simply be imported by their own defs).
REPORT_SECTION_MODULES: list[str] = [
    "hub_pipelines.reports.compliance",
    "hub_pipelines.reports.forecast",
    "hub_pipelines.reports.operations",
]


# -- blocks ------------------------------------------------------------------------------------------


@dataclass
class Paragraph:
    text: str


@dataclass
class Note:
    """A remark the reader should not miss (no data yet, a caveat)."""

    text: str


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    caption: str | None = None
    # Right-align these columns (numbers); default: every column but the first.
    numeric: Sequence[int] | None = None


@dataclass
class Chart:
    """A chart as PNG bytes (matplotlib); embedded in the HTML, a file beside the Markdown."""

    name: str  # file-name-safe identifier, unique in the report
    title: str
    png: bytes
    alt: str = ""


Block = Paragraph | Note | Table | Chart


@dataclass
class Section:
    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)
    # Headline numbers of the section (shown as materialisation metadata), e.g. {"requests": 1234}.
    summary: dict[str, Any] = field(default_factory=dict)


# -- the context a provider sees -------------------------------------------------------------------------


@dataclass
class ReportContext:
    """What a section provider gets: the warehouse, the tenant, the reporting day [start, end) and
    the previous one, and extras the caller passed (audit data from Dagster, an MLflow URI)."""

    warehouse: Warehouse
    tenant_id: str
    day: date
    generated_at: datetime
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def start(self) -> datetime:
        return datetime(self.day.year, self.day.month, self.day.day, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        return self.start + timedelta(days=1)

    @property
    def previous_start(self) -> datetime:
        return self.start - timedelta(days=1)

    @property
    def previous_end(self) -> datetime:
        return self.start

    def query(self, metric: str, *, start=None, end=None, filters=None, **kwargs) -> pd.DataFrame:
        """`hub_pipelines.query.query` for this tenant (default range: the reporting day, 1d bucket)."""
        kwargs.setdefault("bucket", "1d")
        return query(
            self.warehouse,
            metric,
            start=start or self.start,
            end=end or self.end,
            filters={"tenant_id": self.tenant_id, **(filters or {})},
            **kwargs,
        )

    def total(
        self, metric: str, *, start=None, end=None, agg: str | None = None, filters=None
    ) -> float | None:
        """The metric over one whole day (one 1d bucket), or None when there is no data."""
        frame = self.query(metric, start=start, end=end, agg=agg, filters=filters)
        if frame.empty:
            return None
        value = float(frame["value"].iloc[0])
        return None if math.isnan(value) else value


SectionProvider = Callable[[ReportContext], Section | None]


@dataclass(frozen=True)
class _Registered:
    order: int
    name: str
    provider: SectionProvider


_SECTIONS: dict[str, dict[str, _Registered]] = {name: {} for name in REPORTS}


def register_section(report: str, *, order: int = 100, name: str | None = None):
    """Decorator: add a section provider to `report` (compliance, forecast, operations). Registering
    the same name again replaces it (a module reloaded)."""
    if report not in REPORTS:
        raise ValueError(f"unknown report {report!r}; one of {', '.join(REPORTS)}")

    def decorate(provider: SectionProvider) -> SectionProvider:
        key = name or f"{provider.__module__}.{provider.__qualname__}"
        _SECTIONS[report][key] = _Registered(order, key, provider)
        return provider

    return decorate


def section_providers(report: str) -> list[SectionProvider]:
    for module in REPORT_SECTION_MODULES:
        importlib.import_module(module)
    return [r.provider for r in sorted(_SECTIONS[report].values(), key=lambda r: (r.order, r.name))]


@dataclass
class Report:
    name: str
    title: str
    tenant_id: str
    day: date
    generated_at: datetime
    sections: list[Section]
    summary: dict[str, Any] = field(default_factory=dict)  # headline numbers, for metadata

    @property
    def charts(self) -> list[Chart]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Chart)]


def build_report(
    name: str,
    ctx: ReportContext,
    extra_sections: Sequence[SectionProvider] = (),
) -> Report:
    """Run the registered providers of report `name` (then `extra_sections`) for the context."""
    if name not in REPORTS:
        raise ValueError(f"unknown report {name!r}; one of {', '.join(REPORTS)}")
    sections = []
    with hold_open(ctx.warehouse):
        for provider in [*section_providers(name), *extra_sections]:
            section = provider(ctx)
            if section is not None:
                sections.append(section)
    summary: dict[str, Any] = {}
    for section in sections:
        summary.update(section.summary)
    return Report(name, REPORTS[name], ctx.tenant_id, ctx.day, ctx.generated_at, sections, summary)


# -- number formats (the Markdown test reads these back) -------------------------------------------------


def fmt_count(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{round(value):,}"


def fmt_usd(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if abs(value) >= 100:
        return f"${value:,.2f}"
    if abs(value) >= 1:
        return f"${value:.4f}"
    return f"${value:.6f}"


def fmt_pct(value: float | None) -> str:
    """A ratio (0..1) as a percentage with two decimals."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value * 100:.2f}%"


def fmt_number(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.1f}"
    if abs(value) >= 1:
        return f"{value:.3f}"
    return f"{value:.5f}"


def fmt_change(current: float | None, previous: float | None) -> str:
    """Relative change against the previous period, e.g. +12.3% (n/a without a base)."""
    if current is None or previous is None or previous == 0 or math.isnan(current) or math.isnan(previous):
        return "n/a"
    return f"{(current - previous) / abs(previous) * 100:+.1f}%"


def fmt_time(moment: datetime | None) -> str:
    if moment is None:
        return "n/a"
    return pd.Timestamp(moment).tz_convert("UTC").strftime("%Y-%m-%d %H:%M UTC")
