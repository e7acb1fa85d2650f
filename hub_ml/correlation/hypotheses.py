"""Root-cause hypotheses of an incident, ranked by how well each explains what was seen.

What was seen are the incident's signals (``calls_up``, ``retries_up``, ``errors_up``,
``latency_up``, ``tokens_up``, ``spend_up``, ``detections_up``, ``violations:<category>``) and its
hot security indicators (``hot:ip``, ``hot:user_id``, ``hot:api_key_id``). Every known cause
(``CAUSES``) has an anchor (what must be seen for it to be considered at all) and the signals it
explains. A candidate's score is

    prior x anchor strength x coverage^2 x precedence x fit

- anchor strength: 1 - exp(-z/8) of its anchor episode, or for an indicator its coverage of the
  detections times 1 - exp(-log10(lift)/2) (the more specific the value, the stronger);
- coverage: the share of the incident's kinds of signal that the cause explains;
- precedence: exp(-hours from the incident's start to the anchor's start / 3);
- fit: checks that tell causes with the same anchor apart (spend per call unchanged for a surge,
  latency rising without extra calls for a provider degradation, spend rising faster than calls
  for a cost runaway, ...).

Scores are normalised to sum to one; the evidence of each hypothesis is written out in sentences.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from hub_ml.correlation.cascades import Cascade, PerformanceChain
from hub_ml.correlation.model import Hypothesis
from hub_ml.correlation.schema import COSTOPS, OBSERVATORY, POLICY, REGISTRY, SENTINEL
from hub_ml.correlation.security import SecurityComponent
from hub_ml.correlation.signals import Episode

SECURITY_SIGNALS = {"detections_up", "violations:content_safety", "violations:access_control", "errors_up"}
SECURITY_SIGNALS |= {"hot:ip", "hot:user_id", "hot:api_key_id"}


@dataclass(frozen=True)
class Cause:
    module: str
    anchor: str
    explains: frozenset[str]
    prior: float
    label: str


CAUSES: dict[str, Cause] = {
    "traffic_surge": Cause(
        OBSERVATORY,
        "calls_up",
        frozenset({"calls_up", "retries_up", "errors_up", "latency_up", "tokens_up", "spend_up"}),
        1.0,
        "a surge of calls",
    ),
    "rate_limit_violation": Cause(
        POLICY,
        "violations:rate_limit",
        frozenset(
            {
                "violations:rate_limit",
                "violations:cost_control",
                "retries_up",
                "errors_up",
                "calls_up",
                "tokens_up",
                "spend_up",
            }
        ),
        1.0,
        "a client past the rate limit",
    ),
    "retry_storm": Cause(
        OBSERVATORY,
        "retries_up",
        frozenset({"retries_up", "errors_up", "tokens_up", "spend_up", "violations:cost_control"}),
        0.8,
        "a retry storm",
    ),
    "budget_breach": Cause(
        POLICY, "violations:cost_control", frozenset({"violations:cost_control"}), 0.5, "a budget breach"
    ),
    "attack_from_ip": Cause(SENTINEL, "hot:ip", frozenset(SECURITY_SIGNALS), 1.0, "an attack from one IP"),
    "compromised_user": Cause(
        SENTINEL, "hot:user_id", frozenset(SECURITY_SIGNALS), 0.8, "a compromised account"
    ),
    "compromised_api_key": Cause(
        SENTINEL, "hot:api_key_id", frozenset(SECURITY_SIGNALS), 0.8, "a leaked API key"
    ),
    "threat_burst": Cause(
        SENTINEL,
        "detections_up",
        frozenset({"detections_up", "violations:content_safety", "errors_up"}),
        0.6,
        "a burst of threats",
    ),
    "provider_degradation": Cause(
        OBSERVATORY,
        "latency_up",
        frozenset({"latency_up", "errors_up", "retries_up"}),
        0.9,
        "a slow provider or model",
    ),
    "cost_runaway": Cause(
        COSTOPS,
        "spend_up",
        frozenset({"spend_up", "tokens_up", "violations:cost_control"}),
        0.8,
        "longer prompts or completions (spend per call up)",
    ),
    "error_burst": Cause(
        OBSERVATORY, "errors_up", frozenset({"errors_up", "retries_up"}), 0.6, "failing requests"
    ),
    "deployment_change": Cause(
        REGISTRY,
        "deployment",
        frozenset({"latency_up", "errors_up", "tokens_up", "spend_up", "retries_up"}),
        0.5,
        "a new version in the registry",
    ),
}


@dataclass
class Observations:
    """The incident's signals: name -> episodes, and hot indicators of its security parts."""

    start: pd.Timestamp
    signals: dict[str, list[Episode]] = field(default_factory=dict)
    components: list[SecurityComponent] = field(default_factory=list)
    cascades: list[Cascade] = field(default_factory=list)
    perf_chains: list[PerformanceChain] = field(default_factory=list)
    deployments: list[dict] = field(default_factory=list)  # {asset_id, model, version, updated_at}

    @classmethod
    def of(cls, episodes, components, cascades, perf_chains, deployments, start) -> Observations:
        obs = cls(start=start, components=components, cascades=cascades, perf_chains=perf_chains,
                  deployments=deployments)  # fmt: skip
        for e in episodes:
            name = "detections_up" if e.metric == "detections" else e.signal
            obs.signals.setdefault(name, []).append(e)
        for component in components:
            for stat in component.indicators:
                if stat.hot and stat.kind in ("ip", "user_id", "api_key_id"):
                    obs.signals.setdefault(f"hot:{stat.kind}", [])
            obs.signals.setdefault("detections_up", [])
        return obs

    @property
    def seen(self) -> set[str]:
        return set(self.signals)

    def peak(self, name: str) -> Episode | None:
        episodes = self.signals.get(name) or []
        return max(episodes, key=lambda e: e.peak_z) if episodes else None

    def ratio(self, name: str, dimension: str | None = None, value: str | None = None) -> float:
        """Largest ratio of a signal (of one entity, if given); 1 when absent."""
        episodes = [
            e for e in self.signals.get(name) or []
            if (dimension is None or e.dimension == dimension) and (value is None or e.value == value)
        ]  # fmt: skip
        return max((e.peak_ratio for e in episodes), default=1.0)

    def first_start(self, name: str) -> pd.Timestamp | None:
        episodes = self.signals.get(name) or []
        return min((e.start for e in episodes), default=None)


def _z_strength(z: float) -> float:
    return 1.0 - math.exp(-max(z, 0.0) / 8.0)


def _top_entity(episodes: list[Episode], dimension: str) -> str | None:
    """The entity of `dimension` carrying the most excess among episodes of that dimension, else
    the one most often attributed."""
    own = [e for e in episodes if e.dimension == dimension]
    if own:
        return max(own, key=lambda e: (e.excess, e.peak_z)).value
    counts: dict[str, int] = {}
    for e in episodes:
        for name in e.models if dimension == "model" else e.projects:
            counts[name] = counts.get(name, 0) + 1
    return max(sorted(counts), key=lambda k: counts[k]) if counts else None


def _fmt_ratio(value: float) -> str:
    return f"x{value:.1f}"


def rank_hypotheses(obs: Observations) -> list[Hypothesis]:
    """Every cause whose anchor was seen, scored and ranked (see the module docstring)."""
    seen = obs.seen
    weights = {s: 1.0 for s in seen}
    total = sum(weights.values()) or 1.0
    candidates: list[Hypothesis] = []

    def coverage(cause: Cause) -> tuple[float, list[str]]:
        explained = sorted(s for s in seen if s in cause.explains)
        return sum(weights[s] for s in explained) / total, explained

    def precedence(moment: pd.Timestamp | None) -> float:
        if moment is None:
            return 1.0
        hours = max((moment - obs.start) / pd.Timedelta(hours=1), 0.0)
        return math.exp(-hours / 3.0)

    def add(cause_name: str, subject: dict, anchor: float, start, fit: float, evidence: list[str]) -> None:
        cause = CAUSES[cause_name]
        cov, explained = coverage(cause)
        pre = precedence(start)
        score = cause.prior * anchor * cov**2 * pre * fit
        if score <= 0:
            return
        unexplained = sorted(seen - set(explained))
        evidence = [
            *evidence,
            f"explains {len(explained)} of {len(seen)} kinds of signal ({', '.join(explained)})",
        ]
        if unexplained:
            evidence.append(f"does not explain {', '.join(unexplained)}")
        about = ", ".join(f"{k} {v}" for k, v in subject.items() if v)
        candidates.append(
            Hypothesis(
                cause=cause_name, subject={k: v for k, v in subject.items() if v}, score=score,
                module=cause.module, description=f"{cause.label}" + (f" ({about})" if about else ""),
                evidence=evidence,
                components={"prior": cause.prior, "anchor": round(anchor, 4), "coverage": round(cov, 4),
                            "precedence": round(pre, 4), "fit": round(fit, 4)},
            )
        )  # fmt: skip

    calls_ratio = obs.ratio("calls_up")
    spend_ratio = obs.ratio("spend_up")

    # -- traffic surge
    peak = obs.peak("calls_up")
    if peak is not None:
        episodes = obs.signals["calls_up"]
        model = _top_entity(episodes, "model")
        project = _top_entity(episodes, "project")
        model_calls = obs.ratio("calls_up", "model", model)
        per_call = spend_ratio / max(calls_ratio, 1.0) if "spend_up" in seen else 1.0
        fit = 1.0 if 0.5 <= per_call <= 2.0 else 0.5
        retries = obs.peak("retries_up")
        if retries is not None and obs.ratio("retries_up") > 2.0 * calls_ratio:
            fit *= 0.4  # the extra attempts are retries, not new calls
        if "violations:rate_limit" in seen:
            fit *= 0.5  # a surge breaking the rate limit is the violation's incident
        evidence = [
            f"calls {_fmt_ratio(calls_ratio)} their baseline (z={peak.peak_z:.1f}) from {obs.first_start('calls_up'):%H:%M}"
            + (f"; on {model} {_fmt_ratio(model_calls)}" if model else "")
            + (f", mostly from project {project}" if project else ""),
        ]
        if "spend_up" in seen:
            evidence.append(
                f"spend {_fmt_ratio(spend_ratio)}: {_fmt_ratio(per_call)} per call, so the volume explains the cost"
                if 0.5 <= per_call <= 2.0 else f"spend per call {_fmt_ratio(per_call)}: volume alone does not explain it"
            )  # fmt: skip
        if "latency_up" in seen:
            evidence.append(
                f"latency {_fmt_ratio(obs.ratio('latency_up'))} in the same hours: the load slowed the model"
            )
        add("traffic_surge", {"model": model, "project": project}, _z_strength(peak.peak_z),
            obs.first_start("calls_up"), fit, evidence)  # fmt: skip

    # -- rate-limit violation, retry storm, budget breach
    for name, cause_name in (("violations:rate_limit", "rate_limit_violation"), ("retries_up", "retry_storm"),
                             ("violations:cost_control", "budget_breach")):  # fmt: skip
        peak = obs.peak(name)
        if peak is None:
            continue
        episodes = obs.signals[name]
        project = _top_entity(episodes, "project")
        model = _top_entity(episodes, "model") if cause_name == "retry_storm" else None
        evidence = [f"{peak.describe()}"]
        step = "retry_storm" if name == "retries_up" else name.replace("violations:", "violation:")
        cascade = next((c for c in obs.cascades if c.root == step), None)
        fit = 1.0
        if cascade is not None:
            evidence.append(f"first step of the cascade {cascade.describe()}")
        elif cause_name != "budget_breach" and obs.cascades:
            fit = 0.7  # a step inside someone else's cascade
        if cause_name == "retry_storm" and "violations:rate_limit" in seen:
            evidence.append(
                "but the rate limiter was already rejecting calls: the retries answer the rejections"
            )
            fit *= 0.5
        add(
            cause_name,
            {"project": project, "model": model},
            _z_strength(peak.peak_z),
            obs.first_start(name),
            fit,
            evidence,
        )

    # -- security: the indicators that tie the detections together
    for component in obs.components:
        n = len(component.detections)
        threat = component.detections["threat_type"].value_counts()
        top_threat = str(threat.index[0]) if len(threat) else None
        for kind, cause_name in (("ip", "attack_from_ip"), ("user_id", "compromised_user"),
                                 ("api_key_id", "compromised_api_key")):  # fmt: skip
            for stat in (s for s in component.indicators if s.kind == kind and (s.hot or s.coverage >= 0.5)):
                specificity = 1.0 - math.exp(-math.log10(max(stat.lift, 1.0)) / 2.0)
                anchor = stat.coverage * specificity
                evidence = [
                    f"{stat.count} of {n} detections carry {kind} {stat.value}"
                    f" ({stat.lift:.0f}x its usual rate{', never seen before' if stat.expected < 0.05 else ''})",
                    f"threats: {', '.join(f'{k} {v}' for k, v in threat.items())}; models: {', '.join(sorted(component.models))}",
                ]
                if not stat.hot:
                    evidence.append(
                        f"{kind} {stat.value} is common enough that it does not single the detections out"
                    )
                add(
                    cause_name,
                    {kind: stat.value, "threat_type": top_threat},
                    anchor,
                    component.start,
                    1.0,
                    evidence,
                )
    peak = obs.peak("detections_up")
    if peak is not None and not obs.components:
        add("threat_burst", {"threat_type": peak.value if peak.dimension == "threat_type" else None},
            _z_strength(peak.peak_z), peak.start, 1.0, [peak.describe(), "no indicator ties the detections together"])  # fmt: skip

    # -- provider degradation
    peak = obs.peak("latency_up")
    if peak is not None:
        model = _top_entity(obs.signals["latency_up"], "model")
        fit = 1.0 / max(1.0, obs.ratio("calls_up", "model", model) if model else calls_ratio) ** 1.5
        evidence = [peak.describe()]
        if "calls_up" in seen:
            evidence.append(
                f"but calls rose {_fmt_ratio(calls_ratio)} at the same time: load explains the latency"
            )
        else:
            evidence.append("calls did not rise: the model itself slowed down")
        for chain in obs.perf_chains:
            if chain.model == model:
                evidence.append(chain.describe())
        add(
            "provider_degradation",
            {"model": model},
            _z_strength(peak.peak_z),
            obs.first_start("latency_up"),
            fit,
            evidence,
        )

    # -- cost runaway
    peak = obs.peak("spend_up")
    if peak is not None:
        per_call = spend_ratio / max(calls_ratio, 1.0)
        fit = 1.0 if per_call >= 1.8 else 0.15
        episodes = obs.signals["spend_up"]
        add("cost_runaway", {"model": _top_entity(episodes, "model"), "project": _top_entity(episodes, "project")},
            _z_strength(peak.peak_z), obs.first_start("spend_up"), fit,
            [peak.describe(), f"spend per call {_fmt_ratio(per_call)} (calls {_fmt_ratio(calls_ratio)})"])  # fmt: skip

    # -- error burst
    peak = obs.peak("errors_up")
    if peak is not None:
        fit = 0.5 if ("latency_up" in seen or any(s.startswith("violations:") for s in seen)) else 1.0
        add("error_burst", {"model": _top_entity(obs.signals["errors_up"], "model")}, _z_strength(peak.peak_z),
            obs.first_start("errors_up"), fit, [peak.describe()])  # fmt: skip

    # -- a deployment shortly before
    for change in obs.deployments:
        hours = (obs.start - change["updated_at"]) / pd.Timedelta(hours=1)
        add("deployment_change", {"asset_id": change["asset_id"], "version": change["version"]},
            math.exp(-max(hours, 0.0) / 12.0), change["updated_at"], 1.0,
            [f"{change['asset_id']} moved to version {change['version']} at {change['updated_at']:%Y-%m-%d %H:%M} UTC,"
             f" {hours:.1f} h before the incident"])  # fmt: skip

    total_score = sum(h.score for h in candidates) or 1.0
    for h in candidates:
        h.score = h.score / total_score
    candidates.sort(key=lambda h: (-h.score, h.cause, sorted(h.subject.items())))
    for rank, h in enumerate(candidates, start=1):
        h.rank = rank
        h.score = round(h.score, 4)
    return candidates
