"""The landing-zone sensor launches runs such that no file is skipped and none is ingested twice:
equal modification times, files arriving out of key order, a tick that dies half way, a run that
fails, and a re-upload of the same content. Runs are executed for real, in process."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
import sqlalchemy as sa

from hub_pipelines.definitions import defs
from hub_pipelines.defs.ingest import sensors as sensor_module
from hub_pipelines.resources import LandingZoneResource
from hub_pipelines.warehouse import Warehouse


@pytest.fixture(params=["local", "s3"])
def landing(request, tmp_path, monkeypatch):
    monkeypatch.setenv("HUB_HOME", str(tmp_path / "hub"))
    if request.param == "local":
        root = tmp_path / "landing"
        monkeypatch.setenv("HUB_LANDING_URL", str(root))

        def put(key: str, data: bytes, mtime: float | None = None) -> None:
            path = root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            if mtime is not None:
                os.utime(path, (mtime, mtime))

        return put
    bucket, client = request.getfixturevalue("s3_bucket")
    monkeypatch.setenv("HUB_LANDING_URL", f"s3://{bucket}/landing/")
    monkeypatch.setenv("HUB_S3_ENDPOINT_URL", request.getfixturevalue("s3_endpoint"))

    def put(key: str, data: bytes, mtime: float | None = None) -> None:
        client.put_object(Bucket=bucket, Key="landing/" + key, Body=data)

    return put


def _batch(event_factory, start: int, n: int) -> bytes:
    now = datetime.now(UTC).replace(microsecond=0)
    return b"\n".join(
        json.dumps(event_factory(start + i, now - timedelta(minutes=i))).encode() for i in range(n)
    )


def _tick(instance, cursor):
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"landing_zone": LandingZoneResource()}
    )
    result = sensor_module.landing_zone_sensor(context)
    return result.run_requests or [], result.cursor


def _run(instance, request, fail: bool = False) -> bool:
    job = defs.resolve_job_def("ingest_job")
    tags = dict(request.tags) | {
        "dagster/run_key": request.run_key,
        "dagster/sensor_name": sensor_module.SENSOR_NAME,
    }
    if fail:
        # A run that dies: its step raises before anything is committed.
        result = dg.materialize(
            [_ingest_assets()],
            run_config=request.run_config,
            instance=instance,
            tags=tags,
            raise_on_error=False,
            resources={"warehouse": _BrokenWarehouse(), "landing_zone": LandingZoneResource()},
        )
    else:
        result = job.execute_in_process(run_config=request.run_config, instance=instance, tags=tags)
    return result.success


def _ingest_assets():
    from hub_pipelines.defs.ingest.assets import ingest_batches

    return ingest_batches


class _BrokenWarehouse(dg.ConfigurableResource):
    @property
    def warehouse(self):
        raise ConnectionError("warehouse unreachable")

    def describe(self) -> str:
        return "broken"


def test_every_file_ingested_exactly_once(landing, event_factory, monkeypatch, tmp_path):
    monkeypatch.setattr(sensor_module, "MAX_FILES_PER_TICK", 3)
    monkeypatch.setattr(sensor_module, "FILES_PER_RUN", 2)
    instance = dg.DagsterInstance.ephemeral()
    same_mtime = datetime(2026, 11, 20, tzinfo=UTC).timestamp()
    contents = {f"m/{i:03d}.jsonl": _batch(event_factory, i * 10, 5) for i in range(1, 8)}
    for key, data in contents.items():
        landing(key, data, mtime=same_mtime)  # equal modification times everywhere

    cursor = None
    runs = failed = 0
    # A tick that dies half way: the listing raises after two files; Dagster keeps the old cursor.
    original = LandingZoneResource.zone

    def dying_zone(self):
        zone = original.__get__(self)

        class Dying:
            def __getattr__(self, name):
                return getattr(zone, name)

            def list_pending(self, start_after=""):
                for n, landed in enumerate(zone.list_pending(start_after)):
                    if n == 2:
                        raise TimeoutError("tick ran out of time")
                    yield landed

        return Dying()

    monkeypatch.setattr(LandingZoneResource, "zone", property(dying_zone))
    with pytest.raises(TimeoutError):
        _tick(instance, cursor)
    monkeypatch.setattr(LandingZoneResource, "zone", original)

    late_added = reuploaded = False
    for tick in range(30):
        requests, cursor = _tick(instance, cursor)
        for request in requests:
            if not failed:
                failed += 1
                assert not _run(instance, request, fail=True)
                continue
            assert _run(instance, request)
            runs += 1
        if tick == 1 and not late_added:
            # Arrives with a key that sorts before the cursor.
            contents["a/000.jsonl"] = _batch(event_factory, 1000, 4)
            landing("a/000.jsonl", contents["a/000.jsonl"], mtime=same_mtime)
            late_added = True
        if tick == 4 and not reuploaded:
            # The same bytes uploaded again under an ingested name.
            landing("m/001.jsonl", contents["m/001.jsonl"])
            reuploaded = True
        if not requests and tick > 6:
            break

    warehouse = Warehouse(
        os.environ.get("HUB_WAREHOUSE_URL") or f"duckdb:///{tmp_path / 'hub' / 'warehouse.duckdb'}"
    )
    with warehouse.connect() as conn:
        ledger = conn.execute(sa.text("SELECT landing_key, events_in, stored FROM ingest_ledger")).all()
        stored = conn.execute(sa.text("SELECT count(*), count(DISTINCT event_id) FROM events")).one()
    assert failed == 1 and runs >= 4
    assert sorted(k for k, *_ in ledger) == sorted(contents)  # each distinct batch once, none skipped
    assert stored[0] == stored[1] == sum(5 if k.startswith("m/") else 4 for k in contents)
    assert all(events_in == n_stored for _, events_in, n_stored in ledger)
    assert list(LandingZoneResource().zone.list_pending()) == []  # everything archived


def test_plan_tick_resumes_wraps_and_forgets_archived():
    from hub_pipelines.landing import LandedFile

    files = [LandedFile(k, 10, "v1") for k in ["a", "b", "c", "d"]]
    state = sensor_module.SensorState()
    groups, keys, state = sensor_module.plan_tick(
        state, iter(files[:2] + files[2:]), set(), max_files=2, files_per_run=1
    )
    assert [g[0].key for g in groups] == ["a", "b"] and state.after == "b"
    groups, keys, state = sensor_module.plan_tick(state, iter(files[2:]), set(), max_files=2, files_per_run=5)
    assert [f.key for f in groups[0]] == ["c", "d"] and state.after == "d"
    # End of listing reached: wrap around. a was archived meanwhile; b is still in flight.
    groups, keys, state = sensor_module.plan_tick(state, iter([]), set())
    assert groups == [] and state.after == ""
    groups, keys, state = sensor_module.plan_tick(state, iter(files[1:]), set())
    assert groups == [] and "a" not in state.launched and "b" in state.launched
    # b's run failed: relaunched with a new run key.
    failed = {state.launched["b"].run_key}
    groups, keys, state = sensor_module.plan_tick(state, iter(files[1:2]), failed)
    assert [g[0].key for g in groups] == ["b"] and keys[0].endswith("-2")


def test_plan_tick_stops_when_its_time_budget_is_spent():
    """A listing slower than the tick's budget (a huge S3 prefix): the tick launches what it saw and
    keeps the last key it reached; the ticks after it go on from there and every file is launched once."""
    from hub_pipelines.landing import LandedFile

    files = [LandedFile(f"k{i:02d}", 10, "v1") for i in range(12)]

    def slow_listing(after: str):
        for landed in files:
            if landed.key > after:
                time.sleep(0.05)
                yield landed

    state, launched, ticks = sensor_module.SensorState(), [], 0
    while True:
        ticks += 1
        groups, _, state = sensor_module.plan_tick(
            state, slow_listing(state.after), set(), time_budget_s=0.12
        )
        launched += [f.key for g in groups for f in g]
        if state.after == "":
            break
        assert groups, "a tick that reaches no file makes no progress"
    assert ticks >= 3  # the budget, not the file cap, ended the early ticks
    assert launched == [f.key for f in files]
