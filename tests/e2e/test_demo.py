"""`hub demo`, the README's first command, end to end on the embedded defaults (a small window and
no model training, which `make demo` and the ML tests cover): every step reports, and what it says
it wrote is there."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import duckdb


def test_demo_runs_ingest_to_reports(tmp_path):
    home = tmp_path / "hub"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUB_", "DAGSTER_", "MLFLOW_"))}
    env |= {"HUB_HOME": str(home), "MLFLOW_DISABLE_TELEMETRY": "true"}
    command = [sys.executable, "-m", "hub_pipelines.cli", "demo", "--no-ml", "--days", "3", "--tenants", "1"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout

    for step in ("1. generated", "2. ingested", "5. models: skipped", "6. ", "7. alerts evaluated"):
        assert step in out, out
    stored = int(re.search(r"(\d+) stored", out).group(1))
    assert stored > 1000
    assert "checks: " in out and "failed" not in out.split("checks: ")[1].splitlines()[0]

    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM events").fetchone()[0] == stored
        assert con.execute("SELECT count(*) FROM rollup_metrics_hourly").fetchone()[0] > 0
        assert con.execute("SELECT count(*) FROM alerts").fetchone()[0] > 0

    reports = Path(re.search(r"^Reports: (.+)$", out, re.M).group(1))
    assert reports.is_relative_to(home)
    written = sorted(p.name for p in reports.rglob("*") if p.is_file())
    for name in ("compliance", "forecast", "operations"):
        assert f"{name}.html" in written and f"{name}.md" in written, written
