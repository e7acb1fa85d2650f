"""Ingesting the same files twice, or killing an ingest process half way and running it again,
leaves the tables exactly as one clean ingest would, on DuckDB and on PostgreSQL."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from hub_pipelines.ingestion import ingest_files
from hub_pipelines.landing import LocalFolder
from hub_pipelines.warehouse import Warehouse
from hub_pipelines.warehouse.tables import metadata

# Columns that record when and from which folder something was ingested, not what: they differ
# between the run under test and the clean reference run.
VOLATILE = {"ingested_at", "received_at", "run_id", "landing_zone"}


def write_landing(root: Path, event_factory, files: int = 60, per_file: int = 300) -> None:
    """Files of valid events, with duplicates inside and across files and a few bad lines."""
    now = datetime.now(UTC).replace(microsecond=0)
    for f in range(files):
        lines = []
        for i in range(per_file):
            n = f * per_file + i
            lines.append(json.dumps(event_factory(n, now - timedelta(seconds=n))))
        lines.append(json.dumps(event_factory(max(0, f - 1) * per_file, now)))  # seen in the previous file
        lines.append(lines[0])  # seen in this file
        lines.append('{"event_id": "not-a-uuid"}')
        lines.append("{truncated")
        path = root / f"batch-{f:03d}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines))


def snapshot(warehouse: Warehouse) -> dict[str, list[tuple]]:
    out = {}
    with warehouse.connect() as conn:
        for name, table in metadata.tables.items():
            if name not in ("events", "dead_letter_events", "ingest_ledger", "asset_catalog"):
                continue
            cols = [c for c in table.columns if c.name not in VOLATILE]
            rows = conn.execute(sa.select(*cols)).all()
            out[name] = sorted((tuple(r) for r in rows), key=repr)
    return out


def clean_ingest(tmp_path: Path, warehouse_url: str, source: Path) -> dict:
    warehouse = Warehouse(warehouse_url)
    warehouse.create_tables()
    zone = LocalFolder(source)
    ingest_files(warehouse, zone, [f.key for f in zone.list_pending()], archive=False)
    return snapshot(warehouse)


@pytest.fixture
def second_url(request, warehouse_url, tmp_path):
    """A second, empty warehouse on the same engine as `warehouse_url`."""
    if warehouse_url.startswith("duckdb"):
        return f"duckdb:///{tmp_path / 'second.duckdb'}"
    return request.getfixturevalue("postgres_url")


def test_ingesting_twice_equals_one_clean_ingest(warehouse, second_url, tmp_path, event_factory):
    source = tmp_path / "landing"
    write_landing(source, event_factory, files=8, per_file=100)
    zone = LocalFolder(source)
    keys = [f.key for f in zone.list_pending()]
    first = ingest_files(warehouse, zone, keys, archive=False)
    again = ingest_files(warehouse, zone, keys, archive=False)
    assert all(o.already_ingested for o in again.outcomes)
    assert snapshot(warehouse) == clean_ingest(tmp_path, second_url, source)
    total = first.summary
    assert total["events_in"] == total["stored"] + total["duplicates"] + total["dead_lettered"]
    # Two copies per file: its first line again, and an event of the previous file (file 0: its own).
    assert total["duplicates"] == 8 * 2
    assert total["dead_lettered"] == 8 * 2


def test_killed_ingest_run_again_equals_one_clean_ingest(warehouse_url, second_url, tmp_path, event_factory):
    landing = tmp_path / "landing"
    pristine = tmp_path / "pristine"
    write_landing(landing, event_factory)
    shutil.copytree(landing, pristine)
    env = os.environ | {"HUB_WAREHOUSE_URL": warehouse_url, "HUB_HOME": str(tmp_path / "hub")}
    command = [sys.executable, "-m", "hub_pipelines.cli", "ingest", "--archive", str(landing)]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    archive = landing / "_archive"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if archive.exists() and len(list(archive.iterdir())) >= 3:
            break
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    archived_at_kill = len(list(archive.iterdir())) if archive.exists() else 0
    pending_at_kill = len(list(landing.glob("*.jsonl")))
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()[-2000:]
    assert archived_at_kill >= 1 and pending_at_kill >= 1, "the kill should land half way through"

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert list(landing.glob("*.jsonl")) == []

    victim = Warehouse(warehouse_url)
    assert snapshot(victim) == clean_ingest(tmp_path, second_url, pristine)
