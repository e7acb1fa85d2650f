"""Decisions made without a database: what the refresh sensor requests, retention days, and how
the query interface validates what it is asked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hub_pipelines.defs.rollups.retention import RetentionConfig, TenantRetentionConfig, policy_from
from hub_pipelines.defs.rollups.sensors import RefreshState, plan_refresh
from hub_pipelines.query import QueryError, parse_since
from hub_pipelines.query.api import _plan
from hub_pipelines.warehouse.retention import Retention, RetentionPolicy

T0 = datetime(2026, 11, 20, tzinfo=UTC)
FIRST = datetime(2025, 1, 1, tzinfo=UTC)


def test_plan_refresh_groups_ended_hours_by_day_and_keeps_open_ones():
    hours = [T0 + timedelta(hours=h) for h in (1, 2, 3, 7, 22, 23, 24, 25, 30)]
    now = T0 + timedelta(hours=30, minutes=20)  # hour 30 is still under way
    touched = [h.isoformat() for h in hours] + [(T0 + timedelta(hours=2)).isoformat()]  # duplicates collapse
    touched.append("2024-06-01T05:00:00+00:00")  # before the first partition
    touched.append("2026-11-20T03:00:00Z")  # the same hour, spelt differently
    ranges, pending, ignored = plan_refresh(touched, now, FIRST)
    assert ranges == [
        (T0 + timedelta(hours=1), T0 + timedelta(hours=3)),
        (T0 + timedelta(hours=7), T0 + timedelta(hours=7)),
        (T0 + timedelta(hours=22), T0 + timedelta(hours=23)),  # a run never crosses midnight
        (T0 + timedelta(hours=24), T0 + timedelta(hours=25)),
    ]
    assert pending == [(T0 + timedelta(hours=30)).isoformat()]
    assert ignored == ["2024-06-01T05:00:00+00:00"]
    # An hour ends: requested on the next tick.
    ranges, pending, _ = plan_refresh(pending, now + timedelta(hours=1), FIRST)
    assert ranges == [(T0 + timedelta(hours=30), T0 + timedelta(hours=30))] and pending == []


def test_refresh_state_round_trips():
    state = RefreshState(after=42, pending=["2026-11-20T05:00:00+00:00"])
    assert RefreshState.load(state.dump()) == state
    assert RefreshState.load(None) == RefreshState()


def test_retention_policy_overrides_and_dead_letters_outlive_events(monkeypatch):
    policy = RetentionPolicy(tenants={"big": Retention(events_days=120), "short": Retention(rollups_days=30)})
    assert policy.days("events") == 30 and policy.days("dead_letters") == 90 and policy.days("rollups") == 365
    assert policy.days("events", "big") == 120 and policy.days("dead_letters", "big") == 120
    assert policy.days("rollups", "short") == 30 and policy.days("events", "short") == 30
    assert policy.days("events", "unknown-tenant") == 30
    with pytest.raises(ValueError, match="at least 1 day"):
        RetentionPolicy(events_days=0)
    monkeypatch.setenv("HUB_RETENTION_TENANTS", '{"a": {"events_days": 7}, "b": {"rollups_days": 10}}')
    config = RetentionConfig(events_days=14, tenant_overrides={"b": TenantRetentionConfig(rollups_days=20)})
    merged = policy_from(config)
    assert merged.days("events") == 14 and merged.days("events", "a") == 7
    assert merged.days("rollups", "b") == 20  # run config wins over the environment


def test_query_validation_lists_what_is_allowed():
    now = datetime(2026, 11, 20, 10, 17, tzinfo=UTC)

    def plan(metric="latency_ms", **kw):
        args = dict(since=None, start=None, end=None, bucket="1h", agg=None, group_by=(), filters=None,
                    order="time", limit=None, exact=True, source="auto", now=now) | kw  # fmt: skip
        return _plan(None, metric, **args)

    p = plan(since="24h", bucket="1h", group_by="tenant, model", filters={"source": "llm-observatory"})
    assert p.group_by == ("tenant_id", "model") and p.filters == {"source_module": "llm-observatory"}
    assert p.start == datetime(2026, 11, 19, 10, tzinfo=UTC) and p.end == datetime(
        2026, 11, 20, 11, tzinfo=UTC
    )
    assert p.agg == "avg" and p.uses_rollups
    assert plan("requests").agg == "sum" and plan("error_rate").agg == "avg"
    assert not plan(group_by=["status"]).uses_rollups  # the rollups do not keep status
    assert not plan(bucket="5m").uses_rollups
    assert plan(filters={"tags.customer": ["a", "b"]}).filters == {"tags.customer": ["a", "b"]}
    day = plan(start="2026-11-18T05:00:00", end="2026-11-19T01:00:00+01:00", bucket="1d")
    assert (day.start, day.end) == (datetime(2026, 11, 18, tzinfo=UTC), datetime(2026, 11, 19, tzinfo=UTC))

    errors = {
        "unknown dimension 'modle'; allowed: tenant_id, source_module": dict(group_by=["modle"]),
        "unknown dimension 'tags.bad key'": dict(filters={"tags.bad key": "x"}),
        "unknown bucket '2h'; allowed: 1m, 5m, 1h, 1d": dict(bucket="2h"),
        "unknown aggregation 'median' for values metric 'latency_ms'; allowed: count, sum": dict(
            agg="median"
        ),
        "unknown order 'size'": dict(order="size"),
        "since='yesterday'": dict(since="yesterday"),
        "either since": dict(since="1d", start="2026-11-01"),
        "empty time range": dict(start="2026-11-20T00:00:00Z", end="2026-11-19T00:00:00Z"),
        "limit must be a positive integer": dict(limit=0),
        "empty list": dict(filters={"model": []}),
    }
    for message, kwargs in errors.items():
        with pytest.raises(QueryError, match=message.replace("(", r"\(").replace(")", r"\)")):
            plan(**kwargs)
    with pytest.raises(QueryError, match="unknown aggregation 'p95' for counter 'requests'; allowed: sum"):
        plan("requests", agg="p95")
    assert parse_since("90s") == timedelta(seconds=90) and parse_since("2w") == timedelta(weeks=2)
