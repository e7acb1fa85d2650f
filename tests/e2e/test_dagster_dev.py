"""`dagster dev` serves the code location, and the UI's GraphQL API lists the assets, the sensor
and the checks; `dagster definitions validate` passes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

EXPECTED_ASSETS = {"validated_events", "dead_letter_events", "asset_catalog"}
EXPECTED_CHECKS = {"dead_letter_rate", "no_duplicate_event_ids", "events_are_fresh", "ingest_ledger_balances"}
EXPECTED_SENSORS = {"landing_zone_sensor"}

QUERY = """
{
  assetNodes { assetKey { path } assetChecksOrError { ... on AssetChecks { checks { name } } } }
  repositoriesOrError { ... on RepositoryConnection { nodes { name sensors { name } } } }
}
"""


@pytest.fixture
def dagster_home(tmp_path):
    home = tmp_path / "dagster"
    home.mkdir()
    shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")
    return home


def test_definitions_validate(dagster_home, tmp_path):
    env = os.environ | {"DAGSTER_HOME": str(dagster_home), "HUB_HOME": str(tmp_path / "hub")}
    result = subprocess.run(
        [str(BIN / "dagster"), "definitions", "validate", "-m", "hub_pipelines.definitions"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Validation successful" in result.stdout + result.stderr


def _graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_dagster_dev_serves_assets_sensor_and_checks(dagster_home, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = os.environ | {"DAGSTER_HOME": str(dagster_home), "HUB_HOME": str(tmp_path / "hub")}
    log = open(tmp_path / "dagster-dev.log", "w")  # noqa: SIM115 - closed in the finally block below
    # Its own process group (as `set -m` would give it), so stopping it stops the webserver and
    # the daemon it started.
    process = subprocess.Popen(
        [str(BIN / "dagster"), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        data = None
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "dagster-dev.log").read_text()[-3000:]
            try:
                data = _graphql(port, QUERY)["data"]
                if data["assetNodes"]:
                    break
            except (OSError, KeyError, TypeError):
                pass
            time.sleep(2)
        assert data and data["assetNodes"], (tmp_path / "dagster-dev.log").read_text()[-3000:]
        assets = {"/".join(node["assetKey"]["path"]) for node in data["assetNodes"]}
        checks = {
            c["name"] for node in data["assetNodes"] for c in node["assetChecksOrError"].get("checks", [])
        }
        sensors = {s["name"] for repo in data["repositoriesOrError"]["nodes"] for s in repo["sensors"]}
        assert assets >= EXPECTED_ASSETS
        assert checks >= EXPECTED_CHECKS
        assert sensors >= EXPECTED_SENSORS
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
