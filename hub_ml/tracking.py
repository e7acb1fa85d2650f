"""MLflow helpers shared by every hub model (anomaly detectors and forecasters).

Plain MLflow, no Dagster. The contract other code relies on (keep it stable):

``configure(tracking_uri, registry_uri=None)``
    Point MLflow at a store explicitly (MLflow's default is ./mlflow.db in the working directory) and
    switch its telemetry off. ``local_tracking_uri(directory)`` builds the embedded SQLite URI.
``ensure_experiment(name, artifact_location=None) -> experiment_id``
``run_for_key(experiment, run_key, *, run_name=None, tags=None, artifact_location=None)``
    Context manager yielding an active run. The run is found again by the tag ``hub.run_key`` so a
    retried step (same key, e.g. "anomaly/<partition>") logs into the run it started, never a new one.
``log_params(params)``, ``log_metrics(metrics, step=None)``, ``set_tags(tags)``
    Log into the active run. Params are write-once in MLflow: re-logging the same value is a no-op,
    a different value raises ``ValueError`` (log values that change between attempts as tags).
``default_pip_requirements(extra=())``, ``log_pyfunc_model(python_model, *, name, ...) -> ModelInfo``
    Log a pyfunc model with a signature and explicit pip requirements (inference costs ~7 s a model
    and drags torch/pytest into sklearn models).
``register_version(model_uri, model_name, *, tags=None) -> ModelVersion``
``promote_if_better(model_name, version, metric_name, value, *, greater_is_better, alias="champion")``
    Stores the comparison value on the version as the tag ``hub.metric.<metric_name>`` and moves the
    alias only when the value is strictly better than the current holder's tag (a holder without
    that tag, or no holder, loses). Returns a ``PromotionDecision``.
``champion_version(model_name, alias="champion") -> ModelVersion | None``
``load_champion(model_name, alias="champion") -> mlflow.pyfunc.PyFuncModel`` (``models:/name@alias``)
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

# Before mlflow is imported anywhere in the process: its telemetry reaches for the internet.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities.model_registry import ModelVersion  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.models import ModelSignature, infer_signature  # noqa: E402
from mlflow.models.model import ModelInfo  # noqa: E402

__all__ = [
    "CHAMPION_ALIAS",
    "RUN_KEY_TAG",
    "METRIC_TAG_PREFIX",
    "PromotionDecision",
    "configure",
    "local_tracking_uri",
    "ensure_experiment",
    "find_run_id",
    "run_for_key",
    "log_params",
    "log_metrics",
    "set_tags",
    "default_pip_requirements",
    "log_pyfunc_model",
    "register_version",
    "promote_if_better",
    "champion_version",
    "champion_uri",
    "load_champion",
]

CHAMPION_ALIAS = "champion"
RUN_KEY_TAG = "hub.run_key"
METRIC_TAG_PREFIX = "hub.metric."
# What a hub pyfunc model needs at load time; versions are pinned from this environment.
BASE_REQUIREMENTS = ("mlflow", "pandas", "numpy", "scikit-learn", "scipy", "cloudpickle")


def configure(tracking_uri: str, registry_uri: str | None = None) -> None:
    """Point MLflow at ``tracking_uri`` (and the registry at ``registry_uri`` or the same store)."""
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(registry_uri or tracking_uri)


def local_tracking_uri(directory: str | os.PathLike[str]) -> str:
    """The embedded store: ``sqlite:///<directory>/mlflow.db`` (the directory is created)."""
    path = Path(directory).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path / 'mlflow.db'}"


def _client() -> MlflowClient:
    return MlflowClient(tracking_uri=mlflow.get_tracking_uri(), registry_uri=mlflow.get_registry_uri())


def ensure_experiment(name: str, artifact_location: str | None = None) -> str:
    """Experiment id of ``name``, created (with ``artifact_location`` when given) if missing."""
    client = _client()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException:
        # Another process created it between our lookup and create.
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def find_run_id(experiment: str, run_key: str) -> str | None:
    """Id of the newest run of ``experiment`` tagged ``hub.run_key=run_key``, or None."""
    client = _client()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    escaped = run_key.replace("'", "\\'")
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{RUN_KEY_TAG}` = '{escaped}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


@contextmanager
def run_for_key(
    experiment: str,
    run_key: str,
    *,
    run_name: str | None = None,
    tags: Mapping[str, Any] | None = None,
    artifact_location: str | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """Active run for ``run_key``: the existing one when a previous attempt created it, else a new one.

    ``tags`` are (re)set on every attempt, so they are the place for values that change on retry.
    The run ends (status FINISHED, or FAILED when the block raises) when the block exits.
    """
    experiment_id = ensure_experiment(experiment, artifact_location)
    run_id = find_run_id(experiment, run_key)
    all_tags = {RUN_KEY_TAG: run_key, **{k: str(v) for k, v in (tags or {}).items()}}
    if run_id is None:
        active = mlflow.start_run(experiment_id=experiment_id, run_name=run_name or run_key, tags=all_tags)
    else:
        active = mlflow.start_run(run_id=run_id)
        mlflow.set_tags(all_tags)
    with active:
        yield active


def log_params(params: Mapping[str, Any]) -> None:
    """Log params into the active run; identical re-logs (retries) are skipped, changes raise."""
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("log_params needs an active run (use run_for_key)")
    logged = _client().get_run(run.info.run_id).data.params
    new: dict[str, str] = {}
    for key, value in params.items():
        text = str(value)
        if key in logged:
            if logged[key] != text:
                raise ValueError(
                    f"param {key!r} was logged as {logged[key]!r}, now {text!r}: params are write-once, "
                    "log values that change between attempts with set_tags"
                )
            continue
        new[key] = text
    if new:
        mlflow.log_params(new)


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    """Log finite metrics into the active run (NaN/inf are skipped: MLflow's UI cannot plot them)."""
    finite = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
    if finite:
        mlflow.log_metrics(finite, step=step)


def set_tags(tags: Mapping[str, Any]) -> None:
    mlflow.set_tags({k: str(v) for k, v in tags.items()})


def default_pip_requirements(extra: Iterable[str] = ()) -> list[str]:
    """``name==version`` for the base requirements and ``extra`` as installed here.

    An ``extra`` entry that already carries a specifier (``torch==2.13.0``) is kept as written.
    """
    requirements: list[str] = []
    for name in [*BASE_REQUIREMENTS, *extra]:
        if any(op in name for op in "=<>~!@ "):
            requirements.append(name)
            continue
        try:
            requirements.append(f"{name}=={importlib_metadata.version(name)}")
        except importlib_metadata.PackageNotFoundError:
            requirements.append(name)
    return requirements


def log_pyfunc_model(
    python_model: mlflow.pyfunc.PythonModel,
    *,
    name: str = "model",
    input_example: Any = None,
    signature: ModelSignature | None = None,
    pip_requirements: list[str] | None = None,
    artifacts: Mapping[str, str] | None = None,
    code_paths: list[str] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> ModelInfo:
    """Log ``python_model`` into the active run as ``name``.

    Without a ``signature`` one is inferred from ``input_example`` and the model's own prediction on it.
    Without ``pip_requirements`` the pinned ``default_pip_requirements()`` are used, never inference.
    """
    if signature is None and input_example is not None:
        signature = infer_signature(input_example, python_model.predict(None, input_example))
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=python_model,
        input_example=input_example,
        signature=signature,
        pip_requirements=pip_requirements or default_pip_requirements(),
        artifacts=dict(artifacts) if artifacts else None,
        code_paths=code_paths,
        metadata=dict(metadata) if metadata else None,
    )


def register_version(
    model_uri: str, model_name: str, *, tags: Mapping[str, Any] | None = None
) -> ModelVersion:
    """Register ``model_uri`` (e.g. ``ModelInfo.model_uri``) as a new version of ``model_name``."""
    client = _client()
    try:
        client.create_registered_model(model_name)
    except MlflowException as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
            raise
    version = mlflow.register_model(model_uri, model_name, tags={k: str(v) for k, v in (tags or {}).items()})
    return version


@dataclass(frozen=True)
class PromotionDecision:
    """Outcome of ``promote_if_better``: who holds the alias now, and why."""

    model_name: str
    alias: str
    candidate_version: str
    candidate_value: float
    previous_version: str | None
    previous_value: float | None
    promoted: bool
    reason: str

    @property
    def champion_version(self) -> str | None:
        return self.candidate_version if self.promoted else self.previous_version


def champion_version(model_name: str, alias: str = CHAMPION_ALIAS) -> ModelVersion | None:
    """The version holding ``alias``, or None when no version holds it (or the model is unknown)."""
    try:
        return _client().get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return None


def promote_if_better(
    model_name: str,
    version: str | int,
    metric_name: str,
    value: float,
    *,
    greater_is_better: bool,
    alias: str = CHAMPION_ALIAS,
    champion_value: float | None = None,
    champion_basis: str = "",
) -> PromotionDecision:
    """Tag ``version`` with its held-out ``metric_name`` and move ``alias`` to it only if it is better.

    "Better" is strictly greater (``greater_is_better``) or strictly smaller; a tie keeps the champion.
    A NaN candidate never wins. A champion without the metric tag (logged by older code, or judged on
    another metric) is replaced, because there is no number to defend it with.

    ``champion_value``, when given, is the champion's ``metric_name`` measured by the caller on the
    candidate's own held-out data (``champion_basis`` says how, for the reason): the comparison then
    uses it instead of the figure the champion was registered with, which was measured on other data.
    """
    client = _client()
    version = str(version)
    tag = f"{METRIC_TAG_PREFIX}{metric_name}"
    value = float(value)
    client.set_model_version_tag(model_name, version, tag, repr(value))
    client.set_model_version_tag(model_name, version, "hub.comparison_metric", metric_name)
    client.set_model_version_tag(
        model_name, version, "hub.comparison_direction", "max" if greater_is_better else "min"
    )

    current = champion_version(model_name, alias)
    previous_version = str(current.version) if current is not None else None
    previous_value: float | None = None
    if current is not None and tag in (current.tags or {}):
        previous_value = float(current.tags[tag])
    if current is not None and champion_value is not None:
        previous_value = float(champion_value)

    if previous_version == version:
        promoted, reason = True, "already the champion"
    elif math.isnan(value):
        promoted, reason = False, f"candidate {metric_name} is NaN"
    elif current is None:
        promoted, reason = True, "no champion yet"
    elif previous_value is None or math.isnan(previous_value):
        promoted, reason = True, f"champion v{previous_version} has no {metric_name} to compare"
    else:
        better = value > previous_value if greater_is_better else value < previous_value
        promoted = better
        relation = "beats" if better else "does not beat"
        reason = f"{metric_name} {value:.6g} {relation} champion v{previous_version}'s {previous_value:.6g}"
        if champion_value is not None and champion_basis:
            reason += f" ({champion_basis})"

    if promoted and previous_version != version:
        client.set_registered_model_alias(model_name, alias, version)
    return PromotionDecision(
        model_name=model_name,
        alias=alias,
        candidate_version=version,
        candidate_value=value,
        previous_version=previous_version,
        previous_value=previous_value,
        promoted=promoted,
        reason=reason,
    )


def champion_uri(model_name: str, alias: str = CHAMPION_ALIAS) -> str:
    return f"models:/{model_name}@{alias}"


def load_champion(model_name: str, alias: str = CHAMPION_ALIAS) -> mlflow.pyfunc.PyFuncModel:
    """Load the pyfunc model holding ``alias`` (``models:/<name>@<alias>``)."""
    return mlflow.pyfunc.load_model(champion_uri(model_name, alias))
