"""What the engine produces: incidents with their members, correlations and ranked hypotheses."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

SEVERITIES = ("low", "medium", "high", "critical")
IMPACT_KINDS = ("performance", "cost", "security", "business")


def _iso(moment: pd.Timestamp | None) -> str | None:
    return None if moment is None else pd.Timestamp(moment).isoformat()


@dataclass
class Member:
    """Something an incident is made of: an event, an anomaly, a signal (an episode of a series
    above baseline), an indicator, an asset, a chain."""

    member_type: str  # event, anomaly, signal, indicator, asset, chain
    member_id: str
    role: str  # cause, effect, evidence
    correlation_kind: str
    source_module: str | None = None
    ts: pd.Timestamp | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ts"] = _iso(self.ts)
        return out


@dataclass
class Correlation:
    """One finding of one of the eight kinds (hub_ml.correlation.schema.CORRELATION_KINDS)."""

    kind: str
    description: str
    start: pd.Timestamp
    end: pd.Timestamp
    strength: float  # 0..1
    p_value: float | None = None
    modules: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["start"], out["end"] = _iso(self.start), _iso(self.end)
        return out


@dataclass
class Hypothesis:
    """A candidate root cause, its normalised score (the hypotheses of an incident sum to 1) and
    the evidence for it."""

    cause: str  # traffic_surge, rate_limit_violation, attack_from_ip, provider_degradation, ...
    subject: dict[str, str]  # what it is about: model, project, ip, user_id, api_key_id, ...
    score: float
    module: str
    description: str
    evidence: list[str] = field(default_factory=list)
    rank: int = 0
    components: dict[str, float] = field(default_factory=dict)  # how the score was made

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Incident:
    incident_id: str
    tenant_id: str
    start: pd.Timestamp
    end: pd.Timestamp
    kind: str  # the top hypothesis's cause
    title: str
    summary: str
    severity: str
    strength: float  # 0..1: how far from normal its signals are
    confidence: float  # 0..1: how well the evidence hangs together
    impact: dict[str, float]  # performance, cost, security, business (0..1) and raw figures
    modules: list[str]
    correlation_kinds: list[str]
    hypotheses: list[Hypothesis]
    correlations: list[Correlation]
    members: list[Member]
    event_count: int = 0
    anomaly_count: int = 0

    @property
    def root_cause(self) -> Hypothesis | None:
        return self.hypotheses[0] if self.hypotheses else None

    def member_ids(self, member_type: str) -> list[str]:
        return [m.member_id for m in self.members if m.member_type == member_type]

    def as_dict(self) -> dict[str, Any]:
        return {
            "incident_id": self.incident_id,
            "tenant_id": self.tenant_id,
            "start": _iso(self.start),
            "end": _iso(self.end),
            "kind": self.kind,
            "title": self.title,
            "summary": self.summary,
            "severity": self.severity,
            "strength": self.strength,
            "confidence": self.confidence,
            "impact": dict(self.impact),
            "modules": list(self.modules),
            "correlation_kinds": list(self.correlation_kinds),
            "hypotheses": [h.as_dict() for h in self.hypotheses],
            "correlations": [c.as_dict() for c in self.correlations],
            "event_count": self.event_count,
            "anomaly_count": self.anomaly_count,
        }


def incident_id(tenant_id: str, start: pd.Timestamp, anchor: str) -> str:
    """Deterministic: the same incident found again gets the same id (re-runs replace it)."""
    digest = hashlib.blake2b(
        f"{tenant_id}|{pd.Timestamp(start).isoformat()}|{anchor}".encode(), digest_size=8
    )
    return f"inc-{digest.hexdigest()}"


def severity_of(impact: dict[str, float]) -> str:
    top = max(impact.get(k, 0.0) for k in IMPACT_KINDS)
    if top < 0.25:
        return "low"
    if top < 0.5:
        return "medium"
    if top < 0.75:
        return "high"
    return "critical"
