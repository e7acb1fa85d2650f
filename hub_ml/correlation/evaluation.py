"""How well incidents recover injected scenarios (the generator's ground truth).

An incident and a scenario of the same tenant match when their windows overlap (within
``tolerance_hours``); pairs are taken greedily by overlap (intersection over union), each incident
and each scenario at most once, so a scenario split into two incidents counts one of them as a
false incident. Precision is matched incidents over incidents, recall matched scenarios over
scenarios, and root-cause accuracy the share of matched scenarios whose incident ranks the true
root cause first: the same cause, about the same subject (``SUBJECT_KEYS``).

With ``labels`` (the generator's single-series anomaly labels), an unmatched incident that overlaps
a labelled anomaly of its tenant is explained by it and left out of the precision: it is a real
incident, just not a scenario.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from hub_ml.correlation.model import Incident

# What must agree for a hypothesis to name a scenario's root cause.
SUBJECT_KEYS = {
    "traffic_surge": ("model",),
    "attack_from_ip": ("ip",),
    "rate_limit_violation": ("project",),
}


@dataclass
class ScenarioMatch:
    matched: list[tuple[dict, dict]] = field(default_factory=list)  # (scenario, incident as dict)
    missed: list[dict] = field(default_factory=list)  # scenarios without an incident
    false_incidents: list[dict] = field(default_factory=list)
    explained: list[dict] = field(default_factory=list)  # incidents of labelled anomalies
    root_cause_first: int = 0

    @classmethod
    def pooled(cls, matches: list[ScenarioMatch]) -> ScenarioMatch:
        """Several simulations' matches together (match each simulation on its own first: two
        simulations have the same tenant names and dates)."""
        out = cls()
        for m in matches:
            out.matched += m.matched
            out.missed += m.missed
            out.false_incidents += m.false_incidents
            out.explained += m.explained
            out.root_cause_first += m.root_cause_first
        return out

    @property
    def precision(self) -> float:
        judged = len(self.matched) + len(self.false_incidents)
        return len(self.matched) / judged if judged else 1.0

    @property
    def recall(self) -> float:
        total = len(self.matched) + len(self.missed)
        return len(self.matched) / total if total else 1.0

    @property
    def root_cause_accuracy(self) -> float:
        return self.root_cause_first / len(self.matched) if self.matched else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "scenarios": len(self.matched) + len(self.missed),
            "incidents": len(self.matched) + len(self.false_incidents) + len(self.explained),
            "matched": len(self.matched),
            "false_incidents": len(self.false_incidents),
            "explained_by_labels": len(self.explained),
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "root_cause_accuracy": round(self.root_cause_accuracy, 4),
        }


def _as_dict(incident: Incident | dict) -> dict:
    return incident.as_dict() if isinstance(incident, Incident) else incident


def _window(item: dict) -> tuple[pd.Timestamp, pd.Timestamp]:
    return pd.Timestamp(item["start"]).tz_convert("UTC") if pd.Timestamp(item["start"]).tzinfo else pd.Timestamp(
        item["start"]
    ).tz_localize("UTC"), pd.Timestamp(item["end"]).tz_convert("UTC") if pd.Timestamp(item["end"]).tzinfo else pd.Timestamp(
        item["end"]
    ).tz_localize("UTC")  # fmt: skip


def names_root_cause(hypothesis: dict | None, root_cause: dict) -> bool:
    """Whether a hypothesis (cause, subject) is the scenario's root cause."""
    if not hypothesis or hypothesis.get("cause") != root_cause.get("cause"):
        return False
    subject = hypothesis.get("subject") or {}
    return all(subject.get(key) == root_cause.get(key) for key in SUBJECT_KEYS.get(root_cause["cause"], ()))


def match_scenarios(
    incidents: list[Incident | dict],
    scenarios: list[dict],
    labels: list[dict] | None = None,
    tolerance_hours: float = 1.0,
) -> ScenarioMatch:
    tolerance = pd.Timedelta(hours=tolerance_hours)
    items = [_as_dict(i) for i in incidents]
    pairs = []
    for i, incident in enumerate(items):
        a0, a1 = _window(incident)
        for s, scenario in enumerate(scenarios):
            if scenario["tenant_id"] != incident["tenant_id"]:
                continue
            b0, b1 = _window(scenario)
            if a0 > b1 + tolerance or b0 > a1 + tolerance:
                continue
            inter = max((min(a1, b1) - max(a0, b0)) / pd.Timedelta(hours=1), 0.0)
            union = (max(a1, b1) - min(a0, b0)) / pd.Timedelta(hours=1)
            pairs.append((inter / union if union else 0.0, i, s))
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    out = ScenarioMatch()
    used_i: set[int] = set()
    used_s: set[int] = set()
    for _, i, s in pairs:
        if i in used_i or s in used_s:
            continue
        used_i.add(i)
        used_s.add(s)
        out.matched.append((scenarios[s], items[i]))
        hypotheses = items[i].get("hypotheses") or []
        if names_root_cause(hypotheses[0] if hypotheses else None, scenarios[s]["root_cause"]):
            out.root_cause_first += 1
    out.missed = [s for k, s in enumerate(scenarios) if k not in used_s]
    for i, incident in enumerate(items):
        if i in used_i:
            continue
        if labels and _overlaps_label(incident, labels, tolerance):
            out.explained.append(incident)
        else:
            out.false_incidents.append(incident)
    return out


def _overlaps_label(incident: dict, labels: list[dict], tolerance: pd.Timedelta) -> bool:
    a0, a1 = _window(incident)
    for label in labels:
        if label["tenant_id"] != incident["tenant_id"]:
            continue
        b0, b1 = _window(label)
        if a0 <= b1 + tolerance and b0 <= a1 + tolerance:
            return True
    return False
