"""The correlation engine: one tenant, one window (a day), every kind of correlation, incidents.

``correlate(CorrelationInput(...))`` reads the window with ``settings.margin_hours`` either side
(an incident that starts at 23:00 is seen whole) and the look-back before it (baselines), and
reports the incidents that *start* inside the window, so consecutive windows report each incident
once.

1. Signals: episodes of hourly series above their baselines (``signals``), and the rows of the
   ``anomalies`` table, merged into the episode of the same series where one exists.
2. Detail: causal chains, recurring patterns and wasted cost (``chains``); security parts
   (``security``); compliance cascades and performance chains (``cascades``).
3. Anomaly correlation: episodes and security parts are clustered when their hours overlap (within
   ``cluster_gap_hours``) and they share a model or a project (or one has no entity). A cluster is
   an incident when it is a security part, a compliance cascade, or spans at least two modules and
   two families of evidence (volume, errors, latency, cost, security, policy) and its signals
   together stand out enough (``evidence_of`` >= ``min_evidence``): spend and tokens are one family,
   both being what the same requests cost, so a single heavy request is not an incident, and an hour
   of calls a little above baseline, with the spend they brought, is not either.
4. Each incident gets its temporal correlations (lagged Pearson of the departures of its series,
   Benjamini-Hochberg), chains, patterns and cost, its ranked hypotheses (``hypotheses``), impact
   scores, strength, confidence and members.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hub_ml.correlation.cascades import (
    Cascade,
    PerformanceChain,
    compliance_cascades,
    dependency_graph,
    performance_chains,
)
from hub_ml.correlation.chains import ChainAnalysis, analyse_chains
from hub_ml.correlation.hypotheses import Observations, rank_hypotheses
from hub_ml.correlation.model import Correlation, Hypothesis, Incident, Member, incident_id, severity_of
from hub_ml.correlation.schema import (
    COSTOPS,
    OBSERVATORY,
    POLICY,
    SENTINEL,
    CorrelationSettings,
    module_of_metric,
)
from hub_ml.correlation.security import SecurityComponent, security_components
from hub_ml.correlation.signals import (
    SERIES_METRICS,
    Episode,
    SeriesBank,
    build_series,
    cells_from_events,
    find_episodes,
    normalise_cells,
    score_series,
)
from hub_ml.correlation.temporal import lagged_links

ENGINE_VERSION = "1.0"
FAMILY = {
    "calls": "volume",
    "retries": "volume",
    "errors": "errors",
    "latency": "latency",
    "tokens": "cost",
    "spend": "cost",
    "detections": "security",
    "violations": "policy",
}
SEVERITY_WEIGHT = {"info": 0.5, "warning": 1.0, "error": 2.0, "critical": 4.0}
# The anomalies table's metrics, as the engine's series.
ANOMALY_METRICS = {
    "requests": "calls", "calls": "calls", "retries": "retries", "errors": "errors", "error_rate": "errors",
    "spend_usd": "spend", "cost_usd": "spend", "threats": "detections", "detections": "detections",
    "violations": "violations", "compliance_rate": "violations",
}  # fmt: skip


@dataclass
class CorrelationInput:
    """One tenant's data around an analysed window [start, end) (see hub_ml.correlation.schema)."""

    tenant_id: str
    start: pd.Timestamp
    end: pd.Timestamp
    events: pd.DataFrame  # detail: at least [start - margin, end + margin)
    cells: pd.DataFrame | None = None  # hourly cells over look-back + window (None: from events)
    security: pd.DataFrame | None = (
        None  # detections with indicators over look-back + window (None: from events)
    )
    anomalies: pd.DataFrame | None = None
    assets: pd.DataFrame | None = None
    data_start: pd.Timestamp | None = None  # the tenant's first data (None: the first cell)


@dataclass
class CorrelationResult:
    tenant_id: str
    start: pd.Timestamp
    end: pd.Timestamp
    incidents: list[Incident]
    correlations: list[Correlation]  # every finding of the window, in incidents or not
    episodes: list[Episode]
    seconds: float = 0.0
    stats: dict = field(default_factory=dict)


def _utc(moment) -> pd.Timestamp:
    moment = pd.Timestamp(moment)
    return moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")


def correlate(data: CorrelationInput, settings: CorrelationSettings | None = None) -> CorrelationResult:
    """Incidents of `data.tenant_id` starting in [data.start, data.end) (module docstring)."""
    settings = settings or CorrelationSettings()
    started = time.perf_counter()
    start, end = _utc(data.start), _utc(data.end)
    margin = pd.Timedelta(hours=settings.margin_hours)
    span_start, span_end = start - margin, end + margin
    history_start = span_start - pd.Timedelta(days=settings.lookback_days)
    events = data.events
    if len(events) and not isinstance(events["event_time"].dtype, pd.DatetimeTZDtype):
        events = events.assign(event_time=pd.to_datetime(events["event_time"], utc=True))
    detail = events[(events["event_time"] >= span_start) & (events["event_time"] < span_end)]
    if data.cells is not None:
        cells = data.cells[(data.cells["hour"] >= history_start) & (data.cells["hour"] < span_end)]
    else:
        cells = cells_from_events(
            events[(events["event_time"] >= history_start) & (events["event_time"] < span_end)]
        )
    cells = normalise_cells(cells)
    security = data.security if data.security is not None else events[events["event_type"] == "security"]
    if len(security) and not isinstance(security["event_time"].dtype, pd.DatetimeTZDtype):
        security = security.assign(event_time=pd.to_datetime(security["event_time"], utc=True))
    data_start = (
        _utc(data.data_start)
        if data.data_start is not None
        else (cells["hour"].min() if len(cells) else None)
    )

    # 1. signals
    hours = pd.date_range(history_start, span_end, freq="h", inclusive="left")
    keys, values, weights = build_series(cells, hours)
    bank = score_series(keys, values, weights, hours, span_start, settings, data_start=data_start)
    episodes = find_episodes(bank, data.tenant_id, settings, cells)
    episodes = _merge_anomalies(episodes, data.anomalies, data.tenant_id, span_start, span_end, cells)

    # 2. detail
    chains = analyse_chains(detail, settings)
    components = security_components(
        security, span_start, span_end, max(history_start, data_start or history_start), settings
    )
    cascades = compliance_cascades(episodes, settings.cascade_gap_hours)
    graph = dependency_graph(data.assets)
    perf = performance_chains(episodes, graph)

    # 3. clusters -> incidents
    groups = _cluster(episodes, components, settings)
    daily_spend = _daily_spend(cells, span_start)
    n_projects = max(1, cells.loc[cells["kind"] == "attempt", "project"].nunique())
    incidents: list[Incident] = []
    correlations: list[Correlation] = []
    detail_index = _DetailIndex(detail)
    for group_episodes, group_components in groups:
        # Only incidents that start in the window are this window's; the margins' are its neighbours'.
        group_start = min([e.start for e in group_episodes] + [c.start for c in group_components])
        if not start <= group_start < end:
            continue
        group_cascades = [c for c in cascades if {e.id for e in c.episodes} & {e.id for e in group_episodes}]
        group_perf = [p for p in perf if p.root.id in {e.id for e in group_episodes}]
        if not _qualifies(group_episodes, group_components, group_cascades, settings):
            continue
        incident, found = _incident(
            data.tenant_id, group_episodes, group_components, group_cascades, group_perf, chains, bank, detail,
            detail_index, data.assets, settings, daily_spend, n_projects,
        )  # fmt: skip
        correlations.extend(found)
        incidents.append(incident)
    incidents.sort(key=lambda i: (i.start, i.incident_id))
    # Findings outside incidents are still reported: patterns and cascades of the window.
    for pattern in chains.patterns:
        if start <= pattern.start < end and not any(
            c.kind == "pattern" and c.start == pattern.start for c in correlations
        ):
            correlations.append(_pattern_correlation(pattern))
    return CorrelationResult(
        tenant_id=data.tenant_id, start=start, end=end, incidents=incidents,
        correlations=[c for c in correlations if start <= c.start < end], episodes=episodes,
        seconds=time.perf_counter() - started,
        stats={"events": int(len(detail)), "cells": int(len(cells)), "series": len(keys), "episodes": len(episodes),
               "chains": int(len(chains.chains)), "security_parts": len(components), "cascades": len(cascades)},
    )  # fmt: skip


# -- anomalies table -----------------------------------------------------------------------------


def _merge_anomalies(episodes, anomalies, tenant_id, span_start, span_end, cells) -> list[Episode]:
    """Rows of the anomalies table as episodes, or added to the engine's episode of their series."""
    if anomalies is None or anomalies.empty:
        return episodes
    rows = anomalies[anomalies["tenant_id"] == tenant_id].copy()
    rows["ts"] = pd.to_datetime(rows["ts"], utc=True)
    rows = rows[(rows["ts"] >= span_start) & (rows["ts"] < span_end)].sort_values(["series_key", "ts"])
    out = list(episodes)
    for series, part in rows.groupby("series_key", sort=True):
        first = part.iloc[0]
        raw_metric = str(first["metric"])
        metric = ANOMALY_METRICS.get(raw_metric) or next(
            (m for prefix, m in (("latency", "latency"), ("tokens", "tokens"), ("spend", "spend"), ("cost", "spend"),
                                 ("policy", "violations")) if raw_metric.startswith(prefix)), None)  # fmt: skip
        module = module_of_metric(raw_metric)
        if metric is None or module is None:
            continue
        model, project = first.get("model"), first.get("project")
        dimension, value = ("model", model) if model else ("project", project) if project else ("all", "all")
        # Consecutive hours of the series are one episode.
        ts = part["ts"].tolist()
        runs: list[list[int]] = [[0]]
        for i in range(1, len(ts)):
            if ts[i] - ts[i - 1] <= pd.Timedelta(hours=2):
                runs[-1].append(i)
            else:
                runs.append([i])
        for run in runs:
            sub = part.iloc[run]
            ids = [f"{series}@{t.isoformat()}" for t in sub["ts"]]
            run_start, run_end = sub["ts"].min(), sub["ts"].max() + pd.Timedelta(hours=1)
            match = next(
                (e for e in out if e.metric == metric and e.dimension == dimension and e.value == value
                 and e.start < run_end and run_start < e.end), None)  # fmt: skip
            if match is not None:
                match.anomaly_ids.extend(ids)
                continue
            mid = (sub["expected_low"].astype(float) + sub["expected_high"].astype(float)) / 2.0
            ratio = float((sub["value"].astype(float) / mid.where(mid > 0)).max()) if len(sub) else 1.0
            episode = Episode(
                tenant_id=tenant_id, metric=metric, dimension=dimension, value=str(value), module=module,
                start=run_start, end=run_end, peak_z=4.0 + 8.0 * float(sub["score"].max()),
                peak_ratio=ratio if np.isfinite(ratio) else 1.0, observed=float(sub["value"].sum()),
                expected=float(mid.sum()), hours=list(sub["ts"]), z_by_hour=[4.0 + 8.0 * float(s) for s in sub["score"]],
                source="anomalies", anomaly_ids=ids, severity=str(sub["severity"].iloc[-1]),
            )  # fmt: skip
            if dimension == "model":
                episode.models.add(str(value))
            elif dimension == "project":
                episode.projects.add(str(value))
            out.append(episode)
    return out


# -- clustering ----------------------------------------------------------------------------------


def _overlap(a_start, a_end, b_start, b_end, gap: pd.Timedelta) -> bool:
    return a_start <= b_end + gap and b_start <= a_end + gap


def _compatible(models_a, projects_a, models_b, projects_b) -> bool:
    if not (models_a or projects_a) or not (models_b or projects_b):
        return True  # a tenant-wide signal
    return bool((models_a & models_b) or (projects_a & projects_b))


def _cluster(episodes: list[Episode], components: list[SecurityComponent], settings: CorrelationSettings):
    """Connected groups of episodes and security parts (union-find)."""
    items: list[tuple[pd.Timestamp, pd.Timestamp, set, set, str]] = [
        (e.start, e.end, e.models, e.projects, e.module) for e in episodes
    ] + [(c.start, c.end, c.models, c.projects, SENTINEL) for c in components]
    parent = list(range(len(items)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    gap = pd.Timedelta(hours=settings.cluster_gap_hours)
    n_episodes = len(episodes)
    for i in range(len(items)):
        for j in range(i + 1, len(items)):
            a, b = items[i], items[j]
            if not _overlap(a[0], a[1], b[0], b[1], gap):
                continue
            # A security part takes the security, policy and error signals of its hours.
            security_pair = (i < n_episodes) != (j < n_episodes)
            if security_pair and episodes[min(i, j)].metric not in ("detections", "violations", "errors"):
                continue
            if not _compatible(a[2], a[3], b[2], b[3]):
                continue
            parent[find(i)] = find(j)
    groups: dict[int, tuple[list[Episode], list[SecurityComponent]]] = {}
    for i in range(len(items)):
        bucket = groups.setdefault(find(i), ([], []))
        if i < n_episodes:
            bucket[0].append(episodes[i])
        else:
            bucket[1].append(components[i - n_episodes])
    return sorted(groups.values(), key=lambda g: min([e.start for e in g[0]] + [c.start for c in g[1]]))


def _qualifies(episodes: list[Episode], components, cascades, settings: CorrelationSettings) -> bool:
    """A security part or a compliance cascade (each significant on its own), or signals of two
    modules and two families of evidence that together stand out (``min_evidence``)."""
    if components or cascades:
        return True
    modules = {e.module for e in episodes}
    families = {FAMILY.get(e.metric, e.metric) for e in episodes}
    return len(modules) >= 2 and len(families) >= 2 and evidence_of(episodes) >= settings.min_evidence


# -- one incident --------------------------------------------------------------------------------


def _daily_spend(cells: pd.DataFrame, span_start: pd.Timestamp) -> float:
    history = cells[(cells["kind"] == "cost") & (cells["hour"] < span_start)]
    if history.empty:
        return 0.0
    days = max((history["hour"].max() - history["hour"].min()) / pd.Timedelta(days=1), 1.0)
    return float(history["value_sum"].sum()) / days


def _deployments(assets: pd.DataFrame | None, models: set[str], start: pd.Timestamp) -> list[dict]:
    """Registry assets of the incident's models updated in the 24 hours before it started."""
    if assets is None or assets.empty or "updated_at" not in assets:
        return []
    updated = pd.to_datetime(assets["updated_at"], utc=True)
    recent = assets[
        (updated <= start) & (updated >= start - pd.Timedelta(hours=24)) & (assets["asset_type"] == "model")
    ]
    out = []
    for row, moment in zip(recent.itertuples(index=False), updated[recent.index], strict=True):
        if row.asset_name in models or any(str(row.asset_id).endswith(f":{m}") for m in models):
            out.append(
                {
                    "asset_id": row.asset_id,
                    "model": row.asset_name,
                    "version": row.version,
                    "updated_at": moment,
                }
            )
    return out


class _DetailIndex:
    """The detail split once by what an episode can be made of (attempts, tokens, costs,
    detections, failed evaluations), each part with its hour."""

    def __init__(self, detail: pd.DataFrame) -> None:
        etype, metric = detail["event_type"], detail["metric_name"]
        parts = {
            "attempt": (etype == "telemetry") & (metric == "latency_ms"),
            "tokens": (etype == "telemetry") & metric.isin(["tokens_input", "tokens_output"]),
            "cost": etype == "cost",
            "detection": etype == "security",
            "evaluation": (etype == "policy") & (detail["outcome"] == "fail"),
        }
        self.parts = {}
        for kind, mask in parts.items():
            part = detail.loc[mask]
            self.parts[kind] = part.assign(hour=part["event_time"].dt.floor("h"))

    def events_of(self, episode: Episode) -> pd.Series:
        """Events of the detail behind an episode."""
        part = self.parts[SERIES_METRICS[episode.metric][1]]
        if part.empty:
            return pd.Series(dtype=object)
        if episode.hours:
            mask = part["hour"].isin(episode.hours)
        else:
            mask = (part["event_time"] >= episode.start) & (part["event_time"] < episode.end)
        if episode.metric == "errors":
            mask &= part["status"].fillna("ok") != "ok"
        if episode.dimension in ("model", "project", "threat_type", "policy_category"):
            mask &= part[episode.dimension] == episode.value
        return part.loc[mask, "event_id"]


def _incident(tenant_id, episodes, components, cascades, perf, chains: ChainAnalysis, bank: SeriesBank, detail,
              detail_index, assets, settings: CorrelationSettings, daily_spend: float, n_projects: int):  # fmt: skip
    starts = [e.start for e in episodes] + [c.start for c in components]
    ends = [e.end for e in episodes] + [c.end for c in components]
    start, end = min(starts), max(ends)
    models = set().union(*(e.models for e in episodes), *(c.models for c in components))
    projects = set().union(*(e.projects for e in episodes), *(c.projects for c in components))
    modules = sorted({e.module for e in episodes} | ({SENTINEL} if components else set()))
    correlations: list[Correlation] = []

    # Anomaly correlation: the cluster itself.
    z_total = evidence_of(episodes)
    if len(episodes) >= 2:
        correlations.append(Correlation(
            kind="anomaly_cluster",
            description=f"{len(episodes)} signals in {len({e.module for e in episodes})} module(s) within"
                        f" {start:%H:%M}-{end:%H:%M} UTC: " + "; ".join(e.describe() for e in _strongest(episodes, 4)),
            start=start, end=end, strength=1.0 - float(np.exp(-z_total / 20.0)),
            modules=sorted({e.module for e in episodes}),
            details={"signals": [e.id for e in episodes], "anomalies": sum(len(e.anomaly_ids) for e in episodes)},
        ))  # fmt: skip

    # Temporal correlation among the departures of its series.
    links = _temporal(episodes, bank, start, end, settings)
    correlations.extend(links)

    # Security graph, cascades, performance chains.
    for component in components:
        correlations.append(Correlation(
            kind="security_graph", description=component.describe(), start=component.start, end=component.end,
            strength=1.0 - float(np.exp(-len(component.detections) / 10.0)), p_value=component.p_value,
            modules=[SENTINEL], details={"indicators": [s.as_dict() for s in component.indicators[:12]],
                                         "detections": len(component.detections)},
        ))  # fmt: skip
    for cascade in cascades:
        correlations.append(Correlation(
            kind="compliance_cascade", description=cascade.describe(), start=cascade.start, end=cascade.end,
            strength=1.0 - float(np.exp(-len(cascade.steps) / 2.0)), modules=sorted({e.module for e in cascade.episodes}),
            details={"steps": [s for s, _ in cascade.steps], "violations": cascade.violations},
        ))  # fmt: skip
    for chain in perf:
        correlations.append(Correlation(
            kind="performance_chain", description=chain.describe(), start=chain.root.start, end=chain.root.end,
            strength=1.0 - float(np.exp(-len(chain.affected))), modules=[OBSERVATORY],
            details={"model_asset": chain.model_asset, "paths": [p for _, p, _ in chain.affected],
                     "downstream": chain.downstream},
        ))  # fmt: skip

    # Causal chains and patterns in its hours and entities.
    in_chains = chains.chains_in(start - pd.Timedelta(minutes=5), end, models, projects)
    if len(in_chains):
        signatures = in_chains["steps"].map(lambda s: " -> ".join(s[:8]) + (" -> ..." if len(s) > 8 else ""))
        top = signatures.value_counts().head(3)
        correlations.append(Correlation(
            kind="causal_chain",
            description=f"{len(in_chains)} calls went wrong step by step; most often: "
                        + "; ".join(f"{sig} ({n})" for sig, n in top.items()),
            start=in_chains["start"].min().floor("h"), end=end,
            strength=1.0 - float(np.exp(-len(in_chains) / 50.0)), modules=_chain_modules(in_chains),
            details={"chains": int(len(in_chains)), "signatures": {k: int(v) for k, v in top.items()},
                     "retries": int(in_chains["retries"].sum()),
                     "denied": {k: int(v) for k, v in in_chains["denied"].value_counts().items()},
                     "detected": {k: int(v) for k, v in in_chains["detected"].value_counts().items()}},
        ))  # fmt: skip
    for pattern in chains.patterns:
        if _overlap(pattern.start, pattern.end, start, end, pd.Timedelta(0)) and _compatible(
            pattern.models, pattern.projects, models, projects
        ):
            correlations.append(_pattern_correlation(pattern))

    # Cost impact: spend above baseline, and what failed and retried attempts cost.
    wasted, wasted_attempts = chains.wasted(start, end, models, projects)
    excess = _excess_spend(episodes)
    if wasted > 0 or excess > 0:
        correlations.append(Correlation(
            kind="cost_impact",
            description=f"${excess:,.2f} spent above baseline; {wasted_attempts} failed or retried attempts"
                        f" wasted ${wasted:,.2f}",
            start=start, end=end, strength=1.0 - float(np.exp(-10.0 * (excess + wasted) / max(daily_spend, 1e-6))),
            modules=[COSTOPS, OBSERVATORY], details={"excess_usd": round(excess, 4), "wasted_usd": round(wasted, 4),
                                                     "wasted_attempts": wasted_attempts},
        ))  # fmt: skip

    # Hypotheses.
    observations = Observations.of(
        episodes, components, cascades, perf, _deployments(assets, models, start), start
    )
    hypotheses = rank_hypotheses(observations)
    top = hypotheses[0] if hypotheses else None

    # Impact.
    impact = _impact(
        episodes, components, perf, excess, wasted, daily_spend, projects, n_projects, detail, start, end
    )

    # Members.
    members, event_count = _members(episodes, components, perf, in_chains, detail_index, top, settings)
    kinds = sorted({c.kind for c in correlations})
    strength = 1.0 - float(np.exp(-(z_total + sum(len(c.detections) for c in components) / 2.0) / 20.0))
    n_families = len(
        {FAMILY.get(e.metric, e.metric) for e in episodes} | ({"security"} if components else set())
    )
    margin = (top.score - hypotheses[1].score) if len(hypotheses) > 1 else (top.score if top else 0.0)
    significant_temporal = sum(1 for c in correlations if c.kind == "temporal")
    confidence = 1.0 - (
        (0.6 if n_families < 2 else 0.35 if n_families < 3 else 0.2)
        * (0.7 if significant_temporal else 1.0)
        * (0.7 if any(k in kinds for k in ("causal_chain", "compliance_cascade", "security_graph")) else 1.0)
        * (1.0 - 0.5 * margin)
    )  # fmt: skip
    anchor = (
        f"{top.cause}:{sorted(top.subject.items())}" if top else ",".join(sorted(e.key for e in episodes))
    )
    title = _title(top, episodes, components, impact, start)
    summary = _summary(top, hypotheses, correlations, impact, start, end)
    incident = Incident(
        incident_id=incident_id(tenant_id, start, anchor), tenant_id=tenant_id, start=start, end=end,
        kind=top.cause if top else "correlated_signals", title=title, summary=summary, severity=severity_of(impact),
        strength=round(strength, 4), confidence=round(float(np.clip(confidence, 0.0, 0.99)), 4), impact=impact,
        modules=modules, correlation_kinds=kinds, hypotheses=hypotheses, correlations=correlations, members=members,
        event_count=event_count, anomaly_count=sum(len(e.anomaly_ids) for e in episodes),
    )  # fmt: skip
    return incident, correlations


def evidence_of(episodes: list[Episode]) -> float:
    """How much the signals stand out together: the sum over episodes of their combined z
    (Stouffer's: the z of their hours summed over the square root of their number) above 3, so a
    departure held for hours weighs more than a single hour's, without three weak hours counting as
    three strong ones."""
    total = 0.0
    for e in episodes:
        zs = [z for z in (e.z_by_hour or [e.peak_z]) if np.isfinite(z)]
        if zs:
            total += max(sum(zs) / np.sqrt(len(zs)) - 3.0, 0.0)
    return float(total)


def _strongest(episodes: list[Episode], n: int) -> list[Episode]:
    return sorted(episodes, key=lambda e: -e.peak_z)[:n]


def _chain_modules(chains: pd.DataFrame) -> list[str]:
    modules = {OBSERVATORY, COSTOPS}
    if chains["denied"].notna().any():
        modules.add(POLICY)
    if chains["detected"].notna().any():
        modules.add(SENTINEL)
    return sorted(modules)


def _pattern_correlation(pattern) -> Correlation:
    return Correlation(
        kind="pattern", description=pattern.describe(), start=pattern.start, end=pattern.end,
        strength=1.0 - float(np.exp(-pattern.count / max(pattern.expected, 1.0) / 10.0)), p_value=pattern.p_value,
        modules=[OBSERVATORY], details={"sequence": list(pattern.sequence), "count": pattern.count,
                                        "models": sorted(pattern.models), "projects": sorted(pattern.projects)},
    )  # fmt: skip


def _temporal(episodes, bank: SeriesBank, start, end, settings: CorrelationSettings) -> list[Correlation]:
    engine = [e for e in episodes if e.source == "engine"]
    index: dict[str, int] = {}
    for e in sorted(engine, key=lambda e: -e.peak_z):
        i = bank.index_of((e.metric, e.dimension, e.value))
        if i is not None and e.key not in index and len(index) < 8:
            index[e.key] = i
    if len(index) < 2:
        return []
    context = pd.Timedelta(hours=settings.temporal_context_hours)
    lo = max(bank.hour_index(start - context), int(np.argmax(bank.analysed)) if bank.analysed.any() else 0)
    hi = min(bank.hour_index(end + context), len(bank.hours))
    rows = list(index.values())
    residuals = np.clip(bank.z[rows, lo:hi], -10.0, 50.0)
    family = [FAMILY[bank.keys[i][0]] for i in rows]
    pairs = [(a, b) for a in range(len(rows)) for b in range(a + 1, len(rows)) if family[a] != family[b]]
    links = lagged_links(residuals, pairs, settings.max_lag_hours, settings.fdr_q)
    out = []
    for link in links:
        a, b = bank.keys[rows[link.a]], bank.keys[rows[link.b]]
        name_a = f"{a[0]} of {a[1]} {a[2]}" if a[1] != "all" else a[0]
        name_b = f"{b[0]} of {b[1]} {b[2]}" if b[1] != "all" else b[0]
        if link.lag >= 0:
            text = (
                f"{name_b} follows {name_a} by {link.lag} h"
                if link.lag
                else f"{name_a} and {name_b} move together"
            )
        else:
            text = f"{name_a} follows {name_b} by {-link.lag} h"
        out.append(Correlation(
            kind="temporal", description=f"{text} (r={link.r:.2f} over {link.n} h, q={link.q_value:.1e})",
            start=start, end=end, strength=max(link.r, 0.0), p_value=link.p_value,
            modules=sorted({SERIES_METRICS[a[0]][0], SERIES_METRICS[b[0]][0]}),
            details={"a": list(a), "b": list(b), "lag_hours": link.lag, "r": round(link.r, 4), "n": link.n,
                     "q_value": link.q_value},
        ))  # fmt: skip
    return out


def _excess_spend(episodes: list[Episode]) -> float:
    """Spend above baseline: by model or by project, whichever episodes show more (not both)."""
    spend = [e for e in episodes if e.metric == "spend"]
    by_dim: dict[str, float] = {}
    for e in spend:
        by_dim[e.dimension] = by_dim.get(e.dimension, 0.0) + max(e.excess, 0.0)
    return max(by_dim.values(), default=0.0)


def _impact(
    episodes, components, perf, excess, wasted, daily_spend, projects, n_projects, detail, start, end
) -> dict:
    latency = max((e.peak_ratio for e in episodes if e.metric == "latency"), default=1.0)
    errors = [e for e in episodes if e.metric == "errors"]
    extra_errors = (
        max(sum(max(e.excess, 0.0) for e in errors if e.dimension == d) for d in ("model", "project"))
        if errors
        else 0.0
    )
    window = detail[(detail["event_time"] >= start) & (detail["event_time"] < end)]
    attempts = int(((window["event_type"] == "telemetry") & (window["metric_name"] == "latency_ms")).sum())
    error_share = extra_errors / max(attempts, 1)
    # Impact scores in 0..1: latency twice its usual and a tenth of attempts failing are each about
    # 0.4; a third of a usual day's spend is about 0.6; 25 error-level detections about 0.9.
    performance = 1.0 - np.exp(-(0.5 * (latency - 1.0) + 5.0 * error_share))
    cost_usd = excess + wasted
    cost = 1.0 - np.exp(-3.0 * cost_usd / daily_spend) if daily_spend > 0 else (1.0 if cost_usd > 0 else 0.0)
    weighted = 0.0
    detections = 0
    for component in components:
        detections += len(component.detections)
        weighted += float(component.detections["severity"].map(SEVERITY_WEIGHT).fillna(1.0).sum())
    for e in episodes:
        if e.metric == "detections" and e.dimension == "all" and not components:
            detections += int(max(e.excess, 0.0))
            weighted += 2.0 * max(e.excess, 0.0)
    security = 1.0 - np.exp(-weighted / 20.0)
    downstream = sorted({a for chain in perf for a in chain.downstream})
    project_share = min(len(projects) / n_projects, 1.0)
    hours = (end - start) / pd.Timedelta(hours=1)
    business = min(1.0, max(performance, cost, security) * (0.5 + 0.5 * project_share) + 0.1 * min(len(downstream), 5) / 5
                   + 0.05 * min(hours / 24.0, 1.0))  # fmt: skip
    return {
        "performance": round(float(performance), 4), "cost": round(float(cost), 4),
        "security": round(float(security), 4), "business": round(float(business), 4),
        "latency_ratio": round(float(latency), 3), "extra_errors": round(float(extra_errors), 1),
        "cost_usd": round(float(cost_usd), 4), "excess_spend_usd": round(float(excess), 4),
        "wasted_usd": round(float(wasted), 4), "detections": detections, "projects_affected": sorted(projects),
        "downstream_assets": downstream, "duration_hours": round(float(hours), 2),
    }  # fmt: skip


def _members(
    episodes, components, perf, in_chains, detail_index: _DetailIndex, top: Hypothesis | None, settings
):
    members: list[Member] = []
    event_ids: set[str] = set()
    cap = settings.max_member_events
    anchor_signals = set()
    if top is not None:
        from hub_ml.correlation.hypotheses import CAUSES

        anchor_signals.add(CAUSES[top.cause].anchor)
    for e in episodes:
        signal = "detections_up" if e.metric == "detections" else e.signal
        role = "cause" if signal in anchor_signals else "effect"
        members.append(Member(
            "signal", e.id, role, "anomaly_cluster", e.module, e.start,
            {"series_key": e.key, "metric": e.metric, "dimension": e.dimension, "value": e.value,
             "peak_z": round(e.peak_z, 2), "peak_ratio": round(e.peak_ratio, 3), "observed": round(e.observed, 4),
             "expected": round(e.expected, 4), "end": e.end.isoformat(), "source": e.source},
        ))  # fmt: skip
        for anomaly in e.anomaly_ids:
            members.append(
                Member("anomaly", anomaly, role, "anomaly_cluster", e.module, e.start, {"series_key": e.key})
            )
        ids = detail_index.events_of(e)
        event_ids.update(ids.tolist())
        for event in ids.head(cap).tolist():
            members.append(Member("event", event, role, "anomaly_cluster", e.module, None, {"signal": e.id}))
    for component in components:
        role = "cause" if top is not None and top.module == SENTINEL else "effect"
        rows = component.detections
        event_ids.update(rows["event_id"].tolist())
        for row in rows.head(max(cap, 500)).itertuples(index=False):
            members.append(Member("event", row.event_id, role, "security_graph", SENTINEL, row.event_time,
                                  {"ip": row.ip, "user_id": row.user_id, "threat_type": row.threat_type}))  # fmt: skip
        for stat in component.indicators:
            if stat.hot or stat.coverage >= 0.5:
                is_cause = (
                    top is not None
                    and stat.kind in ("ip", "user_id", "api_key_id")
                    and top.subject.get(stat.kind) == stat.value
                )
                members.append(Member("indicator", f"{stat.kind}:{stat.value}", "cause" if is_cause else "evidence",
                                      "security_graph", SENTINEL, component.start, stat.as_dict()))  # fmt: skip
    for chain in perf:
        members.append(Member("asset", chain.model_asset, "evidence", "performance_chain", OBSERVATORY, chain.root.start,
                              {"downstream": chain.downstream}))  # fmt: skip
        for _, path, _ in chain.affected:
            for asset in path[1:]:
                members.append(
                    Member("asset", asset, "effect", "performance_chain", OBSERVATORY, chain.root.start, {})
                )
    if len(in_chains):
        for row in in_chains.head(cap).itertuples(index=False):
            members.append(Member("chain", row.chain_id, "evidence", "causal_chain", OBSERVATORY, row.start,
                                  {"steps": list(row.steps), "wasted_usd": round(float(row.wasted_usd), 6)}))  # fmt: skip
        for ids in in_chains["event_ids"]:
            event_ids.update(ids)
    # One row per member: the first role given wins.
    unique: dict[tuple[str, str], Member] = {}
    for m in members:
        unique.setdefault((m.member_type, m.member_id), m)
    return list(unique.values()), len(event_ids)


def _title(top: Hypothesis | None, episodes, components, impact, start) -> str:
    if top is None:
        return f"Correlated signals from {start:%Y-%m-%d %H:%M} UTC"
    s = top.subject
    if top.cause == "traffic_surge":
        text = f"Traffic surge on {s.get('model', 'a model')}" + (
            f" from {s['project']}" if s.get("project") else ""
        )
        extras = []
        if impact["excess_spend_usd"] > 0:
            extras.append(f"+${impact['excess_spend_usd']:,.2f} spend")
        if impact["latency_ratio"] > 1.0:
            extras.append(f"latency x{impact['latency_ratio']:.1f}")
        return text + (f" ({', '.join(extras)})" if extras else "")
    if top.cause in ("attack_from_ip", "compromised_user", "compromised_api_key", "threat_burst"):
        models = sorted(set().union(*(c.models for c in components))) if components else []
        threat = s.get("threat_type", "threat")
        who = s.get("ip") or s.get("user_id") or s.get("api_key_id")
        return f"{threat.replace('_', '-')} campaign" + (f" from {who}" if who else "") + (
            f" across {len(models)} models" if len(models) > 1 else "")  # fmt: skip
    if top.cause == "rate_limit_violation":
        steps = sorted({e.signal for e in episodes if e.metric in ("retries", "violations")})
        tail = []
        if "retries_up" in steps:
            tail.append("retry storm")
        if "violations:cost_control" in steps:
            tail.append("budget breach")
        return f"Rate-limit violation by {s.get('project', 'a client')}" + (
            f" -> {' -> '.join(tail)}" if tail else ""
        )
    label = top.description[0].upper() + top.description[1:]
    return label


def _summary(top, hypotheses, correlations, impact, start, end) -> str:
    parts = [f"{start:%Y-%m-%d %H:%M}-{end:%H:%M} UTC."]
    if top is not None:
        parts.append(f"Most likely cause: {top.description} (score {top.score:.2f}).")
        if len(hypotheses) > 1:
            parts.append(
                "Also considered: " + ", ".join(f"{h.cause} {h.score:.2f}" for h in hypotheses[1:3]) + "."
            )
    parts.append(
        f"Impact: performance {impact['performance']:.2f}, cost {impact['cost']:.2f} (${impact['cost_usd']:,.2f}),"
        f" security {impact['security']:.2f}, business {impact['business']:.2f}."
    )
    kinds = sorted({c.kind for c in correlations})
    parts.append(f"Evidence: {', '.join(kinds)}.")
    return " ".join(parts)


__all__ = [
    "ENGINE_VERSION",
    "Cascade",
    "CorrelationInput",
    "CorrelationResult",
    "PerformanceChain",
    "correlate",
]
