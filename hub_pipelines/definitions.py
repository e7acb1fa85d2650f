"""The hub code location: one Definitions object built from the domain folders under defs/.

Resources are configured per environment through variables read when they are used (never at
import): with nothing set, hub runs on the embedded defaults under HUB_HOME (DuckDB warehouse,
local landing folder); HUB_WAREHOUSE_URL, HUB_LANDING_URL and friends move it to production
services (README, "Going to production").
"""

import dagster as dg

from hub_pipelines.defs import correlation, ingest, ml, publish, rollups
from hub_pipelines.executors import hub_executor
from hub_pipelines.resources import LandingZoneResource, MlflowResource, WarehouseResource


def default_resources() -> dict:
    return {
        "warehouse": WarehouseResource(),
        "landing_zone": LandingZoneResource(),
        "mlflow": MlflowResource(),
    }


defs = dg.Definitions.merge(
    ingest.defs,
    rollups.defs,
    publish.defs,
    correlation.defs,
    ml.defs,
    dg.Definitions(resources=default_resources(), executor=hub_executor),
)
