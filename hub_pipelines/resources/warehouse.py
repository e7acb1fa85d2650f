"""The warehouse as a Dagster resource."""

from functools import cached_property

import dagster as dg
from pydantic import Field

from hub_pipelines import settings
from hub_pipelines.warehouse import Warehouse
from hub_pipelines.warehouse.store import redact


class WarehouseResource(dg.ConfigurableResource):
    """SQL warehouse: the embedded DuckDB file under HUB_HOME unless a URL is given.

    Leave `url` unset to follow HUB_WAREHOUSE_URL at run time (PostgreSQL in production, e.g.
    postgresql://hub@db:5432/hub); the password, if any, belongs in that variable, not in code.
    """

    url: str | None = Field(
        default=None, description="SQLAlchemy URL; unset: HUB_WAREHOUSE_URL, else $HUB_HOME/warehouse.duckdb"
    )

    @cached_property
    def warehouse(self) -> Warehouse:
        warehouse = Warehouse(self.url or settings.warehouse_url())
        warehouse.create_tables()
        return warehouse

    def describe(self) -> str:
        return redact(self.warehouse.url)
