"""The production shape's configuration files: the compose file validates with docker-compose v1 (in
its own venv, build/compose-validator, built by `make compose-validator`), the Helm values validate
against the chart's values schema, the production Dagster instance loads on PostgreSQL with its
queue limits, and the image's pins agree with pyproject.toml."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import dagster as dg
import jsonschema
import pytest
import sqlalchemy as sa
import yaml

from hub_pipelines.warehouse.store import normalise_url

ROOT = Path(__file__).resolve().parents[2]
VALIDATOR = ROOT / "build" / "compose-validator" / "bin" / "docker-compose"
COMPOSE = ROOT / "docker" / "compose.yaml"
SECRETS = {"HUB_POSTGRES_PASSWORD": "p4ss", "HUB_S3_ACCESS_KEY": "hub", "HUB_S3_SECRET_KEY": "s3cret"}
HUB_SERVICES = {"code", "webserver", "daemon", "worker", "mlflow"}


@pytest.fixture(scope="module")
def compose_validator() -> Path:
    if not VALIDATOR.exists():
        done = subprocess.run(
            ["make", "compose-validator"], cwd=ROOT, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return VALIDATOR


def _compose(validator: Path, compose_file: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HUB_", "COMPOSE_"))}
    return subprocess.run(
        [str(validator), "-f", str(compose_file), "config", *args],
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_compose_file_validates_and_wires_the_whole_shape(compose_validator, tmp_path):
    done = _compose(compose_validator, COMPOSE, SECRETS)
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(done.stdout)
    services = config["services"]
    assert {"postgres", "redis", "minio", "kafka", "mlflow", "code", "webserver", "daemon", "worker"} <= set(
        services
    )
    # One image for every hub process, built from docker/Dockerfile.
    assert {services[s]["image"] for s in HUB_SERVICES} == {"hub:0.1.0"}
    assert services["code"]["build"]["dockerfile"] == "docker/Dockerfile"
    assert Path(services["code"]["build"]["context"]).resolve() == ROOT
    # Code server, webserver, daemon and workers share one environment: same instance, warehouse,
    # landing zones, broker, tracking server.
    envs = [services[s]["environment"] for s in ("code", "webserver", "daemon", "worker")]
    assert all(env == envs[0] for env in envs)
    env = envs[0]
    assert env["HUB_EXECUTOR"] == "celery" and env["HUB_CELERY_BROKER_URL"].startswith("redis://redis:")
    assert (
        env["DAGSTER_PG_HOST"] == "postgres"
        and env["DAGSTER_PG_PASSWORD"] == SECRETS["HUB_POSTGRES_PASSWORD"]
    )
    assert env["HUB_WAREHOUSE_URL"].startswith("postgresql://") and env["HUB_LANDING_URL"].startswith("s3://")
    assert env["HUB_KAFKA_LANDING_URL"] != env["HUB_LANDING_URL"]
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert services["worker"]["command"][:2] == ["hub", "worker"]
    assert services["worker"]["deploy"]["replicas"] >= 2
    mlflow = services["mlflow"]["environment"]
    assert mlflow["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://")
    assert mlflow["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    assert services["mlflow"]["command"] == ["mlflow-server"]

    # Secrets are required, never defaulted.
    missing = _compose(compose_validator, COMPOSE, {})
    assert missing.returncode != 0 and "HUB_POSTGRES_PASSWORD" in missing.stderr

    # The validator does validate: a misspelt service key is refused.
    shutil.copytree(ROOT / "docker", tmp_path / "docker")
    broken = tmp_path / "docker" / "compose.yaml"
    broken.write_text(
        COMPOSE.read_text().replace("    restart: unless-stopped", "    restartt: unless-stopped", 1)
    )
    refused = _compose(compose_validator, broken, SECRETS)
    assert refused.returncode != 0 and "restartt" in refused.stderr


def _helm_schema() -> dict:
    return json.loads((ROOT / "deploy" / "helm" / "values.schema.json").read_text())


def test_helm_values_validate_against_the_chart_schema():
    schema = _helm_schema()
    assert "dagster-io/dagster" in schema["description"]  # attribution of the vendored part
    jsonschema.Draft7Validator.check_schema(schema)
    values = yaml.safe_load((ROOT / "deploy" / "helm" / "values.yaml").read_text())
    validator = jsonschema.Draft7Validator(schema)
    assert [e.message for e in validator.iter_errors(values)] == []

    [deployment] = values["dagster-user-deployments"]["deployments"]
    assert deployment["codeServerArgs"][-1] == "hub_pipelines.definitions"
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["postgresql"]["enabled"] is False and values["telemetry"]["enabled"] is False

    # The same queue limits as the instance file the other shapes use.
    instance = yaml.safe_load((ROOT / "deploy" / "dagster" / "dagster.yaml").read_text())
    helm_limits = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert helm_limits["tagConcurrencyLimits"] == instance["concurrency"]["runs"]["tag_concurrency_limits"]
    assert helm_limits["maxConcurrentRuns"] == instance["concurrency"]["runs"]["max_concurrent_runs"]

    # And the schema does check: wrong types, unknown launchers and misspelt keys are refused.
    for path, bad in [
        (("runLauncher", "type"), "K8sRunLaunchr"),
        (("dagsterDaemon", "runCoordinater"), {}),
        (("postgresql", "service", "port"), "5432"),
        (("runLauncher", "config", "k8sRunLauncher", "envSecret"), []),
    ]:
        broken = json.loads(json.dumps(values))
        target = broken
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = bad
        assert list(validator.iter_errors(broken)), path
    broken = json.loads(json.dumps(values))
    del broken["dagster-user-deployments"]["deployments"][0]["port"]
    assert list(validator.iter_errors(broken))


@pytest.mark.postgres
def test_production_instance_loads_on_postgresql(postgres_url, tmp_path, monkeypatch):
    parsed = sa.engine.make_url(normalise_url(postgres_url))
    for key, value in {
        "DAGSTER_PG_HOST": parsed.host,
        "DAGSTER_PG_PORT": str(parsed.port or 5432),
        "DAGSTER_PG_USER": parsed.username,
        "DAGSTER_PG_PASSWORD": parsed.password or "",
        "DAGSTER_PG_DB": parsed.database,
    }.items():
        monkeypatch.setenv(key, value)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(ROOT / "deploy" / "dagster" / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        queue = instance.get_concurrency_config().run_queue_config
        limits = {
            (limit["key"], json.dumps(limit.get("value"))): limit["limit"]
            for limit in queue.tag_concurrency_limits
        }
        assert limits[("hub/landing_zone", json.dumps({"applyLimitPerUniqueValue": True}))] == 1
        assert limits[("hub/kind", json.dumps("training"))] == 2
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
        assert instance.run_monitoring_enabled and not instance.telemetry_enabled
        assert instance.get_runs_count() == 0  # the storage answers: its tables are in PostgreSQL
    engine = sa.create_engine(normalise_url(postgres_url))
    with engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
    engine.dispose()
    assert {"runs", "event_logs", "jobs", "job_ticks"} <= tables
    # The embedded default is untouched: SQLite, no PostgreSQL.
    embedded = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    assert "storage" not in embedded and embedded["telemetry"]["enabled"] is False


def test_image_pins_every_dependency_and_cpu_torch():
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (\S+) ", dockerfile, flags=re.MULTILINE):
        assert (ROOT / source).exists(), source
    lines = [
        line
        for line in (ROOT / "docker" / "requirements.txt").read_text().splitlines()
        if line and not line.startswith(("#", "--"))
    ]
    pins = dict(line.split("==", 1) for line in lines)
    assert all("==" in line for line in lines)
    assert pins["torch"].endswith("+cpu")
    assert not [name for name in pins if name.lower().startswith(("nvidia", "triton"))]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    normalised = {re.sub(r"[-_.]+", "-", n).lower(): v for n, v in pins.items()}
    stale = []
    for requirement in project:
        name, version = requirement.split("==")
        if normalised.get(re.sub(r"[-_.]+", "-", name).lower(), "").split("+")[0] != version:
            stale.append(requirement)
    assert not stale, f"docker/requirements.txt is stale for {stale}: run `make docker-lock`"


def test_readme_names_every_production_variable():
    readme = (ROOT / "README.md").read_text()
    assert "## Going to production" in readme
    section = readme.split("## Going to production", 1)[1]
    compose = yaml.safe_load(COMPOSE.read_text())
    names = set(compose["x-hub-environment"]) | set(compose["services"]["mlflow"]["environment"])
    names |= set(re.findall(r"env: (\w+)", (ROOT / "deploy" / "dagster" / "dagster.yaml").read_text()))
    names |= {"HUB_CELERY_BACKEND_URL", "HUB_KAFKA_SECURITY_PROTOCOL", "HUB_KAFKA_SASL_MECHANISM",
              "HUB_KAFKA_SASL_USERNAME", "HUB_KAFKA_SASL_PASSWORD", "DAGSTER_HOME"}  # fmt: skip
    names |= set(SECRETS)
    undocumented = sorted(name for name in names if name not in section)
    assert not undocumented, undocumented
