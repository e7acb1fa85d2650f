"""Generated traffic with 5% bad input, ingested through the CLI's path: every batch balances
(events_in = stored + duplicates + dead_lettered) and the totals are exactly what the generator
says it wrote, on DuckDB and PostgreSQL, in every file format."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from hub_pipelines import ingestion
from hub_pipelines.generator import GeneratorConfig, simulate, write_batches
from hub_pipelines.ingestion import ingest_files
from hub_pipelines.landing import LocalFolder


def _end() -> datetime:
    """Data up to the current hour: 'future' corruptions are then in the future at ingest."""
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("generated")
    config = GeneratorConfig(days=3, tenants=2, seed=11, end=_end(), requests_per_hour=30, corrupt_rate=0.05)
    manifest = write_batches(simulate(config), out)
    return out, manifest


def test_every_batch_balances_and_totals_match_the_manifest(warehouse, generated):
    landing, manifest = generated
    zone = LocalFolder(landing)
    report = ingest_files(warehouse, zone, [f.key for f in zone.list_pending()], archive=False)
    for outcome in report.outcomes:
        assert outcome.events_in == outcome.stored + outcome.duplicates + outcome.dead_lettered, (
            outcome.landing_key
        )
    summary = report.summary
    expected = manifest["expected"]
    assert summary["events_in"] == expected["events_in"]
    assert summary["stored"] == expected["stored"]
    assert summary["duplicates"] == expected["duplicates"]
    assert summary["dead_lettered"] == expected["dead_lettered"]
    assert summary["dead_lettered_by_reason"] == expected["dead_letter_reasons"]
    assert sum(manifest["corruptions"].values()) > 0.04 * expected["stored"]
    with warehouse.connect() as conn:
        events, distinct = conn.execute(
            sa.text("SELECT count(*), count(DISTINCT event_id) FROM events")
        ).one()
        dead = conn.execute(sa.text("SELECT count(*) FROM dead_letter_events")).scalar_one()
        empty_reasons = conn.execute(
            sa.text("SELECT count(*) FROM dead_letter_events WHERE reasons = '[]' OR raw IS NULL")
        ).scalar_one()
        catalog = conn.execute(sa.text("SELECT count(*) FROM asset_catalog")).scalar_one()
    assert events == distinct == expected["stored"]
    assert dead == expected["dead_lettered"] and empty_reasons == 0
    assert catalog > 0  # registry metadata became the asset catalog


def test_many_chunks_give_the_same_totals(warehouse, generated, monkeypatch):
    """Small chunks: several in flight at once (each one's lean statement, the rest of its
    validation and its writing on three threads), duplicates across chunks, and a last chunk
    prepared in two halves. The totals are still exactly the manifest's."""
    landing, manifest = generated
    zone = LocalFolder(landing)
    pending = list(zone.list_pending())
    chunk_bytes = sum(f.size for f in pending) // 7
    monkeypatch.setattr(ingestion, "CHUNK_BYTES", chunk_bytes)
    chunk_sizes = []
    real_start = ingestion.start_batches

    def start_batches(chunk, *args, **kwargs):
        chunk_sizes.append(sum(len(b.data) for b in chunk))
        return real_start(chunk, *args, **kwargs)

    monkeypatch.setattr(ingestion, "start_batches", start_batches)
    report = ingest_files(warehouse, zone, [f.key for f in pending], archive=False)
    assert len(chunk_sizes) >= 4
    assert sum(chunk_sizes) == sum(f.size for f in pending)
    summary, expected = report.summary, manifest["expected"]
    assert [o.landing_key for o in report.outcomes] == [f.key for f in pending]  # written in order
    assert (summary["events_in"], summary["stored"], summary["duplicates"], summary["dead_lettered"]) == (
        expected["events_in"], expected["stored"], expected["duplicates"], expected["dead_lettered"]
    )  # fmt: skip
    assert summary["dead_lettered_by_reason"] == expected["dead_letter_reasons"]
    with warehouse.connect() as conn:
        events, distinct = conn.execute(
            sa.text("SELECT count(*), count(DISTINCT event_id) FROM events")
        ).one()
    assert events == distinct == expected["stored"]


@pytest.mark.parametrize(("fmt", "gzip"), [("json", False), ("jsonl", True)])
def test_other_formats_through_the_cli(tmp_path, fmt, gzip):
    """`hub generate` and `hub ingest` end to end, JSON arrays and gzipped JSON Lines."""
    end = _end().isoformat()
    out = tmp_path / "batches"
    common = [sys.executable, "-m", "hub_pipelines.cli"]
    generate = common + ["generate", "--out", str(out), "--days", "2", "--tenants", "1", "--seed", "3", "--end", end,
                         "--requests-per-hour", "20", "--corrupt-rate", "0.05", "--format", fmt]  # fmt: skip
    generate += ["--gzip"] if gzip else []
    result = subprocess.run(generate, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    suffix = ".json" if fmt == "json" else ".jsonl"
    assert all(f.endswith(suffix + (".gz" if gzip else "")) for f in _batch_files(out))
    env_url = f"duckdb:///{tmp_path / 'w.duckdb'}"
    result = subprocess.run(
        common + ["ingest", "--warehouse-url", env_url, str(out)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    for key in ("events_in", "stored", "duplicates", "dead_lettered"):
        assert summary[key] == manifest["expected"][key], key


def test_same_seed_same_bytes(tmp_path):
    end = (_end() - timedelta(days=1)).isoformat()
    digests = []
    for run in range(2):
        out = tmp_path / f"run{run}"
        command = [sys.executable, "-m", "hub_pipelines.cli", "generate", "--out", str(out), "--days", "1",
                   "--tenants", "2", "--seed", "5", "--end", end, "--corrupt-rate", "0.05"]  # fmt: skip
        assert subprocess.run(command, capture_output=True, timeout=300).returncode == 0
        digests.append(
            {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
        )
    assert digests[0] == digests[1] and len(digests[0]) > 6


def _batch_files(root):
    return [p.name for p in root.rglob("*") if p.is_file() and p.name not in ("labels.json", "manifest.json")]
