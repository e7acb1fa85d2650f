"""The query interface: metrics over time from the rollups and the raw events (no Dagster).

    from hub_pipelines.query import query
    from hub_pipelines.warehouse import Warehouse

    frame = query(Warehouse(url), "latency_ms", since="7d", bucket="1h", agg="p95", group_by=["model"])

`query` is documented in `hub_pipelines.query.api`; the vocabulary (metrics, aggregations, buckets,
dimensions) in `hub_pipelines.query.catalogue`. `hub query` is the same thing on the command line.
"""

from hub_pipelines.query.api import QueryError, parse_since, parse_time, query
from hub_pipelines.query.catalogue import (
    AGGREGATIONS,
    ALIASES,
    BUCKETS,
    CATALOG_DIMENSIONS,
    DERIVED,
    DIMENSIONS,
    VALUE_METRICS,
    describe,
)

__all__ = [
    "AGGREGATIONS",
    "ALIASES",
    "BUCKETS",
    "CATALOG_DIMENSIONS",
    "DERIVED",
    "DIMENSIONS",
    "VALUE_METRICS",
    "QueryError",
    "describe",
    "parse_since",
    "parse_time",
    "query",
]
