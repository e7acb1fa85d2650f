"""A simulation's events as the warehouse stores them, without writing or ingesting batch files.

`events_frame` gives one row per event of the request, security and policy sources with the
normalised columns of the `events` table that analysis reads (ids, UTC time, tenant, source and type,
correlation id, severity, metric name and value, model, project, team, status, asset id, USD cost,
threat type, policy id, category and outcome) plus the security indicators (ip, user_id,
api_key_id) that the table keeps in its payload. Event and correlation ids are those the batch
files carry, so rows can be matched with ground truth and with ingested data. Governance events are
not included; registry metadata comes as `asset_catalog_frame`, the latest record per asset, as the
`asset_catalog` table holds it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hub_pipelines.generator.catalogue import POLICIES, SECURITY_SEVERITIES, STATUSES, THREATS
from hub_pipelines.generator.ids import hex_ids, uuids
from hub_pipelines.generator.render import NS_CALL, NS_REQUEST_EVENT
from hub_pipelines.generator.simulation import Simulation

EVENT_COLUMNS = (
    "event_id",
    "event_time",
    "tenant_id",
    "source_module",
    "event_type",
    "correlation_id",
    "severity",
    "metric_name",
    "metric_value",
    "model",
    "project",
    "team",
    "status",
    "asset_id",
    "cost_usd",
    "threat_type",
    "policy_id",
    "policy_category",
    "outcome",
    "ip",
    "user_id",
    "api_key_id",
)


def _names(codes: np.ndarray, names: list[str]) -> np.ndarray:
    return np.asarray(names, dtype=object)[np.asarray(codes, dtype=np.int64)]


def _times(ts_ms: np.ndarray) -> pd.DatetimeIndex:
    return pd.to_datetime(np.asarray(ts_ms, dtype=np.int64), unit="ms", utc=True)


def events_frame(sim: Simulation, tenants: list[str] | None = None) -> pd.DataFrame:
    """The simulation's request, cost, security and policy events (all tenants, or `tenants`),
    ordered by time, with the columns of `EVENT_COLUMNS`."""
    cat, seed = sim.catalogue, sim.config.seed
    tenant_names = [t.tenant_id for t in cat.tenants]
    keep = (
        None
        if tenants is None
        else np.isin(np.arange(len(tenant_names)), [tenant_names.index(t) for t in tenants])
    )
    model_names = [m.name for m in cat.models]
    project_names = [p.name for p in cat.projects]
    team_names = [p.team for p in cat.projects]
    frames = []

    r = sim.requests
    rows = np.arange(len(r)) if keep is None else np.flatnonzero(keep[r.tenant])
    if len(rows):
        corr = np.asarray(hex_ids(seed, NS_CALL, r.call[rows], "corr-"), dtype=object)
        common = {
            "tenant_id": _names(r.tenant[rows], tenant_names),
            "correlation_id": corr,
            "model": _names(r.model[rows], model_names),
            "project": _names(r.project[rows], project_names),
            "team": _names(r.project[rows], team_names),
        }
        values = {
            "latency_ms": r.latency_ms[rows],
            "tokens_input": r.tokens_input[rows].astype(float),
            "tokens_output": r.tokens_output[rows].astype(float),
        }
        status = _names(r.status[rows], list(STATUSES))
        for k, metric in enumerate(values):
            frames.append(
                pd.DataFrame(
                    {
                        "event_id": uuids(seed, NS_REQUEST_EVENT, rows.astype(np.int64) * 4 + k),
                        "event_time": _times(r.ts_ms[rows]),
                        "source_module": "llm-observatory",
                        "event_type": "telemetry",
                        **common,
                        "metric_name": metric,
                        "metric_value": values[metric],
                        "status": status,
                    }
                )
            )
        frames.append(
            pd.DataFrame(
                {
                    "event_id": uuids(seed, NS_REQUEST_EVENT, rows.astype(np.int64) * 4 + 3),
                    "event_time": _times(r.ts_ms[rows]),
                    "source_module": "llm-costops",
                    "event_type": "cost",
                    **common,
                    "cost_usd": r.cost_usd[rows],
                }
            )
        )

    s = sim.security
    rows = np.arange(len(s)) if keep is None else np.flatnonzero(keep[s.tenant])
    if len(rows):
        ip = s.ip[rows].astype(np.int64)
        corr = None
        if s.call is not None:
            calls = s.call[rows]
            linked = hex_ids(seed, NS_CALL, np.maximum(calls, 0), "corr-")
            corr = np.asarray(
                [c if k >= 0 else None for c, k in zip(linked, calls.tolist(), strict=True)], dtype=object
            )
        keys = np.asarray([p.api_key_id for p in cat.projects], dtype=object)
        frames.append(
            pd.DataFrame(
                {
                    "event_id": uuids(seed, "security", rows),
                    "event_time": _times(s.ts_ms[rows]),
                    "tenant_id": _names(s.tenant[rows], tenant_names),
                    "source_module": "llm-sentinel",
                    "event_type": "security",
                    "correlation_id": corr,
                    "severity": _names(s.severity[rows], list(SECURITY_SEVERITIES)),
                    "model": _names(s.model[rows], model_names),
                    "project": _names(s.project[rows], project_names),
                    "threat_type": _names(s.threat[rows], [t for t, _, _ in THREATS]),
                    "ip": [f"{a >> 24}.{a >> 16 & 255}.{a >> 8 & 255}.{a & 255}" for a in ip.tolist()],
                    "user_id": [f"user-{u:04d}" for u in s.user[rows].tolist()],
                    "api_key_id": keys[s.project[rows].astype(np.int64)],
                }
            )
        )

    p = sim.policy
    request = p.request
    rows = np.arange(len(p)) if keep is None else np.flatnonzero(keep[r.tenant[request]])
    if len(rows):
        q = request[rows]
        model_assets = np.asarray(
            [[f"{t.tenant_id}:model:{m.name}" for m in cat.models] for t in cat.tenants], dtype=object
        )
        frames.append(
            pd.DataFrame(
                {
                    "event_id": uuids(seed, "policy", rows),
                    "event_time": _times(p.ts_ms[rows]),
                    "tenant_id": _names(r.tenant[q], tenant_names),
                    "source_module": "llm-policy-engine",
                    "event_type": "policy",
                    "correlation_id": hex_ids(seed, NS_CALL, r.call[q], "corr-"),
                    "model": _names(r.model[q], model_names),
                    "project": _names(r.project[q], project_names),
                    "team": _names(r.project[q], team_names),
                    "asset_id": model_assets[r.tenant[q].astype(np.int64), r.model[q].astype(np.int64)],
                    "policy_id": _names(p.rule[rows], [rule[0] for rule in POLICIES]),
                    "policy_category": _names(p.rule[rows], [rule[2] for rule in POLICIES]),
                    "outcome": np.where(p.failed[rows], "fail", "pass").astype(object),
                }
            )
        )
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in EVENT_COLUMNS})
    out = pd.concat(frames, ignore_index=True)
    for column in EVENT_COLUMNS:
        if column not in out:
            out[column] = None
    out = out[list(EVENT_COLUMNS)]
    return out.sort_values("event_time", kind="stable", ignore_index=True)


def asset_catalog_frame(sim: Simulation, tenants: list[str] | None = None) -> pd.DataFrame:
    """The latest registry record per asset: tenant_id, asset_id, asset_name, asset_type, version,
    owner, depends_on (a list), updated_at."""
    tenant_names = [t.tenant_id for t in sim.catalogue.tenants]
    latest: dict[tuple[int, str], dict] = {}
    for record in sim.registry:  # in time order: the last one wins
        latest[(record["tenant"], record["asset_id"])] = record
    rows = [
        {
            "tenant_id": tenant_names[t],
            "asset_id": asset_id,
            "asset_name": e["asset_name"],
            "asset_type": e["asset_type"],
            "version": e["version"],
            "owner": e["owner"],
            "depends_on": list(e["depends_on"]),
            "updated_at": pd.Timestamp(e["ts_ms"], unit="ms", tz="UTC"),
        }
        for (t, asset_id), e in sorted(latest.items())
        if tenants is None or tenant_names[t] in tenants
    ]
    return pd.DataFrame(
        rows,
        columns=[
            "tenant_id",
            "asset_id",
            "asset_name",
            "asset_type",
            "version",
            "owner",
            "depends_on",
            "updated_at",
        ],
    )
