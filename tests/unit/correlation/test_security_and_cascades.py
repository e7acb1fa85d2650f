"""Security graphs of shared indicators, compliance cascades, performance chains along registry
dependencies, and the ranking of root causes."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hub_ml.correlation import CorrelationSettings
from hub_ml.correlation.cascades import compliance_cascades, dependency_graph, performance_chains
from hub_ml.correlation.hypotheses import Observations, rank_hypotheses
from hub_ml.correlation.security import security_components
from hub_ml.correlation.signals import Episode

SPAN = pd.Timestamp("2026-10-08T00:00:00Z")
KEYS = ["key_a", "key_b", "key_c", "key_d"]


def _background(rng, start: pd.Timestamp, hours: int, per_hour: float = 1.5) -> list[dict]:
    """Ordinary detections: many IPs and users, a few project keys, any model."""
    n = rng.poisson(per_hour * hours)
    times = start + pd.to_timedelta(rng.uniform(0, hours * 3600, n), unit="s")
    return [
        {"event_id": f"bg-{start.value}-{i}", "event_time": t, "ip": f"192.0.2.{rng.integers(1, 255)}",
         "user_id": f"user-{rng.integers(1, 500):04d}", "api_key_id": KEYS[rng.integers(0, 4)],
         "model": ["gpt-4o", "claude-sonnet", "llama"][rng.integers(0, 3)], "project": "p",
         "threat_type": "pii_leak", "severity": "warning"}
        for i, t in enumerate(times)
    ]  # fmt: skip


def _components(rows: list[dict]):
    frame = pd.DataFrame(rows)
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True)
    return security_components(
        frame, SPAN, SPAN + pd.Timedelta(hours=36), SPAN - pd.Timedelta(days=7), CorrelationSettings()
    )


def test_a_campaign_from_one_ip_is_one_component_joined_by_its_ip():
    rng = np.random.default_rng(0)
    rows = _background(rng, SPAN - pd.Timedelta(days=7), 7 * 24 + 36)
    start = SPAN + pd.Timedelta(hours=10)
    for i in range(40):
        rows.append({
            "event_id": f"attack-{i}", "event_time": start + pd.Timedelta(minutes=3 * i), "ip": "198.18.7.7",
            "user_id": f"user-{[11, 12, 13][i % 3]:04d}", "api_key_id": "key_b",
            "model": ["gpt-4o", "claude-sonnet"][i % 2], "project": "p", "threat_type": "prompt_injection",
            "severity": "critical",
        })  # fmt: skip
    components = _components(rows)
    assert len(components) == 1
    component = components[0]
    ids = set(component.event_ids)
    assert {f"attack-{i}" for i in range(40)} <= ids and len(ids) <= 45
    hot = {(s.kind, s.value) for s in component.indicators if s.hot}
    assert ("ip", "198.18.7.7") in hot
    assert ("api_key_id", "key_b") not in hot  # a common key describes, it does not join
    assert component.models == {"gpt-4o", "claude-sonnet"}
    ranked = rank_hypotheses(Observations.of([], components, [], [], [], component.start))
    assert ranked[0].cause == "attack_from_ip" and ranked[0].subject["ip"] == "198.18.7.7"
    assert {h.cause for h in ranked} >= {"compromised_user", "compromised_api_key"}
    assert abs(sum(h.score for h in ranked) - 1.0) < 1e-3


def test_ordinary_detections_make_no_component():
    for seed in range(5):
        rng = np.random.default_rng(seed)
        assert _components(_background(rng, SPAN - pd.Timedelta(days=7), 7 * 24 + 36)) == []


def _episode(
    metric, dimension, value, start_h, hours, z=10.0, ratio=4.0, models=(), projects=("p",), module="x"
):
    start = SPAN + pd.Timedelta(hours=start_h)
    e = Episode("t", metric, dimension, value, module, start, start + pd.Timedelta(hours=hours), z, ratio,
                observed=100.0, expected=20.0, hours=[start + pd.Timedelta(hours=k) for k in range(hours)],
                z_by_hour=[z] * hours)  # fmt: skip
    e.models.update(models)
    e.projects.update(projects)
    if dimension == "model":
        e.models.add(value)
    return e


def test_a_rate_limit_violation_cascades_into_a_retry_storm_and_a_budget_breach():
    rate = _episode("violations", "policy_category", "rate_limit", 10, 3)
    retries = _episode("retries", "project", "p", 10, 3)
    budget = _episode("violations", "policy_category", "cost_control", 11, 4)
    unrelated = _episode("violations", "policy_category", "cost_control", 11, 2, projects=("other",))
    late = _episode("spend", "project", "p", 20, 1)
    cascades = compliance_cascades([budget, late, retries, rate, unrelated], gap_hours=3)
    assert len(cascades) == 1
    steps = [s for s, _ in cascades[0].steps]
    assert steps[0] == "violation:rate_limit"
    assert set(steps) == {"violation:rate_limit", "retry_storm", "violation:cost_control"}
    assert unrelated not in cascades[0].episodes and late not in cascades[0].episodes
    calls = _episode("calls", "project", "p", 10, 3, ratio=3.0)
    ranked = rank_hypotheses(
        Observations.of([rate, retries, budget, calls], [], cascades, [], [], rate.start)
    )
    assert ranked[0].cause == "rate_limit_violation" and ranked[0].subject["project"] == "p"
    assert any("cascade" in line for line in ranked[0].evidence)


def test_latency_travels_down_the_registry_dependencies():
    assets = pd.DataFrame(
        [
            {"asset_id": "t:model:gpt-4o", "asset_name": "gpt-4o", "asset_type": "model", "depends_on": []},
            {"asset_id": "t:prompt:rag", "asset_name": "rag system prompt", "asset_type": "prompt",
             "depends_on": ["t:model:gpt-4o"]},
            {"asset_id": "t:agent:rag-agent", "asset_name": "rag agent", "asset_type": "agent",
             "depends_on": '["t:prompt:rag", "t:model:gpt-4o"]'},
            {"asset_id": "t:prompt:chat", "asset_name": "chat system prompt", "asset_type": "prompt",
             "depends_on": ["t:model:claude"]},
        ]
    )  # fmt: skip
    root = _episode("latency", "model", "gpt-4o", 10, 3, ratio=2.5)
    rag = _episode("latency", "project", "rag", 10, 2, ratio=2.0, projects=("rag",))
    chat = _episode("latency", "project", "chat", 10, 2, ratio=2.0, projects=("chat",))
    chains = performance_chains([root, rag, chat], dependency_graph(assets))
    assert len(chains) == 1
    chain = chains[0]
    assert chain.model_asset == "t:model:gpt-4o"
    assert [p for p, _, _ in chain.affected] == ["rag"]
    assert chain.affected[0][1][0] == "t:model:gpt-4o"
    assert set(chain.downstream) == {"t:prompt:rag", "t:agent:rag-agent"}
    # Latency up without more calls: the model itself, not a surge.
    ranked = rank_hypotheses(Observations.of([root, rag], [], [], chains, [], root.start))
    assert ranked[0].cause == "provider_degradation" and ranked[0].subject == {"model": "gpt-4o"}


def test_a_surge_explains_its_cost_and_latency_better_than_a_slow_provider():
    calls = _episode("calls", "model", "gpt-4o", 10, 3, z=30, ratio=6.0)
    spend = _episode("spend", "model", "gpt-4o", 10, 3, z=9, ratio=6.2, module="llm-costops")
    latency = _episode("latency", "model", "gpt-4o", 10, 3, z=8, ratio=2.3)
    ranked = rank_hypotheses(Observations.of([calls, spend, latency], [], [], [], [], calls.start))
    assert [h.cause for h in ranked][:1] == ["traffic_surge"]
    assert ranked[0].subject["model"] == "gpt-4o"
    degradation = next(h for h in ranked if h.cause == "provider_degradation")
    runaway = next(h for h in ranked if h.cause == "cost_runaway")
    assert degradation.score < 0.1 and runaway.score < 0.1
    # Spend up far faster than calls: a cost runaway.
    spend_only = _episode("spend", "model", "gpt-4o", 10, 6, z=12, ratio=8.0, module="llm-costops")
    tokens = _episode("tokens", "model", "gpt-4o", 10, 6, z=12, ratio=8.0)
    ranked = rank_hypotheses(Observations.of([spend_only, tokens], [], [], [], [], spend_only.start))
    assert ranked[0].cause == "cost_runaway"
