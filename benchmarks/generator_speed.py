"""Generator speed: simulation and hourly series in memory, and batch files written per second.

    python benchmarks/generator_speed.py [--events 1000000] [--skip-large]

1. simulate + hourly_series for the spec's example (90 days x 2 tenants at 120 requests/hour) and
   for the forecasting acceptance config (120 days x 2 tenants at 2,000 requests/hour);
2. write_batches of about --events events as JSON Lines, gzipped JSON Lines and JSON arrays, with
   1% bad records, into a temporary folder: events/s over wall time, and over CPU time (the
   difference is the disk).
Prints a JSON report and writes it to benchmarks/results/generator_speed.json. The machine is
shared, so the load average at the start is part of the report.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

from hub_pipelines.generator import GeneratorConfig, hourly_series, simulate, write_batches

RESULTS = Path(__file__).parent / "results"
END = "2026-11-01T00:00:00Z"


def _timed(fn):
    cpu, wall = time.process_time(), time.perf_counter()
    value = fn()
    return value, time.perf_counter() - wall, time.process_time() - cpu


def in_memory(days: int, tenants: int, rate: float) -> dict:
    config = GeneratorConfig(days=days, tenants=tenants, seed=1, end=END, requests_per_hour=rate)
    sim, seconds, _ = _timed(lambda: simulate(config))
    _, series_seconds, _ = _timed(lambda: hourly_series(sim, by=("tenant_id", "model")))
    return {
        "config": f"days={days} tenants={tenants} requests_per_hour={rate}",
        "requests": len(sim.requests),
        "simulate_seconds": round(seconds, 2),
        "requests_per_second": round(len(sim.requests) / seconds),
        "hourly_series_seconds": round(series_seconds, 2),
        "labels": len(sim.labels),
    }


def written(events: int, work: Path) -> dict:
    # About 4 events per request; 7 days x 3 tenants at rate r gives about 3,600 r events.
    rate = max(1.0, round(events / 3600))
    config = GeneratorConfig(days=7, tenants=3, seed=1, end=END, requests_per_hour=rate, corrupt_rate=0.01)
    sim, sim_seconds, _ = _timed(lambda: simulate(config))
    report: dict = {
        "config": f"days=7 tenants=3 requests_per_hour={rate} corrupt_rate=0.01",
        "simulate_seconds": round(sim_seconds, 2),
    }
    for name, fmt, gz in (("jsonl", "jsonl", False), ("jsonl.gz", "jsonl", True), ("json", "json", False)):
        out = work / name
        manifest, wall, cpu = _timed(
            lambda out=out, fmt=fmt, gz=gz: write_batches(sim, out, fmt=fmt, gzip=gz)
        )
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        records = manifest["expected"]["events_in"]
        report[name] = {
            "records": records,
            "files": len(manifest["files"]),
            "megabytes": round(size / 1e6, 1),
            "seconds": round(wall, 2),
            "events_per_second": round(records / wall),
            "events_per_cpu_second": round(records / cpu),
        }
        shutil.rmtree(out)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--skip-large", action="store_true", help="skip the 2,000 requests/hour simulation")
    args = parser.parse_args()
    report: dict = {"machine": f"{os.cpu_count()} cores", "load_average_at_start": os.getloadavg()}
    report["spec_example"] = in_memory(90, 2, 120.0)
    if not args.skip_large:
        report["forecast_acceptance"] = in_memory(120, 2, 2000.0)
    work = Path(tempfile.mkdtemp(prefix="hub-bench-generator-"))
    try:
        report["write_batches"] = written(args.events, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "generator_speed.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
