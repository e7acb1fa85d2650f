"""Distributed execution with no code change: a 24-partition backfill of the hourly rollups on the
production instance (deploy/dagster/dagster.yaml: runs, event log and schedules in PostgreSQL) with
the Celery executor selected by HUB_EXECUTOR=celery, its steps executed by two `hub worker` processes
on a Redis broker on 127.0.0.1. Both workers execute steps, and the rollups equal those of the
multiprocess executor's run of the same range into another warehouse.

The backfill is one run per hour partition, tagged with one backfill id, as Dagster's job backfill
launches them; the runs are orchestrated by two processes started here (no daemon: the
QueuedRunCoordinator only matters to submitted runs), two at a time so that both workers are kept
busy. The multiprocess run of the same range (one run: the asset's single-run backfill policy) goes
at the same time, through `dagster asset materialize`, into another warehouse.

The other broker, RabbitMQ, is chosen by HUB_CELERY_BROKER_URL alone: a partition's step runs in a
worker consuming from it (results over its rpc:// backend).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from hub_pipelines.executors import make_worker_app
from hub_pipelines.generator import GeneratorConfig, simulate, write_batches
from hub_pipelines.ingestion import ingest_files
from hub_pipelines.landing import LocalFolder
from hub_pipelines.warehouse import Warehouse
from hub_pipelines.warehouse.rollups import HOURLY_TABLES
from hub_pipelines.warehouse.store import normalise_url

ROOT = Path(__file__).resolve().parents[2]
PROD_DAGSTER_YAML = ROOT / "deploy" / "dagster" / "dagster.yaml"
REDIS = "redis://127.0.0.1:6379"
WORKERS = ("hub-test-a@127.0.0.1", "hub-test-b@127.0.0.1")

pytestmark = pytest.mark.postgres

# One orchestrating process: runs the given hour partitions one after another as runs of
# hourly_rollups_job on the instance in DAGSTER_HOME (the executor is whatever HUB_EXECUTOR says).
ORCHESTRATOR = """
import json, sys
import dagster as dg
from dagster._core.definitions.reconstruct import ReconstructableRepository

backfill_id, keys = sys.argv[1], sys.argv[2:]
repo = ReconstructableRepository.for_module("hub_pipelines.definitions", "defs", ".")
job = repo.get_reconstructable_job("hourly_rollups_job")
run_ids = []
with dg.DagsterInstance.get() as instance:
    for key in keys:
        tags = {"dagster/partition": key, "dagster/backfill": backfill_id}
        result = dg.execute_job(job, instance=instance, tags=tags)
        if not result.success:
            sys.exit(f"run {result.run_id} for {key} failed")
        run_ids.append(result.run_id)
print(json.dumps(run_ids))
"""


@pytest.fixture
def databases(postgres_server):
    """Fresh PostgreSQL databases by role, dropped afterwards."""
    admin = sa.create_engine(normalise_url(postgres_server), isolation_level="AUTOCOMMIT")
    created: list[str] = []

    def make(role: str) -> str:
        name = f"hub_test_{role}_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        created.append(name)
        return postgres_server.rsplit("/", 1)[0] + "/" + name

    yield make
    with admin.connect() as conn:
        for name in created:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def _pg_env(url: str) -> dict[str, str]:
    parsed = sa.engine.make_url(normalise_url(url))
    return {
        "DAGSTER_PG_HOST": parsed.host or "127.0.0.1",
        "DAGSTER_PG_PORT": str(parsed.port or 5432),
        "DAGSTER_PG_USER": parsed.username or "postgres",
        "DAGSTER_PG_PASSWORD": parsed.password or "",
        "DAGSTER_PG_DB": parsed.database,
    }


def _load_day(tmp_path: Path, end: datetime, *warehouse_urls: str) -> int:
    """One day of generated traffic, ingested through the normal path into each warehouse."""
    landing = tmp_path / "landing"
    config = GeneratorConfig(days=1, tenants=1, seed=11, end=end, requests_per_hour=40.0)
    write_batches(simulate(config), landing)
    keys = [f.key for f in LocalFolder(landing).list_pending()]
    stored = set()
    for url in warehouse_urls:
        warehouse = Warehouse(url)
        warehouse.create_tables()
        report = ingest_files(warehouse, LocalFolder(landing), keys, archive=False, received_at=end)
        stored.add(report.summary["stored"])
        warehouse.engine.dispose()
    assert len(stored) == 1
    return stored.pop()


def _rollups(url: str) -> dict[str, list[tuple]]:
    warehouse = Warehouse(url)
    out = {}
    with warehouse.connect() as conn:
        for table in HOURLY_TABLES:
            rows = conn.execute(sa.text(f"SELECT * FROM {table}")).all()
            out[table] = sorted(
                (tuple(round(v, 9) if isinstance(v, float) else v for v in row) for row in rows), key=repr
            )
    warehouse.engine.dispose()
    return out


def _start_worker(name: str, env: dict, log: Path) -> subprocess.Popen:
    hub = Path(sys.executable).with_name("hub")
    return subprocess.Popen(
        [str(hub), "worker", "--name", name, "--concurrency", "1", "--loglevel", "WARNING"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stopped with its prefork children
    )


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _wait_for_workers(broker: str, names: tuple[str, ...], processes, logs, timeout_s: float = 120.0):
    app = make_worker_app(broker)
    deadline = time.monotonic() + timeout_s
    seen: set[str] = set()
    try:
        while time.monotonic() < deadline:
            for process, log in zip(processes, logs, strict=True):
                if process.poll() is not None:
                    pytest.fail(f"worker exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            replies = app.control.inspect(timeout=1.0).ping() or {}
            seen = set(replies)
            if seen >= set(names):
                return
            time.sleep(0.5)
        pytest.fail(f"workers not ready after {timeout_s}s (answering: {sorted(seen)})")
    finally:
        # An open broker pool outlives the test, and kombu's after-fork hook would then block any later
        # fork of this process on a Redis read.
        app.close()


def _require_redis() -> None:
    """Redis down is a failure, never a skip (like PostgreSQL)."""
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=3) as conn:
            conn.sendall(b"PING\r\n")
            assert conn.recv(16).startswith(b"+PONG")
    except (OSError, AssertionError) as exc:
        pytest.fail(f"Redis on 127.0.0.1:6379 does not answer ({exc!r}); the Celery test needs it")


def test_hourly_backfill_on_celery_workers_equals_the_multiprocess_run(tmp_path, databases, monkeypatch):
    _require_redis()
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    start = end - timedelta(days=1)
    instance_url, celery_wh, multi_wh = databases("dagster"), databases("celery_wh"), databases("multi_wh")
    events = _load_day(tmp_path, end, celery_wh, multi_wh)
    assert events > 1000

    # The production instance, selected by DAGSTER_HOME; credentials from the environment.
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(PROD_DAGSTER_YAML, home / "dagster.yaml")
    broker = f"{REDIS}/{random.randint(1, 15)}"
    common = _pg_env(instance_url) | {
        "DAGSTER_HOME": str(home),
        "HUB_HOME": str(tmp_path / "hub"),
        "HUB_CELERY_BROKER_URL": broker,
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    for key, value in common.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(ROOT)

    logs = [tmp_path / f"worker-{i}.log" for i in range(len(WORKERS))]
    worker_env = os.environ | common | {"HUB_WAREHOUSE_URL": celery_wh}
    workers = [_start_worker(name, worker_env, log) for name, log in zip(WORKERS, logs, strict=True)]
    try:
        _wait_for_workers(broker, WORKERS, workers, logs)
        backfill_id = f"celery-{uuid.uuid4().hex[:8]}"
        hours = [start + timedelta(hours=h) for h in range(24)]
        keys = [hour.strftime("%Y-%m-%d-%H:%M") for hour in hours]
        # The orchestrating side selects Celery by environment only: no run config, no code change.
        orchestrator_env = worker_env | {"HUB_EXECUTOR": "celery"}
        started = time.perf_counter()
        multiprocess = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("dagster")),
                "asset",
                "materialize",
                "-m",
                "hub_pipelines.definitions",
                "--select",
                "hourly_rollups",
                "--partition-range",
                f"{keys[0]}...{keys[-1]}",
            ],
            env=worker_env | {"HUB_WAREHOUSE_URL": multi_wh, "HUB_EXECUTOR": "multiprocess"},
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        orchestrators = [
            subprocess.Popen(
                [sys.executable, "-c", ORCHESTRATOR, backfill_id, *keys[i :: len(WORKERS)]],
                env=orchestrator_env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(len(WORKERS))
        ]
        run_ids = []
        for process in orchestrators:
            out, err = process.communicate(timeout=300)
            assert process.returncode == 0, err[-3000:]
            run_ids += json.loads(out.strip().splitlines()[-1])
        celery_seconds = time.perf_counter() - started
        assert len(run_ids) == 24

        with dg.DagsterInstance.get() as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
            executed_by: dict[str, str] = {}
            for run_id in run_ids:
                for record in instance.all_logs(run_id):
                    event = record.dagster_event
                    if event and event.event_type_value == "ENGINE_EVENT":
                        worker = event.engine_event_data.metadata.get("Celery worker")
                        if worker is not None:
                            executed_by[run_id] = worker.value
            materialized = instance.get_materialized_partitions(dg.AssetKey("hourly_rollups"))
            backfill_runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
            assert {r.status for r in backfill_runs} == {dg.DagsterRunStatus.SUCCESS}
            assert len(backfill_runs) == 24
    finally:
        for process in workers:
            _stop(process)

    # Every partition's step ran in a Celery worker, and both workers took a share.
    assert set(executed_by) == set(run_ids), "a step ran outside the Celery workers"
    assert set(executed_by.values()) == set(WORKERS), executed_by
    assert len(materialized) == 24

    # The same range, run at the same time by the multiprocess executor into another warehouse.
    out, err = multiprocess.communicate(timeout=300)
    assert multiprocess.returncode == 0, err[-3000:]
    with dg.DagsterInstance.get() as instance:
        [multi_run] = [r for r in instance.get_runs() if r.run_id not in run_ids]
        assert multi_run.status == dg.DagsterRunStatus.SUCCESS
        kinds = {
            r.dagster_event.event_type_value for r in instance.all_logs(multi_run.run_id) if r.dagster_event
        }
        assert "STEP_WORKER_STARTED" in kinds  # a step subprocess: the multiprocess executor
        assert not any(
            r.dagster_event and "celery" in (r.message or "").lower()
            for r in instance.all_logs(multi_run.run_id)
        )

    celery_rows, multi_rows = _rollups(celery_wh), _rollups(multi_wh)
    assert sum(len(rows) for rows in celery_rows.values()) > 100
    for table in HOURLY_TABLES:
        assert celery_rows[table] == multi_rows[table], table
    with Warehouse(celery_wh).connect() as conn:
        counted = conn.execute(sa.text("SELECT sum(value_count) FROM rollup_metrics_hourly")).scalar_one()
    assert counted > 0
    print(f"24 partitions on 2 Celery workers in {celery_seconds:.1f}s")


def test_the_executor_is_chosen_by_configuration_when_a_run_starts(monkeypatch):
    from hub_pipelines.definitions import defs
    from hub_pipelines.executors import celery_urls, hub_executor, redact_url, selected_kind

    job = defs.resolve_job_def("hourly_rollups_job")
    assert job.executor_def is hub_executor
    assert defs.resolve_job_def("ingest_job").executor_def is hub_executor
    for execution in (
        {},
        {"config": {"multiprocess": {"max_concurrent": 2}}},
        {"config": {"in_process": {}}},
        {"config": {"celery": {"broker": "amqp://guest@127.0.0.1:5672//"}}},
    ):
        dg.validate_run_config(job, {"execution": execution} if execution else {})

    monkeypatch.delenv("HUB_EXECUTOR", raising=False)
    monkeypatch.delenv("HUB_CELERY_BROKER_URL", raising=False)
    monkeypatch.delenv("HUB_CELERY_BACKEND_URL", raising=False)
    assert selected_kind({}) == "multiprocess"
    monkeypatch.setenv("HUB_EXECUTOR", "celery")
    assert selected_kind({}) == "celery"
    assert selected_kind({"in_process": {}}) == "in_process"  # run config wins over the environment
    monkeypatch.setenv("HUB_EXECUTOR", "kubernetes")
    with pytest.raises(dg.DagsterInvariantViolationError):
        selected_kind({})

    assert celery_urls() == ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("HUB_CELERY_BROKER_URL", "amqp://hub:secret@127.0.0.1:5672//")
    assert celery_urls() == ("amqp://hub:secret@127.0.0.1:5672//", "rpc://")
    assert redact_url("redis://:pw@redis:6379/0") == "redis://:***@redis:6379/0"
    assert "secret" not in redact_url(celery_urls()[0])


RABBITMQ = "amqp://guest:guest@127.0.0.1:5672//"


def test_a_rabbitmq_broker_is_chosen_by_configuration_alone(tmp_path, monkeypatch, postgres_url):
    """The other broker: HUB_CELERY_BROKER_URL names RabbitMQ (results over its rpc:// backend) and
    an hour partition's step runs in a `hub worker` consuming from it, on the embedded instance."""
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=3).close()
    except OSError as exc:
        pytest.fail(f"RabbitMQ on 127.0.0.1:5672 does not answer ({exc!r}); the Celery test needs it")
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    events = _load_day(tmp_path, end, postgres_url)
    assert events > 1000
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")  # the embedded (SQLite) instance
    env = os.environ | {
        "DAGSTER_HOME": str(home),
        "HUB_HOME": str(tmp_path / "hub"),
        "HUB_WAREHOUSE_URL": postgres_url,
        "HUB_CELERY_BROKER_URL": RABBITMQ,
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    name = "hub-test-rabbit@127.0.0.1"
    log = tmp_path / "worker.log"
    worker = _start_worker(name, env, log)
    try:
        _wait_for_workers(RABBITMQ, (name,), [worker], [log])
        key = (end - timedelta(hours=12)).strftime("%Y-%m-%d-%H:%M")
        run = subprocess.run(
            [sys.executable, "-c", ORCHESTRATOR, f"rabbit-{uuid.uuid4().hex[:8]}", key],
            env=env | {"HUB_EXECUTOR": "celery"},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr[-3000:] + log.read_text()[-2000:]
        (run_id,) = json.loads(run.stdout.strip().splitlines()[-1])
        with dg.DagsterInstance.get() as instance:
            workers = {
                r.dagster_event.engine_event_data.metadata["Celery worker"].value
                for r in instance.all_logs(run_id)
                if r.dagster_event
                and r.dagster_event.event_type_value == "ENGINE_EVENT"
                and "Celery worker" in r.dagster_event.engine_event_data.metadata
            }
            assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS
    finally:
        _stop(worker)
    assert workers == {name}
    with Warehouse(postgres_url).connect() as conn:
        rows = conn.execute(sa.text("SELECT count(*) FROM rollup_metrics_hourly")).scalar_one()
    assert rows > 0
