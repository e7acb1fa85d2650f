"""Causal chains, the cost of failed attempts, and recurring patterns."""

from __future__ import annotations

import pandas as pd
import pytest

from hub_ml.correlation import CorrelationSettings
from hub_ml.correlation.chains import analyse_chains

T0 = pd.Timestamp("2026-10-05T10:00:00Z")
COLUMNS = ["event_id", "event_time", "correlation_id", "event_type", "metric_name", "status", "outcome",
           "policy_category", "threat_type", "model", "project", "cost_usd"]  # fmt: skip


def _frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame([{c: r.get(c) for c in COLUMNS} for r in rows])
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True)
    frame["cost_usd"] = frame["cost_usd"].astype(float)
    return frame


def _call(
    corr: str, start: pd.Timestamp, statuses: list[str], gap_s: float = 2.0, deny: bool = True, n: int = 0
):
    """A call: (a rate-limit denial before each failed attempt), its attempts, a cost per attempt."""
    rows, t = [], start
    for k, status in enumerate(statuses):
        if deny and status == "error":
            rows.append({"event_id": f"{corr}-p{k}", "event_time": t - pd.Timedelta(milliseconds=5),
                         "correlation_id": corr, "event_type": "policy", "outcome": "fail",
                         "policy_category": "rate_limit", "model": "m", "project": "p"})  # fmt: skip
        common = {"event_time": t, "correlation_id": corr, "model": "m", "project": "p"}
        rows.append({"event_id": f"{corr}-a{k}", "event_type": "telemetry", "metric_name": "latency_ms",
                     "status": status, **common})  # fmt: skip
        rows.append({"event_id": f"{corr}-c{k}", "event_type": "cost", "cost_usd": 0.01 * (k + 1), **common})
        t = t + pd.Timedelta(seconds=gap_s)
    return rows


def test_a_chain_is_ordered_and_its_failed_attempts_are_wasted_cost():
    events = _frame(_call("c1", T0, ["error", "error", "ok"]) + _call("c2", T0, ["ok"]))
    analysis = analyse_chains(events, CorrelationSettings())
    assert list(analysis.chains["correlation_id"]) == ["c1"]  # the healthy call is not a chain to show
    chain = analysis.chains.iloc[0]
    assert chain["steps"] == ("deny:rate_limit", "error", "deny:rate_limit", "error", "ok")
    assert chain["coarse"] == ("deny:rate_limit", "error", "deny:rate_limit", "retry", "error", "retry", "ok")
    assert chain["retries"] == 2 and chain["denied"] == "rate_limit"
    assert chain["wasted_usd"] == pytest.approx(0.01 + 0.02)
    assert set(chain["event_ids"]) >= {"c1-a0", "c1-c0", "c1-p0", "c1-a2"}
    wasted, attempts = analysis.wasted(T0 - pd.Timedelta(hours=1), T0 + pd.Timedelta(hours=1))
    assert wasted == pytest.approx(0.03) and attempts == 2


def test_events_more_than_60_seconds_apart_are_two_chains():
    events = _frame(_call("c1", T0, ["timeout", "error"], gap_s=90.0, deny=False))
    chains = analyse_chains(events, CorrelationSettings()).chains
    assert list(chains["steps"]) == [("timeout",), ("error",)]
    assert chains["chain_id"].nunique() == 2


def test_a_sequence_recurring_in_one_hour_is_a_pattern():
    rows = []
    # An ordinary failure now and then for a day...
    for h in range(24):
        rows += _call(f"n{h}", T0 + pd.Timedelta(hours=h), ["error", "ok"], deny=False)
    # ...and, in one hour, 40 calls retried through the rate limiter again and again.
    for k in range(40):
        rows += _call(f"s{k}", T0 + pd.Timedelta(hours=12, seconds=60 * k), ["error", "error", "error", "ok"])
    patterns = analyse_chains(_frame(rows), CorrelationSettings()).patterns
    assert patterns
    sequences = {p.sequence for p in patterns}
    assert ("error", "deny:rate_limit", "retry") in sequences
    # Only the storm's hour: the ordinary failures of the other hours are not a pattern.
    assert all(p.hours == [T0 + pd.Timedelta(hours=12)] for p in patterns)
    assert all(p.projects == {"p"} and p.count >= 39 for p in patterns)  # the first starts at 11:59:59
