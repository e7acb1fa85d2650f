"""Generator scenarios: byte-identical output when off; when on, ground truth that names every
injected event and effects that are really in the data."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

from hub_pipelines.generator import GeneratorConfig, hourly_series, simulate, write_batches
from hub_pipelines.generator.frames import events_frame
from hub_pipelines.generator.scenarios import SCENARIO_KINDS, WARM_UP_HOURS
from hub_pipelines.landing.base import is_batch_name

# sha256 over (relative path, bytes) of every file write_batches wrote, taken with the generator
# as it was before scenarios existed: scenarios off must not change a byte.
BEFORE_SCENARIOS = {
    "jsonl": "5845d879f952e5f4eedd49fb7ecc1cd7fd958f4975dd341c5a0664735be5ac45",
    "json": "17ece3692894b042c7c2f5390af265d8987843434efbca43ed8159c88919316d",
}


def _digest(out: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(out.rglob("*")):
        if path.is_file():
            h.update(path.relative_to(out).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def test_scenarios_off_writes_exactly_the_bytes_of_before(tmp_path):
    config = GeneratorConfig(days=3, tenants=2, seed=5, requests_per_hour=20, corrupt_rate=0.05)
    write_batches(simulate(config), tmp_path / "a")
    assert _digest(tmp_path / "a") == BEFORE_SCENARIOS["jsonl"]
    config = GeneratorConfig(days=9, tenants=3, seed=11, requests_per_hour=15, corrupt_rate=0.02)
    write_batches(simulate(config), tmp_path / "b", fmt="json")
    assert _digest(tmp_path / "b") == BEFORE_SCENARIOS["json"]
    assert not (tmp_path / "b" / "scenarios.json").exists()
    assert "scenarios" not in config.as_dict()


def _ms(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_ground_truth_names_root_cause_window_and_effects(scenario_sim):
    sim = scenario_sim
    assert {s["kind"] for s in sim.scenarios} == set(SCENARIO_KINDS)
    cat = sim.catalogue
    by_tenant: dict[str, list[dict]] = {}
    for s in sim.scenarios:
        by_tenant.setdefault(s["tenant_id"], []).append(s)
        start, end = _ms(s["start"]), _ms(s["end"])
        assert sim.config.start_utc + timedelta(hours=WARM_UP_HOURS) <= start < end <= sim.config.end_utc
        tenant = cat.tenants[cat.tenant_index(s["tenant_id"])]
        cause = s["root_cause"]
        assert cause["module"] in s["modules"] and len(s["modules"]) >= 2
        assert s["effects"] and s["series"] and s["event_ids"] and s["correlation_ids"]
        assert len(set(s["event_ids"])) == len(s["event_ids"]) == s["counts"]["events"]
        if s["kind"] == "traffic_surge":
            assert cause["cause"] == "traffic_surge"
            assert cause["model"] in [cat.models[m].name for m in tenant.models]
            assert {e["effect"] for e in s["effects"]} == {"cost_spike", "latency_degradation"}
        elif s["kind"] == "prompt_injection_campaign":
            assert cause["cause"] == "attack_from_ip" and cause["ip"].startswith("198.18.")
            assert len(s["effects"][0]["models"]) >= 2  # across models
        else:
            assert cause["cause"] == "rate_limit_violation"
            assert cause["project"] in [cat.projects[p].name for p in tenant.projects]
            assert {e["effect"] for e in s["effects"]} >= {"retry_storm", "budget_breach"}
    for scenarios in by_tenant.values():  # one at a time per tenant
        windows = sorted((_ms(s["start"]), _ms(s["end"])) for s in scenarios)
        assert all(a[1] <= b[0] for a, b in zip(windows, windows[1:], strict=False))


def test_scenarios_json_and_every_id_in_the_batches(tmp_path):
    sim = simulate(
        GeneratorConfig(days=5, tenants=1, seed=2, requests_per_hour=10, scenarios=True, anomalies=False)
    )
    manifest = write_batches(sim, tmp_path)
    truth = orjson.loads((tmp_path / "scenarios.json").read_bytes())
    assert truth == sim.scenarios and manifest["scenarios"] == len(truth) > 0
    assert not is_batch_name("scenarios.json")  # the landing zone leaves it alone
    text = "".join(p.read_text() for p in sorted(tmp_path.rglob("*.jsonl")))
    for scenario in truth:
        for event_id in scenario["event_ids"]:
            assert event_id in text
        for corr in scenario["correlation_ids"]:
            assert f'"correlation_id":"{corr}"' in text


def test_effects_are_in_the_data(scenario_sim):
    sim = scenario_sim
    events = events_frame(sim)
    series = hourly_series(sim, by=("tenant_id", "model")).set_index(["tenant_id", "model", "ts"])
    for s in sim.scenarios:
        start, end = pd.Timestamp(s["start"]), pd.Timestamp(s["end"])
        tenant = events[events["tenant_id"] == s["tenant_id"]]
        inside = tenant[(tenant["event_time"] >= start) & (tenant["event_time"] < end)]
        ids = set(s["event_ids"])
        injected = inside[inside["event_id"].isin(ids)]
        assert len(injected) > 0
        if s["kind"] == "traffic_surge":
            model = s["root_cause"]["model"]
            rows = series.loc[(s["tenant_id"], model)]
            during = rows[(rows.index >= start) & (rows.index < end)]
            week_before = rows[
                (rows.index >= start - pd.Timedelta(days=3)) & (rows.index < start - pd.Timedelta(hours=12))
            ]
            assert during["requests"].mean() > 2.5 * week_before["requests"].mean()
            same_hours = week_before[week_before.index.hour.isin(during.index.hour)]
            assert during["latency_avg_ms"].median() > 1.5 * same_hours["latency_avg_ms"].median()
            assert during["spend_usd"].sum() > 2.5 * same_hours["spend_usd"].mean() * len(during)
        elif s["kind"] == "prompt_injection_campaign":
            detections = injected[injected["source_module"] == "llm-sentinel"]
            assert (detections["ip"] == s["root_cause"]["ip"]).all()
            assert detections["model"].nunique() >= 2
            assert detections["correlation_id"].notna().all()  # raised on requests
            denied = injected[injected["source_module"] == "llm-policy-engine"]
            assert (denied["outcome"] == "fail").all() and len(denied) > 0
        else:
            project = s["root_cause"]["project"]
            policy = injected[injected["source_module"] == "llm-policy-engine"]
            rate = policy[policy["policy_id"] == "pol-tenant-rate-limit"]
            budget = tenant[(tenant["policy_id"] == "pol-budget-guard") & tenant["event_id"].isin(ids)]
            assert (rate["outcome"] == "fail").mean() > 0.4
            assert len(budget) > 0 and (budget["outcome"] == "fail").all()
            assert budget["event_time"].min() > rate["event_time"].min()  # the breach comes after
            attempts = injected[(injected["metric_name"] == "latency_ms")]
            assert (attempts["project"] == project).all()
            per_call = attempts.groupby("correlation_id").size()
            assert per_call.max() >= 4 and per_call.mean() > 1.8  # the retry storm


def test_same_config_same_scenarios():
    config = GeneratorConfig(days=6, tenants=2, seed=9, requests_per_hour=10, scenarios=True)
    a, b = simulate(config), simulate(config)
    assert a.scenarios == b.scenarios
    assert np.array_equal(a.requests.ts_ms, b.requests.ts_ms)
