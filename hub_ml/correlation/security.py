"""Security incidents as connected parts of a graph of shared indicators.

Nodes are detections and indicator values (IP, user, API key); a detection is joined to the
values it carries. Only values seen far more often than usual are joins: a value's count in the
analysed span must be improbable under its rate in the look-back (Poisson tail below
``indicator_alpha`` divided by the number of values seen: Bonferroni) and at least
``min_indicator_lift`` times what that rate predicts. A hot value's detections are split into
sessions where they are more than ``security_link_gap_hours`` apart, so one attacker on two days is
two incidents. Models are never joins (every detection names one); they, and indicators that are
not hot, describe the parts. A connected part with at least ``min_component_detections`` detections
is a security incident.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx
import numpy as np
import pandas as pd
from scipy import stats

from hub_ml.correlation.schema import CorrelationSettings

INDICATORS = ("ip", "user_id", "api_key_id")
ATTRIBUTES = ("ip", "user_id", "api_key_id", "model", "project", "threat_type")


@dataclass
class IndicatorStat:
    kind: str  # ip, user_id, api_key_id, model, project, threat_type
    value: str
    count: int  # detections of the part that carry it
    coverage: float  # share of the part's detections that carry it
    expected: float  # detections with it expected over the part's hours at its usual rate
    lift: float
    p_value: float
    hot: bool  # joined detections into the part

    def as_dict(self) -> dict:
        return {
            "kind": self.kind, "value": self.value, "count": self.count, "coverage": round(self.coverage, 3),
            "expected": round(self.expected, 3), "lift": round(self.lift, 2), "p_value": self.p_value, "hot": self.hot,
        }  # fmt: skip


@dataclass
class SecurityComponent:
    start: pd.Timestamp
    end: pd.Timestamp
    detections: pd.DataFrame  # the part's security events
    indicators: list[IndicatorStat] = field(default_factory=list)
    p_value: float = 1.0

    @property
    def models(self) -> set[str]:
        return set(self.detections["model"].dropna())

    @property
    def projects(self) -> set[str]:
        return set(self.detections["project"].dropna())

    @property
    def event_ids(self) -> list[str]:
        return self.detections["event_id"].tolist()

    def top(self, kind: str) -> IndicatorStat | None:
        chosen = [i for i in self.indicators if i.kind == kind]
        return max(chosen, key=lambda i: (i.coverage, i.lift)) if chosen else None

    def describe(self) -> str:
        hot = ", ".join(f"{i.kind} {i.value}" for i in self.indicators if i.hot)
        threats = self.detections["threat_type"].value_counts()
        return (
            f"{len(self.detections)} detections ({', '.join(f'{k} {v}' for k, v in threats.items())}) sharing {hot},"
            f" across {len(self.models)} model(s), {self.start:%H:%M}-{self.end:%H:%M} UTC"
        )


def _rates(history: pd.DataFrame, history_hours: float) -> dict[str, pd.Series]:
    """Detections an hour carrying each value in the look-back."""
    return {
        kind: history[kind].dropna().value_counts() / max(history_hours, 1.0)
        for kind in ATTRIBUTES
        if kind in history
    }


def security_components(
    security: pd.DataFrame,
    span_start: pd.Timestamp,
    span_end: pd.Timestamp,
    history_start: pd.Timestamp,
    settings: CorrelationSettings,
) -> list[SecurityComponent]:
    """The security incidents of the span (see the module docstring)."""
    if security is None or security.empty:
        return []
    history = security[(security["event_time"] >= history_start) & (security["event_time"] < span_start)]
    window = security[(security["event_time"] >= span_start) & (security["event_time"] < span_end)]
    window = window.sort_values("event_time", kind="stable").reset_index(drop=True)
    if window.empty:
        return []
    history_hours = (span_start - history_start) / pd.Timedelta(hours=1)
    if len(history) == 0 or history_hours < 24:
        return []  # no usual rates to judge by
    rates = _rates(history, history_hours)
    # A value never seen in the look-back: half a detection over it.
    floor_rate = 0.5 / history_hours
    graph = nx.Graph()
    graph.add_nodes_from(window["event_id"])
    # Each value's detections in sessions (no more than the link gap apart); a session is tested
    # against the value's usual rate over its own hours.
    sessions: list[tuple[str, str, pd.Index, float]] = []  # kind, value, rows, expected
    for kind in INDICATORS:
        if kind not in window:
            continue
        for value, rows in window.groupby(kind, sort=True).groups.items():
            if len(rows) < settings.min_component_detections:
                continue
            times = window.loc[rows, "event_time"]
            gaps = np.diff(times.to_numpy(dtype="datetime64[ns]")).astype(np.int64) / 3.6e12
            session = np.cumsum(np.r_[0, gaps > settings.security_link_gap_hours])
            rate = float(rates[kind].get(value, floor_rate))
            if rate * history_hours > settings.max_connector_share * max(len(history), 1):
                continue  # a common value (a big project's key) describes detections, it does not join them
            for s in np.unique(session):
                chosen = rows[session == s]
                if len(chosen) < settings.min_component_detections:
                    continue
                hours = max((times[chosen].max() - times[chosen].min()) / pd.Timedelta(hours=1), 1.0)
                sessions.append((kind, f"{value}#{s}", chosen, rate * hours))
    bound = settings.indicator_alpha / max(len(sessions), 1)
    for kind, value, rows, expected in sessions:
        count = len(rows)
        p = float(stats.poisson.sf(count - 1, max(expected, 1e-9)))
        if p >= bound or count < settings.min_indicator_lift * expected:
            continue
        for row in rows:
            graph.add_edge(window.at[row, "event_id"], f"{kind}:{value}")
    components = []
    by_id = window.set_index("event_id", drop=False)
    for nodes in nx.connected_components(graph):
        ids = [n for n in nodes if n in by_id.index and not any(n.startswith(f"{k}:") for k in INDICATORS)]
        if len(ids) < settings.min_component_detections:
            continue
        part = by_id.loc[ids].sort_values("event_time", kind="stable").reset_index(drop=True)
        start, end = part["event_time"].min(), part["event_time"].max()
        hours = max((end - start) / pd.Timedelta(hours=1), 1.0)
        hot_values = {n.split("#")[0] for n in nodes if any(n.startswith(f"{k}:") for k in INDICATORS)}
        stats_ = []
        for kind in ATTRIBUTES:
            if kind not in part:
                continue
            for value, count in part[kind].dropna().value_counts().items():
                rate = float(rates.get(kind, pd.Series(dtype=float)).get(value, floor_rate))
                expected = rate * hours
                stats_.append(
                    IndicatorStat(
                        kind=kind, value=str(value), count=int(count), coverage=float(count) / len(part),
                        expected=expected, lift=float(count) / max(expected, 1e-9),
                        p_value=float(stats.poisson.sf(count - 1, max(expected, 1e-9))),
                        hot=f"{kind}:{value}" in hot_values,
                    )
                )  # fmt: skip
        p_component = min((s.p_value for s in stats_ if s.hot), default=1.0)
        components.append(
            SecurityComponent(
                start=start.floor("h"), end=end.floor("h") + pd.Timedelta(hours=1), detections=part,
                indicators=sorted(stats_, key=lambda s: (-s.hot, -s.coverage, -s.lift)), p_value=p_component,
            )
        )  # fmt: skip
    components.sort(key=lambda c: c.start)
    return components
