"""Hourly rollups from validated events; daily rollups from the hourly ones.

`hourly_rollups` is one asset: its four tables (metrics with their sketches, usage, security,
policy) are written together, in one transaction per UTC day. The daily assets (`daily_rollups`
for the metrics, `cost_daily`, `security_daily`, `compliance_daily`) are one multi-asset. Both use
the single-run backfill policy: a 30-day backfill is one run that writes day by day, rather than
720 runs that each start a process. The daily assets depend on the hourly one through a
time-window partition mapping (a day reads its 24 hours) and refresh themselves, by declarative
automation, when any of those hours is re-materialised.

One asset for the hours rather than one per family: Dagster records every partition of a ranged
run as its own materialisation (and a planned event before it), a few milliseconds to tens of
milliseconds each on the SQLite instance; four hourly assets would make a 30-day backfill write
5,760 such events instead of 1,440.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg
import sqlalchemy as sa
from pydantic import Field

from hub_pipelines.defs.ingest.assets import VALIDATED_EVENTS
from hub_pipelines.defs.rollups.partitions import DAILY
from hub_pipelines.defs.rollups.partitions import HOURLY as HOURLY_PARTITIONS
from hub_pipelines.resources import WarehouseResource
from hub_pipelines.warehouse import rollups
from hub_pipelines.warehouse.store import Warehouse

HOURLY = dg.AssetKey("hourly_rollups")
DAILY_METRICS = dg.AssetKey("daily_rollups")
DAILY_COST = dg.AssetKey("cost_daily")
DAILY_SECURITY = dg.AssetKey("security_daily")
DAILY_COMPLIANCE = dg.AssetKey("compliance_daily")
DAILY_KEYS = (DAILY_METRICS, DAILY_COST, DAILY_SECURITY, DAILY_COMPLIANCE)

# Which tables hold each asset.
TABLES = {
    HOURLY: rollups.HOURLY_TABLES,
    DAILY_METRICS: ("rollup_metrics_daily",),
    DAILY_COST: ("rollup_usage_daily",),
    DAILY_SECURITY: ("rollup_security_daily",),
    DAILY_COMPLIANCE: ("rollup_policy_daily",),
}
FAMILY = {
    DAILY_METRICS: "metric",
    DAILY_COST: "usage",
    DAILY_SECURITY: "security",
    DAILY_COMPLIANCE: "policy",
}
DESCRIPTIONS = {
    "metric": "count, sum, avg, min, max, stddev, p50/p95/p99 of every telemetry metric (and cost_usd) per tenant,"
    " source, metric, model, provider, project, environment and region, with a DDSketch per row",
    "usage": "requests, errors, tokens and spend per tenant, model, provider, project, team, environment and"
    " region; error rate, cost per request, cost per 1k tokens, throughput and error-adjusted throughput",
    "security": "security detections per tenant, source, threat type, severity, model, project and environment",
    "policy": "policy evaluations per tenant, source, policy, category, model, project, team and environment:"
    " passed, failed, compliance rate",
}

# A day is refreshed when any of its hours was re-materialised since the day was last handled,
# once none of its hours is still being written and the day is not itself in a run or backfill.
# Unlike eager(), every day is considered (late events land in old days), and a day with hours
# never rolled up (no events) is not held back.
DAILY_REFRESH = (
    dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("refresh_when_any_hour_changes")

ROLLUP_POOL = "hub_warehouse_rollups"


class HourlyRollupConfig(dg.Config):
    protect_after_days: int = Field(
        default=8,
        description="Hours older than this can no longer gain events (ingest rejects events more than 7"
        " days old); rewriting them recomputes only tenants that still have raw events, so the rollups"
        " of tenants whose raw events passed their retention are kept.",
    )


def _daily_spec(key: dg.AssetKey) -> dg.AssetSpec:
    return dg.AssetSpec(
        key,
        group_name="rollups",
        kinds={"sql"},
        description=f"Daily {DESCRIPTIONS[FAMILY[key]]}, from the hourly rollups. Tables: {', '.join(TABLES[key])}.",
        deps=[dg.AssetDep(HOURLY, partition_mapping=dg.TimeWindowPartitionMapping())],
        partitions_def=DAILY,
        automation_condition=DAILY_REFRESH,
        metadata={"tables": ", ".join(TABLES[key]), "partition_expr": "bucket_start"},
    )


@dg.asset(
    key=HOURLY,
    group_name="rollups",
    kinds={"sql"},
    description="Hourly rollups of the validated events, written together in one transaction per day: "
    + "; ".join(DESCRIPTIONS.values())
    + f". Tables: {', '.join(TABLES[HOURLY])}.",
    deps=[VALIDATED_EVENTS],
    partitions_def=HOURLY_PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    check_specs=[
        dg.AssetCheckSpec(
            "hourly_totals_match_events",
            asset=HOURLY,
            description="After the write: value counts, requests, spend, detections and evaluations in the"
            " written hours equal those of the raw events, and the sketches hold every value.",
        )
    ],
    metadata={"tables": ", ".join(TABLES[HOURLY]), "partition_expr": "bucket_start"},
    op_tags={"hub/kind": "rollup"},
    pool=ROLLUP_POOL,
)
def hourly_rollups(
    context: dg.AssetExecutionContext, config: HourlyRollupConfig, warehouse: WarehouseResource
):
    """Recompute the hourly rollups of the partition (or backfill range) from the raw events."""
    window = context.partition_time_window
    wh = warehouse.warehouse
    keep_before = datetime.now(UTC) - timedelta(days=config.protect_after_days)

    def progress(part: rollups.RollupWrite) -> None:
        context.log.info(
            f"hours {part.start:%Y-%m-%d %H:%M}..{part.end:%Y-%m-%d %H:%M}: {part.events_read} events,"
            f" {part.rows.get('rollup_metrics_hourly', 0)} metric rows"
        )

    written = rollups.refresh_hourly(
        wh, window.start, window.end, run_id=context.run_id, keep_before=keep_before, progress=progress
    )
    totals = rollups.reconcile(wh, "hour", window.start, window.end)
    # Rows kept past raw retention have no raw events to be compared with.
    check = _totals_check("hourly_totals_match_events", HOURLY, totals, skipped=bool(written.kept))
    preview = "\n\n".join(
        f"**{family}**\n\n{_preview(wh, family, table, window.start, window.end)}"
        for family, table in (
            ("metric", "rollup_metrics_hourly"),
            ("usage", "rollup_usage_hourly"),
            ("security", "rollup_security_hourly"),
            ("policy", "rollup_policy_hourly"),
        )
    )
    yield dg.MaterializeResult(
        asset_key=HOURLY,
        metadata={
            "partition_range": f"{window.start.isoformat()}..{window.end.isoformat()}",
            "hours": written.partitions,
            "events_read": written.events_read,
            "seconds": round(written.seconds, 3),
            "hours_with_rollups_kept_past_raw_retention": dg.MetadataValue.json(written.kept),
            **{f"rows_{t}": written.rows.get(t, 0) for t in TABLES[HOURLY]},
            "dagster/row_count": written.rows.get("rollup_metrics_hourly", 0),
            "preview": dg.MetadataValue.md(preview),
        },
    )
    yield check


@dg.multi_asset(
    name="build_daily_rollups",
    specs=[_daily_spec(key) for key in DAILY_KEYS],
    check_specs=[
        dg.AssetCheckSpec(
            "daily_totals_match_hourly",
            asset=DAILY_METRICS,
            description="After the write: the days' counts and sums equal those of their hourly rollups.",
        )
    ],
    partitions_def=DAILY,
    backfill_policy=dg.BackfillPolicy.single_run(),
    op_tags={"hub/kind": "rollup"},
    pool=ROLLUP_POOL,
)
def daily_rollups(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
    """Recompute the daily rollups of the partition (or backfill range) from the hourly rollups."""
    window = context.partition_time_window
    wh = warehouse.warehouse
    written = rollups.refresh_daily(
        wh,
        window.start,
        window.end,
        run_id=context.run_id,
        progress=lambda part: context.log.info(
            f"day {part.start:%Y-%m-%d}: {part.rows.get('rollup_metrics_daily', 0)} metric rows"
        ),
    )
    common = {
        "partition_range": f"{window.start.isoformat()}..{window.end.isoformat()}",
        "days": written.partitions,
        "events_rolled_up": written.events_read,
        "seconds": round(written.seconds, 3),
    }
    for key in DAILY_KEYS:
        yield dg.MaterializeResult(
            asset_key=key,
            metadata=common
            | {f"rows_{t}": written.rows.get(t, 0) for t in TABLES[key]}
            | {
                "dagster/row_count": written.rows.get(TABLES[key][0], 0),
                "preview": dg.MetadataValue.md(
                    _preview(wh, FAMILY[key], TABLES[key][0], window.start, window.end)
                ),
            },
        )
    totals = rollups.reconcile(wh, "day", window.start, window.end)
    yield _totals_check("daily_totals_match_hourly", DAILY_METRICS, totals)


def _totals_check(name: str, key: dg.AssetKey, totals: dict, skipped: bool = False) -> dg.AssetCheckResult:
    off = {
        n: {"expected": e, "found": f} for n, (e, f) in totals.items() if abs(e - f) > 1e-6 * max(1.0, abs(e))
    }
    return dg.AssetCheckResult(
        check_name=name,
        asset_key=key,
        passed=skipped or not off,
        metadata={
            **{f"{n}_expected": e for n, (e, _f) in totals.items()},
            **{f"{n}_found": f for n, (_e, f) in totals.items()},
            "mismatches": dg.MetadataValue.json(off),
            "skipped_rows_kept_past_raw_retention": skipped,
        },
    )


# -- previews shown on the asset page ----------------------------------------------------------------

_PREVIEWS = {
    "metric": (
        "SELECT metric_name, CAST(sum(value_count) AS BIGINT) AS n, sum(value_sum) / sum(value_count) AS avg,"
        " min(value_min) AS min, max(value_max) AS max FROM {table} WHERE {range} GROUP BY metric_name"
        " ORDER BY n DESC LIMIT 10",
        ("metric", "count", "avg", "min", "max"),
    ),
    "usage": (
        "SELECT model, CAST(sum(requests) AS BIGINT) AS requests, sum(spend_usd) AS spend,"
        " CASE WHEN sum(requests) > 0 THEN CAST(sum(errors) AS DOUBLE PRECISION) / sum(requests) END AS error_rate"
        " FROM {table} WHERE {range} GROUP BY model ORDER BY spend DESC LIMIT 10",
        ("model", "requests", "spend_usd", "error_rate"),
    ),
    "security": (
        "SELECT threat_type, severity, CAST(sum(detections) AS BIGINT) AS n FROM {table} WHERE {range}"
        " GROUP BY threat_type, severity ORDER BY n DESC LIMIT 10",
        ("threat_type", "severity", "detections"),
    ),
    "policy": (
        "SELECT policy_category, CAST(sum(evaluations) AS BIGINT) AS n, CAST(sum(failed) AS BIGINT) AS failed,"
        " CASE WHEN sum(passed) + sum(failed) > 0 THEN CAST(sum(passed) AS DOUBLE PRECISION)"
        " / (sum(passed) + sum(failed)) END AS rate FROM {table} WHERE {range} GROUP BY policy_category"
        " ORDER BY n DESC LIMIT 10",
        ("policy_category", "evaluations", "failed", "compliance_rate"),
    ),
}


def _preview(warehouse: Warehouse, family: str, table: str, start: datetime, end: datetime) -> str:
    sql, headers = _PREVIEWS[family]
    with warehouse.connect() as conn:
        rows = conn.execute(
            sa.text(sql.format(table=table, range="bucket_start >= :start AND bucket_start < :end")),
            {"start": start, "end": end},
        ).all()
    if not rows:
        return "_no rows in this range_"
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    return "\n".join(lines)


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


hourly_rollups_job = dg.define_asset_job(
    "hourly_rollups_job",
    # The asset and its write-time check; the standalone freshness check has its own schedule.
    selection=dg.AssetSelection.assets(HOURLY)
    - dg.AssetSelection.checks(dg.AssetCheckKey(HOURLY, "hourly_rollups_current")),
    description="Recompute hourly rollups (launched by late_events_rollup_sensor, or for a backfill).",
)
daily_rollups_job = dg.define_asset_job(
    "daily_rollups_job",
    selection=dg.AssetSelection.assets(*DAILY_KEYS),
    description="Recompute daily rollups from the hourly ones (normally requested by automation).",
)
