"""Compliance report: compliance by policy category and its trend, violations with the assets and
policies involved, security detections by severity and threat type, data quality (dead letters by
reason) and an audit summary of what ran.

Policy and security numbers are answers of the query interface for the tenant; dead letters and
the audit summary read the ingest ledger, the rollup partitions and the alert evaluations (the
query interface covers validated events only).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd
import sqlalchemy as sa

from hub_pipelines.reports import charts
from hub_pipelines.reports.base import (
    Chart,
    Note,
    Paragraph,
    ReportContext,
    Section,
    Table,
    fmt_change,
    fmt_count,
    fmt_pct,
    fmt_time,
    register_section,
)
from hub_pipelines.warehouse import tables
from hub_pipelines.warehouse.store import Warehouse

TREND_DAYS = 7
MAX_VIOLATION_ROWS = 30


def _by(frame: pd.DataFrame, column: str) -> dict:
    return {k: float(v) for k, v in zip(frame[column], frame["value"], strict=True)}


def _label(value) -> str:
    return "(none)" if value is None else str(value)


@register_section("compliance", order=10, name="compliance.categories")
def categories(ctx: ReportContext) -> Section:
    evaluations = _by(ctx.query("policy_evaluations", group_by=["policy_category"]), "policy_category")
    failed = _by(ctx.query("policy_failed", group_by=["policy_category"]), "policy_category")
    rate = _by(ctx.query("compliance_rate", group_by=["policy_category"]), "policy_category")
    before = _by(
        ctx.query(
            "compliance_rate", group_by=["policy_category"], start=ctx.previous_start, end=ctx.previous_end
        ),
        "policy_category",
    )
    names = sorted(set(evaluations) | set(before), key=_label)
    rows = [
        [_label(c), fmt_count(evaluations.get(c, 0.0)), fmt_count(failed.get(c, 0.0)), fmt_pct(rate.get(c)),
         fmt_pct(before.get(c)), fmt_change(rate.get(c), before.get(c))]
        for c in names
    ]  # fmt: skip
    total_rate = ctx.total("compliance_rate")
    total_before = ctx.total("compliance_rate", start=ctx.previous_start, end=ctx.previous_end)
    total_evaluations = ctx.total("policy_evaluations")
    rows.append(["all categories", fmt_count(total_evaluations or 0.0), fmt_count(ctx.total("policy_failed") or 0.0),
                 fmt_pct(total_rate), fmt_pct(total_before), fmt_change(total_rate, total_before)])  # fmt: skip
    blocks = [
        Paragraph(
            f"Policy evaluations of {ctx.tenant_id} on {ctx.day.isoformat()} by policy category: how many ran,"
            " how many failed, and the compliance rate (passed / judged) against the day before."
        ),
        Table(["policy category", "evaluations", "failed", "compliance rate", "day before", "change"], rows),
    ]
    if not evaluations:
        blocks.insert(
            0, Note(f"No policy evaluations were recorded for {ctx.tenant_id} on {ctx.day.isoformat()}.")
        )
    return Section(
        "categories",
        "Compliance by policy category",
        blocks,
        summary={"compliance_rate": total_rate, "policy_evaluations": total_evaluations},
    )


@register_section("compliance", order=15, name="compliance.trend")
def trend(ctx: ReportContext) -> Section:
    start = ctx.start - timedelta(days=TREND_DAYS - 1)
    frame = ctx.query("compliance_rate", group_by=["policy_category"], start=start, end=ctx.end)
    overall = ctx.query("compliance_rate", start=start, end=ctx.end)
    days = [(start + timedelta(days=i)) for i in range(TREND_DAYS)]
    names = sorted({c for c in frame["policy_category"]}, key=_label)
    cell = {
        (t.to_pydatetime(), c): float(v)
        for t, c, v in zip(frame["bucket_start"], frame["policy_category"], frame["value"], strict=True)
    }
    total = {
        t.to_pydatetime(): float(v) for t, v in zip(overall["bucket_start"], overall["value"], strict=True)
    }
    rows = [
        [d.date().isoformat(), *[fmt_pct(cell.get((d, c))) for c in names], fmt_pct(total.get(d))]
        for d in days
    ]
    series = {
        _label(c): ([d for d in days if (d, c) in cell], [cell[(d, c)] for d in days if (d, c) in cell])
        for c in names
    }
    series["all categories"] = ([d for d in days if d in total], [total[d] for d in days if d in total])
    chart = charts.line_chart(
        series, title=f"Compliance rate by category, last {TREND_DAYS} days", kind="percent"
    )
    return Section(
        "trend",
        f"Compliance trend ({TREND_DAYS} days)",
        [
            Table(["day", *[_label(c) for c in names], "all categories"], rows),
            Chart(
                "compliance_trend",
                f"Compliance rate by policy category, {TREND_DAYS} days to {ctx.day.isoformat()}",
                chart,
                alt="Daily compliance rate per policy category",
            ),  # fmt: skip
        ],
    )


def _assets(warehouse: Warehouse, tenant_id: str) -> dict[str, dict]:
    table = tables.asset_catalog
    with warehouse.connect() as conn:
        rows = conn.execute(sa.select(table).where(table.c.tenant_id == tenant_id)).mappings().all()
    return {r["asset_id"]: dict(r) for r in rows}


@register_section("compliance", order=20, name="compliance.violations")
def violations(ctx: ReportContext) -> Section:
    frame = ctx.query("policy_failed", group_by=["policy_id", "policy_category", "asset_id"])
    frame = frame[frame["value"] > 0].sort_values(
        ["value", "policy_id", "asset_id"], ascending=[False, True, True], na_position="last"
    )
    assets = _assets(ctx.warehouse, ctx.tenant_id)
    rows = []
    for policy, category, asset, count in frame[
        ["policy_id", "policy_category", "asset_id", "value"]
    ].itertuples(index=False):
        meta = assets.get(asset, {})
        rows.append([
            _label(policy), _label(category), _label(asset), meta.get("asset_name", ""), meta.get("owner", ""),
            meta.get("version", ""), fmt_count(count),
        ])  # fmt: skip
    total = float(frame["value"].sum()) if len(frame) else 0.0
    blocks: list = [
        Paragraph(
            f"{fmt_count(total)} failed policy evaluations on {ctx.day.isoformat()}, by policy and asset"
            " (asset names and owners from the registry's asset catalog)."
        )
    ]
    if rows:
        shown = rows[:MAX_VIOLATION_ROWS]
        blocks.append(
            Table(
                ["policy", "category", "asset", "asset name", "owner", "version", "failures"],
                shown,
                numeric=[6],
            )
        )
        if len(rows) > len(shown):
            blocks.append(Note(f"{len(rows) - len(shown)} more policy/asset pairs are not shown."))
    return Section("violations", "Violations", blocks, summary={"violations": total})


@register_section("compliance", order=30, name="compliance.security")
def security(ctx: ReportContext) -> Section:
    frame = ctx.query("threats", group_by=["threat_type", "severity"])
    severities = [s for s in ("critical", "error", "warning") if s in set(frame["severity"])]
    severities += sorted({s for s in frame["severity"] if s not in severities}, key=_label)
    cell = {
        (t, s): float(v)
        for t, s, v in zip(frame["threat_type"], frame["severity"], frame["value"], strict=True)
    }
    threat_types = sorted(
        {t for t in frame["threat_type"]},
        key=lambda t: (-sum(cell.get((t, s), 0) for s in severities), _label(t)),
    )
    rows = [
        [_label(t), *[fmt_count(cell.get((t, s), 0.0)) for s in severities], fmt_count(sum(cell.get((t, s), 0.0) for s in severities))]
        for t in threat_types
    ]  # fmt: skip
    total = ctx.total("threats") or 0.0
    before = ctx.total("threats", start=ctx.previous_start, end=ctx.previous_end) or 0.0
    rows.append(["all threat types", *[fmt_count(sum(cell.get((t, s), 0.0) for t in threat_types)) for s in severities],
                 fmt_count(total)])  # fmt: skip
    blocks = [
        Paragraph(
            f"{fmt_count(total)} security detections on {ctx.day.isoformat()} ({fmt_count(before)} the day before,"
            f" {fmt_change(total, before)})."
        )
    ]
    if threat_types:
        blocks.append(Table(["threat type", *severities, "total"], rows))
        blocks.append(
            Chart(
                "security_by_threat",
                "Security detections by threat type and severity",
                charts.bar_chart(
                    [_label(t) for t in threat_types],
                    {s: [cell.get((t, s), 0.0) for t in threat_types] for s in severities},
                    title="Detections by threat type and severity",
                    horizontal=True,
                ),
                alt="Stacked bars of security detections per threat type, by severity",
            )
        )
    return Section("security", "Security detections", blocks, summary={"threats": total})


def dead_letters_by_reason(
    warehouse: Warehouse, tenant_id: str | None, start: datetime, end: datetime
) -> dict[str, int]:
    """Dead letters of a tenant (None: records whose tenant could not be read) by primary reason, for
    the day their batch carried events: the batch's newest valid event time (ingest_ledger), or
    when it was received if the batch had none."""
    d, ledger = tables.dead_letter_events, tables.ingest_ledger
    moment = sa.func.coalesce(ledger.c.max_event_time, d.c.received_at)
    tenant = d.c.tenant_id.is_(None) if tenant_id is None else d.c.tenant_id == tenant_id
    statement = (
        sa.select(d.c.primary_reason, sa.func.count())
        .select_from(d.outerjoin(ledger, d.c.batch_id == ledger.c.batch_id))
        .where(tenant, moment >= start, moment < end)
        .group_by(d.c.primary_reason)
    )
    with warehouse.connect() as conn:
        return {reason: int(n) for reason, n in conn.execute(statement).all()}


@register_section("compliance", order=40, name="compliance.data_quality")
def data_quality(ctx: ReportContext) -> Section:
    reasons = dead_letters_by_reason(ctx.warehouse, ctx.tenant_id, ctx.start, ctx.end)
    previous = dead_letters_by_reason(ctx.warehouse, ctx.tenant_id, ctx.previous_start, ctx.previous_end)
    unattributed = sum(dead_letters_by_reason(ctx.warehouse, None, ctx.start, ctx.end).values())
    names = sorted(set(reasons) | set(previous), key=lambda r: (-reasons.get(r, 0), r))
    rows = [[r, fmt_count(reasons.get(r, 0)), fmt_count(previous.get(r, 0))] for r in names]
    total, total_before = sum(reasons.values()), sum(previous.values())
    rows.append(["all reasons", fmt_count(total), fmt_count(total_before)])
    blocks = [
        Paragraph(
            "Records rejected by ingest (kept in dead_letter_events with every reason), by primary reason, for"
            " the day their batch carried events."
        ),
        Table(["reason", ctx.day.isoformat(), "day before"], rows),
    ]
    if unattributed:
        blocks.append(
            Note(
                f"{fmt_count(unattributed)} more records of this day had no readable tenant and are in no tenant's report."
            )
        )
    return Section("data_quality", "Data quality", blocks, summary={"dead_letters": total})


@register_section("compliance", order=90, name="compliance.audit")
def audit(ctx: ReportContext) -> Section:
    return audit_section(ctx)


def audit_section(ctx: ReportContext) -> Section:
    """What processed the day's data: ingest batches, rollups, alert evaluations and, when the caller
    passed them (the report assets do), Dagster runs and the upstream assets' last materialisations."""
    ledger, parts, evaluations = tables.ingest_ledger, tables.rollup_partitions, tables.alert_evaluations
    with ctx.warehouse.connect() as conn:
        batches = conn.execute(
            sa.select(
                sa.func.count(), sa.func.sum(ledger.c.events_in), sa.func.sum(ledger.c.stored),
                sa.func.sum(ledger.c.duplicates), sa.func.sum(ledger.c.dead_lettered),
                sa.func.min(ledger.c.ingested_at), sa.func.max(ledger.c.ingested_at),
            ).where(ledger.c.min_event_time < ctx.end, ledger.c.max_event_time >= ctx.start)
        ).one()  # fmt: skip
        hours = conn.execute(
            sa.select(sa.func.count(), sa.func.max(parts.c.refreshed_at)).where(
                parts.c.grain == "hour",
                parts.c.partition_start >= ctx.start,
                parts.c.partition_start < ctx.end,
            )
        ).one()
        day = conn.execute(
            sa.select(sa.func.max(parts.c.refreshed_at)).where(
                parts.c.grain == "day", parts.c.partition_start == ctx.start
            )
        ).scalar_one()
        alert_runs = conn.execute(
            sa.select(
                sa.func.count(), sa.func.sum(evaluations.c.opened), sa.func.sum(evaluations.c.resolved),
                sa.func.sum(evaluations.c.duplicates_suppressed), sa.func.sum(evaluations.c.silenced_suppressed),
                sa.func.sum(evaluations.c.notifications_sent), sa.func.max(evaluations.c.evaluated_at),
            ).where(evaluations.c.as_of > ctx.start, evaluations.c.as_of <= ctx.end)
        ).one()  # fmt: skip
    n, events_in, stored, duplicates, dead, first, last = batches
    rows = [
        ["ingest", f"{fmt_count(n)} batches with events of the day (all tenants): {fmt_count(events_in or 0)} records in,"
         f" {fmt_count(stored or 0)} stored, {fmt_count(duplicates or 0)} duplicates, {fmt_count(dead or 0)} dead-lettered",
         f"{fmt_time(first)} .. {fmt_time(last)}" if n else "n/a"],
        ["hourly rollups", f"{fmt_count(hours[0])} of 24 hours rolled up", fmt_time(hours[1])],
        ["daily rollups", "day rolled up" if day else "day not rolled up yet", fmt_time(day)],
        ["alerts", f"{fmt_count(alert_runs[0])} evaluations of the day's data: {fmt_count(alert_runs[1] or 0)} opened,"
         f" {fmt_count(alert_runs[2] or 0)} resolved, {fmt_count(alert_runs[3] or 0)} duplicates and"
         f" {fmt_count(alert_runs[4] or 0)} silenced suppressed, {fmt_count(alert_runs[5] or 0)} notifications sent",
         fmt_time(alert_runs[6])],
    ]  # fmt: skip
    blocks: list = [Table(["step", "what ran", "when"], rows, numeric=[])]
    runs = ctx.extras.get("dagster_runs")
    if runs:
        blocks.append(Paragraph("Dagster runs started on the day (UTC), by job and status:"))
        blocks.append(
            Table(
                ["job", "status", "runs"],
                [[r["job"], r["status"], fmt_count(r["runs"])] for r in runs],
                numeric=[2],
            )
        )
    elif runs is not None:
        blocks.append(Paragraph("No Dagster runs were started on the day."))
    latest = ctx.extras.get("materializations")
    if latest:
        blocks.append(
            Paragraph("Latest materialisation of each asset this report depends on, when it was built:")
        )
        blocks.append(
            Table(
                ["asset", "materialised", "run"],
                [[m["asset"], m["at"], m["run_id"]] for m in latest],
                numeric=[],
            )
        )
    return Section("audit", "Audit summary", blocks)
