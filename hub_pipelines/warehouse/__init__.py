"""Warehouse tables and dialect-neutral access (DuckDB embedded, PostgreSQL in production)."""

from hub_pipelines.warehouse.store import Warehouse
from hub_pipelines.warehouse.tables import metadata

__all__ = ["Warehouse", "metadata"]
