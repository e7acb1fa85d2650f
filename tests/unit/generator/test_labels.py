"""Injected anomalies follow docs/GENERATOR_SPEC.md, and they visibly move the metrics they name."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

import numpy as np
import orjson
import pandas as pd
import pytest

from hub_pipelines.generator import GeneratorConfig, hourly_series, security_series, simulate, write_batches
from hub_pipelines.generator.series import HOURLY_COLUMNS

LABEL_FIELDS = {"id", "kind", "tenant_id", "model", "project", "metrics", "start", "end", "magnitude"}
# kind -> (duration hours, magnitude) ranges from the spec
RULES = {
    "spike": ((1, 3), (3.0, 8.0)),
    "drop": ((2, 6), (0.05, 0.3)),
    "level_shift": ((12, 72), (1.6, 2.5)),
    "cost_runaway": ((6, 24), (5.0, 15.0)),
    "threat_burst": ((1, 4), (5.0, 20.0)),
}
DAYS = 60


@pytest.fixture(scope="module")
def sim():
    return simulate(GeneratorConfig(days=DAYS, tenants=3, seed=3, requests_per_hour=150))


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_labels_have_the_spec_fields_and_ranges(sim):
    start, end = sim.config.start_utc, sim.config.end_utc
    assert sim.labels
    assert len({label["id"] for label in sim.labels}) == len(sim.labels)
    for label in sim.labels:
        assert set(label) == LABEL_FIELDS
        (lo_len, hi_len), (lo_mag, hi_mag) = RULES[label["kind"]]
        first, last = _moment(label["start"]), _moment(label["end"])
        assert label["start"].endswith(":00:00Z") and label["end"].endswith(":00:00Z")
        assert first >= start + timedelta(days=7), "never in the warm-up"
        assert last <= end
        assert lo_len <= (last - first) / timedelta(hours=1) <= hi_len
        assert lo_mag <= label["magnitude"] <= hi_mag
        if label["kind"] == "threat_burst":
            assert label["metrics"] == ["threats"] and label["model"] is None and label["project"] is None
        else:
            assert label["model"] is not None
            assert set(label["metrics"]) <= set(HOURLY_COLUMNS)
            assert (label["project"] is not None) == (label["kind"] == "cost_runaway")
    assert {label["kind"] for label in sim.labels} == set(RULES)


def test_anomalies_of_a_series_are_48_hours_apart_and_about_weekly(sim):
    series: dict[tuple, list[dict]] = defaultdict(list)
    for label in sim.labels:
        series[(label["tenant_id"], label["model"])].append(label)
    expected_series = {
        (t.tenant_id, sim.catalogue.models[m].name) for t in sim.catalogue.tenants for m in t.models
    }
    expected_series |= {(t.tenant_id, None) for t in sim.catalogue.tenants}
    assert set(series) == expected_series
    for labels in series.values():
        labels.sort(key=lambda item: item["start"])
        for before, after in zip(labels, labels[1:], strict=False):
            assert _moment(after["start"]) - _moment(before["end"]) >= timedelta(hours=48)
        # About one per 7-10 days after the warm-up.
        assert (DAYS - 7) // 10 <= len(labels) <= (DAYS - 7) // 7 + 1


def _ratio(frame: pd.DataFrame, label: dict, metric: str, reducer, labels: list[dict]) -> float:
    """metric in the anomaly's window over the same hours of a quiet week (one without another
    anomaly of the series), before or after."""
    first, last = pd.Timestamp(label["start"]), pd.Timestamp(label["end"])
    same_series = [
        (pd.Timestamp(o["start"]), pd.Timestamp(o["end"]))
        for o in labels
        if (o["tenant_id"], o["model"]) == (label["tenant_id"], label["model"])
    ]
    for weeks in (-1, 1, -2, 2, -3, 3):
        shift = pd.Timedelta(days=7 * weeks)
        lo, hi = first + shift, last + shift
        quiet = all(hi <= s or lo >= e for s, e in same_series)
        if quiet and lo >= frame["ts"].min() and hi <= frame["ts"].max():
            break
    else:
        raise AssertionError(f"no quiet week to compare {label['id']} with")
    inside = frame[(frame["ts"] >= first) & (frame["ts"] < last)][metric]
    before = frame[(frame["ts"] >= lo) & (frame["ts"] < hi)][metric]
    return reducer(inside) / reducer(before)


def test_anomalies_move_the_metrics_they_name(sim):
    by_model = hourly_series(sim, by=("tenant_id", "model"))
    by_project = hourly_series(sim, by=("tenant_id", "model", "project"))
    threats = security_series(sim)
    checked = 0
    for label in sim.labels:
        if label["kind"] == "threat_burst":
            frame = threats[threats["tenant_id"] == label["tenant_id"]]
            # Against the tenant's mean rate: a burst's few hours a week earlier are mostly zeros.
            first, last = pd.Timestamp(label["start"]), pd.Timestamp(label["end"])
            inside = frame[(frame["ts"] >= first) & (frame["ts"] < last)]["threats"].mean()
            assert inside > 2.5 * frame["threats"].mean(), label
            checked += 1
            continue
        frame = by_model[
            (by_model["tenant_id"] == label["tenant_id"]) & (by_model["model"] == label["model"])
        ]
        if label["kind"] == "cost_runaway":
            frame = by_project[
                (by_project["tenant_id"] == label["tenant_id"])
                & (by_project["model"] == label["model"])
                & (by_project["project"] == label["project"])
            ]
            # The ramp averages (1 + magnitude) / 2 over the window.
            assert (
                _ratio(frame, label, "spend_usd", np.sum, sim.labels) > 0.4 * (1 + label["magnitude"]) / 2
            ), label
        elif label["kind"] == "drop":
            assert _ratio(frame, label, "requests", np.sum, sim.labels) < 0.6, label
        elif "requests" in label["metrics"]:
            assert _ratio(frame, label, "requests", np.sum, sim.labels) > 2.0, label
        elif label["metrics"][0] == "latency_avg_ms":
            assert _ratio(frame, label, "latency_avg_ms", np.nanmean, sim.labels) > 1.3, label
        else:
            per_request = _ratio(frame, label, "tokens_output", np.sum, sim.labels) / _ratio(
                frame, label, "requests", np.sum, sim.labels
            )
            assert per_request > 1.3, label
        checked += 1
    assert checked == len(sim.labels)


def test_no_anomalies_when_asked_for_none():
    sim = simulate(GeneratorConfig(days=30, tenants=2, seed=3, requests_per_hour=5, anomalies=False))
    assert sim.labels == []
    assert (sim.effects.volume == 1).all() and (sim.effects.threats == 1).all()


def test_labels_json_holds_the_labels(tmp_path):
    sim = simulate(GeneratorConfig(days=20, tenants=1, seed=4, requests_per_hour=1, policy_fraction=0.0))
    manifest = write_batches(sim, tmp_path)
    assert orjson.loads((tmp_path / "labels.json").read_bytes()) == sim.labels
    assert manifest["labels"] == len(sim.labels) > 0
