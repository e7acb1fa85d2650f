"""ConfigurableResource classes: the warehouse, landing zones, MLflow, notifiers."""

from hub_pipelines.resources.landing import LandingZoneResource
from hub_pipelines.resources.mlflow import MlflowResource
from hub_pipelines.resources.warehouse import WarehouseResource

__all__ = ["LandingZoneResource", "MlflowResource", "WarehouseResource"]
