"""How the embedded DuckDB warehouse stores events, which is what makes per-batch commits cheap:
row groups small enough that a batch's commit writes its rows straight to the file (not through
the write-ahead log), the same row-group size on every connection, zstd only on the large
text columns, and event_id uncompressed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from hub_pipelines.events.batches import LandedBatch, prepare_batches
from hub_pipelines.ingestion import keep_freed_memory
from hub_pipelines.warehouse import Warehouse
from hub_pipelines.warehouse.event_writer import StoredIds, write_batch
from hub_pipelines.warehouse.store import DUCKDB_ROW_GROUP_SIZE


def _batch(event_factory, first: int, count: int) -> LandedBatch:
    now = datetime.now(UTC).replace(microsecond=0)
    lines = [orjson.dumps(event_factory(first + i, now - timedelta(seconds=i))) for i in range(count)]
    return LandedBatch(key=f"batch-{first}.jsonl", data=b"\n".join(lines))


def _storage(conn: sa.Connection) -> list[dict]:
    rows = conn.exec_driver_sql(
        "SELECT row_group_id, column_name, count, compression FROM pragma_storage_info('events')"
        " WHERE segment_type <> 'VALIDITY'"
    ).mappings()
    return [dict(r) for r in rows]


def test_a_batch_commit_writes_row_groups_to_the_file_not_the_log(tmp_path: Path, event_factory):
    path = tmp_path / "warehouse.duckdb"
    warehouse = Warehouse(f"duckdb:///{path}")
    warehouse.create_tables()
    rows = 3 * DUCKDB_ROW_GROUP_SIZE + 100
    (prepared,) = prepare_batches([_batch(event_factory, 0, rows)])
    wal = Path(f"{path}.wal")
    with warehouse.connect() as conn:
        # No checkpoint may move the rows to the file behind the test's back.
        conn.exec_driver_sql("SET checkpoint_threshold = '1GB'")
        conn.commit()
        file_before = path.stat().st_size
        outcome = write_batch(warehouse, prepared, session=conn)
        assert outcome.stored == rows
        # Committed, not yet checkpointed: the full row groups are already in the file and the
        # log holds little more than the last partial one. With DuckDB's default row group
        # (122,880 rows) the whole batch would be in the log.
        wal_bytes = wal.stat().st_size if wal.exists() else 0
        grown = path.stat().st_size - file_before
        assert grown > 0
        assert wal_bytes < grown / 2, (wal_bytes, grown)
    warehouse.engine.dispose()


def test_every_connection_keeps_the_row_group_size_and_zstd_on_text(tmp_path: Path, event_factory):
    url = f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    first = Warehouse(url)
    first.create_tables()
    with first.session() as conn:
        write_batch(
            first, prepare_batches([_batch(event_factory, 0, 2 * DUCKDB_ROW_GROUP_SIZE + 7)])[0], session=conn
        )
    first.engine.dispose()

    # A second process-like open: another Warehouse, another batch, a checkpoint. DuckDB merges
    # row groups at a checkpoint when a connection attaches with another size; this must not.
    second = Warehouse(url)
    with second.session() as conn:
        write_batch(second, prepare_batches([_batch(event_factory, 10**6, 5)])[0], session=conn)
    with second.connect() as conn:
        storage = _storage(conn)
        total = conn.execute(sa.text("SELECT count(*) FROM events")).scalar_one()
    second.engine.dispose()

    assert total == 2 * DUCKDB_ROW_GROUP_SIZE + 12
    per_group = {}
    for seg in storage:
        if seg["column_name"] == "event_id":
            per_group[seg["row_group_id"]] = per_group.get(seg["row_group_id"], 0) + seg["count"]
    assert len(per_group) >= 3
    assert max(per_group.values()) <= DUCKDB_ROW_GROUP_SIZE
    compression = {}
    for seg in storage:
        compression.setdefault(seg["column_name"], set()).add(seg["compression"].lower())
    assert compression["original"] == {"zstd"}
    assert compression["payload"] == {"zstd"}
    # event_id (a random UUID) is stored as it is: no analysis when writing, no decompression
    # when de-duplication scans it.
    assert compression["event_id"] == {"uncompressed"}
    assert "zstd" not in compression["tenant_id"]


def test_stored_text_reads_back_unchanged(tmp_path: Path, event_factory):
    warehouse = Warehouse(f"duckdb:///{tmp_path / 'warehouse.duckdb'}")
    warehouse.create_tables()
    batch = _batch(event_factory, 0, DUCKDB_ROW_GROUP_SIZE + 3)
    with warehouse.session() as conn:
        write_batch(warehouse, prepare_batches([batch])[0], session=conn)
    with warehouse.connect() as conn:
        stored = dict(conn.execute(sa.text("SELECT event_id, original FROM events")).all())
    warehouse.engine.dispose()
    sent = {json.loads(line)["event_id"]: line.decode() for line in batch.data.split(b"\n")}
    assert stored == sent


def test_keep_freed_memory_puts_arrow_on_jemalloc():
    assert keep_freed_memory() is True
    assert pa.default_memory_pool().backend_name == "jemalloc"
    # Arrow still allocates and computes on that pool.
    assert pc.sum(pa.array(range(1000))).as_py() == 499500


def test_one_scan_per_chunk_finds_what_a_scan_per_batch_finds(tmp_path: Path, event_factory):
    """StoredIds (one scan of stored event_ids per chunk) against the scan per batch: the same
    outcomes and rows, with event_ids stored by an earlier run and by an earlier batch of the run."""
    earlier = _batch(event_factory, 0, 50)
    run = [_batch(event_factory, 40, 30), _batch(event_factory, 60, 30), _batch(event_factory, 85, 10)]
    results = []
    for name, one_scan in (("per_batch", False), ("per_chunk", True)):
        warehouse = Warehouse(f"duckdb:///{tmp_path / name}.duckdb")
        warehouse.create_tables()
        with warehouse.session() as conn:
            write_batch(warehouse, prepare_batches([earlier])[0], session=conn)
            prepared = prepare_batches(run)
            stored_ids = StoredIds.of(warehouse, conn, prepared) if one_scan else None
            outcomes = [
                write_batch(warehouse, batch, session=conn, stored_ids=stored_ids) for batch in prepared
            ]
        with warehouse.connect() as conn:
            ids = conn.execute(sa.text("SELECT event_id FROM events ORDER BY event_id")).scalars().all()
        warehouse.engine.dispose()
        results.append(([(o.stored, o.duplicates) for o in outcomes], ids))
    # 40-49 were stored by the earlier run, 60-69 and 85-89 by an earlier batch of this one.
    assert results[0][0] == [(20, 10), (20, 10), (5, 5)]
    assert results[1] == results[0]
    assert len(results[1][1]) == len(set(results[1][1])) == 95
