"""Shared fixtures: real PostgreSQL (fails, never skips, when unreachable) and warehouses."""

from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy as sa

from hub_pipelines.warehouse import Warehouse
from hub_pipelines.warehouse.store import normalise_url, redact

POSTGRES_URL = os.environ.get("HUB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The PostgreSQL server the suite runs against. Unreachable is a failure: half of what hub
    promises is that the same code runs on PostgreSQL."""
    engine = sa.create_engine(normalise_url(POSTGRES_URL), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure to connect is the same failure here
        pytest.fail(
            f"PostgreSQL at {redact(POSTGRES_URL)} is unreachable ({exc}); start it, do not skip these tests"
        )
    finally:
        engine.dispose()
    return POSTGRES_URL


@pytest.fixture
def postgres_url(postgres_server: str):
    """A fresh, empty database for one test, dropped afterwards."""
    name = f"hub_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(normalise_url(postgres_server), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = postgres_server.rsplit("/", 1)[0] + "/" + name
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(params=["duckdb", "postgres"])
def warehouse_url(request, tmp_path) -> str:
    if request.param == "duckdb":
        return f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def warehouse(warehouse_url: str) -> Warehouse:
    wh = Warehouse(warehouse_url)
    wh.create_tables()
    yield wh
    wh.engine.dispose()


def make_event(i: int, moment, tenant: str = "tenant-01", **payload_overrides) -> dict:
    """A small valid telemetry event (for tests that need events but not the generator)."""
    return {
        "event_id": str(uuid.UUID(int=i + 1)),
        "timestamp": moment.isoformat(),
        "source_module": "llm-observatory",
        "event_type": "telemetry",
        "schema_version": "2.0.0",
        "tenant_id": tenant,
        "payload": {
            "metric_name": "latency_ms",
            "metric_value": 100.0 + i,
            "unit": "ms",
            "dimensions": {"model": "gpt-4o", "provider": "openai"},
        }
        | payload_overrides,
    }


@pytest.fixture
def event_factory():
    return make_event
