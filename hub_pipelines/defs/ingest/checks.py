"""Checks that guard the ingest assets."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import sqlalchemy as sa
from pydantic import Field

from hub_pipelines.defs.ingest.assets import DEAD_LETTER_EVENTS, VALIDATED_EVENTS
from hub_pipelines.resources import WarehouseResource


class DeadLetterRateConfig(dg.Config):
    max_rate: float = Field(default=0.05, description="Warn above this share of records dead-lettered.")
    window_hours: int = Field(default=24, description="Batches ingested in this window are counted.")


@dg.asset_check(asset=DEAD_LETTER_EVENTS, description="Share of records dead-lettered by recent ingests.")
def dead_letter_rate(config: DeadLetterRateConfig, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    since = datetime.now(UTC) - timedelta(hours=config.window_hours)
    with warehouse.warehouse.connect() as conn:
        dead, total = conn.execute(
            sa.text(
                "SELECT coalesce(sum(dead_lettered), 0), coalesce(sum(events_in), 0)"
                " FROM ingest_ledger WHERE ingested_at >= :since"
            ),
            {"since": since},
        ).one()
    rate = dead / total if total else 0.0
    return dg.AssetCheckResult(
        passed=rate <= config.max_rate,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "dead_letter_rate": rate,
            "dead_lettered": int(dead),
            "events_in": int(total),
            "max_rate": config.max_rate,
        },
    )


@dg.asset_check(asset=VALIDATED_EVENTS, description="event_id, the idempotency key, is unique.")
def no_duplicate_event_ids(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    with warehouse.warehouse.connect() as conn:
        duplicated = conn.execute(
            sa.text(
                "SELECT count(*) FROM (SELECT event_id FROM events GROUP BY event_id HAVING count(*) > 1) d"
            )
        ).scalar_one()
    return dg.AssetCheckResult(passed=duplicated == 0, metadata={"duplicated_event_ids": int(duplicated)})


class FreshnessConfig(dg.Config):
    max_age_hours: float = Field(default=24.0, description="Warn when nothing was ingested for this long.")


@dg.asset_check(asset=VALIDATED_EVENTS, description="Something was ingested recently.")
def events_are_fresh(config: FreshnessConfig, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    with warehouse.warehouse.connect() as conn:
        last_ingest, newest_event = conn.execute(
            sa.text("SELECT max(ingested_at), max(max_event_time) FROM ingest_ledger")
        ).one()
    age_hours = (datetime.now(UTC) - last_ingest).total_seconds() / 3600 if last_ingest else None
    return dg.AssetCheckResult(
        passed=age_hours is not None and age_hours <= config.max_age_hours,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "last_ingest": last_ingest.isoformat() if last_ingest else "never",
            "hours_since_last_ingest": round(age_hours, 2) if age_hours is not None else -1.0,
            "newest_event_time": newest_event.isoformat() if newest_event else "none",
        },
    )


@dg.asset_check(
    asset=VALIDATED_EVENTS,
    description="Every recent batch is accounted for: events_in = stored + duplicates + dead_lettered, and the "
    "ledger's stored and dead-lettered counts equal the rows in the tables.",
)
def ingest_ledger_balances(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    since = datetime.now(UTC) - timedelta(hours=24)
    with warehouse.warehouse.connect() as conn:
        rows = (
            conn.execute(
                sa.text(
                    """
                SELECT l.batch_id, l.landing_key, l.events_in, l.stored, l.duplicates, l.dead_lettered,
                       (SELECT count(*) FROM events e WHERE e.batch_id = l.batch_id) AS events_rows,
                       (SELECT count(*) FROM dead_letter_events d WHERE d.batch_id = l.batch_id) AS dead_rows
                FROM ingest_ledger l
                WHERE l.ingested_at >= :since
                """
                ),
                {"since": since},
            )
            .mappings()
            .all()
        )
    broken = [
        r["landing_key"]
        for r in rows
        if r["events_in"] != r["stored"] + r["duplicates"] + r["dead_lettered"]
        or r["events_rows"] != r["stored"]
        or r["dead_rows"] != r["dead_lettered"]
    ]
    return dg.AssetCheckResult(
        passed=not broken,
        metadata={
            "batches_checked": len(rows),
            "batches_out_of_balance": len(broken),
            "examples": ", ".join(broken[:5]),
        },
    )
