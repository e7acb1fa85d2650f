"""`hub incidents`: the incidents the correlations asset found, newest first, with their likely
root cause; `--details` adds the ranked hypotheses and their evidence, `--refresh` correlates the
range's days first (as the asset does) and stores what it finds."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import click

from hub_pipelines import settings


def _jsonable(row: dict) -> dict:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}


@click.command("incidents")
@click.option(
    "--since",
    default="7d",
    show_default=True,
    help="Incidents that started this long ago or later: 24h, 7d, 2w.",
)
@click.option(
    "--start", default=None, help="Absolute start instead, ISO-8601 (UTC unless an offset is given)."
)
@click.option("--end", default=None, help="End of the range (default now).")
@click.option("--tenant", default=None, help="Only this tenant's incidents.")
@click.option("--details", is_flag=True, help="Show each incident's ranked hypotheses with their evidence.")
@click.option(
    "--refresh",
    is_flag=True,
    help="Correlate the range's days first (every tenant, or --tenant) and store the incidents.",
)
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1))
@click.option(
    "--format", "fmt", default="table", show_default=True, type=click.Choice(["table", "json", "markdown"])
)
@click.option(
    "--warehouse-url", default=None, help="SQLAlchemy URL (default: HUB_WAREHOUSE_URL or the DuckDB file)."
)
def incidents(since, start, end, tenant, details, refresh, limit, fmt, warehouse_url) -> None:
    """Incidents: signals of several modules grouped together, with their likely root cause."""
    from hub_pipelines.incidents import correlate_days, read_incidents
    from hub_pipelines.incidents.report import HEADERS, incident_rows, incidents_markdown
    from hub_pipelines.query import QueryError, parse_since, parse_time
    from hub_pipelines.warehouse import Warehouse

    try:
        until = parse_time(end) if end else datetime.now(UTC)
        begin = parse_time(start) if start else until - parse_since(since)
    except QueryError as exc:
        raise click.UsageError(str(exc)) from exc
    if begin >= until:
        raise click.UsageError("the range is empty: start must be before end")
    warehouse = Warehouse(warehouse_url or settings.warehouse_url())
    warehouse.create_tables()
    try:
        if refresh:
            started = time.perf_counter()
            days = correlate_days(warehouse, begin, until, [tenant] if tenant else None)
            click.echo(
                f"correlated {len(days)} day(s): {sum(d.written for d in days)} incident(s) stored"
                f" ({time.perf_counter() - started:.1f}s)",
                err=True,
            )
        found = read_incidents(warehouse, start=begin, end=until, tenant_id=tenant, limit=limit)
    finally:
        warehouse.engine.dispose()
    if fmt == "json":
        click.echo(json.dumps([_jsonable(row) for row in found], indent=1, default=str))
        return
    if fmt == "markdown":
        click.echo(incidents_markdown(found, details=details), nl=False)
        return
    if not found:
        click.echo(f"no incidents ({begin:%Y-%m-%d %H:%M} .. {until:%Y-%m-%d %H:%M} UTC)")
        return
    rows = [[row["tenant_id"], *cells] for row, cells in zip(found, incident_rows(found), strict=True)]
    headers = ["tenant", *HEADERS]
    widths = [max(len(h), *(len(r[k]) for r in rows)) for k, h in enumerate(headers)]
    widths[4] = min(widths[4], 70)  # the title
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    for row, incident in zip(rows, found, strict=True):
        cells = [c if len(c) <= w else c[: w - 1] + "~" for c, w in zip(row, widths, strict=True)]
        click.echo("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)))
        if details:
            click.echo(f"    {incident['incident_id']}: {incident['summary']}")
            for h in (incident.get("hypotheses") or [])[:3]:
                click.echo(f"    {h['rank']}. {h['description']} (score {h['score']:.2f})")
                for line in h["evidence"]:
                    click.echo(f"       - {line}")
            click.echo("")
