"""Whatever bytes arrive, the parser does not crash and accounts for every record:
events_in = valid unique + duplicates within the batch + dead-lettered."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub_pipelines.events.batches import LandedBatch, prepare_batches
from hub_pipelines.events.records import split_records

RECEIVED_AT = datetime(2026, 11, 20, 12, tzinfo=UTC)
FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


def _expected_records(data: bytes) -> int:
    """Independent count: elements of a JSON array, else non-blank lines."""
    try:
        parsed = json.loads(data.decode("utf-8"))
        if isinstance(parsed, list) and data.lstrip()[:1] == b"[":
            return len(parsed)
    except (UnicodeDecodeError, ValueError, RecursionError):
        pass
    return sum(1 for line in data.split(b"\n") if line.strip(b" \t\r"))


def _check_accounting(data: bytes) -> None:
    (batch,) = prepare_batches([LandedBatch("prop/batch.jsonl", data)], RECEIVED_AT)
    assert batch.events_in == batch.events.num_rows + batch.duplicates_in_batch + batch.dead_lettered
    # Every dead letter names a reason and keeps its raw text.
    reasons = batch.dead_letters["primary_reason"].to_pylist()
    assert all(reasons)
    assert all(raw is not None for raw in batch.dead_letters["raw"].to_pylist())
    assert len(set(batch.events["event_id"].to_pylist())) == batch.events.num_rows


@FAST
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_are_accounted_for(data):
    _check_accounting(data)
    # The record count is the number of records a person would count in the file.
    if not data.startswith(b"\x1f\x8b"):
        (batch,) = prepare_batches([LandedBatch("prop/batch.jsonl", data)], RECEIVED_AT)
        assert batch.events_in == _expected_records(data)


@FAST
@given(st.lists(json_values, max_size=15), st.sampled_from(["lines", "array", "gzip"]))
def test_arbitrary_json_is_accounted_for(values, layout):
    if layout == "array":
        data = json.dumps(values).encode()
    else:
        data = b"\n".join(json.dumps(v).encode() for v in values)
        if layout == "gzip":
            data = gzip.compress(data)
    _check_accounting(data)
    (batch,) = prepare_batches([LandedBatch("prop/batch.jsonl", data)], RECEIVED_AT)
    # A file that is one JSON array is read as its elements, even if it was meant as one line.
    expected = (
        len(values)
        if layout == "array"
        else _expected_records(gzip.decompress(data) if layout == "gzip" else data)
    )
    assert batch.events_in == expected


@FAST
@given(st.lists(st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\n\r")), max_size=30))
def test_split_records_numbers_lines(lines):
    data = "\n".join(lines).encode()
    table = split_records(data)
    kept = [(i, line) for i, line in enumerate(lines) if line.strip(" \t")]
    # A file that happens to be one JSON array is read as its elements instead.
    if data.lstrip()[:1] != b"[":
        assert table["rec_idx"].to_pylist() == [i for i, _ in kept]
        assert table["raw"].to_pylist() == [line for _, line in kept]


def test_windows_line_ends_and_blank_lines():
    data = b'{"a": 1}\r\n\r\n   \n{"b": 2}\r\n'
    table = split_records(data)
    assert table["rec_idx"].to_pylist() == [0, 3]
    assert table["raw"].to_pylist() == ['{"a": 1}', '{"b": 2}']


def test_invalid_utf8_line_is_a_dead_letter_with_its_bytes():
    data = b'{"ok": 1}\n\xff\xfe broken\n'
    (batch,) = prepare_batches([LandedBatch("x.jsonl", data)], RECEIVED_AT)
    assert batch.events_in == 2
    dead = batch.dead_letters.to_pylist()
    codes = {d["record_index"]: d["primary_reason"] for d in dead}
    assert codes[1] == "invalid_utf8"
    assert "\\xff\\xfe broken" in next(d["raw"] for d in dead if d["record_index"] == 1)


def test_corrupt_gzip_is_one_dead_letter():
    (batch,) = prepare_batches([LandedBatch("x.jsonl.gz", b"\x1f\x8b\x08garbage")], RECEIVED_AT)
    assert batch.events_in == 1 and batch.dead_lettered == 1
    assert batch.dead_by_reason == {"unreadable_batch": 1}
