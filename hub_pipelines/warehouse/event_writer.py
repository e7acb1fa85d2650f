"""Write a prepared batch in one transaction: events, dead letters, catalog, ledger row.

If anything fails, or the process is killed, nothing of the batch is written, and the ledger row
that marks it done is part of the same transaction: running the batch again writes it exactly once.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from hub_pipelines.events.batches import PreparedBatch
from hub_pipelines.warehouse.store import DUCKDB_ROW_GROUP_SIZE, Warehouse
from hub_pipelines.warehouse.tables import asset_catalog, dead_letter_events, events, ingest_ledger


@dataclass
class BatchOutcome:
    """What a batch did to the warehouse. events_in = stored + duplicates + dead_lettered."""

    batch_id: str
    landing_key: str
    events_in: int
    stored: int
    duplicates: int
    dead_lettered: int
    dead_by_reason: dict[str, int] = field(default_factory=dict)
    min_event_time: datetime | None = None
    max_event_time: datetime | None = None
    hours_touched: list[str] = field(default_factory=list)  # ISO hours (UTC) that gained events
    already_ingested: bool = False

    def as_dict(self) -> dict:
        out = dict(self.__dict__)
        for key in ("min_event_time", "max_event_time"):
            out[key] = out[key].isoformat() if out[key] else None
        return out


def _columns(table: sa.Table) -> str:
    return ", ".join(c.name for c in table.columns)


def write_batch(
    warehouse: Warehouse,
    batch: PreparedBatch,
    run_id: str | None = None,
    session: sa.Connection | None = None,
    stored_ids: StoredIds | None = None,
) -> BatchOutcome:
    """Write one batch in one transaction, on a `warehouse.session()` connection when given.

    `stored_ids` (DuckDB only; from `StoredIds.of`) answers which event_ids are already stored
    for several batches written in turn, instead of a scan of the events table per batch."""
    if session is None:
        with warehouse.session() as conn:
            return write_batch(warehouse, batch, run_id, conn, stored_ids)
    with session.begin():
        return _write(warehouse, session, batch, run_id, stored_ids)


@dataclass
class StoredIds:
    """Which event_ids of a run of batches are already stored, found with one scan of `events`
    for all of them, and which occur in more than one batch of the run (a later batch must see
    what an earlier one stored).

    The embedded DuckDB file has one writer (the session holds its lock), so nothing else can
    store an event_id between the scan and the batches' writes. The scan reads every stored
    event_id (DuckDB keeps no index on `events`): once per run of batches instead of once per
    batch, which matters more the larger the warehouse."""

    known: set[str]  # stored before the run, or by an earlier batch of it
    repeated: set[str]  # kept by more than one batch of the run

    @classmethod
    def of(cls, warehouse: Warehouse, conn: sa.Connection, batches: list[PreparedBatch]) -> StoredIds:
        kept = [b.rows["event_id"].filter(b.keep) for b in batches if b.rows.num_rows and b.kept]
        if not kept:
            return cls(set(), set())
        # From the chunks: pa.chunked_array over ChunkedArrays converts them value by value.
        ids = pa.chunked_array([chunk for column in kept for chunk in column.chunks], kept[0].type)
        warehouse.stage(conn, "candidate_ids", pa.table({"event_id": ids}))
        try:
            with conn.begin():
                # Each result is read before the next statement: DuckDB's cursor holds one.
                found = set(
                    conn.execute(
                        sa.text(
                            "SELECT DISTINCT c.event_id FROM candidate_ids c"
                            " JOIN events e ON e.event_id = c.event_id"
                        )
                    ).scalars()
                )
                repeated = set(
                    conn.execute(
                        sa.text("SELECT event_id FROM candidate_ids GROUP BY event_id HAVING count(*) > 1")
                    ).scalars()
                )
            return cls(found, repeated)
        finally:
            warehouse.unstage(conn, "candidate_ids")

    def stored_before(self, batch: PreparedBatch) -> list[str]:
        """The batch's kept event_ids already stored."""
        return _members(batch.rows["event_id"].filter(batch.keep), self.known)

    def add(self, batch: PreparedBatch, fresh: pa.Array | pa.ChunkedArray) -> None:
        """Note what the batch stored, where a later batch of the run has it too."""
        self.known.update(_members(batch.rows["event_id"].filter(fresh), self.repeated))


def _members(ids: pa.ChunkedArray, values: set[str]) -> list[str]:
    if not values or not len(ids):
        return []
    return ids.filter(pc.is_in(ids, value_set=pa.array(sorted(values), pa.string()))).to_pylist()


def _write(
    warehouse: Warehouse,
    conn: sa.Connection,
    batch: PreparedBatch,
    run_id: str | None,
    stored_ids: StoredIds | None = None,
) -> BatchOutcome:
    done = (
        conn.execute(sa.select(ingest_ledger).where(ingest_ledger.c.batch_id == batch.batch_id))
        .mappings()
        .first()
    )
    if done is not None:
        return _outcome_from_ledger(done, batch)

    if warehouse.is_duckdb:
        fresh = _insert_duckdb(conn, batch, stored_ids.stored_before(batch) if stored_ids else None)
        if stored_ids:
            stored_ids.add(batch, fresh)
    else:
        fresh = _insert_postgres(warehouse, conn, batch)
    stored = int(pc.sum(fresh).as_py() or 0) if len(fresh) else 0
    fresh_times = (
        batch.rows["event_time"].filter(fresh) if stored else pa.array([], pa.timestamp("us", tz="UTC"))
    )

    if batch.dead_letters.num_rows:
        warehouse.stage(conn, "staged_dead_letters", batch.dead_letters)
        conn.execute(
            sa.text(
                f"INSERT INTO dead_letter_events ({_columns(dead_letter_events)})"
                f" SELECT {_columns(dead_letter_events)} FROM staged_dead_letters"
                " ON CONFLICT (batch_id, record_index) DO NOTHING"
            )
        )
        warehouse.unstage(conn, "staged_dead_letters")

    if batch.catalog.num_rows:
        _upsert_catalog(warehouse, conn, batch.catalog)

    hours = _hours(fresh_times)
    outcome = BatchOutcome(
        batch_id=batch.batch_id,
        landing_key=batch.landing_key,
        events_in=batch.events_in,
        stored=stored,
        duplicates=batch.duplicates_in_batch + (batch.kept - stored),
        dead_lettered=batch.dead_lettered,
        dead_by_reason=batch.dead_by_reason,
        min_event_time=pc.min(fresh_times).as_py() if len(fresh_times) else None,
        max_event_time=pc.max(fresh_times).as_py() if len(fresh_times) else None,
        hours_touched=hours,
    )
    conn.execute(
        ingest_ledger.insert().values(
            batch_id=batch.batch_id,
            landing_zone=batch.zone,
            landing_key=batch.landing_key,
            size_bytes=batch.size_bytes,
            events_in=outcome.events_in,
            stored=outcome.stored,
            duplicates=outcome.duplicates,
            dead_lettered=outcome.dead_lettered,
            min_event_time=outcome.min_event_time,
            max_event_time=outcome.max_event_time,
            hours_touched=orjson.dumps(hours).decode(),
            dead_by_reason=orjson.dumps(batch.dead_by_reason).decode(),
            run_id=run_id,
            ingested_at=datetime.now(UTC),
        )
    )
    return outcome


def _insert_duckdb(conn: sa.Connection, batch: PreparedBatch, stored_before: list[str] | None) -> pa.Array:
    """Insert the kept rows straight from the batch's validated rows (no filtered copy); returns
    which rows were stored.

    DuckDB has a single writer, so asking first which event_ids are already stored (almost always
    none; `stored_before` when the caller already knows) and then inserting the rest cannot race;
    it spares an anti-join and RETURNING, which cost more than the insert itself."""
    if not batch.kept:
        return pa.array([False] * batch.rows.num_rows)
    # Stored events have no order; letting DuckDB insert from both threads in any order is ~30% faster.
    conn.exec_driver_sql("SET preserve_insertion_order = false")
    raw = conn.connection.driver_connection
    rows = batch.rows.select([c for c in batch.rows.column_names if c != "reasons"]).append_column(
        "keep", batch.keep
    )
    # DuckDB scans an Arrow table in parallel by record batch: in slices of a row group each, both
    # cores insert and compress (a batch's rows come in one or two large slices otherwise).
    rows = pa.Table.from_batches(rows.to_batches(max_chunksize=DUCKDB_ROW_GROUP_SIZE), schema=rows.schema)
    raw.register("staged_rows", rows)
    try:
        if stored_before is None:
            stored_before = (
                conn.execute(
                    sa.text(
                        "SELECT s.event_id FROM staged_rows s JOIN events e ON e.event_id = s.event_id WHERE s.keep"
                    )
                )
                .scalars()
                .all()
            )
        fresh = batch.keep
        if stored_before:
            known = pc.is_in(batch.rows["event_id"], value_set=pa.array(stored_before, pa.string()))
            fresh = pc.and_(batch.keep, pc.invert(known))
            raw.unregister("staged_rows")
            raw.register("staged_rows", rows.set_column(rows.schema.get_field_index("keep"), "keep", fresh))
        select = ", ".join(
            {"original": "s.raw_text", "batch_id": ":batch_id", "ingested_at": ":ingested_at"}.get(
                c.name, f"s.{c.name}"
            )
            for c in events.columns
        )
        conn.execute(
            sa.text(
                f"INSERT INTO events ({_columns(events)}) SELECT {select} FROM staged_rows s WHERE s.keep"
            ),
            {"batch_id": batch.batch_id, "ingested_at": batch.received_at},
        )
        return fresh
    finally:
        raw.unregister("staged_rows")


def _insert_postgres(warehouse: Warehouse, conn: sa.Connection, batch: PreparedBatch) -> pa.Array:
    """COPY the kept rows into a temporary table, then insert what the primary key admits (safe
    with several writers at once); returns which rows were stored."""
    if not batch.kept:
        return pa.array([False] * batch.rows.num_rows)
    warehouse.stage(conn, "staged_events", batch.events)
    try:
        inserted = (
            conn.execute(
                sa.text(
                    f"INSERT INTO events ({_columns(events)}) SELECT {_columns(events)} FROM staged_events"
                    " ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
                )
            )
            .scalars()
            .all()
        )
    finally:
        warehouse.unstage(conn, "staged_events")
    if len(inserted) == batch.kept:
        return batch.keep
    return pc.and_(batch.keep, pc.is_in(batch.rows["event_id"], value_set=pa.array(inserted, pa.string())))


def _hours(times: pa.ChunkedArray) -> list[str]:
    if len(times) == 0:
        return []
    truncated = pc.floor_temporal(times, unit="hour")
    return sorted(t.isoformat() for t in pc.unique(truncated).to_pylist())


def _upsert_catalog(warehouse: Warehouse, conn: sa.Connection, catalog: pa.Table) -> None:
    warehouse.stage(conn, "staged_catalog", catalog)
    cols = _columns(asset_catalog)
    updates = ", ".join(
        f"{c.name} = excluded.{c.name}"
        for c in asset_catalog.columns
        if c.name not in ("tenant_id", "asset_id")
    )
    conn.execute(
        sa.text(
            f"INSERT INTO asset_catalog ({cols}) SELECT {cols} FROM staged_catalog"
            f" ON CONFLICT (tenant_id, asset_id) DO UPDATE SET {updates}"
            " WHERE asset_catalog.updated_at <= excluded.updated_at"
        )
    )
    warehouse.unstage(conn, "staged_catalog")


def _outcome_from_ledger(row, batch: PreparedBatch) -> BatchOutcome:
    """A batch seen again (re-upload, retried run): nothing is written; report the first time."""
    return BatchOutcome(
        batch_id=row["batch_id"],
        landing_key=batch.landing_key,
        events_in=row["events_in"],
        stored=row["stored"],
        duplicates=row["duplicates"],
        dead_lettered=row["dead_lettered"],
        dead_by_reason=orjson.loads(row["dead_by_reason"]),
        min_event_time=row["min_event_time"],
        max_event_time=row["max_event_time"],
        hours_touched=[],
        already_ingested=True,
    )


def summarise(outcomes: list[BatchOutcome]) -> dict:
    """Totals over batches, as `hub ingest` prints them and assets report them."""
    reasons: Counter[str] = Counter()
    for o in outcomes:
        reasons.update(o.dead_by_reason if not o.already_ingested else {})
    fresh = [o for o in outcomes if not o.already_ingested]
    times = [t for o in fresh for t in (o.min_event_time, o.max_event_time) if t]
    return {
        "files": len(outcomes),
        "files_already_ingested": len(outcomes) - len(fresh),
        "events_in": sum(o.events_in for o in fresh),
        "stored": sum(o.stored for o in fresh),
        "duplicates": sum(o.duplicates for o in fresh),
        "dead_lettered": sum(o.dead_lettered for o in fresh),
        "dead_lettered_by_reason": dict(sorted(reasons.items())),
        "min_event_time": min(times).isoformat() if times else None,
        "max_event_time": max(times).isoformat() if times else None,
        "hours_touched": sorted({h for o in fresh for h in o.hours_touched}),
    }
