"""Incidents for people: an "Incidents" section of the operations and compliance reports
(registered with hub_pipelines.reports.register_section), and Markdown / HTML renderings of a list
of incidents for the CLI and anyone else (`incidents_markdown`, `incidents_html`)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime

import pandas as pd

from hub_pipelines.incidents.store import read_incidents
from hub_pipelines.reports.base import (
    Note,
    Paragraph,
    ReportContext,
    Section,
    Table,
    fmt_usd,
    register_section,
)

# Incidents the compliance report lists: those with a policy or security side.
COMPLIANCE_MODULES = {"llm-policy-engine", "llm-sentinel", "llm-governance"}
COMPLIANCE_KINDS = {"compliance_cascade", "security_graph"}


def _when(moment) -> str:
    return pd.Timestamp(moment).tz_convert("UTC").strftime("%Y-%m-%d %H:%M")


def _root(incident: dict) -> str:
    hypotheses = incident.get("hypotheses") or []
    if not hypotheses:
        return "n/a"
    top = hypotheses[0]
    subject = ", ".join(f"{k}={v}" for k, v in (top.get("subject") or {}).items())
    return f"{top['cause']}" + (f" ({subject})" if subject else "") + f" {top['score']:.2f}"


def incident_rows(incidents: Sequence[dict]) -> list[list[str]]:
    return [
        [
            _when(i["start"]),
            f"{(pd.Timestamp(i['end']) - pd.Timestamp(i['start'])) / pd.Timedelta(hours=1):.0f} h",
            i["severity"],
            i["title"],
            _root(i),
            f"{i['confidence']:.2f}",
            fmt_usd(i["impact"].get("cost_usd", 0.0)),
            ", ".join(m.replace("llm-", "") for m in i["modules"]),
        ]
        for i in incidents
    ]


HEADERS = [
    "start (UTC)",
    "lasted",
    "severity",
    "incident",
    "likely root cause (score)",
    "confidence",
    "cost",
    "modules",
]


def _details(incident: dict, limit: int = 3) -> list[str]:
    lines = []
    for h in (incident.get("hypotheses") or [])[:limit]:
        lines.append(f"{h['rank']}. {h['description']} (score {h['score']:.2f})")
        lines.extend(f"   - {e}" for e in h["evidence"])
    kinds = ", ".join(incident.get("correlation_kinds") or [])
    impact = incident["impact"]
    lines.append(
        f"Impact: performance {impact['performance']:.2f}, cost {impact['cost']:.2f}, security {impact['security']:.2f},"
        f" business {impact['business']:.2f}. Evidence: {kinds}."
    )
    return lines


def incidents_markdown(
    incidents: Sequence[dict], details: bool = True, title: str | None = "Incidents"
) -> str:
    """A Markdown table of incidents (as `read_incidents` returns them), then each one's hypotheses
    and evidence."""
    out = [f"## {title}", ""] if title else []
    if not incidents:
        return "\n".join([*out, "No incidents."]) + "\n"
    out.append("| " + " | ".join(HEADERS) + " |")
    out.append("|" + "---|" * len(HEADERS))
    for row in incident_rows(incidents):
        out.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    if details:
        for incident in incidents:
            out += [
                "",
                f"### {incident['title']} ({incident['tenant_id']}, {_when(incident['start'])} UTC)",
                "",
            ]
            out.append(incident["summary"])
            out.append("")
            out += _details(incident)
    return "\n".join(out) + "\n"


def incidents_html(incidents: Sequence[dict], details: bool = True, title: str | None = "Incidents") -> str:
    """The same as `incidents_markdown`, as an HTML fragment (escaped)."""
    esc = html.escape
    out = [f"<h2>{esc(title)}</h2>"] if title else []
    if not incidents:
        return "\n".join([*out, "<p>No incidents.</p>"])
    out.append("<table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in HEADERS) + "</tr></thead><tbody>")
    for row in incident_rows(incidents):
        out.append("<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>")
    out.append("</tbody></table>")
    if details:
        for incident in incidents:
            out.append(f"<h3>{esc(incident['title'])}</h3><p>{esc(incident['summary'])}</p><ol>")
            for h in (incident.get("hypotheses") or [])[:3]:
                evidence = "".join(f"<li>{esc(e)}</li>" for e in h["evidence"])
                out.append(f"<li>{esc(h['description'])} (score {h['score']:.2f})<ul>{evidence}</ul></li>")
            out.append("</ol>")
    return "\n".join(out)


def _section(ctx: ReportContext, compliance: bool) -> Section:
    incidents = sorted(
        read_incidents(ctx.warehouse, start=ctx.start, end=ctx.end, tenant_id=ctx.tenant_id),
        key=lambda i: i["start"],
    )
    if compliance:
        incidents = [
            i for i in incidents
            if set(i["modules"]) & COMPLIANCE_MODULES or set(i["correlation_kinds"]) & COMPLIANCE_KINDS
        ]  # fmt: skip
    summary = {
        "incidents": len(incidents),
        "incidents_critical": sum(1 for i in incidents if i["severity"] == "critical"),
        "incident_cost_usd": round(sum(i["impact"].get("cost_usd", 0.0) for i in incidents), 4),
    }
    scope = "with a policy or security side " if compliance else ""
    if not incidents:
        return Section(
            "incidents",
            "Incidents",
            [
                Note(
                    f"No incidents {scope}started on {ctx.day.isoformat()} (the correlations asset groups"
                    " signals of several modules into incidents)."
                )
            ],  # fmt: skip
            summary=summary,
        )
    blocks = [
        Paragraph(
            f"{len(incidents)} incident(s) {scope}started on {ctx.day.isoformat()}: signals of several modules"
            " grouped by the correlations asset, with their most likely root cause."
        ),
        Table(HEADERS, incident_rows(incidents), numeric=[5, 6]),
    ]
    for incident in incidents:
        blocks.append(Paragraph(f"{incident['title']}: " + " ".join(_details(incident, limit=2))))
    return Section("incidents", "Incidents", blocks, summary=summary)


@register_section("operations", order=60, name="operations.incidents")
def operations_incidents(ctx: ReportContext) -> Section:
    return _section(ctx, compliance=False)


@register_section("compliance", order=60, name="compliance.incidents")
def compliance_incidents(ctx: ReportContext) -> Section:
    return _section(ctx, compliance=True)


def since_label(start: datetime, end: datetime) -> str:
    return f"{start:%Y-%m-%d %H:%M}..{end:%Y-%m-%d %H:%M} UTC"
