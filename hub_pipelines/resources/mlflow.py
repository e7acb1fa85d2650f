"""MLflow as a Dagster resource: where training runs are logged and models are registered.

Resolved when a run uses it, never at import. The tracking URI is, in order: the `tracking_uri`
field, MLFLOW_TRACKING_URI, else the embedded store `sqlite:///$HUB_HOME/mlflow/mlflow.db` with
artifacts in `$HUB_HOME/mlflow/artifacts`. With a tracking server (production: PostgreSQL backend,
S3 artifacts served by the server) the server decides where artifacts go unless `artifact_root`
is set. Credentials belong in the URI's environment variable or MLflow's own variables
(MLFLOW_TRACKING_USERNAME/PASSWORD); `describe()` redacts them, and nothing here logs the raw URI.
"""

import os
from pathlib import Path

import dagster as dg
from pydantic import Field

from hub_pipelines import settings
from hub_pipelines.warehouse.store import redact

ANOMALY_EXPERIMENT = "hub-anomaly"
FORECAST_EXPERIMENT = "hub-forecast"


def default_mlflow_dir() -> Path:
    return settings.hub_home() / "mlflow"


class MlflowResource(dg.ConfigurableResource):
    """The MLflow tracking store and model registry hub trains into."""

    tracking_uri: str | None = Field(
        default=None,
        description="Unset: MLFLOW_TRACKING_URI, else sqlite:///$HUB_HOME/mlflow/mlflow.db.",
    )
    registry_uri: str | None = Field(default=None, description="Unset: the tracking store.")
    artifact_root: str | None = Field(
        default=None,
        description="Where new experiments keep artifacts (<root>/<experiment>). Unset: HUB_MLFLOW_ARTIFACT_ROOT,"
        " else $HUB_HOME/mlflow/artifacts for the embedded store and the server's default for a server.",
    )
    anomaly_experiment: str = Field(default=ANOMALY_EXPERIMENT, description="Anomaly detector trainings.")
    forecast_experiment: str = Field(
        default=FORECAST_EXPERIMENT,
        description="Forecaster trainings (parent run per series, child per model).",
    )

    def resolved_tracking_uri(self) -> str:
        uri = self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if uri:
            return uri
        from hub_ml import tracking

        return tracking.local_tracking_uri(default_mlflow_dir())

    def resolved_artifact_root(self) -> str | None:
        root = self.artifact_root or os.environ.get("HUB_MLFLOW_ARTIFACT_ROOT")
        if root:
            return root
        if self.resolved_tracking_uri().startswith("sqlite:"):
            path = default_mlflow_dir() / "artifacts"
            if self.tracking_uri and self.tracking_uri.startswith("sqlite:///"):
                # An explicit SQLite store keeps its artifacts beside it.
                path = Path(self.tracking_uri.removeprefix("sqlite:///")).parent / "artifacts"
            path.mkdir(parents=True, exist_ok=True)
            return str(path.resolve())
        return None

    def configure(self) -> str:
        """Point this process's MLflow client at the store (telemetry off); returns the URI."""
        from hub_ml import tracking

        uri = self.resolved_tracking_uri()
        tracking.configure(uri, self.registry_uri)
        return uri

    def experiment_artifact_location(self, experiment: str) -> str | None:
        root = self.resolved_artifact_root()
        if root is None:
            return None
        return f"{root.rstrip('/')}/{experiment}"

    def ensure_experiment(self, experiment: str) -> str:
        """Configure MLflow and create `experiment` (with its artifact location) if missing."""
        from hub_ml import tracking

        self.configure()
        return tracking.ensure_experiment(experiment, self.experiment_artifact_location(experiment))

    def describe(self) -> str:
        """The tracking URI without credentials, for logs and metadata."""
        return redact(self.resolved_tracking_uri())
