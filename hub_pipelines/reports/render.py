"""Render a Report to Markdown and to self-contained HTML, and write both under a folder.

Layout: <root>/<tenant>/<YYYY-MM-DD>/<report>.html, <report>.md and <report>_charts/*.png (the
Markdown's images; the HTML embeds the same PNGs as data URIs and needs nothing beside it).
"""

from __future__ import annotations

import base64
import re
import struct
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from hub_pipelines.reports.base import Chart, Note, Paragraph, Report, Table, fmt_time

_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_name(text: str) -> str:
    """A file-name-safe form of a tenant id or chart name."""
    cleaned = _SAFE.sub("_", text).strip("._")
    return cleaned or "_"


def _period(report: Report) -> str:
    return f"{report.day.isoformat()} (00:00-24:00 UTC), compared with the day before"


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(report: Report, charts_dir: str | None = None) -> str:
    """Markdown of the report. With charts_dir (relative to the .md file) charts are image links;
    without, a line naming the chart (as in the Dagster UI metadata)."""
    lines = [
        f"# {report.title} · {report.tenant_id} · {report.day.isoformat()}",
        "",
        f"_{_period(report)}; generated {fmt_time(report.generated_at.astimezone(UTC))}._",
        "",
    ]
    for section in report.sections:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Paragraph):
                lines += [block.text, ""]
            elif isinstance(block, Note):
                lines += [f"> **Note:** {block.text}", ""]
            elif isinstance(block, Table):
                numeric = _numeric(block)
                if block.caption:
                    lines += [f"_{block.caption}_", ""]
                lines.append("| " + " | ".join(_md_cell(h) for h in block.headers) + " |")
                lines.append(
                    "|" + "|".join("---:" if i in numeric else "---" for i in range(len(block.headers))) + "|"
                )
                for row in block.rows:
                    lines.append("| " + " | ".join(_md_cell(c) for c in row) + " |")
                lines.append("")
            elif isinstance(block, Chart):
                if charts_dir is None:
                    lines += [f"_Chart: {block.title} (in the HTML report)._", ""]
                else:
                    lines += [f"![{block.title}]({charts_dir}/{safe_name(block.name)}.png)", ""]
    return "\n".join(lines).rstrip() + "\n"


def _numeric(table: Table) -> set[int]:
    return set(table.numeric) if table.numeric is not None else set(range(1, len(table.headers)))


def _png_size(png: bytes) -> tuple[int, int]:
    width, height = struct.unpack(">II", png[16:24])
    return width, height


@dataclass
class _View:
    kind: str
    text: str = ""
    headers: list | None = None
    rows: list | None = None
    caption: str | None = None
    numeric: set | None = None
    data: str = ""
    alt: str = ""
    name: str = ""
    title: str = ""
    width: int = 0
    height: int = 0


def _views(blocks) -> list[_View]:
    views = []
    for block in blocks:
        if isinstance(block, Paragraph):
            views.append(_View("paragraph", text=block.text))
        elif isinstance(block, Note):
            views.append(_View("note", text=block.text))
        elif isinstance(block, Table):
            views.append(_View("table", headers=block.headers, rows=block.rows, caption=block.caption,
                               numeric=_numeric(block)))  # fmt: skip
        elif isinstance(block, Chart):
            width, height = _png_size(block.png)
            views.append(
                _View("chart", data=base64.b64encode(block.png).decode("ascii"), alt=block.alt or block.title,
                      name=block.name, title=block.title, width=width, height=height)
            )  # fmt: skip
    return views


_ENV: Environment | None = None


def _environment() -> Environment:
    global _ENV
    if _ENV is None:
        _ENV = Environment(
            loader=PackageLoader("hub_pipelines.reports", "templates"),
            autoescape=select_autoescape(["html", "j2"]),
            trim_blocks=False,
            lstrip_blocks=False,
        )
    return _ENV


def to_html(report: Report) -> str:
    template = _environment().get_template("report.html.j2")
    sections = [
        {"id": safe_name(s.id), "title": s.title, "blocks": _views(s.blocks)} for s in report.sections
    ]
    view = {
        "title": report.title,
        "tenant_id": report.tenant_id,
        "day": report.day.isoformat(),
        "name": report.name,
        "sections": sections,
    }
    return template.render(
        report=view, period=_period(report), generated=fmt_time(report.generated_at.astimezone(UTC))
    )


@dataclass(frozen=True)
class WrittenReport:
    name: str
    tenant_id: str
    day: str
    html: Path
    markdown: Path
    charts: int


def write_report(report: Report, root: Path) -> WrittenReport:
    """Write the report's HTML, Markdown and chart files under root/<tenant>/<day>/."""
    folder = Path(root) / safe_name(report.tenant_id) / report.day.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    charts_dir = f"{report.name}_charts"
    if report.charts:
        (folder / charts_dir).mkdir(exist_ok=True)
        for chart in report.charts:
            (folder / charts_dir / f"{safe_name(chart.name)}.png").write_bytes(chart.png)
    html_path = folder / f"{report.name}.html"
    md_path = folder / f"{report.name}.md"
    _atomic_write(html_path, to_html(report))
    _atomic_write(md_path, to_markdown(report, charts_dir))
    return WrittenReport(report.name, report.tenant_id, report.day.isoformat(), html_path, md_path,
                         len(report.charts))  # fmt: skip


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
