"""The model registry as hub uses it: registered models per series, their champions, cached loads.

Every registered model hub trains carries the series it belongs to as tags (`hub.kind`,
`hub.series_key`, `hub.tenant_id`, `hub.metric`, `hub.llm_model`, `hub.project`,
`hub.granularity`); every version carries `hub.train_start` and `hub.train_end` (the span of the
series it was fitted on), so scoring and forecasting know where the champion's history ends.
Call `hub_ml.tracking.configure` (or `MlflowResource.configure`) first.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# No download progress bars in run logs when a model is loaded.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Run  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

from hub_ml import tracking  # noqa: E402
from hub_pipelines.ml_training.series import SeriesSpec  # noqa: E402

REGISTERED_VERSION_TAG = "hub.registered_version"


def client() -> MlflowClient:
    import mlflow

    return MlflowClient(tracking_uri=mlflow.get_tracking_uri(), registry_uri=mlflow.get_registry_uri())


def tag_registered_model(name: str, tags: Mapping[str, Any]) -> None:
    c = client()
    for key, value in tags.items():
        c.set_registered_model_tag(name, key, str(value))


def tag_version(name: str, version: str, tags: Mapping[str, Any]) -> None:
    c = client()
    for key, value in tags.items():
        c.set_model_version_tag(name, str(version), key, str(value))


def iter_registered_models(prefix: str) -> Iterator[Any]:
    """Registered models whose name starts with `prefix` (every page)."""
    c = client()
    escaped = prefix.replace("'", "\\'")
    token = None
    while True:
        page = c.search_registered_models(
            filter_string=f"name LIKE '{escaped}%'", max_results=200, page_token=token
        )
        yield from page
        token = page.token
        if not token:
            break


@dataclass(frozen=True)
class Champion:
    """The version holding `champion` of one registered model, and the series it is for."""

    name: str
    version: str
    spec: SeriesSpec
    train_start: pd.Timestamp | None
    train_end: pd.Timestamp | None  # exclusive: the first bucket after the training series
    tags: dict[str, str]
    created_at: pd.Timestamp
    run_id: str | None = None

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def _timestamp(text: str | None) -> pd.Timestamp | None:
    if not text:
        return None
    ts = pd.Timestamp(text)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def champions(prefix: str) -> list[Champion]:
    """Champions of every registered model named `prefix...` that carries its series tags."""
    out = []
    for model in iter_registered_models(prefix):
        tags = dict(model.tags or {})
        if "hub.series_key" not in tags:
            continue
        version = tracking.champion_version(model.name)
        if version is None:
            continue
        version_tags = dict(version.tags or {})
        out.append(
            Champion(
                name=model.name,
                version=str(version.version),
                spec=SeriesSpec.from_tags(tags),
                train_start=_timestamp(version_tags.get("hub.train_start")),
                train_end=_timestamp(version_tags.get("hub.train_end")),
                tags=version_tags,
                created_at=pd.Timestamp(version.creation_timestamp, unit="ms", tz="UTC"),
                run_id=version.run_id,
            )
        )
    return sorted(out, key=lambda c: c.spec)


_MODEL_CACHE: OrderedDict[str, Any] = OrderedDict()
_MODEL_CACHE_SIZE = 64


def run_metrics(run_id: str | None) -> dict[str, float]:
    """The latest value of every metric of a run ({} when the run is unknown)."""
    if not run_id:
        return {}
    try:
        return dict(client().get_run(run_id).data.metrics)
    except MlflowException:
        return {}


def load_model(uri: str) -> Any:
    """`mlflow.pyfunc.load_model(uri)` for a version URI (immutable, so cached per process)."""
    import mlflow

    key = f"{mlflow.get_registry_uri()}::{uri}"
    if key in _MODEL_CACHE:
        _MODEL_CACHE.move_to_end(key)
        return _MODEL_CACHE[key]
    model = mlflow.pyfunc.load_model(uri)
    _MODEL_CACHE[key] = model
    while len(_MODEL_CACHE) > _MODEL_CACHE_SIZE:
        _MODEL_CACHE.popitem(last=False)
    return model


def completed_run(experiment: str, run_key: str) -> Run | None:
    """The run of `run_key` if an earlier attempt finished it (its model registered), else None:
    a retried step then reuses that result instead of training and registering again."""
    run_id = tracking.find_run_id(experiment, run_key)
    if run_id is None:
        return None
    try:
        run = client().get_run(run_id)
    except MlflowException:
        return None
    if run.info.status != "FINISHED" or REGISTERED_VERSION_TAG not in run.data.tags:
        return None
    return run
