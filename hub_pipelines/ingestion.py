"""Ingest batch files from a landing zone into the warehouse: the one path the sensor-launched
assets and `hub ingest` share (no Dagster import; callers pass a logger)."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from hub_pipelines.events.batches import (
    LandedBatch,
    PreparedBatch,
    check_prepared,
    finish_batches,
    start_batches,
)
from hub_pipelines.events.records import BatchDecodeError
from hub_pipelines.landing import LandingZone
from hub_pipelines.warehouse import Warehouse
from hub_pipelines.warehouse.event_writer import BatchOutcome, StoredIds, summarise, write_batch

log = logging.getLogger(__name__)

# Batches are validated together up to this many bytes, bounding memory whatever a run is given
# (at most three chunks are in flight: one written, two being validated; see _prepared_ahead).
# Each chunk costs fixed planning (about 0.1 s for the lean statement and each group of records
# the full statements read), against the overlap that smaller chunks give: 128 and 192 MB were
# no faster in alternating runs of benchmarks/ingest.py, 96 and 128 MB used more CPU.
CHUNK_BYTES = 256 * 1024 * 1024

# Nothing overlaps the reading and first stage of the first chunk, nor the end of the last one:
# the first chunk is this share of CHUNK_BYTES, and a last chunk of at least this share is
# prepared in two halves (`_tail`). In alternating runs of benchmarks/ingest.py each saved 0.5-1 s
# of about 18 (docs/BENCHMARKS.md).
EDGE_SHARE = 0.25


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
            ThreadPoolExecutor(1, thread_name_prefix="hub-accept") as accepting,
            ThreadPoolExecutor(1, thread_name_prefix="hub-judge") as judging,
        ):
            chunks = _chunks(zone, keys, report, logger)
            for prepared in _prepared_ahead(chunks, received_at, accepting, judging, lean):
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
    chunks: Iterator[list[LandedBatch]],
    received_at: datetime | None,
    accepting: ThreadPoolExecutor,
    judging: ThreadPoolExecutor,
    lean: bool,
) -> Iterator[list[PreparedBatch]]:
    """The chunks prepared, in order, while the caller writes the one before.

    Three threads share the two cores: the lean statement of chunk n+1 (`accepting`, parallel in
    DuckDB), the rest of chunk n's validation and its cutting into batches (`judging`: small
    statements and Arrow work, one core), and the writing of chunk n-1 (the caller). All of it
    is DuckDB and Arrow, which release the GIL."""
    pending: deque[Future] = deque()
    for chunk in chunks:
        started = accepting.submit(start_batches, chunk, received_at or datetime.now(UTC), lean=lean)
        pending.append(judging.submit(_finish_when_started, started))
        # Two chunks ahead of the one written: chunk n+1 is read and queued before chunk n's lean
        # statement ends, so that thread never waits for the writer.
        if len(pending) > 2:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _finish_when_started(started: Future) -> list[PreparedBatch]:
    return finish_batches(started.result(), check=False)


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
    size, first = 0, True
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
        batch = LandedBatch(key=key, data=data, zone=zone.describe())
        with contextlib.suppress(BatchDecodeError):  # start_batches dead-letters it
            _ = batch.records  # split here, on the reading thread, while the chunk before is validated
        chunk.append(batch)
        size += len(data)
        if size >= CHUNK_BYTES * (EDGE_SHARE if first else 1):
            yield chunk
            chunk, size, first = [], 0, False
    yield from _tail(chunk, size)


def _tail(chunk: list[LandedBatch], size: int) -> Iterator[list[LandedBatch]]:
    """The last chunk, in two when it is large: nothing overlaps its validation and writing,
    so halving it shortens the end of the run by more than the second pass costs."""
    if size < CHUNK_BYTES * EDGE_SHARE or len(chunk) < 2:
        if chunk:
            yield chunk
        return
    # The cut between files that comes closest to half the bytes.
    before_cut = np.cumsum([len(b.data) for b in chunk])[:-1]
    cut = int(np.argmin(np.abs(before_cut - size / 2))) + 1
    yield chunk[:cut]
    yield chunk[cut:]
