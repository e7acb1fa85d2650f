"""Hourly series computed from the simulated requests and detections, without writing events.

They are what the hourly rollups compute from the stored events (the same rows, the same
normalised values):
- requests: latency_ms events (one per request attempt, retries included)
- errors: those whose dimensions.status is not "ok" (error or timeout); error_rate = errors /
  requests, 0 in an hour without requests
- latency_avg_ms, latency_p95_ms: mean and linear-interpolation 95th percentile (numpy's default,
  SQL quantile_cont) of latency_ms in milliseconds; NaN in an hour without requests
- tokens_input, tokens_output: sums of those metrics; tokens_total their sum
- spend_usd: sum of the cost events' amounts in USD (amount x FX rate)
- threats: security events
Hours are UTC hour buckets of the event time; the grid is regular (every hour of the window for
every combination of `by` values seen in the window, zeros where nothing happened).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from hub_pipelines.generator.catalogue import (
    ENVIRONMENTS,
    REGIONS,
    SECURITY_SEVERITIES,
    STATUSES,
    THREATS,
)
from hub_pipelines.generator.config import HOUR_MS
from hub_pipelines.generator.simulation import STATUS_OK, Simulation

HOURLY_COLUMNS = (
    "requests",
    "errors",
    "error_rate",
    "latency_avg_ms",
    "latency_p95_ms",
    "tokens_input",
    "tokens_output",
    "tokens_total",
    "spend_usd",
)
P95 = 0.95


def _request_dimensions(sim: Simulation) -> dict[str, Callable[[], tuple[np.ndarray, list[str]]]]:
    """Dimension name -> (per-request code, label of each code)."""
    cat, r = sim.catalogue, sim.requests
    return {
        "tenant_id": lambda: (r.tenant, [t.tenant_id for t in cat.tenants]),
        "model": lambda: (r.model, [m.name for m in cat.models]),
        "provider": lambda: (r.model, [m.provider for m in cat.models]),
        "project": lambda: (r.project, [p.name for p in cat.projects]),
        "team": lambda: (r.project, [p.team for p in cat.projects]),
        "region": lambda: (r.region, list(REGIONS)),
        "environment": lambda: (r.environment, list(ENVIRONMENTS)),
        "status": lambda: (r.status, list(STATUSES)),
    }


def _security_dimensions(sim: Simulation) -> dict[str, Callable[[], tuple[np.ndarray, list[str]]]]:
    cat, s = sim.catalogue, sim.security
    return {
        "tenant_id": lambda: (s.tenant, [t.tenant_id for t in cat.tenants]),
        "threat_type": lambda: (s.threat, [name for name, _, _ in THREATS]),
        "severity": lambda: (s.severity, list(SECURITY_SEVERITIES)),
        "model": lambda: (s.model, [m.name for m in cat.models]),
        "project": lambda: (s.project, [p.name for p in cat.projects]),
    }


class _Grouping:
    """Rows grouped by (hour, *by): a group number per row and the labels of each combination.

    Combinations are those seen in the rows plus `always` (series that exist even when empty),
    ordered by their labels; groups are combination-major, then hour (the result's row order).
    """

    def __init__(
        self,
        hour: np.ndarray,
        by: Sequence[str],
        dimensions: dict,
        hours: int,
        always: Sequence[tuple[str, ...]] = (),
    ) -> None:
        unknown = [name for name in by if name not in dimensions]
        if unknown:
            raise ValueError(f"cannot group by {unknown}; choose from {sorted(dimensions)}")
        combined = np.zeros(len(hour), dtype=np.int64)
        label_sets: list[list[str]] = []
        for name in by:
            codes, labels = dimensions[name]()
            # Codes with the same label (a project name used by two tenants) are one value.
            distinct = sorted(set(labels))
            remap = np.array([distinct.index(label) for label in labels], dtype=np.int64)
            combined = combined * len(distinct) + remap[codes]
            label_sets.append(distinct)
        # The codes are small integers: finding the ones present by counting is O(n), where
        # np.unique would sort tens of millions of rows.
        present = np.bincount(combined, minlength=1) > 0 if len(combined) else np.zeros(1, dtype=bool)
        seen = np.flatnonzero(present)
        lookup = np.zeros(len(present), dtype=np.int64)
        lookup[seen] = np.arange(len(seen))
        inverse = lookup[combined]
        decoded: list[tuple[str, ...]] = []
        for value in seen.tolist():
            parts = []
            for distinct in reversed(label_sets):
                value, code = divmod(value, len(distinct))
                parts.append(distinct[code])
            decoded.append(tuple(reversed(parts)))
        self.combos = sorted(set(decoded) | set(always))
        rank_of = {combo: i for i, combo in enumerate(self.combos)}
        seen_rank = np.array([rank_of[c] for c in decoded], dtype=np.int64)
        self.hours = hours
        self.group = seen_rank[inverse] * hours + hour if len(hour) else np.zeros(0, dtype=np.int64)
        self.size = len(self.combos) * hours

    def frame(self, start_ms: int, by: Sequence[str], columns: dict[str, np.ndarray]) -> pd.DataFrame:
        hours = np.tile(np.arange(self.hours, dtype=np.int64), len(self.combos))
        data: dict[str, object] = {"ts": pd.to_datetime(start_ms + hours * HOUR_MS, unit="ms", utc=True)}
        for position, name in enumerate(by):
            data[name] = np.repeat(np.array([c[position] for c in self.combos], dtype=object), self.hours)
        data.update(columns)
        return pd.DataFrame(data)


def _group_runs(group: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """An order of the rows in which each group's rows are contiguous (None: as they are), and
    each group's first row in that order. Rows come from the simulation in (hour, tenant, model) order, so for the common
    groupings every group already is one run and nothing is sorted."""
    ends = np.cumsum(counts)
    starts = ends - counts
    if len(group) == 0:
        return None, starts
    boundaries = np.flatnonzero(group[1:] != group[:-1]) + 1
    if len(boundaries) + 1 == int(np.count_nonzero(counts)):
        # One run per group: the run of group g starts where g is first seen.
        run_starts = np.concatenate(([0], boundaries))
        starts = np.zeros(len(counts), dtype=np.int64)
        starts[group[run_starts]] = run_starts
        return None, starts
    if group.max() < 2**32:
        # Two stable 16-bit passes (numpy radix-sorts 16-bit keys): far faster than a comparison
        # sort of 64-bit keys on tens of millions of rows.
        low = np.argsort((group & 0xFFFF).astype(np.uint16), kind="stable")
        return low[np.argsort((group[low] >> 16).astype(np.uint16), kind="stable")], starts
    return np.argsort(group, kind="stable"), starts


def _p95(values: np.ndarray, group: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Linear-interpolation 95th percentile per group (NaN for empty groups), as numpy.quantile."""
    order, starts = _group_runs(group, counts)
    grouped = values if order is None else values[order]
    occupied = np.flatnonzero(counts)
    n = counts[occupied]
    # numpy's virtual index and interpolation for method="linear", to the last bit.
    virtual = (n - 1) * P95
    below = np.floor(virtual).astype(np.int64)
    gamma = virtual - below
    above = np.minimum(below + 1, n - 1)
    low_values = np.empty(len(occupied))
    high_values = np.empty(len(occupied))
    # One partial sort per group: Python-level, but groups are few (hours x series) and each is
    # a C call, so this is a fraction of a second for tens of millions of requests.
    for i, (start, size, lo, hi) in enumerate(
        zip(starts[occupied].tolist(), n.tolist(), below.tolist(), above.tolist(), strict=True)
    ):
        chunk = grouped[start : start + size]
        if hi == lo:
            low_values[i] = high_values[i] = np.partition(chunk, lo)[lo]
        else:
            part = np.partition(chunk, (lo, hi))
            low_values[i], high_values[i] = part[lo], part[hi]
    diff = high_values - low_values
    interpolated = np.where(gamma >= 0.5, high_values - diff * (1 - gamma), low_values + diff * gamma)
    out = np.full(len(counts), np.nan)
    out[occupied] = interpolated
    return out


def hourly_series(sim: Simulation, by: Sequence[str] = ("tenant_id", "model")) -> pd.DataFrame:
    """One row per (ts, *by) on a regular hourly grid: ts, *by, requests, errors, error_rate,
    latency_avg_ms, latency_p95_ms, tokens_input, tokens_output, tokens_total, spend_usd.

    `by` may name tenant_id, model, provider, project, team, region, environment and status. Rows
    are ordered by the `by` values, then by ts.
    """
    by = tuple(by)
    r = sim.requests
    always: list[tuple[str, ...]] = []
    if by in (("tenant_id",), ("tenant_id", "model")):
        # Every series the estate has, even one that saw no request in the window.
        cat = sim.catalogue
        always = [(t.tenant_id, cat.models[m].name)[: len(by)] for t in cat.tenants for m in t.models]
    grouping = _Grouping(r.hour, by, _request_dimensions(sim), sim.hours, always)
    g, size = grouping.group, grouping.size
    requests = np.bincount(g, minlength=size)
    errors = np.bincount(g, weights=(r.status != STATUS_OK), minlength=size).astype(np.int64)
    latency_sum = np.bincount(g, weights=r.latency_ms, minlength=size)
    tokens_input = np.bincount(g, weights=r.tokens_input, minlength=size).astype(np.int64)
    tokens_output = np.bincount(g, weights=r.tokens_output, minlength=size).astype(np.int64)
    spend = np.bincount(g, weights=r.cost_usd, minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        latency_avg = np.where(requests > 0, latency_sum / requests, np.nan)
        error_rate = np.where(requests > 0, errors / np.maximum(requests, 1), 0.0)
    columns = {
        "requests": requests.astype(np.int64),
        "errors": errors,
        "error_rate": error_rate,
        "latency_avg_ms": latency_avg,
        "latency_p95_ms": _p95(r.latency_ms, g, requests),
        "tokens_input": tokens_input,
        "tokens_output": tokens_output,
        "tokens_total": tokens_input + tokens_output,
        "spend_usd": spend,
    }
    return grouping.frame(sim.config.start_ms, by, columns)


def security_series(sim: Simulation, by: Sequence[str] = ("tenant_id",)) -> pd.DataFrame:
    """One row per (ts, *by) on a regular hourly grid: ts, *by, threats (security detections).

    `by` may name tenant_id, threat_type, severity, model and project. Every tenant has a series
    when grouping by tenant_id alone, even one without a single detection.
    """
    by = tuple(by)
    s = sim.security
    always = [(t.tenant_id,) for t in sim.catalogue.tenants] if by == ("tenant_id",) else []
    grouping = _Grouping(s.hour, by, _security_dimensions(sim), sim.hours, always)
    threats = np.bincount(grouping.group, minlength=grouping.size).astype(np.int64)
    return grouping.frame(sim.config.start_ms, by, {"threats": threats})
