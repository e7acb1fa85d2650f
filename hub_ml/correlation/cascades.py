"""Compliance cascades and performance degradation chains: episodes that caused one another.

Compliance cascade: a policy violation followed by the violations and failures it is known to cause
(``CASCADE_RULES``: a rate-limit violation makes clients retry, a retry storm spends money, money
spent breaches the budget), each starting after its cause started and no later than
``cascade_gap_hours`` after it ended, and carried by a shared project or model.

Performance chain: a model's latency episode and latency episodes of the projects whose registry
assets depend on that model (``depends_on`` of the asset catalog, followed transitively), starting
no earlier than an hour before it: the degradation travelling down the dependencies.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import networkx as nx
import pandas as pd

from hub_ml.correlation.signals import Episode

# What each step of a cascade is, from an episode.
STEP_OF_METRIC = {"retries": "retry_storm", "errors": "error_burst", "spend": "spend_spike"}
# cause -> effects it is known to lead to
CASCADE_RULES: dict[str, tuple[str, ...]] = {
    "violation:rate_limit": ("retry_storm", "error_burst", "spend_spike", "violation:cost_control"),
    "retry_storm": ("spend_spike", "violation:cost_control", "violation:rate_limit"),
    "error_burst": ("retry_storm",),
    "spend_spike": ("violation:cost_control",),
    "violation:access_control": ("violation:data_privacy", "violation:regulatory"),
    "violation:data_privacy": ("violation:regulatory",),
    "violation:content_safety": ("error_burst",),
}


def step_of(episode: Episode) -> str | None:
    if episode.metric == "violations":
        return f"violation:{episode.value}"
    return STEP_OF_METRIC.get(episode.metric)


def _shares_entity(a: Episode, b: Episode) -> bool:
    return bool((a.projects & b.projects) or (a.models & b.models))


@dataclass
class Cascade:
    steps: list[tuple[str, list[Episode]]]  # in order of first start

    @property
    def root(self) -> str:
        return self.steps[0][0]

    @property
    def episodes(self) -> list[Episode]:
        return [e for _, eps in self.steps for e in eps]

    @property
    def start(self) -> pd.Timestamp:
        return min(e.start for e in self.episodes)

    @property
    def end(self) -> pd.Timestamp:
        return max(e.end for e in self.episodes)

    @property
    def violations(self) -> list[str]:
        return [s for s, _ in self.steps if s.startswith("violation:")]

    def describe(self) -> str:
        parts = [f"{step} from {min(e.start for e in eps):%H:%M}" for step, eps in self.steps]
        return " -> ".join(parts)


def compliance_cascades(episodes: list[Episode], gap_hours: int) -> list[Cascade]:
    """Cascades rooted at a violation with at least one consequence that is itself a violation or
    a failure the rules name."""
    gap = pd.Timedelta(hours=gap_hours)
    typed = [(step_of(e), e) for e in episodes]
    typed = [(s, e) for s, e in typed if s is not None]
    roots = sorted(
        (e for s, e in typed if s.startswith("violation:") and s in CASCADE_RULES), key=lambda e: e.start
    )
    cascades: list[Cascade] = []
    used: set[str] = set()
    for root in roots:
        if root.id in used:
            continue
        members: dict[str, list[Episode]] = {step_of(root): [root]}
        frontier = [root]
        while frontier:
            cause = frontier.pop()
            for effect_step in CASCADE_RULES.get(step_of(cause), ()):
                for step, effect in typed:
                    if step != effect_step or effect.id in {e.id for eps in members.values() for e in eps}:
                        continue
                    if effect.start < cause.start or effect.start > cause.end + gap:
                        continue
                    if not _shares_entity(cause, effect):
                        continue
                    members.setdefault(step, []).append(effect)
                    frontier.append(effect)
        if len(members) < 2:
            continue
        steps = sorted(members.items(), key=lambda kv: (min(e.start for e in kv[1]), kv[0] != step_of(root)))
        cascade = Cascade(steps=steps)
        used |= {e.id for e in cascade.episodes}
        cascades.append(cascade)
    return cascades


# -- performance chains --------------------------------------------------------------------------


@dataclass
class PerformanceChain:
    model: str
    model_asset: str
    root: Episode
    affected: list[tuple[str, list[str], Episode]] = field(
        default_factory=list
    )  # (project, asset path, episode)
    downstream: list[str] = field(default_factory=list)  # every asset depending on the model

    def describe(self) -> str:
        hops = "; ".join(
            f"{' -> '.join(path)} ({project} latency x{ep.peak_ratio:.1f})"
            for project, path, ep in self.affected
        )
        return f"latency of {self.model} x{self.root.peak_ratio:.1f} cascaded along {hops}"


def dependency_graph(assets: pd.DataFrame | None) -> nx.DiGraph:
    """Edges dependency -> dependent, from the asset catalog's depends_on (a list or JSON text)."""
    graph = nx.DiGraph()
    if assets is None or assets.empty:
        return graph
    for row in assets.itertuples(index=False):
        graph.add_node(row.asset_id, name=row.asset_name, type=row.asset_type)
        deps = row.depends_on
        if isinstance(deps, str):
            try:
                deps = json.loads(deps) if deps else []
            except ValueError:
                deps = []
        for dependency in deps or []:
            graph.add_edge(str(dependency), row.asset_id)
    return graph


def _model_assets(graph: nx.DiGraph, model: str) -> list[str]:
    return [
        n for n, data in graph.nodes(data=True)
        if data.get("type") == "model" and (data.get("name") == model or str(n).endswith(f":{model}"))
    ]  # fmt: skip


def _project_of(asset_id: str, name: str | None, projects: set[str]) -> str | None:
    """The project an asset belongs to, by its id's last part or its name (e.g.
    ``tenant-01:agent:search-rag-agent``, ``search-rag system prompt``)."""
    tail = str(asset_id).rsplit(":", 1)[-1]
    for project in sorted(projects, key=len, reverse=True):
        if tail == project or tail.startswith(f"{project}-") or (name or "").startswith(project):
            return project
    return None


def performance_chains(episodes: list[Episode], graph: nx.DiGraph) -> list[PerformanceChain]:
    latency = [e for e in episodes if e.metric == "latency"]
    by_model = [e for e in latency if e.dimension == "model"]
    by_project = [e for e in latency if e.dimension == "project"]
    if not by_model or graph.number_of_nodes() == 0:
        return []
    projects = {e.value for e in by_project}
    chains = []
    for root in by_model:
        for asset in _model_assets(graph, root.value):
            downstream = sorted(nx.descendants(graph, asset))
            chain = PerformanceChain(root.value, asset, root, downstream=downstream)
            for dependent in downstream:
                project = _project_of(dependent, graph.nodes[dependent].get("name"), projects)
                if project is None:
                    continue
                for episode in by_project:
                    if episode.value != project:
                        continue
                    if episode.start < root.start - pd.Timedelta(hours=1) or episode.start > root.end:
                        continue
                    path = nx.shortest_path(graph, asset, dependent)
                    if not any(p == project for p, _, _ in chain.affected):
                        chain.affected.append((project, path, episode))
            if chain.affected:
                chains.append(chain)
    return chains
