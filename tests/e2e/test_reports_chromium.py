"""The HTML reports open in headless Chromium without errors and show their charts.

Needs Debian's `chromium` (`apt-get install -y chromium`; .ci/run installs it; HUB_CHROMIUM names
another binary). Without it this test fails and says so: it never skips.

For each report (compliance, forecast, operations) Chromium
1. loads a copy with a small probe script added, and dumps the DOM after load: every image decoded
   with its natural size, every chart laid out on the page, no error event, no resource fetched
   from anywhere (charts are data URIs);
2. loads the report itself with console logging on: no console message at all;
3. takes a screenshot of the report itself, which must contain the charts' colours.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import shutil
import subprocess
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image

from hub_pipelines.alerts import parse_rules, run_alerts
from hub_pipelines.generator import GeneratorConfig, simulate, write_batches
from hub_pipelines.ingestion import ingest_files
from hub_pipelines.landing import LocalFolder
from hub_pipelines.reports import generate_report
from hub_pipelines.warehouse import Warehouse, tables
from hub_pipelines.warehouse.rollups import refresh_daily, refresh_hourly

END = datetime(2026, 11, 20, tzinfo=UTC)
DAY = date(2026, 11, 19)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--hide-scrollbars",
]
PROBE = """<script>
window.__errors = [];
window.addEventListener('error', function (e) {
  window.__errors.push(String(e.message || (e.target && (e.target.src || e.target.href)) || 'error').slice(0, 200));
}, true);
window.addEventListener('load', function () {
  var images = Array.prototype.slice.call(document.images);
  document.body.setAttribute('data-probe', JSON.stringify({
    images: images.map(function (i) {
      var box = i.getBoundingClientRect();
      return {chart: i.getAttribute('data-chart'), complete: i.complete, width: i.naturalWidth,
              height: i.naturalHeight, shownWidth: Math.round(box.width), shownHeight: Math.round(box.height)};
    }),
    resources: performance.getEntriesByType('resource').map(function (r) { return r.name; }),
    errors: window.__errors,
    sections: document.querySelectorAll('section').length
  }));
});
</script>"""
# The chart palette's first two colours (hub_pipelines.reports.charts.PALETTE): lines and bars.
CHART_COLOURS = [(0x25, 0x63, 0xEB), (0xDC, 0x26, 0x26)]


def chromium() -> str:
    for candidate in (os.environ.get("HUB_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    pytest.fail(
        "Chromium is not installed, so the HTML reports cannot be checked. Install Debian's chromium"
        " (`apt-get install -y chromium`, as .ci/run does) or set HUB_CHROMIUM to a Chromium binary;"
        " see README, 'Reports'.",
        pytrace=False,
    )


def _run(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def chromium_binary() -> str:
    return chromium()


@pytest.fixture(scope="module")
def reports(chromium_binary, tmp_path_factory) -> dict[str, Path]:
    """The three reports of tenant-01 for DAY, from generated data (with forecasts and alerts)."""
    folder = tmp_path_factory.mktemp("chromium_data")
    write_batches(
        simulate(GeneratorConfig(days=2, tenants=1, seed=3, end=END, requests_per_hour=5, corrupt_rate=0.02,
                                 policy_fraction=0.3, legacy_observatory_tenant=False)),
        folder,
    )  # fmt: skip
    warehouse = Warehouse(f"duckdb:///{tmp_path_factory.mktemp('chromium_wh') / 'warehouse.duckdb'}")
    warehouse.create_tables()
    zone = LocalFolder(folder)
    keys = [f.key for f in zone.list_pending() if f.key.endswith(".jsonl")]
    ingest_files(warehouse, zone, keys, archive=False, received_at=END + timedelta(minutes=10))
    refresh_hourly(warehouse, END - timedelta(days=2), END)
    refresh_daily(warehouse, END - timedelta(days=2), END)
    rules = parse_rules("rules: [{id: busy, type: threshold, metric: requests, op: '>', value: 1, for: 1h}]")
    run_alerts(warehouse, rules, as_of=END, env={})
    rows = []
    for i in range(7 * 24):
        value = 40 + 15 * math.sin(i / 24 * 2 * math.pi)
        rows.append({
            "series_key": "tenant-01|requests", "horizon_days": 7, "target_ts": END + timedelta(hours=i),
            "scenario": "baseline", "tenant_id": "tenant-01", "metric": "requests", "model": None, "project": None,
            "granularity": "hour", "forecast": value, "lower": value * 0.8, "upper": value * 1.2, "level": 0.95,
            "model_name": "ensemble", "model_version": "1", "trained_at": END,
        })  # fmt: skip
    with warehouse.begin() as conn:
        conn.execute(sa.insert(tables.forecasts), rows)
    root = tmp_path_factory.mktemp("reports")
    out = {}
    for name in ("compliance", "forecast", "operations"):
        _report, written = generate_report(warehouse, name, "tenant-01", DAY, root=root)
        out[name] = written.html
    warehouse.engine.dispose()
    return out


@pytest.mark.parametrize("name", ["compliance", "forecast", "operations"])
def test_report_opens_in_headless_chromium_and_shows_its_charts(chromium_binary, reports, name, tmp_path):
    binary = chromium_binary
    page = reports[name]
    source = page.read_text()
    expected_charts = re.findall(r'data-chart="([^"]+)"', source)
    assert expected_charts, f"the {name} report has no charts"

    # 1. Loaded with the probe: images decoded and laid out, no errors, nothing fetched.
    probed = tmp_path / f"{name}_probe.html"
    probed.write_text(source.replace("<head>", "<head>\n" + PROBE, 1))
    result = _run(binary, tmp_path / "profile1", "--virtual-time-budget=10000", "--dump-dom", probed.as_uri())
    match = re.search(r'data-probe="([^"]*)"', result.stdout)
    assert match, f"Chromium did not finish loading the {name} report:\n{result.stderr[-2000:]}"
    probe = json.loads(html.unescape(match.group(1)))
    assert probe["errors"] == []
    assert probe["resources"] == [], "the report fetched something: it must be self-contained"
    assert [i["chart"] for i in probe["images"]] == expected_charts
    for image in probe["images"]:
        assert image["complete"] and image["width"] >= 400 and image["height"] >= 200, image
        assert image["shownWidth"] >= 300 and image["shownHeight"] >= 100, image
    assert probe["sections"] >= 1

    # 2. The report itself, with console logging: not one console message.
    logged = _run(binary, tmp_path / "profile2", "--enable-logging=stderr", "--v=0",
                  "--virtual-time-budget=5000", "--dump-dom", page.as_uri())  # fmt: skip
    console = [line for line in logged.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    assert console == [], "\n".join(console)
    assert "</html>" in logged.stdout

    # 3. A screenshot of the report shows the charts (their colours are on the page).
    shot = tmp_path / f"{name}.png"
    _run(binary, tmp_path / "profile3", "--window-size=1100,5000", f"--screenshot={shot}", page.as_uri())
    assert shot.is_file(), f"no screenshot of the {name} report"
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    coloured = sum(int((np.abs(pixels - np.array(c)).sum(axis=2) < 60).sum()) for c in CHART_COLOURS)
    assert coloured > 2000, (
        f"the screenshot {shot} shows too little of the charts ({coloured} chart-coloured pixels)"
    )
