"""How ingest_files cuts its files into chunks: a short first chunk, and the last one, when
large, in two halves (nothing overlaps the start of the first nor the end of the last)."""

from __future__ import annotations

import logging
from unittest import mock

from hypothesis import given
from hypothesis import strategies as st

from hub_pipelines import ingestion
from hub_pipelines.events.batches import LandedBatch
from hub_pipelines.landing import LocalFolder


@given(sizes=st.lists(st.integers(min_value=1, max_value=400), max_size=12))
def test_the_last_chunk_is_halved_only_when_large(sizes):
    with mock.patch.object(ingestion, "CHUNK_BYTES", 4000):
        _check_tail(sizes)


def _check_tail(sizes: list[int]) -> None:
    batches = [LandedBatch(key=f"f{i}.jsonl", data=b"x" * size) for i, size in enumerate(sizes)]
    total = sum(sizes)
    parts = list(ingestion._tail(batches, total))
    assert [b.key for part in parts for b in part] == [b.key for b in batches]  # all, in order
    assert all(parts)  # no empty chunk
    large = total >= ingestion.CHUNK_BYTES * ingestion.EDGE_SHARE
    assert len(parts) == (2 if large and len(batches) >= 2 else min(len(batches), 1))
    if len(parts) == 2:  # no other cut between files is closer to half the bytes
        first = sum(len(b.data) for b in parts[0])
        cuts = [sum(sizes[:i]) for i in range(1, len(sizes))]
        assert abs(first - total / 2) == min(abs(c - total / 2) for c in cuts)


def test_halves_are_balanced_by_bytes(monkeypatch):
    monkeypatch.setattr(ingestion, "CHUNK_BYTES", 1000)
    batches = [LandedBatch(key=f"f{i}.jsonl", data=b"x" * 100) for i in range(8)]
    first, second = ingestion._tail(batches, 800)
    assert (len(first), len(second)) == (4, 4)
    # A small last chunk stays whole.
    assert len(list(ingestion._tail(batches[:2], 200))) == 1


def test_a_short_first_chunk_then_full_ones(tmp_path, monkeypatch):
    monkeypatch.setattr(ingestion, "CHUNK_BYTES", 1000)
    for i in range(20):
        (tmp_path / f"f{i:02d}.jsonl").write_bytes(b"{}\n" * 33 + b"\n")  # 100 bytes each
    zone = LocalFolder(tmp_path)
    keys = [f.key for f in zone.list_pending()]
    report = ingestion.IngestReport()
    chunks = list(ingestion._chunks(zone, keys, report, logging.getLogger(__name__)))
    sizes = [sum(len(b.data) for b in chunk) for chunk in chunks]
    # At least 250 bytes first (a quarter), then 1000, then the last 700 in two near halves.
    assert sizes == [300, 1000, 300, 400]
    assert [b.key for chunk in chunks for b in chunk] == keys
    assert all(b.records.num_rows == 33 for chunk in chunks for b in chunk)  # split as read
