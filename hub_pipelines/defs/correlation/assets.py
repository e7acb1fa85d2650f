"""The `correlations` asset: cross-module incidents with ranked root causes, one UTC day at a time.

Partitioning: daily partitions, each run correlating every tenant with events that day (one tenant
after another, each on its own data). Why not a (day x tenant) partition: correlating a tenant-day
takes well under a second (benchmarks/correlation.py), so a run per tenant-day would spend most of
its time starting; tenants need no registering before their incidents can be found (the day's data
says who they are); a backfill of a month is one single-run range. A tenant alone is re-run with
the `tenants` config, and days spread over workers like any partitioned asset. The incidents table
is keyed by tenant, so the per-(day, tenant) reports read their tenant's incidents directly.

Each partition reads the day with 6 hours either side (an incident starting at 23:00 is seen whole)
and a 7-day look-back (baselines), and replaces the incidents that started that day for the tenants
it ran for. It depends on the validated events, the asset catalog (registry dependencies) and the
anomalies the detectors flagged.
"""

from datetime import timedelta

import dagster as dg
from pydantic import Field

from hub_ml.correlation import CORRELATION_KINDS, CorrelationSettings
from hub_pipelines.defs.ingest.assets import ASSET_CATALOG, VALIDATED_EVENTS
from hub_pipelines.defs.rollups.partitions import DAILY
from hub_pipelines.incidents import correlate_days
from hub_pipelines.incidents.report import incidents_markdown
from hub_pipelines.incidents.store import read_incidents
from hub_pipelines.resources import WarehouseResource

CORRELATIONS = dg.AssetKey("correlations")
ANOMALIES = dg.AssetKey("anomalies")
CHECK_NAME = "incidents_are_explained"


class CorrelationConfig(dg.Config):
    tenants: list[str] = Field(
        default_factory=list, description="Only these tenants; empty: every tenant with events in the day."
    )
    lookback_days: int = Field(default=7, description="Days of history behind the hourly baselines.")
    margin_hours: int = Field(default=6, description="Hours read either side of the day.")


@dg.asset(
    key=CORRELATIONS,
    group_name="correlation",
    kinds={"python", "sql"},
    description="Incidents: signals, events and anomalies of several modules grouped by the eight kinds of"
    " correlation (causal chains, temporal, patterns, anomaly clusters, cost impact, security graphs,"
    " performance chains, compliance cascades), with impact scores and ranked root-cause hypotheses."
    " Tables: incidents, incident_members.",
    deps=[VALIDATED_EVENTS, ASSET_CATALOG, ANOMALIES],
    partitions_def=DAILY,
    backfill_policy=dg.BackfillPolicy.single_run(),
    check_specs=[
        dg.AssetCheckSpec(
            CHECK_NAME,
            asset=CORRELATIONS,
            description="Every incident written has a ranked root cause, members and impact scores, and"
            " started in the partition it was written for.",
        )
    ],
    metadata={"tables": "incidents, incident_members", "partition_expr": "partition_start"},
    op_tags={"hub/kind": "correlation"},
)
def correlations(context: dg.AssetExecutionContext, config: CorrelationConfig, warehouse: WarehouseResource):
    """Correlate the partition's days (a backfill range runs day by day) and store the incidents."""
    window = context.partition_time_window
    settings = CorrelationSettings(lookback_days=config.lookback_days, margin_hours=config.margin_hours)
    wh = warehouse.warehouse

    def progress(day) -> None:
        context.log.info(
            f"{day.day:%Y-%m-%d}: {len(day.tenants)} tenant(s), {day.written} incident(s);"
            f" load {day.load_seconds:.2f}s, correlate {day.correlate_seconds:.2f}s, write {day.write_seconds:.2f}s"
        )

    days = correlate_days(
        wh, window.start, window.end, config.tenants or None, settings, context.run_id, progress
    )
    incidents = [i for d in days for i in d.incidents]
    problems = []
    for d in days:
        for i in d.incidents:
            if not i.hypotheses:
                problems.append(f"{i.incident_id}: no hypothesis")
            if not i.members:
                problems.append(f"{i.incident_id}: no members")
            if not d.day <= i.start.to_pydatetime() < d.day + timedelta(days=1):
                problems.append(f"{i.incident_id}: starts outside its day")
    kinds = {kind: sum(1 for i in incidents if kind in i.correlation_kinds) for kind in CORRELATION_KINDS}
    stored = read_incidents(wh, start=window.start, end=window.end, tenant_id=None)
    return dg.MaterializeResult(
        metadata={
            "partition_range": f"{window.start.isoformat()}..{window.end.isoformat()}",
            "days": len(days),
            "tenants": dg.MetadataValue.json(sorted({t for d in days for t in d.tenants})),
            "incidents": len(incidents),
            "incidents_by_severity": dg.MetadataValue.json(
                {
                    s: sum(1 for i in incidents if i.severity == s)
                    for s in ("critical", "high", "medium", "low")
                }
            ),
            "incidents_by_root_cause": dg.MetadataValue.json(
                {k: sum(1 for i in incidents if i.kind == k) for k in sorted({i.kind for i in incidents})}
            ),
            "incidents_with_correlation_kind": dg.MetadataValue.json(kinds),
            "members": sum(d.members for d in days),
            "seconds_load": round(sum(d.load_seconds for d in days), 3),
            "seconds_correlate": round(sum(d.correlate_seconds for d in days), 3),
            "dagster/row_count": len(stored),
            "incidents_table": dg.MetadataValue.md(
                incidents_markdown(stored[:50], details=False, title=None)
            ),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=CHECK_NAME,
                passed=not problems,
                metadata={"incidents": len(incidents), "problems": dg.MetadataValue.json(problems[:50])},
            )
        ],
    )


correlations_job = dg.define_asset_job(
    "correlations_job",
    selection=dg.AssetSelection.assets(CORRELATIONS),
    description="Correlate a day (or a range, in one run) of every tenant's events into incidents.",
)

# 01:00 UTC: after the day has ended and before the 01:30 reports, which list its incidents.
correlations_schedule = dg.build_schedule_from_partitioned_job(
    correlations_job,
    name="correlations_daily",
    hour_of_day=1,
    minute_of_hour=0,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every day at 01:00 UTC: yesterday's incidents, before the daily reports list them.",
)
