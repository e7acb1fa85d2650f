"""Correlation benchmark: one day of the demo's data correlated into incidents.

    python benchmarks/correlation.py [--days 14] [--seed 7] [--repeat 3] [--scenarios] [--json out.json]

The data is what `hub demo` makes: 2 tenants at the generator's default rate (120 requests an hour
for the base tenant), 2% bad input, 14 days ending at the start of today, ingested into a DuckDB
warehouse through the ingest code (not timed). `--scenarios` adds the generator's injected
multi-module scenarios, so that incidents are built and written too.

Timed: `correlate_day` for the last full day, every tenant, exactly as the `correlations` asset runs
it: the three reads (hourly cells over the 7-day look-back, the day's detail with 6 hours either
side, the security look-back), the engine, and the transaction that replaces the day's incidents.
Baseline in the same process: a plain scan of the same day (and margins) of every tenant's events
into pandas with one groupby per tenant, hour and source module, i.e. what merely reading the data
once costs. Reported: seconds (best and median of --repeat), the split into load, correlate and
write, and the ratio correlation / baseline.

Target: one day of the demo's data correlated in under 60 s on the 2-core hub machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from hub_pipelines.generator import GeneratorConfig, simulate, write_batches
from hub_pipelines.incidents import correlate_day
from hub_pipelines.ingestion import ingest_files
from hub_pipelines.landing import LocalFolder
from hub_pipelines.warehouse import Warehouse

RESULTS = Path(__file__).parent / "results"
TARGET_SECONDS = 60.0


def baseline(warehouse: Warehouse, day: datetime) -> tuple[float, int]:
    """Read the day (with 6 h either side) of every tenant's events and count them per tenant, hour
    and module: the least any analysis of the day has to do."""
    started = time.perf_counter()
    query = sa.text(
        "SELECT event_id, event_time, tenant_id, source_module, event_type, correlation_id, metric_name,"
        " metric_value, model, project, status, cost_usd, threat_type, policy_category, outcome"
        " FROM events WHERE event_time >= :start AND event_time < :end"
    )
    with warehouse.connect() as conn:
        result = conn.execute(
            query, {"start": day - timedelta(hours=6), "end": day + timedelta(days=1, hours=6)}
        )
        frame = pd.DataFrame(result.fetchall(), columns=list(result.keys()))
    frame["hour"] = pd.to_datetime(frame["event_time"], utc=True).dt.floor("h")
    frame.groupby(["tenant_id", "hour", "source_module"]).size()
    return time.perf_counter() - started, len(frame)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scenarios", action="store_true")
    parser.add_argument("--json", default=None, help="Write the report here (default benchmarks/results/).")
    args = parser.parse_args()
    report: dict = {"machine": f"{os.cpu_count()} cores", "load_average_at_start": os.getloadavg()}
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    config = GeneratorConfig(
        days=args.days, tenants=2, seed=args.seed, end=end, corrupt_rate=0.02, scenarios=args.scenarios
    )
    with tempfile.TemporaryDirectory() as tmp:
        landing = Path(tmp) / "landing"
        started = time.perf_counter()
        manifest = write_batches(simulate(config), landing)
        generated = time.perf_counter() - started
        warehouse = Warehouse(f"duckdb:///{Path(tmp) / 'warehouse.duckdb'}")
        warehouse.create_tables()
        zone = LocalFolder(landing)
        started = time.perf_counter()
        ingested = ingest_files(warehouse, zone, [f.key for f in zone.list_pending()], archive=False).summary
        report["data"] = {
            "config": f"days={args.days} tenants=2 seed={args.seed} requests_per_hour={config.requests_per_hour}"
            f" corrupt_rate=0.02 scenarios={args.scenarios}",
            "events_stored": ingested["stored"],
            "dead_lettered": ingested["dead_lettered"],
            "generate_seconds": round(generated, 2),
            "ingest_seconds": round(time.perf_counter() - started, 2),
            "scenarios": manifest.get("scenarios", 0),
        }
        day = end - timedelta(days=1)
        runs, base = [], []
        for _ in range(args.repeat):
            seconds, events = baseline(warehouse, day)
            base.append(seconds)
            started = time.perf_counter()
            result = correlate_day(warehouse, day)
            runs.append(
                {
                    "seconds": time.perf_counter() - started,
                    "load": result.load_seconds,
                    "correlate": result.correlate_seconds,
                    "write": result.write_seconds,
                    "incidents": result.written,
                    "events": sum(r.stats["events"] for r in result.results),
                }
            )
        best = min(runs, key=lambda r: r["seconds"])
        report["one_day"] = {
            "day": day.date().isoformat(),
            "tenants": len(result.tenants),
            "events_read_detail": best["events"],
            "events_in_day_with_margins": events,
            "seconds_best": round(best["seconds"], 3),
            "seconds_median": round(statistics.median(r["seconds"] for r in runs), 3),
            "split_best": {k: round(best[k], 3) for k in ("load", "correlate", "write")},
            "incidents": best["incidents"],
            "baseline_scan_seconds_best": round(min(base), 3),
            "ratio_to_baseline": round(best["seconds"] / min(base), 2),
            "target_seconds": TARGET_SECONDS,
            "within_target": best["seconds"] < TARGET_SECONDS,
        }
        warehouse.engine.dispose()
    out = (
        Path(args.json)
        if args.json
        else RESULTS / f"correlation{'_scenarios' if args.scenarios else ''}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
