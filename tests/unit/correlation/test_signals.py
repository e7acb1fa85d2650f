"""Hourly cells, baselines and episodes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hub_ml.correlation import CorrelationSettings, cells_from_events
from hub_ml.correlation.signals import build_series, critical_z, find_episodes, score_series

START = pd.Timestamp("2026-10-01T00:00:00Z")


def _events(rows: list[dict]) -> pd.DataFrame:
    columns = ["event_id", "event_time", "event_type", "metric_name", "metric_value", "status", "model",
               "project", "cost_usd", "threat_type", "policy_category", "outcome", "correlation_id"]  # fmt: skip
    frame = pd.DataFrame([{c: r.get(c) for c in columns} for r in rows])
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True)
    return frame


def test_cells_count_attempts_calls_failures_costs_and_evaluations():
    t = START + pd.Timedelta(minutes=5)
    rows = [
        # one call, an error then a retry that succeeds, two costs
        {"event_id": "1", "event_time": t, "event_type": "telemetry", "metric_name": "latency_ms",
         "metric_value": 100.0, "status": "error", "model": "m", "project": "p", "correlation_id": "c1"},
        {"event_id": "2", "event_time": t + pd.Timedelta(seconds=2), "event_type": "telemetry",
         "metric_name": "latency_ms", "metric_value": 400.0, "status": "ok", "model": "m", "project": "p",
         "correlation_id": "c1"},
        {"event_id": "3", "event_time": t, "event_type": "telemetry", "metric_name": "tokens_input",
         "metric_value": 50.0, "status": "error", "model": "m", "project": "p", "correlation_id": "c1"},
        {"event_id": "4", "event_time": t, "event_type": "cost", "cost_usd": 0.5, "model": "m", "project": "p",
         "correlation_id": "c1"},
        {"event_id": "5", "event_time": t, "event_type": "policy", "policy_category": "rate_limit",
         "outcome": "fail", "model": "m", "project": "p", "correlation_id": "c1"},
        {"event_id": "6", "event_time": t, "event_type": "security", "threat_type": "jailbreak", "model": "m",
         "project": "p"},
        {"event_id": "7", "event_time": t, "event_type": "governance"},  # not a cell
    ]  # fmt: skip
    cells = cells_from_events(_events(rows)).set_index("kind")
    attempt = cells.loc["attempt"]
    assert (attempt["n"], attempt["n_failed"], attempt["n_calls"]) == (2, 1, 1)
    assert attempt["log_sum"] == pytest.approx(np.log(100.0) + np.log(400.0))
    assert cells.loc["tokens", "value_sum"] == 50.0
    assert cells.loc["cost", "value_sum"] == 0.5
    assert cells.loc["evaluation", "label"] == "rate_limit" and cells.loc["evaluation", "n_failed"] == 1
    assert cells.loc["detection", "label"] == "jailbreak"
    assert "governance" not in cells.index
    assert set(cells["hour"]) == {START}


def _calls(days: int, spike: tuple[int, int, float] | None = None, seed: int = 0) -> pd.DataFrame:
    """Cells of one model's calls with a daily profile; spike = (first hour, hours, factor)."""
    rng = np.random.default_rng(seed)
    hours = pd.date_range(START, periods=days * 24, freq="h")
    rate = 40 * (0.3 + np.exp(-0.5 * ((hours.hour.to_numpy() - 14) / 3.5) ** 2))
    if spike:
        first, length, factor = spike
        rate[first : first + length] *= factor
    calls = rng.poisson(rate)
    return pd.DataFrame(
        {"hour": hours, "kind": "attempt", "model": "gpt-4o", "project": "rag", "label": None, "n": calls,
         "n_failed": rng.poisson(0.01 * calls), "n_calls": calls, "value_sum": 0.0,
         "log_sum": calls * np.log(800.0) + rng.normal(0, 0.1, len(calls)) * np.sqrt(np.maximum(calls, 1))}
    )  # fmt: skip


def _episodes(cells: pd.DataFrame, span_day: int):
    settings = CorrelationSettings()
    span_start = START + pd.Timedelta(days=span_day)
    hours = pd.date_range(START, span_start + pd.Timedelta(days=1), freq="h", inclusive="left")
    keys, values, weights = build_series(cells, hours)
    bank = score_series(keys, values, weights, hours, span_start, settings, data_start=cells["hour"].min())
    return find_episodes(bank, "tenant-01", settings, cells)


def test_a_surge_of_calls_is_one_episode_with_its_hours():
    day = 8
    cells = _calls(9, spike=(day * 24 + 13, 3, 5.0))
    episodes = [e for e in _episodes(cells, day) if e.metric == "calls" and e.dimension == "model"]
    assert len(episodes) == 1
    episode = episodes[0]
    assert episode.start == START + pd.Timedelta(days=day, hours=13)
    assert episode.end == START + pd.Timedelta(days=day, hours=16)
    assert episode.peak_ratio > 3 and episode.peak_z > 6
    assert episode.models == {"gpt-4o"} and "rag" in episode.projects


@pytest.mark.parametrize("seed", range(5))
def test_ordinary_days_have_no_episode(seed):
    assert _episodes(_calls(9, seed=seed), 8) == []


def test_without_history_there_is_no_baseline_and_no_signal():
    cells = _calls(9, spike=(8 * 24 + 13, 3, 5.0))
    cells = cells[cells["hour"] >= START + pd.Timedelta(days=7, hours=12)]
    assert _episodes(cells, 8) == []


def test_the_bound_grows_with_the_number_of_tests():
    settings = CorrelationSettings()
    assert critical_z(10, settings) == settings.min_z
    assert critical_z(10_000, settings) > critical_z(1_000, settings) > settings.min_z
