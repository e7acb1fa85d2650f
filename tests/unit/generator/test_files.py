"""Batch files: deterministic bytes, their layout, days and parts, and the formats round-trip."""

from __future__ import annotations

import gzip
import re
from datetime import UTC, datetime

import orjson
import pytest

from hub_pipelines.generator import GeneratorConfig, hourly_series, simulate, write_batches

CONFIG = {"days": 3, "tenants": 3, "seed": 21, "requests_per_hour": 4.0, "corrupt_rate": 0.05}
NAME = re.compile(r"^(llm-[a-z-]+)/(\d{4}-\d{2}-\d{2})/(llm-[a-z-]+)-(\d{8})-(\d{2})\.(jsonl|json)(\.gz)?$")


def _contents(out_dir) -> dict[str, bytes]:
    return {
        p.relative_to(out_dir).as_posix(): p.read_bytes() for p in sorted(out_dir.rglob("*")) if p.is_file()
    }


@pytest.mark.parametrize(("fmt", "gz"), [("jsonl", False), ("json", True)])
def test_the_same_config_writes_the_same_bytes(tmp_path, fmt, gz):
    first = write_batches(simulate(GeneratorConfig(**CONFIG)), tmp_path / "a", fmt=fmt, gzip=gz)
    second = write_batches(simulate(GeneratorConfig(**CONFIG)), tmp_path / "b", fmt=fmt, gzip=gz)
    assert first == second
    a, b = _contents(tmp_path / "a"), _contents(tmp_path / "b")
    assert a.keys() == b.keys() and len(a) > 10
    assert all(a[name] == b[name] for name in a)


def test_seed_and_end_change_the_data(tmp_path):
    base = simulate(GeneratorConfig(**CONFIG))
    other_seed = simulate(GeneratorConfig(**{**CONFIG, "seed": 22}))
    other_end = simulate(GeneratorConfig(**{**CONFIG, "end": "2026-10-01T00:00:00Z"}))
    assert not hourly_series(base).equals(hourly_series(other_seed))
    assert other_end.requests.ts_ms.max() < base.requests.ts_ms.min()


def test_files_are_one_batch_per_source_and_utc_day(tmp_path, records_of):
    sim = simulate(GeneratorConfig(**{**CONFIG, "corrupt_rate": 0.0}))
    manifest = write_batches(sim, tmp_path)
    names = [f["path"] for f in manifest["files"]]
    assert names == sorted(names, key=lambda n: (manifest_order(n), n))
    for entry in manifest["files"]:
        match = NAME.match(entry["path"])
        assert match, entry["path"]
        source, day, source_again, compact, part = match.group(1, 2, 3, 4, 5)
        assert source == source_again == entry["source_module"] and compact == day.replace("-", "")
        records = records_of(tmp_path / entry["path"])
        assert len(records) == entry["records"]
        for text in records:
            moment = _utc(orjson.loads(text))
            assert moment.date().isoformat() == day
    sources = {f["source_module"] for f in manifest["files"]}
    assert sources == {
        "llm-observatory",
        "llm-costops",
        "llm-sentinel",
        "llm-policy-engine",
        "llm-governance",
        "llm-registry",
    }


def manifest_order(name: str) -> int:
    order = [
        "llm-observatory",
        "llm-costops",
        "llm-sentinel",
        "llm-policy-engine",
        "llm-governance",
        "llm-registry",
    ]
    return order.index(name.split("/")[0])


def _utc(record: dict) -> datetime:
    value = (
        record.get("timestamp") or record.get("ts") or record.get("evaluated_at") or record.get("recorded_at")
    )
    if isinstance(value, int):
        return datetime.fromtimestamp(value / 1000, UTC)
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def test_big_days_are_split_into_parts(tmp_path, records_of):
    sim = simulate(GeneratorConfig(**{**CONFIG, "max_events_per_file": 500, "corrupt_rate": 0.0}))
    manifest = write_batches(sim, tmp_path)
    observatory = [f for f in manifest["files"] if f["source_module"] == "llm-observatory"]
    assert max(f["part"] for f in observatory) >= 2
    assert all(f["good_events"] <= 500 for f in manifest["files"])
    # Parts of a day follow each other in time.
    day = [f for f in observatory if f["date"] == observatory[0]["date"]]
    bounds = []
    for entry in day:
        times = [_utc(orjson.loads(t)) for t in records_of(tmp_path / entry["path"])]
        bounds.append((min(times), max(times)))
    assert all(earlier[1] <= later[0] for earlier, later in zip(bounds, bounds[1:], strict=False))
    assert sum(f["good_events"] for f in manifest["files"]) == manifest["expected"]["stored"]


def test_array_and_gzip_formats_hold_the_same_events(tmp_path, records_of):
    sim = simulate(GeneratorConfig(**{**CONFIG, "corrupt_rate": 0.0}))
    lines = write_batches(sim, tmp_path / "lines")
    arrays = write_batches(sim, tmp_path / "arrays", fmt="json", gzip=True)
    assert lines["expected"] == arrays["expected"]
    for a, b in zip(lines["files"], arrays["files"], strict=True):
        assert b["path"] == a["path"].replace(".jsonl", ".json.gz")
        raw = (tmp_path / "arrays" / b["path"]).read_bytes()
        assert raw[:2] == b"\x1f\x8b"
        elements = orjson.loads(gzip.decompress(raw))
        assert isinstance(elements, list)
        assert elements == [orjson.loads(t) for t in records_of(tmp_path / "lines" / a["path"])]


def test_end_must_be_an_hour_boundary_and_may_carry_an_offset():
    assert GeneratorConfig(end="2026-11-01T01:00:00+01:00").end_utc == datetime(2026, 11, 1, tzinfo=UTC)
    assert GeneratorConfig(end=datetime(2026, 11, 1, 5)).end_utc == datetime(2026, 11, 1, 5, tzinfo=UTC)
    with pytest.raises(ValueError, match="hour boundary"):
        GeneratorConfig(end="2026-11-01T00:30:00Z")
    with pytest.raises(ValueError):
        GeneratorConfig(corrupt_rate=1.5)
    with pytest.raises(ValueError):
        write_batches(
            simulate(GeneratorConfig(days=1, tenants=1, requests_per_hour=1)), "/tmp/unused", fmt="xml"
        )
