"""Fixtures shared by the ML unit tests."""

from __future__ import annotations

import pytest

from hub_ml import tracking


@pytest.fixture
def anomaly_store(tmp_path) -> str:
    """A fresh local MLflow store with the `hub-anomaly` experiment; its tracking URI."""
    uri = tracking.local_tracking_uri(tmp_path / "mlflow")
    tracking.configure(uri)
    tracking.ensure_experiment("hub-anomaly", artifact_location=str(tmp_path / "artifacts"))
    return uri
