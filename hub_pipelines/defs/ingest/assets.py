"""Ingest: landed batch files -> validated_events, dead_letter_events, asset_catalog."""

from itertools import islice

import dagster as dg
from pydantic import Field

from hub_pipelines.ingestion import ingest_files
from hub_pipelines.resources import LandingZoneResource, WarehouseResource

VALIDATED_EVENTS = dg.AssetKey("validated_events")
DEAD_LETTER_EVENTS = dg.AssetKey("dead_letter_events")
ASSET_CATALOG = dg.AssetKey("asset_catalog")
INGEST_TAG = "hub/landing_zone"


class IngestConfig(dg.Config):
    # Not called `keys`: Dagster turns a Config into a dict, and dict() would call a `keys` field.
    files: list[str] = Field(
        default_factory=list,
        description="Landing keys to ingest; empty: every pending file, up to max_files.",
    )
    max_files: int = Field(default=1000, description="Cap on files when `files` is empty.")
    archive: bool = Field(
        default=True, description="Move each file to the archive once its batch is committed."
    )


@dg.multi_asset(
    name="ingest_batches",
    specs=[
        dg.AssetSpec(
            VALIDATED_EVENTS,
            group_name="ingest",
            kinds={"sql"},
            description="Validated, normalised events (UTC, ms, bytes, USD, per-second), one row per event_id.",
        ),
        dg.AssetSpec(
            DEAD_LETTER_EVENTS,
            group_name="ingest",
            kinds={"sql"},
            description="Records that failed validation, with their raw text and every reason.",
        ),
        dg.AssetSpec(
            ASSET_CATALOG,
            group_name="ingest",
            kinds={"sql"},
            description="Latest registry metadata per asset (name, version, owner), used to enrich events.",
        ),
    ],
    op_tags={"hub/kind": "ingest"},
)
def ingest_batches(
    context: dg.AssetExecutionContext,
    config: IngestConfig,
    warehouse: WarehouseResource,
    landing_zone: LandingZoneResource,
):
    """Parse, normalise, validate and de-duplicate landed batches, one transaction per batch."""
    zone = landing_zone.zone
    keys = config.files or [f.key for f in islice(zone.list_pending(), config.max_files)]
    context.log.info(f"ingesting {len(keys)} batch files from {zone.describe()} into {warehouse.describe()}")

    def progress(done: int, total: int, outcome) -> None:
        if done == total or done % 10 == 0:
            context.log.info(f"{done}/{total} batches written")

    report = ingest_files(
        warehouse.warehouse, zone, keys, run_id=context.run_id, archive=config.archive,
        progress=progress, logger=context.log,
    )  # fmt: skip
    summary = report.summary
    counts = warehouse.warehouse.table_counts()
    per_file = "\n".join(
        f"| {o.landing_key} | {o.events_in} | {o.stored} | {o.duplicates} | {o.dead_lettered} |"
        f" {'yes' if o.already_ingested else ''} |"
        for o in report.outcomes[:200]
    )
    files_md = (
        "| file | in | stored | duplicates | dead-lettered | seen before |\n|---|---|---|---|---|---|\n"
        + per_file
    )
    yield dg.MaterializeResult(
        asset_key=VALIDATED_EVENTS,
        metadata={
            "files": summary["files"],
            "files_already_ingested": summary["files_already_ingested"],
            "events_in": summary["events_in"],
            "stored": summary["stored"],
            "duplicates": summary["duplicates"],
            "dead_lettered": summary["dead_lettered"],
            "event_time_min": summary["min_event_time"] or "",
            "event_time_max": summary["max_event_time"] or "",
            "hours_touched": dg.MetadataValue.json(summary["hours_touched"]),
            "hours_touched_count": len(summary["hours_touched"]),
            "dagster/row_count": counts["events"],
            "batches": dg.MetadataValue.md(files_md),
            "landing_zone": zone.describe(),
        },
    )
    yield dg.MaterializeResult(
        asset_key=DEAD_LETTER_EVENTS,
        metadata={
            "dead_lettered": summary["dead_lettered"],
            "dead_lettered_by_reason": dg.MetadataValue.json(summary["dead_lettered_by_reason"]),
            "dagster/row_count": counts["dead_letter_events"],
        },
    )
    yield dg.MaterializeResult(
        asset_key=ASSET_CATALOG, metadata={"dagster/row_count": counts["asset_catalog"]}
    )


ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.assets(VALIDATED_EVENTS, DEAD_LETTER_EVENTS, ASSET_CATALOG),
    description="Ingest landed batch files (launched by the landing_zone_sensor, or by hand).",
)
