"""From landed batch bytes to the rows a batch writes: events, dead letters, catalog entries.

Plain Python (no Dagster): the sensor-launched assets, the `hub ingest` CLI and the benchmarks all
call `prepare_batches` and then `warehouse.event_writer.write_batch`.
"""

from __future__ import annotations

import functools
import hashlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from hub_pipelines.events import contract
from hub_pipelines.events.model import CHECKED_COLUMNS as CHECKED
from hub_pipelines.events.model import check_events
from hub_pipelines.events.records import BatchDecodeError, decompress, split_records
from hub_pipelines.events.sql_validator import (
    OUTPUT_COLUMNS,
    LeanVerdict,
    accept_lean,
    judge_rest,
    output_schema,
    utc_connection,
)

# Columns of the events table that come from validation (the rest are added per batch).
EVENT_COLUMNS = [
    c for c in OUTPUT_COLUMNS if c not in ("batch_idx", "rec_idx", "raw_text", "reasons", "is_valid")
]


@dataclass(frozen=True)
class LandedBatch:
    """A batch file as read from a landing zone."""

    key: str  # where it was found, e.g. llm-costops/2026-11-20/llm-costops-20261120-00.jsonl
    data: bytes
    zone: str = "local"
    # Content address: the same bytes are the same batch, whatever the file is called.
    batch_id: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "batch_id", hashlib.sha256(self.data).hexdigest())

    @functools.cached_property
    def records(self) -> pa.Table:
        """The batch's records (`records.split_records`), split once: `ingest_files` splits a
        chunk as it reads it, while the chunk before is validated. Raises BatchDecodeError for a
        corrupt gzip stream."""
        return split_records(decompress(self.data))


@dataclass
class PreparedBatch:
    """Everything a batch will write, before it meets the stored events.

    `rows` are the batch's validated records (zero-copy slices of the validator's output) and
    `keep` marks the valid ones not repeated earlier in the batch; `events` is their copy in
    events-table columns, made only when asked for (DuckDB inserts straight from `rows`).
    """

    batch_id: str
    landing_key: str
    zone: str
    size_bytes: int
    received_at: datetime
    events_in: int
    rows: pa.Table
    keep: pa.ChunkedArray | pa.Array
    dead_letters: pa.Table
    catalog: pa.Table
    duplicates_in_batch: int
    dead_by_reason: dict[str, int] = field(default_factory=dict)
    _events: pa.Table | None = field(default=None, repr=False)

    @property
    def dead_lettered(self) -> int:
        return self.dead_letters.num_rows

    @property
    def kept(self) -> int:
        return int(pc.sum(self.keep).as_py() or 0) if len(self.keep) else 0

    @property
    def events(self) -> pa.Table:
        """The rows to store, in events-table columns (a copy; cached)."""
        if self._events is None:
            self._events = _event_rows(self.rows.filter(self.keep), self.batch_id, self.received_at)
        return self._events


def prepare_batches(
    landed: list[LandedBatch], received_at: datetime | None = None, *, lean: bool = True, check: bool = True
) -> list[PreparedBatch]:
    """Split, validate, normalise and de-duplicate (within each batch) several batches at once.

    Validation runs over all records of all batches in one pass (groups of records read the same
    way share one SQL statement); each batch then gets its rows as zero-copy slices. The two
    stages are `start_batches` and `finish_batches` (ingest runs them on different threads).
    """
    return finish_batches(start_batches(landed, received_at, lean=lean), check=check)


@dataclass
class StartedBatches:
    """Batches after the first validation stage (`start_batches`)."""

    landed: list[LandedBatch]
    received_at: datetime
    readable: list[int]  # positions in `landed` of the batches that could be split
    unreadable: dict[int, str]  # position -> why the batch could not be read
    verdict: LeanVerdict


def start_batches(
    landed: list[LandedBatch], received_at: datetime | None = None, *, lean: bool = True
) -> StartedBatches:
    """Split the batches and let the lean path take the records it can (`sql_validator.accept_lean`)."""
    received_at = received_at or datetime.now(UTC)
    splits: list[pa.Table] = []
    readable: list[int] = []
    unreadable: dict[int, str] = {}
    for i, batch in enumerate(landed):
        try:
            splits.append(batch.records)
            readable.append(i)
        except BatchDecodeError as exc:
            unreadable[i] = str(exc)
    verdict = accept_lean(splits, received_at, lean=lean)
    return StartedBatches(landed, received_at, readable, unreadable, verdict)


def finish_batches(started: StartedBatches, *, check: bool = True) -> list[PreparedBatch]:
    """Judge the rest (`sql_validator.judge_rest`), then cut each batch's rows, dead letters and
    catalog entries, de-duplicated within the batch."""
    landed, received_at = started.landed, started.received_at
    prepared: dict[int, PreparedBatch] = {}
    if started.readable:
        # One thread after the lean path: this stage's statements are then small and many (ingest
        # runs it beside the next chunk's lean statement), and starting the workers of a second
        # cost more than they saved. Without it the full statements judge every record.
        lean = started.verdict.accepted is not None
        with utc_connection(threads=1 if lean else None) as con:
            validated = judge_rest(started.verdict, con)
            for position, i in enumerate(started.readable):
                prepared[i] = _cut(con, landed[i], validated.for_batch(position), received_at)
    for i, message in started.unreadable.items():
        prepared[i] = _unreadable(landed[i], message, received_at)
    batches = [prepared[i] for i in range(len(landed))]
    if check:
        check_prepared(batches)
    return batches


def check_prepared(batches: list[PreparedBatch]) -> None:
    """Raise pandera's SchemaError if the rows the batches would store break the events table's
    promises (model.py). One pass over all of them: its fixed cost per call exceeds the checks.
    `prepare_batches` runs it unless told not to (ingest_files runs it on the writing thread,
    which waits for validation otherwise, before the chunk's first write)."""
    kept = [b.rows.select(CHECKED).filter(b.keep) for b in batches if b.rows.num_rows]
    if kept:
        check_events(pa.concat_tables(kept))


def _cut(
    con: duckdb.DuckDBPyConnection, batch: LandedBatch, rows: pa.Table, received_at: datetime
) -> PreparedBatch:
    valid = rows["is_valid"]
    keep = _first_occurrences(rows)
    invalid = rows.filter(pc.invert(valid))
    dead = _dead_letter_rows(invalid, batch, received_at)
    kept_narrow = rows.select(["event_id", "event_time", "tenant_id", "event_type", "payload"]).filter(keep)
    prepared = PreparedBatch(
        batch_id=batch.batch_id,
        landing_key=batch.key,
        zone=batch.zone,
        size_bytes=len(batch.data),
        received_at=received_at,
        events_in=rows.num_rows,
        rows=rows,
        keep=keep,
        dead_letters=dead,
        catalog=_catalog_rows(con, kept_narrow),
        duplicates_in_batch=int(pc.sum(valid).as_py() or 0) - kept_narrow.num_rows,
        dead_by_reason=dict(sorted(Counter(dead["primary_reason"].to_pylist()).items())),
    )
    return prepared


def _first_occurrences(rows: pa.Table) -> pa.Array:
    """Valid records whose event_id did not come earlier in the batch (by record index: the
    rows come grouped by how they were validated, not in file order). Vectorised: each valid
    event_id becomes an integer code (a hash pass), the codes and record indexes are sorted as
    integers, and the first record of each run of equal codes is kept."""
    valid = np.flatnonzero(rows["is_valid"].to_numpy(zero_copy_only=False))
    keep = np.zeros(rows.num_rows, dtype=bool)
    if len(valid):
        positions = pa.array(valid)
        codes = rows["event_id"].take(positions).combine_chunks().dictionary_encode().indices
        codes = codes.to_numpy(zero_copy_only=False)
        rec_idx = rows["rec_idx"].take(positions).to_numpy()
        order = np.lexsort((rec_idx, codes))
        first = np.ones(len(valid), dtype=bool)
        first[1:] = codes[order[1:]] != codes[order[:-1]]
        keep[valid[order[first]]] = True
    return pa.array(keep)


def _event_rows(valid: pa.Table, batch_id: str, received_at: datetime) -> pa.Table:
    n = valid.num_rows
    columns = {name: valid[name] for name in EVENT_COLUMNS}
    columns["original"] = valid["raw_text"]
    columns["batch_id"] = pa.repeat(pa.scalar(batch_id, pa.string()), n)
    columns["ingested_at"] = pa.repeat(pa.scalar(received_at, pa.timestamp("us", tz="UTC")), n)
    return pa.table(columns)


def _dead_letter_rows(invalid: pa.Table, batch: LandedBatch, received_at: datetime) -> pa.Table:
    reasons = invalid["reasons"].to_pylist()
    n = invalid.num_rows
    return pa.table(
        {
            "batch_id": pa.array([batch.batch_id] * n, pa.string()),
            "record_index": invalid["rec_idx"],
            "landing_key": pa.array([batch.key] * n, pa.string()),
            "event_id": invalid["event_id"],
            "tenant_id": invalid["tenant_id"],
            "source_module": invalid["source_module"],
            "primary_reason": pa.array([r[0]["code"] for r in reasons], pa.string()),
            "reasons": pa.array([orjson.dumps(r).decode() for r in reasons], pa.string()),
            "raw": invalid["raw_text"].cast(pa.large_string()),
            "received_at": pa.array([received_at] * n, pa.timestamp("us", tz="UTC")),
        }
    )


def _catalog_rows(con: duckdb.DuckDBPyConnection, events: pa.Table) -> pa.Table:
    """The newest registry metadata per (tenant, asset) in this batch."""
    is_metadata = pc.equal(events["event_type"], "metadata")
    if not pc.any(is_metadata).as_py():
        return pa.table({})  # most batches: no query to plan (the writer only asks num_rows)
    metadata_events = events.filter(is_metadata)
    con.register(
        "metadata_events", metadata_events.select(["event_id", "event_time", "tenant_id", "payload"])
    )
    try:
        return con.sql(
            """
            SELECT tenant_id,
                   json_extract_string(payload, '$.asset_id') AS asset_id,
                   json_extract_string(payload, '$.asset_name') AS asset_name,
                   json_extract_string(payload, '$.asset_type') AS asset_type,
                   json_extract_string(payload, '$.version') AS version,
                   json_extract_string(payload, '$.owner') AS owner,
                   json_extract_string(payload, '$.provider') AS provider,
                   json_extract_string(payload, '$.lifecycle_stage') AS lifecycle_stage,
                   json_extract(payload, '$.depends_on')::VARCHAR AS depends_on,
                   event_time AS updated_at,
                   event_id
            FROM metadata_events
            QUALIFY row_number() OVER (
                PARTITION BY tenant_id, json_extract_string(payload, '$.asset_id')
                ORDER BY event_time DESC, event_id DESC) = 1
            """
        ).to_arrow_table()
    finally:
        con.unregister("metadata_events")


def _unreadable(batch: LandedBatch, message: str, received_at: datetime) -> PreparedBatch:
    """A batch whose bytes cannot be read at all is one dead letter, kept with its reason."""
    reason = contract.Reason("unreadable_batch", "", message)
    dead = pa.table(
        {
            "batch_id": [batch.batch_id],
            "record_index": pa.array([-1], pa.int64()),
            "landing_key": [batch.key],
            "event_id": pa.array([None], pa.string()),
            "tenant_id": pa.array([None], pa.string()),
            "source_module": pa.array([None], pa.string()),
            "primary_reason": [reason.code],
            "reasons": [orjson.dumps([reason.as_dict()]).decode()],
            "raw": pa.array([f"<{len(batch.data)} bytes: {batch.data[:64]!r}...>"], pa.large_string()),
            "received_at": pa.array([received_at], pa.timestamp("us", tz="UTC")),
        }
    )
    empty = output_schema().empty_table()
    return PreparedBatch(
        batch_id=batch.batch_id,
        landing_key=batch.key,
        zone=batch.zone,
        size_bytes=len(batch.data),
        received_at=received_at,
        events_in=1,
        rows=empty,
        keep=pa.array([], pa.bool_()),
        dead_letters=dead,
        catalog=pa.table({}),
        duplicates_in_batch=0,
        dead_by_reason={reason.code: 1},
    )
