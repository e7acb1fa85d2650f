"""Servers and data for integration tests: moto's S3-compatible server over HTTP on 127.0.0.1, and the
generated traffic the ML tests train on (ingested and rolled up as the ingest and rollup jobs do)."""

from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest

from hub_pipelines.generator import GeneratorConfig, simulate, write_batches
from hub_pipelines.ingestion import ingest_files
from hub_pipelines.landing import LocalFolder
from hub_pipelines.warehouse import Warehouse
from hub_pipelines.warehouse.rollups import refresh_daily, refresh_hourly


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """A real S3 API over HTTP (moto in server mode), not an in-process mock."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    name = f"hub-{uuid.uuid4().hex[:10]}"
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=name)
    return name, client


@dataclass(frozen=True)
class GeneratedData:
    """Generated batches with the generator's labels.json beside them, and the window they cover."""

    landing: Path
    start: datetime
    end: datetime

    @property
    def labels(self) -> Path:
        return self.landing / "labels.json"

    def load(self, url: str) -> Warehouse:
        """The warehouse at `url` with every batch ingested (received just after the window, so
        nothing is late) and the window's hours and days rolled up. The caller disposes of it."""
        warehouse = Warehouse(url)
        warehouse.create_tables()
        zone = LocalFolder(self.landing)
        keys = [f.key for f in zone.list_pending() if f.key.endswith(".jsonl")]
        received = self.end + timedelta(minutes=20)
        report = ingest_files(warehouse, zone, keys, archive=False, received_at=received)
        assert report.summary["stored"] > 10_000 and report.summary["dead_lettered"] == 0
        refresh_hourly(warehouse, self.start, self.end)
        refresh_daily(warehouse, self.start, self.end)
        return warehouse


@pytest.fixture(scope="session")
def ml_data(tmp_path_factory) -> GeneratedData:
    """What the ML tests train on: three weeks of one tenant's traffic (the anomaly models need ten
    days and hold out the last quarter, where seed 1 puts a labelled spike of the busiest model's
    requests) at a volume where the detectors see it clearly: about 260,000 events, without the
    policy and governance traffic no model reads."""
    out = tmp_path_factory.mktemp("ml_landing")
    end = datetime(2026, 10, 1, tzinfo=UTC)
    config = GeneratorConfig(days=21, tenants=1, seed=1, end=end, requests_per_hour=60, policy_fraction=0.0,
                             security_per_hour=0.1, governance_per_day=0.0)  # fmt: skip
    write_batches(simulate(config), out)
    return GeneratedData(out, config.start_utc, config.end_utc)


@pytest.fixture(scope="session")
def ml_warehouse_url(ml_data, tmp_path_factory) -> str:
    """A DuckDB warehouse holding `ml_data`."""
    url = f"duckdb:///{tmp_path_factory.mktemp('ml_warehouse') / 'warehouse.duckdb'}"
    ml_data.load(url).engine.dispose()
    return url
