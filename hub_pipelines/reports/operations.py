"""Operations summary: requests, p95 latency, error rate, spend, cost per request, threats,
compliance and alerts of one tenant's day, each against the day before.

Every traffic number is an answer of the query interface for the tenant and the day (1d bucket);
alert counts come from the alerts table (`hub_pipelines.alerts.open_at`)."""

from __future__ import annotations

from datetime import timedelta

from hub_pipelines.alerts.lifecycle import open_at, opened_between
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
    fmt_number,
    fmt_pct,
    fmt_time,
    fmt_usd,
    register_section,
)

# (label, metric, agg, formatter, summary key): the headline rows, in order.
HEADLINE = [
    ("Requests", "requests", None, fmt_count, "requests"),
    ("p95 latency (ms)", "latency_ms", "p95", fmt_number, "p95_latency_ms"),
    ("Error rate", "error_rate", None, fmt_pct, "error_rate"),
    ("Spend (USD)", "spend_usd", None, fmt_usd, "spend_usd"),
    ("Cost per request (USD)", "cost_per_request", None, fmt_usd, "cost_per_request_usd"),
    ("Security detections", "threats", None, fmt_count, "threats"),
    ("Compliance rate", "compliance_rate", None, fmt_pct, "compliance_rate"),
]


@register_section("operations", order=10, name="operations.headline")
def headline(ctx: ReportContext) -> Section:
    rows, summary = [], {}
    for label, metric, agg, fmt, key in HEADLINE:
        current = ctx.total(metric, agg=agg)
        previous = ctx.total(metric, agg=agg, start=ctx.previous_start, end=ctx.previous_end)
        rows.append([label, fmt(current), fmt(previous), fmt_change(current, previous)])
        summary[key] = current
    open_now = open_at(ctx.warehouse, ctx.end, ctx.tenant_id)
    open_before = open_at(ctx.warehouse, ctx.start, ctx.tenant_id)
    opened_now = len(opened_between(ctx.warehouse, ctx.start, ctx.end, ctx.tenant_id))
    opened_before = len(opened_between(ctx.warehouse, ctx.previous_start, ctx.previous_end, ctx.tenant_id))
    rows.append(["Open alerts (end of day)", fmt_count(len(open_now)), fmt_count(len(open_before)),
                 fmt_change(len(open_now), len(open_before))])  # fmt: skip
    rows.append(["Alerts opened", fmt_count(opened_now), fmt_count(opened_before),
                 fmt_change(opened_now, opened_before)])  # fmt: skip
    summary["open_alerts"] = len(open_now)
    day, before = ctx.day.isoformat(), (ctx.day - timedelta(days=1)).isoformat()
    return Section(
        "headline",
        "Headline",
        [
            Paragraph(
                f"Traffic, cost, security and compliance of {ctx.tenant_id} on {day} (UTC), against {before}."
                " Latency is the 95th percentile of every request of the day; error rate, cost per request"
                " and compliance rate are ratios of the day's totals."
            ),
            Table(["measure", day, before, "change"], rows),
        ],
        summary=summary,
    )


@register_section("operations", order=20, name="operations.hourly")
def hourly(ctx: ReportContext) -> Section:
    blocks = []
    for metric, agg, title, kind in (
        ("requests", None, "Requests per hour", "number"),
        ("latency_ms", "p95", "p95 latency per hour (ms)", "number"),
        ("spend_usd", None, "Spend per hour (USD)", "usd"),
    ):
        series = {}
        for label, start, end in (
            (ctx.day.isoformat(), ctx.start, ctx.end),
            ("day before (shifted)", ctx.previous_start, ctx.previous_end),
        ):
            frame = ctx.query(metric, agg=agg, start=start, end=end, bucket="1h")
            shift = ctx.start - start
            series[label] = (
                [t.to_pydatetime() + shift for t in frame["bucket_start"]],
                [float(v) for v in frame["value"]],
            )
        blocks.append(
            Chart(
                f"hourly_{metric}_{agg or 'default'}",
                title,
                charts.line_chart(series, title=title, kind=kind, styles={"day before (shifted)": "--"}),
                alt=f"{title}: {ctx.day.isoformat()} against the day before",
            )
        )
    return Section("hourly", "Through the day", blocks)


@register_section("operations", order=30, name="operations.models")
def by_model(ctx: ReportContext) -> Section:
    metrics = {
        "requests": ctx.query("requests", group_by=["model"]),
        "spend": ctx.query("spend_usd", group_by=["model"]),
        "errors": ctx.query("error_rate", group_by=["model"]),
        "p95": ctx.query("latency_ms", agg="p95", group_by=["model"]),
        "cpr": ctx.query("cost_per_request", group_by=["model"]),
    }
    values = {
        name: {m: float(v) for m, v in zip(f["model"], f["value"], strict=True)}
        for name, f in metrics.items()
    }
    models = sorted(
        set().union(*[set(v) for v in values.values()]), key=lambda m: (-values["requests"].get(m, 0), str(m))
    )
    rows = [
        [
            "(none)" if m is None else str(m),
            fmt_count(values["requests"].get(m)),
            fmt_number(values["p95"].get(m)),
            fmt_pct(values["errors"].get(m)),
            fmt_usd(values["spend"].get(m)),
            fmt_usd(values["cpr"].get(m)),
        ]
        for m in models
    ]
    blocks = [
        Table(
            ["model", "requests", "p95 latency (ms)", "error rate", "spend (USD)", "cost per request (USD)"],
            rows,
        )
    ]
    if models:
        spend = [values["spend"].get(m, 0.0) for m in models]
        blocks.append(
            Chart(
                "spend_by_model",
                "Spend by model (USD)",
                charts.bar_chart(
                    [str(m) for m in models], {"spend": spend}, title="Spend by model (USD)", kind="usd"
                ),
                alt="Spend by model",
            )  # fmt: skip
        )
    else:
        blocks.insert(
            0, Note(f"No requests or costs were recorded for {ctx.tenant_id} on {ctx.day.isoformat()}.")
        )
    return Section("models", "By model", blocks)


@register_section("operations", order=40, name="operations.alerts")
def alerts_section(ctx: ReportContext) -> Section:
    active = open_at(ctx.warehouse, ctx.end, ctx.tenant_id)
    if not active:
        return Section(
            "alerts", "Open alerts", [Paragraph(f"No alert was open at the end of {ctx.day.isoformat()}.")]
        )
    rows = [
        [a["alert_id"], a["rule_id"], a["severity"], a["status"] if a["resolved_at"] is None else "open then",
         fmt_time(a["opened_at"]), a["summary"]]
        for a in sorted(active, key=lambda a: ({"critical": 0, "warning": 1}.get(a["severity"], 2), a["opened_at"]))
    ]  # fmt: skip
    return Section(
        "alerts",
        "Open alerts",
        [
            Paragraph("Alerts active at the end of the day (acknowledge with `hub alerts ack ID`)."),
            Table(["alert", "rule", "severity", "status", "opened (data time)", "summary"], rows, numeric=[]),
        ],
    )
