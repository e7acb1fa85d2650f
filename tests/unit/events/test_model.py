"""The pandera model of the normalised events table: what the validator lets through passes; a row
that breaks one of the table's promises stops the ingest with pandera's SchemaError."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pandera.errors
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from hub_pipelines.events import batches
from hub_pipelines.events.batches import LandedBatch, prepare_batches
from hub_pipelines.events.model import CHECKED_COLUMNS, check_events
from hub_pipelines.events.sql_validator import output_schema
from hub_pipelines.ingestion import ingest_files
from hub_pipelines.landing import LocalFolder
from hub_pipelines.warehouse import Warehouse


def _rows(*overrides: dict) -> pa.Table:
    base = {
        "batch_idx": 0, "event_time": datetime(2026, 10, 5, tzinfo=UTC), "tenant_id": "t1",
        "source_module": "llm-observatory", "event_type": "telemetry", "schema_version": "2.0.0",
        "schema_major": 2, "severity": None, "metric_name": "latency_ms", "metric_value": 120.0, "unit": "ms",
        "cost_usd": None, "outcome": None,
    }  # fmt: skip
    rows = [base | {"event_id": str(uuid.uuid4())} | o for o in overrides]
    schema = pa.schema([output_schema().field(c) for c in CHECKED_COLUMNS])
    return pa.Table.from_pylist(rows, schema=schema)


def test_valid_rows_pass_and_an_event_id_may_repeat_across_batches():
    shared = str(uuid.uuid4())
    check_events(_rows({}, {"event_id": shared}, {"event_id": shared, "batch_idx": 1}))


@pytest.mark.parametrize(
    "bad",
    [
        {"metric_value": -1.0},
        {"unit": "furlongs"},
        {"event_id": "not-a-uuid"},
        {"event_type": "cost", "cost_usd": None},
        {"event_type": "security", "severity": "info"},
        {"schema_major": 7},
        {"outcome": "maybe"},
    ],
    ids=lambda bad: ",".join(bad),
)
def test_a_broken_promise_raises(bad):
    with pytest.raises(pandera.errors.SchemaError):
        check_events(_rows({}, bad))


def test_an_event_id_twice_in_one_batch_raises():
    shared = str(uuid.uuid4())
    with pytest.raises(pandera.errors.SchemaError, match="unique_within_a_batch"):
        check_events(_rows({"event_id": shared}, {"event_id": shared}))


def test_prepared_batches_are_checked_together():
    """Two batches carrying the same event: each keeps it (the writer de-duplicates against stored
    events), and the joint check accepts that."""
    event = {
        "event_id": str(uuid.uuid4()), "timestamp": datetime.now(UTC).isoformat(), "source_module": "llm-observatory",
        "event_type": "telemetry", "schema_version": "2.0.0", "tenant_id": "t1",
        "payload": {"metric_name": "latency_ms", "metric_value": 1.5, "unit": "s", "dimensions": {"model": "m"}},
    }  # fmt: skip
    line = json.dumps(event)
    prepared = prepare_batches(
        [LandedBatch("a.jsonl", line.encode()), LandedBatch("b.jsonl", (line + "\n").encode())]
    )
    assert [p.kept for p in prepared] == [1, 1]
    assert prepared[0].rows["metric_value"].to_pylist() == [1500.0]


def test_ingest_stops_before_writing_a_chunk_that_breaks_the_model(tmp_path, monkeypatch):
    """The check runs on the writing thread (ingest_files), before the chunk's first write: a
    normalisation bug (here every metric value made negative) stops the ingest with nothing of
    the chunk stored."""
    real = batches.judge_rest

    def broken(*args, **kwargs):
        validated = real(*args, **kwargs)
        validated.parts = [
            part.set_column(
                part.schema.get_field_index("metric_value"), "metric_value", pc.negate(part["metric_value"])
            )
            for part in validated.parts
        ]
        return validated

    monkeypatch.setattr(batches, "judge_rest", broken)
    event = {
        "event_id": str(uuid.uuid4()), "timestamp": datetime.now(UTC).isoformat(), "source_module": "llm-observatory",
        "event_type": "telemetry", "schema_version": "2.0.0", "tenant_id": "t1",
        "payload": {"metric_name": "latency_ms", "metric_value": 1.5, "unit": "s"},
    }  # fmt: skip
    (tmp_path / "landing").mkdir()
    (tmp_path / "landing" / "a.jsonl").write_text(json.dumps(event) + "\n")
    warehouse = Warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}")
    warehouse.create_tables()
    with pytest.raises(pandera.errors.SchemaError, match="metric_value"):
        ingest_files(warehouse, LocalFolder(tmp_path / "landing"), ["a.jsonl"], archive=False)
    with warehouse.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM events").scalar_one() == 0
        assert conn.exec_driver_sql("SELECT count(*) FROM ingest_ledger").scalar_one() == 0
