"""Ingest throughput: generated events from files into the warehouse, validation and
de-duplication included, against a naive baseline run in the same process (json.loads and
jsonschema per event, row-by-row INSERT).

    python benchmarks/ingest.py [--events 1000000] [--corrupt-rate 0.02] [--baseline-events 20000]
                                [--postgres SERVER_URL]

At least --events generated events (whole days of four tenants, with --corrupt-rate of bad input:
malformed lines, schema violations, wrong units, duplicates, late and future events, so validation
and de-duplication have work to do). Prints a JSON report (and writes it to
benchmarks/results/ingest.json). The baseline runs on a sample drawn evenly from every batch file
and is reported as events/s, so the ratio compares rates, not totals. The same ingest is also run
with the full compiled statements only (no lean path), in the same process, for
lean_path_speedup. --postgres names a server
(any database on it): the benchmark creates a fresh database there and drops it afterwards, so a
rerun never finds the batches already ingested.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import tempfile
import time
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from hub_pipelines.events.records import decompress, split_records
from hub_pipelines.events.reference import judge_batch
from hub_pipelines.ingestion import ingest_files
from hub_pipelines.landing import LocalFolder
from hub_pipelines.warehouse import Warehouse
from hub_pipelines.warehouse.store import normalise_url
from hub_pipelines.warehouse.tables import events as events_table

RESULTS = Path(__file__).parent / "results"


def generate(out: Path, events: int, corrupt_rate: float, seed: int = 1) -> dict:
    """Whole days of generated traffic for at least `events` events (about 4 events per request)."""
    from hub_pipelines.generator import GeneratorConfig, simulate, write_batches

    # One tenant-day at the default rate is measured first, then scaled.
    probe = write_batches(
        simulate(GeneratorConfig(days=1, tenants=1, seed=seed, anomalies=False)), out / "probe"
    )
    shutil.rmtree(out / "probe")
    per_tenant_day = max(1, probe["events_written"])
    tenants = 4
    days = max(1, math.ceil(events / (per_tenant_day * tenants)))
    config = GeneratorConfig(days=days, tenants=tenants, seed=seed, anomalies=True, corrupt_rate=corrupt_rate)
    return write_batches(simulate(config), out / "landing")


def fast_path(landing: Path, url: str, lean: bool = True) -> dict:
    warehouse = Warehouse(url)
    warehouse.create_tables()
    zone = LocalFolder(landing)
    keys = [f.key for f in zone.list_pending()]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    report = ingest_files(warehouse, zone, keys, archive=False, lean=lean)
    wall = time.perf_counter() - wall0
    summary = report.summary
    return {
        "files": len(keys),
        "events_in": summary["events_in"],
        "stored": summary["stored"],
        "duplicates": summary["duplicates"],
        "dead_lettered": summary["dead_lettered"],
        "seconds": round(wall, 2),
        "cpu_seconds": round(time.process_time() - cpu0, 2),
        "events_per_second": round(summary["events_in"] / wall),
    }


def naive_baseline(landing: Path, url: str, limit: int) -> dict:
    """json.loads + jsonschema one event at a time (the reference), one INSERT per row."""
    warehouse = Warehouse(url)
    warehouse.create_tables()
    received = datetime.now(UTC)
    # The same share of every batch file, so every source module and day is in the sample.
    files = [f.key for f in LocalFolder(landing).list_pending()]
    per_file = math.ceil(limit / len(files))
    records = []
    for key in files:
        table = split_records(decompress((landing / key).read_bytes()))
        columns = (table[c].to_pylist()[:per_file] for c in ("rec_idx", "raw", "utf8_ok"))
        records += list(zip(*columns, strict=True))
    records = records[:limit]
    columns = [c.name for c in events_table.columns]
    insert = events_table.insert()
    started = time.perf_counter()
    judged = judge_batch(records, received)
    seen = set()
    with warehouse.begin() as conn:
        for item in judged:
            if not item.is_valid or item.row["event_id"] in seen:
                continue
            seen.add(item.row["event_id"])
            row = {k: v for k, v in item.row.items() if k in columns}
            row |= {
                "payload": json.dumps(row["payload"]),
                "tags": json.dumps(row["tags"]) if row["tags"] is not None else None,
                "original": item.raw_text,
                "batch_id": "baseline",
                "ingested_at": received,
            }
            if not conn.execute(
                sa.select(events_table.c.event_id).where(events_table.c.event_id == row["event_id"])
            ).first():
                conn.execute(insert.values(**row))
    wall = time.perf_counter() - started
    return {
        "events_in": len(records),
        "seconds": round(wall, 2),
        "events_per_second": round(len(records) / wall),
    }


@contextmanager
def fresh_postgres_database(server_url: str):
    """A new, empty database on the server of `server_url`, dropped afterwards."""
    name = f"hub_bench_ingest_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(normalise_url(server_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield server_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--corrupt-rate", type=float, default=0.02)
    parser.add_argument("--baseline-events", type=int, default=20_000)
    parser.add_argument("--landing", type=Path, help="use existing batch files instead of generating")
    parser.add_argument(
        "--postgres", default=os.environ.get("HUB_BENCH_POSTGRES_URL"), help="also measure on PostgreSQL"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="hub-bench-ingest-"))
    try:
        report: dict = {"machine": f"{os.cpu_count()} cores", "load_average_at_start": os.getloadavg()}
        if args.landing:
            landing = args.landing
        else:
            started = time.perf_counter()
            generated = generate(work, args.events, args.corrupt_rate)
            report["generate_seconds"] = round(time.perf_counter() - started, 2)
            report["generated_events"] = generated["events_written"]
            landing = work / "landing"
        report["duckdb"] = fast_path(landing, f"duckdb:///{work / 'fast.duckdb'}")
        # The same ingest with the full statements only: what the lean path (fast_path.py) buys.
        report["duckdb_full_statements_only"] = fast_path(
            landing, f"duckdb:///{work / 'full.duckdb'}", lean=False
        )
        report["lean_path_speedup"] = round(
            report["duckdb"]["events_per_second"]
            / report["duckdb_full_statements_only"]["events_per_second"],
            2,
        )
        report["naive_baseline_duckdb"] = naive_baseline(
            landing, f"duckdb:///{work / 'naive.duckdb'}", args.baseline_events
        )
        report["speedup_vs_naive"] = round(
            report["duckdb"]["events_per_second"] / report["naive_baseline_duckdb"]["events_per_second"], 1
        )
        if args.postgres:
            with fresh_postgres_database(args.postgres) as url:
                report["postgresql"] = fast_path(landing, url)
        report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "ingest.json").write_text(json.dumps(report, indent=2))
        print(json.dumps(report, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
