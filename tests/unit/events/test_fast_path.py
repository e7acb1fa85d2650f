"""The lean path (fast_path.py) against the full compiled validator: on generated traffic with bad
input the two give the same row for every record, byte for byte; the lean path takes most of the
records of its layouts (or it would be correct and useless); a record only the batch can judge
(timestamp_too_old) still gets its reason. Mutated and re-rendered records are compared in
test_validator_conformance.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from hub_pipelines.events import fast_path
from hub_pipelines.events.records import split_records
from hub_pipelines.events.sql_validator import validate_batches
from hub_pipelines.generator import GeneratorConfig, simulate, write_batches

END = datetime(2026, 11, 20, 0, tzinfo=UTC)
RECEIVED_AT = END + timedelta(minutes=30)


@pytest.fixture(scope="module")
def generated_batches(tmp_path_factory) -> list[pa.Table]:
    out = tmp_path_factory.mktemp("lean")
    config = GeneratorConfig(days=2, tenants=2, seed=5, end=END, requests_per_hour=40, corrupt_rate=0.05)
    write_batches(simulate(config), out)
    return [split_records(path.read_bytes()) for path in sorted(out.rglob("*.jsonl"))]


def _sorted(table: pa.Table) -> pa.Table:
    return table.sort_by([("batch_idx", "ascending"), ("rec_idx", "ascending")])


def assert_same_rows(lean: pa.Table, full: pa.Table) -> None:
    """Every column equal, with the first differing record named when not."""
    lean, full = _sorted(lean), _sorted(full)
    assert lean.num_rows == full.num_rows
    assert lean.schema == full.schema
    for name in full.column_names:
        if lean[name].equals(full[name]):
            continue
        same = pc.fill_null(pc.equal(lean[name], full[name]), False) if name != "reasons" else None
        both_null = pc.and_(pc.is_null(lean[name]), pc.is_null(full[name])) if same is not None else None
        differing = (
            np.flatnonzero(~pc.or_(same, both_null).to_numpy(zero_copy_only=False))
            if same is not None
            else [i for i in range(full.num_rows) if lean[name][i] != full[name][i]]
        )
        i = int(differing[0])
        raise AssertionError(
            f"{name} differs for {full['raw_text'][i]}: lean {lean[name][i]!r}, full {full[name][i]!r}"
        )


def test_lean_and_full_paths_give_the_same_rows_on_generated_traffic(generated_batches):
    lean = validate_batches(generated_batches, RECEIVED_AT).table()
    full = validate_batches(generated_batches, RECEIVED_AT, lean=False).table()
    assert_same_rows(lean, full)
    reasons = {r["code"] for rs in full["reasons"].to_pylist() for r in rs}
    # The comparison covers bad input of every kind the generator writes, not only good events.
    assert {"timestamp_too_old", "timestamp_in_future", "unit_mismatch", "missing_field"} <= reasons


def test_the_lean_path_takes_most_records_of_its_layouts(generated_batches):
    records = pa.concat_tables(
        t.append_column("batch_idx", pa.repeat(pa.scalar(i, pa.int32()), t.num_rows))
        for i, t in enumerate(generated_batches)
    )
    records = records.append_column("row_id", pa.array(np.arange(records.num_rows, dtype=np.int64)))
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    accepted = fast_path.accept(con, records, RECEIVED_AT)
    full = validate_batches(generated_batches, RECEIVED_AT, lean=False).table()
    lean_kinds = pc.and_(
        pc.is_in(full["event_type"], pa.array(["telemetry", "cost"])),
        pc.is_in(full["source_module"], pa.array(["llm-observatory", "llm-costops"])),
    )
    valid_of_its_layouts = pc.sum(pc.and_(full["is_valid"], pc.fill_null(lean_kinds, False))).as_py()
    assert accepted.num_rows >= 0.95 * valid_of_its_layouts
    # Canonical telemetry and cost and legacy (1.x) telemetry all take it.
    majors = accepted.group_by(["event_type", "schema_major"]).aggregate([("row_id", "count")])
    kinds = {(r["event_type"], r["schema_major"]) for r in majors.to_pylist()}
    assert {("telemetry", 2), ("cost", 2), ("telemetry", 1)} <= kinds


def _event(event_id: str, when: datetime, value: float) -> bytes:
    return orjson.dumps(
        {
            "event_id": event_id,
            "timestamp": when.isoformat().replace("+00:00", "Z"),
            "source_module": "llm-observatory",
            "event_type": "telemetry",
            "schema_version": "2.0.0",
            "tenant_id": "acme",
            "payload": {"metric_name": "latency_ms", "metric_value": value, "unit": "ms"},
        }
    )


def test_a_record_too_old_for_its_batch_gets_its_reason_from_the_full_path():
    newest = RECEIVED_AT - timedelta(minutes=5)
    lines = [
        _event("00000000-0000-4000-8000-000000000001", newest - timedelta(days=8), 10.0),
        _event("00000000-0000-4000-8000-000000000002", newest, 20.0),
    ]
    records = split_records(b"\n".join(lines) + b"\n")
    rows = validate_batches([records], RECEIVED_AT).table().sort_by("rec_idx").to_pylist()
    assert [r["is_valid"] for r in rows] == [False, True]
    assert [r["code"] for r in rows[0]["reasons"]] == ["timestamp_too_old"]
    # The lean path alone would have taken it: only the batch watermark rejects it.
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    table = records.append_column("batch_idx", pa.array([0, 0], pa.int32())).append_column(
        "row_id", pa.array([0, 1], pa.int64())
    )
    assert fast_path.accept(con, table, RECEIVED_AT)["row_id"].to_pylist() == [0, 1]


def _telemetry(**changes) -> dict:
    event = {
        "event_id": "00000000-0000-4000-8000-00000000000a",
        "timestamp": "2026-11-19T23:00:00.5Z",
        "source_module": "llm-observatory",
        "event_type": "telemetry",
        "schema_version": "2.0.0",
        "tenant_id": "acme",
        "payload": {
            "metric_name": "latency_ms",
            "metric_value": 1.5,
            "unit": "s",
            "dimensions": {"model": "gpt-4o", "provider": "openai", "status": "ok"},
        },
    }
    payload = changes.pop("payload", {})
    return event | changes | {"payload": event["payload"] | payload}


UNUSUAL = [
    _telemetry(),
    _telemetry(payload={"dimensions": {"model": 'quote " inside', "provider": "back\\slash"}}),
    _telemetry(payload={"dimensions": {"model": "tab\tand\nnewline", "provider": "é中\u2028"}}),
    _telemetry(payload={"dimensions": {"model": 7, "provider": True, "status": None, "region": 1.25}}),
    _telemetry(correlation_id='has "quotes"'),
    _telemetry(tags={"team": "a:b", "owner": "c\\d"}),
    _telemetry(timestamp="2026-11-19T23:00:00.123456789+01:30"),
    _telemetry(payload={"extra": {"nested": [1, 2]}}),
]


@pytest.mark.parametrize("ensure_ascii", [True, False])
def test_escaped_and_unusual_text_reads_the_same_on_both_paths(ensure_ascii):
    lines = [orjson.dumps(e) if not ensure_ascii else _ascii(e) for e in UNUSUAL]
    records = split_records(b"\n".join(lines) + b"\n")
    lean = validate_batches([records], RECEIVED_AT).table()
    full = validate_batches([records], RECEIVED_AT, lean=False).table()
    assert_same_rows(lean, full)
    assert all(full["is_valid"].to_pylist())
    # The lean path took the escaped dimension values too (it reads them through a parse).
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    table = records.append_column("batch_idx", pa.repeat(pa.scalar(0, pa.int32()), records.num_rows))
    table = table.append_column("row_id", pa.array(np.arange(records.num_rows, dtype=np.int64)))
    taken = set(fast_path.accept(con, table, RECEIVED_AT)["row_id"].to_pylist())
    assert {0, 1, 2, 3, 6, 7} <= taken


def _ascii(event: dict) -> bytes:
    return json.dumps(event).encode()  # escapes every non-ASCII character
