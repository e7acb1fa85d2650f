"""The query interface on the edges: `tags.<key>` (JSON parsed differently by each engine) and
answers with no rows, on every path (raw events, rollups, stored percentiles, sketches)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from hub_pipelines.query import QueryError, query
from hub_pipelines.warehouse.rollups import refresh_daily, refresh_hourly
from hub_pipelines.warehouse.tables import events

DAY = datetime(2026, 10, 5, tzinfo=UTC)


def _event(moment: datetime, value: float, tags: dict | None, model: str = "gpt-4o") -> dict:
    return {c.name: None for c in events.columns} | {
        "event_id": str(uuid.uuid4()), "event_time": moment, "tenant_id": "t1",
        "source_module": "llm-observatory", "event_type": "telemetry", "schema_version": "2.0.0",
        "schema_major": 2, "metric_name": "latency_ms", "metric_value": value, "unit": "ms", "model": model,
        "status": "ok", "tags": json.dumps(tags) if tags is not None else None, "original": "{}",
        "batch_id": "t", "ingested_at": DAY,
    }  # fmt: skip


def test_tags_and_empty_answers(warehouse):
    rows = [
        _event(
            DAY + timedelta(minutes=i), 100.0 + i, {"customer": "acme" if i % 3 else "globex", "tier": "gold"}
        )
        for i in range(30)
    ] + [_event(DAY + timedelta(minutes=40), 999.0, None)]
    with warehouse.begin() as conn:
        conn.execute(events.insert(), rows)
    refresh_hourly(warehouse, DAY, DAY + timedelta(days=1))
    refresh_daily(warehouse, DAY, DAY + timedelta(days=1))
    window = {"start": DAY, "end": DAY + timedelta(days=1)}

    by_customer = query(warehouse, "latency_ms", agg="count", group_by=["tags.customer"], **window)
    assert set(by_customer.attrs["sources"]) == {"events"}  # tags live in the raw events only
    counts = dict(zip(by_customer["tags.customer"], by_customer["value"], strict=True))
    assert counts == {"acme": 20.0, "globex": 10.0, None: 1.0}
    gold = query(warehouse, "latency_ms", agg="max", filters={"tags.tier": "gold"}, bucket="1d", **window)
    assert gold["value"].tolist() == [129.0]
    assert (
        query(warehouse, "requests", filters={"tags.customer": ["acme", "globex"]}, **window)["value"].sum()
        == 30
    )

    # A source's own error_rate metric, beside hub's composite of the same name.
    sent = _event(DAY + timedelta(minutes=50), 0.25, None) | {"metric_name": "error_rate", "unit": "ratio"}
    with warehouse.begin() as conn:
        conn.execute(events.insert(), [sent])
    refresh_hourly(warehouse, DAY, DAY + timedelta(days=1))
    refresh_daily(warehouse, DAY, DAY + timedelta(days=1))
    assert query(warehouse, "telemetry:error_rate", agg="max", bucket="1d", **window)["value"].tolist() == [
        0.25
    ]
    assert query(warehouse, "error_rate", bucket="1d", **window)["value"].tolist() == [
        0.0
    ]  # errors / requests

    nothing = {"model": "no-such-model"}
    for kwargs in (
        dict(agg="avg"),  # rollups
        dict(agg="p95"),  # stored percentiles would answer if grouped fully; here raw events
        dict(agg="p95", exact=False, bucket="1d"),  # sketches
        dict(agg="count", bucket="5m"),  # raw events
        dict(
            agg="p99",
            group_by=["tenant_id", "source_module", "model", "provider", "project", "environment", "region"],
        ),
    ):
        empty = query(warehouse, "latency_ms", filters=nothing, **window, **kwargs)
        assert empty.empty and list(empty.columns) == ["bucket_start", *kwargs.get("group_by", []), "value"]
        assert isinstance(empty["bucket_start"].dtype, pd.DatetimeTZDtype)
    for metric in ("error_rate", "threats", "compliance_rate"):
        assert query(warehouse, metric, filters=nothing, **window).empty
    # Before any data: a window with nothing at all.
    assert query(warehouse, "latency_ms", start="2020-01-01", end="2020-01-02").empty
    with pytest.raises(QueryError, match="cannot be read exactly from rollups"):
        query(warehouse, "latency_ms", agg="p95", group_by=["model"], source="rollups", **window)


def test_registry_metadata_enriches_events(warehouse):
    """asset_name, asset_version, asset_owner and asset_type come from asset_catalog, the latest
    registry record of the event's asset_id: a new owner shows on past events at once; an event
    whose asset the registry does not know groups under None."""
    from hub_pipelines.warehouse.tables import asset_catalog

    rows = [
        _event(DAY + timedelta(minutes=i), 10.0 * (i + 1), None) | {"asset_id": "t1:model:a"}
        for i in range(4)
    ]
    rows += [
        _event(DAY + timedelta(minutes=10 + i), 500.0, None) | {"asset_id": "t1:model:b"} for i in range(2)
    ]
    rows += [_event(DAY + timedelta(minutes=20), 7.0, None) | {"asset_id": "t1:model:unknown"}]
    rows += [_event(DAY + timedelta(minutes=21), 9.0, None) | {"tenant_id": "t2", "asset_id": "t1:model:a"}]

    def record(asset_id: str, name: str, version: str, owner: str) -> dict:
        return {
            "tenant_id": "t1", "asset_id": asset_id, "asset_name": name, "asset_type": "model",
            "version": version, "owner": owner, "updated_at": DAY, "event_id": str(uuid.uuid4()),
        }  # fmt: skip

    with warehouse.begin() as conn:
        conn.execute(events.insert(), rows)
        conn.execute(
            asset_catalog.insert(),
            [
                record("t1:model:a", "chat-a", "1.2.0", "ml-platform"),
                record("t1:model:b", "chat-b", "3.0.0", "search"),
            ],
        )
    window = {"start": DAY, "end": DAY + timedelta(days=1), "bucket": "1d"}

    by_owner = query(warehouse, "latency_ms", agg="max", group_by=["asset_owner", "asset_version"], **window)
    assert set(by_owner.attrs["sources"]) == {"events"}
    got = {
        (o, v): x for o, v, x in by_owner[["asset_owner", "asset_version", "value"]].itertuples(index=False)
    }
    # t2's event names t1's asset id: the catalogue is per tenant, so it is not enriched.
    assert got == {("ml-platform", "1.2.0"): 40.0, ("search", "3.0.0"): 500.0, (None, None): 9.0}
    named = query(warehouse, "requests", filters={"asset_name": "chat-a"}, **window)
    assert named["value"].sum() == 4
    assert (
        query(warehouse, "latency_ms", agg="count", filters={"asset_type": "model"}, **window)["value"].sum()
        == 6
    )

    with warehouse.begin() as conn:  # the registry moves chat-b to another team
        conn.execute(
            asset_catalog.update().where(asset_catalog.c.asset_id == "t1:model:b").values(owner="assistants")
        )
    moved = query(warehouse, "latency_ms", agg="count", filters={"asset_owner": "assistants"}, **window)
    assert moved["value"].sum() == 2

    with pytest.raises(QueryError, match="asset_owner"):  # the allowed names are listed
        query(warehouse, "latency_ms", group_by=["asset_onwer"], **window)
