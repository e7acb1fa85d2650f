"""Ingest batch files from a landing zone into the warehouse: the one path the sensor-launched
assets and `hub ingest` share (no Dagster import; callers pass a logger)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa

from hub_pipelines.events.batches import LandedBatch, PreparedBatch, check_prepared, prepare_batches
from hub_pipelines.landing import LandingZone
from hub_pipelines.warehouse import Warehouse
from hub_pipelines.warehouse.event_writer import BatchOutcome, StoredIds, summarise, write_batch

log = logging.getLogger(__name__)

# Batches are validated together up to this many bytes, bounding memory whatever a run is given
# (two chunks are in flight: one written, the next validated). Each pass costs about 50 ms of
# planning per group of records read alike (about 16 groups a chunk), against the overlap that
# smaller chunks give. benchmarks/ingest.py with Arrow on jemalloc: 256 MB 24 s, 128 MB and
# 384 MB 25 s (with Arrow's default allocator 128 MB had been best).
CHUNK_BYTES = 256 * 1024 * 1024


@dataclass
class IngestReport:
    outcomes: list[BatchOutcome] = field(default_factory=list)
    archived: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # listed but gone (archived by another run)

    @property
    def summary(self) -> dict:
        return summarise(self.outcomes) | {"missing_files": len(self.missing)}


def ingest_files(
    warehouse: Warehouse,
    zone: LandingZone,
    keys: list[str],
    *,
    run_id: str | None = None,
    received_at: datetime | None = None,
    archive: bool = True,
    progress: Callable[[int, int, BatchOutcome], None] | None = None,
    logger: logging.Logger | None = None,
    lean: bool = True,
) -> IngestReport:
    """Ingest the given landing keys, each batch in its own transaction, archiving each after
    its transaction commits. A batch already in the ledger is archived and not written again.
    `lean=False` validates every record with the full statements only (the benchmark's
    comparison; the results are the same)."""
    logger = logger or log
    keep_freed_memory()
    report = IngestReport()
    done = 0
    try:
        with (
            warehouse.session() as session,
            ThreadPoolExecutor(1, thread_name_prefix="hub-validate") as pool,
        ):
            for prepared in _prepared_ahead(_chunks(zone, keys, report, logger), received_at, pool, lean):
                done = _write_chunk(
                    warehouse,
                    zone,
                    prepared,
                    session,
                    report,
                    run_id,
                    archive,
                    done,
                    len(keys),
                    progress,
                    logger,
                )
    finally:
        # Kept while ingesting (keep_freed_memory); a long-lived process (a Celery worker, a
        # test session) gets it back afterwards.
        pa.default_memory_pool().release_unused()
    return report


@functools.cache
def keep_freed_memory() -> bool:
    """Let Arrow reuse the memory ingest frees instead of handing it back to the kernel.

    Ingest allocates and frees gigabytes of short-lived Arrow buffers. Arrow's default allocator
    returns freed pages to the kernel within milliseconds, so the next buffer takes fresh pages the
    kernel must zero (on a VM, fetch back from the host): perf on benchmarks/ingest.py found 13% of
    validation's CPU in clear_page. Arrow's jemalloc pool without decay keeps them: the benchmark
    took 26-27 s against 27-39 s without it, in alternating runs (docs/BENCHMARKS.md). ingest_files hands the
    kept memory back when it ends (CHUNK_BYTES bounds it meanwhile). Process-wide, so once per
    process; False where this Arrow build has no jemalloc.
    """
    try:
        pa.jemalloc_set_decay_ms(-1)
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    except (NotImplementedError, pa.ArrowNotImplementedError):
        return False
    return True


def _prepared_ahead(
    chunks: Iterator[list[LandedBatch]], received_at: datetime | None, pool: ThreadPoolExecutor, lean: bool
) -> Iterator[list[PreparedBatch]]:
    """The chunks prepared, in order, each validated on `pool` while the caller writes the one
    before: both are mostly DuckDB and Arrow, which release the GIL, so two cores share the work."""
    pending: Future | None = None
    for chunk in chunks:
        upcoming = pool.submit(
            prepare_batches, chunk, received_at or datetime.now(UTC), lean=lean, check=False
        )
        if pending is not None:
            yield pending.result()
        pending = upcoming
    if pending is not None:
        yield pending.result()


def _write_chunk(
    warehouse, zone, prepared, session, report, run_id, archive, done, total, progress, logger
) -> int:
    """Check the chunk's rows against the events model, then write each prepared batch in its
    own transaction, archiving it once committed."""
    check_prepared(prepared)  # here, not on the validating thread: that one is the bottleneck
    # One scan of the stored event_ids for the whole chunk, not one per batch (DuckDB has no index).
    stored_ids = StoredIds.of(warehouse, session, prepared) if warehouse.is_duckdb else None
    for batch in prepared:
        outcome = write_batch(warehouse, batch, run_id=run_id, session=session, stored_ids=stored_ids)
        report.outcomes.append(outcome)
        if archive:
            report.archived[batch.landing_key] = zone.archive(batch.landing_key, batch.batch_id)
        done += 1
        if progress:
            progress(done, total, outcome)
        logger.info(
            "%s: %s events in, %s stored, %s duplicates, %s dead-lettered%s",
            batch.landing_key,
            outcome.events_in,
            outcome.stored,
            outcome.duplicates,
            outcome.dead_lettered,
            " (already ingested)" if outcome.already_ingested else "",
        )
    return done


def _chunks(zone: LandingZone, keys: list[str], report: IngestReport, logger: logging.Logger):
    chunk: list[LandedBatch] = []
    size = 0
    for key in keys:
        try:
            data = zone.read(key)
        except (FileNotFoundError, KeyError) as exc:
            logger.warning("%s is no longer in %s (%s); another run took it", key, zone.describe(), exc)
            report.missing.append(key)
            continue
        except Exception as exc:  # botocore's NoSuchKey has no common base with FileNotFoundError
            if type(exc).__name__ != "NoSuchKey":
                raise
            report.missing.append(key)
            continue
        chunk.append(LandedBatch(key=key, data=data, zone=zone.describe()))
        size += len(data)
        if size >= CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk
