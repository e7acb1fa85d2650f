"""Where hub keeps its state, read from the environment when asked, never at import time."""

from __future__ import annotations

import os
from pathlib import Path


def hub_home() -> Path:
    """HUB_HOME (default ./.hub): the embedded warehouse, MLflow store, reports and landing zone."""
    return Path(os.environ.get("HUB_HOME", ".hub")).resolve()


def default_warehouse_url() -> str:
    return f"duckdb:///{hub_home() / 'warehouse.duckdb'}"


def warehouse_url() -> str:
    """HUB_WAREHOUSE_URL when set (PostgreSQL in production), else the embedded DuckDB file."""
    return os.environ.get("HUB_WAREHOUSE_URL") or default_warehouse_url()


def default_landing_dir() -> Path:
    return hub_home() / "landing"
