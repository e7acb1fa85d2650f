"""Causal chains, recurring patterns and the cost of failed and retried requests.

A causal chain is the ordered run of events that share a correlation id, each within
``chain_gap_seconds`` of the one before: the policy evaluation before a request, its attempts
(first and retries) with their status, its cost, the security detections raised on it. Chains
with something wrong in them (a failed attempt, a denied evaluation, a detection) are kept.

Patterns are recurring sequences of chain steps: every run of three consecutive coarse steps
(``error``, ``timeout``, ``ok``, ``retry``, ``deny:<category>``, ``detect:<threat>``) is counted per
hour, and a sequence that recurs in an hour far more often than in the analysed span's typical
hour (Poisson tail, Bonferroni over the sequences seen) is a pattern.

Cost impact: each cost event is joined to its attempt (same correlation id and time); the cost of
attempts that failed is wasted, and so is the cost of retries beyond the first attempt's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from hub_ml.correlation.schema import CorrelationSettings


@dataclass
class ChainAnalysis:
    """The detail of a span, joined up: one row per attempt and one per kept chain."""

    attempts: pd.DataFrame  # event_id, event_time, correlation_id, chain_id, attempt, status, model, project, cost_usd, cost_event_id, wasted_usd
    chains: pd.DataFrame  # chain_id, correlation_id, start, end, model, project, steps, coarse, event_ids, retries, failed, wasted_usd, denied, detected
    patterns: list[Pattern] = field(default_factory=list)

    def wasted(self, start: pd.Timestamp, end: pd.Timestamp, models=None, projects=None) -> tuple[float, int]:
        """USD wasted by failed attempts and retries in [start, end) (of the models or projects
        given), and how many attempts that was."""
        a = self.attempts
        if a.empty:
            return 0.0, 0
        mask = (a["event_time"] >= start) & (a["event_time"] < end) & (a["wasted_usd"] > 0)
        mask &= _entity_mask(a, models, projects)
        return float(a.loc[mask, "wasted_usd"].sum()), int(mask.sum())

    def chains_in(self, start: pd.Timestamp, end: pd.Timestamp, models=None, projects=None) -> pd.DataFrame:
        c = self.chains
        if c.empty:
            return c
        mask = (c["start"] >= start) & (c["start"] < end) & _entity_mask(c, models, projects)
        return c.loc[mask]


def _entity_mask(frame: pd.DataFrame, models, projects) -> pd.Series:
    if not models and not projects:
        return pd.Series(True, index=frame.index)
    mask = pd.Series(False, index=frame.index)
    if models:
        mask |= frame["model"].isin(list(models))
    if projects:
        mask |= frame["project"].isin(list(projects))
    return mask


@dataclass
class Pattern:
    """A sequence of steps recurring far more often than usual in some hours."""

    sequence: tuple[str, ...]
    hours: list[pd.Timestamp]
    count: int  # chains with the sequence in those hours
    expected: float  # in a typical hour of the span, times the hours
    p_value: float
    models: set[str]
    projects: set[str]
    chain_ids: list[str]

    @property
    def start(self) -> pd.Timestamp:
        return min(self.hours)

    @property
    def end(self) -> pd.Timestamp:
        return max(self.hours) + pd.Timedelta(hours=1)

    def describe(self) -> str:
        return (
            f"{' -> '.join(self.sequence)} recurred {self.count} times in {len(self.hours)} h"
            f" (usually {self.expected:.1f})"
        )


def _step_labels(ev: pd.DataFrame) -> np.ndarray:
    """A label per event of a chain: the attempt's status, deny:<category>, detect:<threat>,
    allow, cost (empty for events that are not steps)."""
    etype = ev["event_type"].to_numpy(dtype=object)
    metric = ev["metric_name"].to_numpy(dtype=object)
    status = ev["status"].fillna("ok").to_numpy(dtype=object)
    outcome = ev["outcome"].to_numpy(dtype=object)
    category = ev["policy_category"].fillna("policy").to_numpy(dtype=object)
    threat = ev["threat_type"].fillna("threat").to_numpy(dtype=object)
    attempt = (etype == "telemetry") & (metric == "latency_ms")
    deny = (etype == "policy") & (outcome == "fail")
    labels = np.full(len(ev), "", dtype=object)
    labels[attempt] = status[attempt]
    labels[deny] = np.char.add("deny:", category[deny].astype(str)).astype(object)
    labels[(etype == "policy") & ~deny] = "allow"
    security = etype == "security"
    labels[security] = np.char.add("detect:", threat[security].astype(str)).astype(object)
    labels[etype == "cost"] = "cost"
    return labels


def analyse_chains(events: pd.DataFrame, settings: CorrelationSettings) -> ChainAnalysis:
    """Chains, attempts with their costs, and patterns of the events of a span."""
    columns = ["event_id", "event_time", "correlation_id", "event_type", "metric_name", "status", "outcome",
               "policy_category", "threat_type", "model", "project", "cost_usd"]  # fmt: skip
    ev = events.loc[events["correlation_id"].notna(), columns]
    ev = ev[~((ev["event_type"] == "telemetry") & (ev["metric_name"] != "latency_ms"))]
    if ev.empty:
        return ChainAnalysis(_empty_attempts(), _empty_chains())
    ev = ev.sort_values(["correlation_id", "event_time"], kind="stable").reset_index(drop=True)
    label = _step_labels(ev)
    corr = ev["correlation_id"].to_numpy(dtype=object)
    ts = ev["event_time"].to_numpy(dtype="datetime64[ns]")
    new_corr = np.r_[True, corr[1:] != corr[:-1]]
    gap = np.r_[0, np.diff(ts).astype(np.int64)] / 1e9
    new_chain = new_corr | (gap > settings.chain_gap_seconds)
    chain_no = np.cumsum(new_chain) - 1
    ev["chain"] = chain_no
    ev["label"] = label

    # Attempts with their costs: cost events join the attempt of the same call at the same time.
    is_attempt = (ev["event_type"] == "telemetry").to_numpy()
    attempts = ev.loc[
        is_attempt, ["event_id", "event_time", "correlation_id", "chain", "status", "model", "project"]
    ].copy()
    attempts["status"] = attempts["status"].fillna("ok")
    attempts["attempt"] = attempts.groupby("chain").cumcount()
    costs = ev.loc[ev["event_type"] == "cost", ["event_id", "event_time", "correlation_id", "cost_usd"]]
    costs = costs.rename(columns={"event_id": "cost_event_id"}).drop_duplicates(
        ["correlation_id", "event_time"]
    )
    attempts = attempts.merge(costs, on=["correlation_id", "event_time"], how="left")
    attempts["cost_usd"] = attempts["cost_usd"].fillna(0.0)
    failed = attempts["status"] != "ok"
    attempts["wasted_usd"] = np.where(failed, attempts["cost_usd"], 0.0)
    attempts["chain_id"] = attempts["correlation_id"] + "#" + attempts["chain"].astype(str)

    # Chains with something wrong in them.
    steps = ev[ev["label"].isin(["", "cost", "allow"]) == False]  # noqa: E712 - elementwise
    bad = steps["label"].ne("ok")
    interesting = steps.loc[bad, "chain"].unique()
    kept = steps[steps["chain"].isin(interesting)]
    if kept.empty:
        return ChainAnalysis(attempts, _empty_chains())
    # One pass over the kept steps, chain by chain (they are sorted by chain, then time).
    chain_of = kept["chain"].to_numpy()
    labels = kept["label"].to_numpy(dtype=object)
    times = kept["event_time"]
    bounds = np.r_[0, np.flatnonzero(chain_of[1:] != chain_of[:-1]) + 1, len(kept)]
    step_tuples, coarse_tuples = [], []
    for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        steps_of, coarse_of, attempts_seen = [], [], 0
        for label in labels[lo:hi].tolist():
            steps_of.append(label)
            if label in ("ok", "error", "timeout"):
                attempts_seen += 1
                if attempts_seen > 1:
                    coarse_of.append("retry")
            coarse_of.append(label)
        step_tuples.append(tuple(steps_of))
        coarse_tuples.append(tuple(coarse_of))
    first = bounds[:-1]
    chain_ids = chain_of[first]
    in_chain = ev[ev["chain"].isin(interesting)]
    ids_by_chain = in_chain.groupby("chain", sort=True)["event_id"].agg(list)
    chains = pd.DataFrame(
        {
            "correlation_id": kept["correlation_id"].to_numpy(dtype=object)[first],
            "start": times.iloc[first].to_numpy(),
            "end": times.iloc[bounds[1:] - 1].to_numpy(),
            "model": kept["model"].to_numpy(dtype=object)[first],
            "project": kept["project"].to_numpy(dtype=object)[first],
            "steps": step_tuples,
            "coarse": coarse_tuples,
        },
        index=pd.Index(chain_ids, name="chain"),
    )
    chains["start"] = pd.to_datetime(chains["start"], utc=True)
    chains["end"] = pd.to_datetime(chains["end"], utc=True)
    chains["event_ids"] = ids_by_chain.reindex(chains.index)
    waste = attempts.groupby("chain")["wasted_usd"].sum()
    n_attempts = attempts.groupby("chain").size()
    chains["wasted_usd"] = waste.reindex(chains.index).fillna(0.0)
    chains["retries"] = (n_attempts.reindex(chains.index).fillna(1) - 1).clip(lower=0).astype(int)
    chains["failed"] = chains["steps"].map(lambda s: any(x in ("error", "timeout") for x in s))
    chains["denied"] = chains["steps"].map(lambda s: next((x[5:] for x in s if x.startswith("deny:")), None))
    chains["detected"] = chains["steps"].map(
        lambda s: next((x[7:] for x in s if x.startswith("detect:")), None)
    )
    chains.index = chains["correlation_id"] + "#" + chains.index.astype(str)
    chains.index.name = "chain_id"
    chains = chains.reset_index()
    analysis = ChainAnalysis(attempts, chains)
    analysis.patterns = find_patterns(chains, settings)
    return analysis


def find_patterns(chains: pd.DataFrame, settings: CorrelationSettings, length: int = 3) -> list[Pattern]:
    """Sequences of `length` coarse steps recurring far above their usual hourly count."""
    if chains.empty:
        return []
    rows = []
    for chain_id, start, coarse, model, project in zip(
        chains["chain_id"], chains["start"], chains["coarse"], chains["model"], chains["project"], strict=True
    ):
        grams = {tuple(coarse[i : i + length]) for i in range(len(coarse) - length + 1)}
        hour = start.floor("h")
        rows.extend((g, hour, chain_id, model, project) for g in grams)
    if not rows:
        return []
    frame = pd.DataFrame(rows, columns=["sequence", "hour", "chain_id", "model", "project"])
    frame["sequence"] = frame["sequence"].map(" > ".join)  # strings group far faster than tuples
    span_hours = max(1, int((chains["start"].max() - chains["start"].min()) / pd.Timedelta(hours=1)) + 1)
    counts = frame.groupby(["sequence", "hour"]).size()
    n_sequences = counts.index.get_level_values(0).nunique()
    bound = 1e-4 / max(n_sequences * span_hours, 1)
    hot_cells: list[tuple[str, pd.Timestamp]] = []
    found: dict[str, tuple[list, int, float, float]] = {}
    for sequence, per_hour in counts.groupby(level=0, sort=True):
        values = per_hour.to_numpy()
        full = np.zeros(span_hours)
        full[: len(values)] = values  # hours without the sequence count as zero
        usual = max(float(np.median(full)), 0.5)
        p = stats.poisson.sf(values - 1, usual)
        hot = (p < bound) & (values >= 10)
        if not hot.any():
            continue
        hours = [h for h, flag in zip(per_hour.index.get_level_values(1), hot, strict=True) if flag]
        hot_cells += [(sequence, h) for h in hours]
        found[sequence] = (sorted(hours), int(values[hot].sum()), usual * len(hours), float(p[hot].min()))
    if not found:
        return []
    members = frame.merge(pd.DataFrame(hot_cells, columns=["sequence", "hour"]), on=["sequence", "hour"])
    patterns = []
    for sequence, part in members.groupby("sequence", sort=True):
        hours, count, expected, p_min = found[sequence]
        patterns.append(
            Pattern(
                sequence=tuple(sequence.split(" > ")), hours=hours, count=count, expected=expected,
                p_value=min(1.0, p_min * n_sequences * span_hours), models=_top(part["model"]),
                projects=_top(part["project"]), chain_ids=part["chain_id"].tolist(),
            )
        )  # fmt: skip
    return patterns


def _top(values: pd.Series, share: float = 0.2) -> set[str]:
    counts = values.dropna().value_counts()
    if counts.empty:
        return set()
    return set(counts[counts >= share * counts.sum()].index[:3])


def _empty_attempts() -> pd.DataFrame:
    return pd.DataFrame(
        {c: pd.Series(dtype=object) for c in ("event_id", "correlation_id", "chain_id", "status", "model", "project", "cost_event_id")}
        | {"event_time": pd.Series(dtype="datetime64[ns, UTC]"), "attempt": pd.Series(dtype=int),
           "cost_usd": pd.Series(dtype=float), "wasted_usd": pd.Series(dtype=float)}
    )  # fmt: skip


def _empty_chains() -> pd.DataFrame:
    return pd.DataFrame(
        {c: pd.Series(dtype=object) for c in ("chain_id", "correlation_id", "model", "project", "steps", "coarse", "event_ids", "denied", "detected")}
        | {"start": pd.Series(dtype="datetime64[ns, UTC]"), "end": pd.Series(dtype="datetime64[ns, UTC]"),
           "wasted_usd": pd.Series(dtype=float), "retries": pd.Series(dtype=int), "failed": pd.Series(dtype=bool)}
    )  # fmt: skip
