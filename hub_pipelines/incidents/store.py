"""Incidents in the warehouse: written per day partition, read back for the CLI and the reports."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import pandas as pd
import pyarrow as pa
import sqlalchemy as sa

from hub_ml.correlation import ENGINE_VERSION, Incident
from hub_pipelines.warehouse import tables
from hub_pipelines.warehouse.store import Warehouse

MEMBER_COLUMNS = (
    "incident_id",
    "member_type",
    "member_id",
    "tenant_id",
    "role",
    "correlation_kind",
    "source_module",
    "ts",
    "detail",
)


def _json(value: Any) -> str:
    return orjson.dumps(value, default=_default, option=orjson.OPT_NON_STR_KEYS).decode()


def _default(value: Any):
    if isinstance(value, pd.Timestamp | datetime):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return sorted(value) if isinstance(value, set | frozenset) else list(value)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _utc(moment) -> datetime:
    return pd.Timestamp(moment).tz_convert("UTC").to_pydatetime() if pd.Timestamp(moment).tzinfo else pd.Timestamp(
        moment
    ).tz_localize("UTC").to_pydatetime()  # fmt: skip


def incident_row(
    incident: Incident, partition_start: datetime, detected_at: datetime, run_id: str | None
) -> dict:
    top = incident.root_cause
    return {
        "incident_id": incident.incident_id,
        "tenant_id": incident.tenant_id,
        "start_time": _utc(incident.start),
        "end_time": _utc(incident.end),
        "partition_start": partition_start,
        "kind": incident.kind,
        "title": incident.title,
        "summary": incident.summary,
        "severity": incident.severity,
        "strength": float(incident.strength),
        "confidence": float(incident.confidence),
        "impact_performance": float(incident.impact["performance"]),
        "impact_cost": float(incident.impact["cost"]),
        "impact_security": float(incident.impact["security"]),
        "impact_business": float(incident.impact["business"]),
        "cost_usd": float(incident.impact.get("cost_usd", 0.0)),
        "impact": _json(incident.impact),
        "modules": _json(incident.modules),
        "correlation_kinds": _json(incident.correlation_kinds),
        "root_cause": top.cause if top else None,
        "root_cause_subject": _json(top.subject) if top else None,
        "root_cause_score": float(top.score) if top else None,
        "hypotheses": _json([h.as_dict() for h in incident.hypotheses]),
        "correlations": _json([c.as_dict() for c in incident.correlations]),
        "event_count": int(incident.event_count),
        "anomaly_count": int(incident.anomaly_count),
        "engine_version": ENGINE_VERSION,
        "detected_at": detected_at,
        "run_id": run_id,
    }


def _members_table(incidents: Sequence[Incident]) -> pa.Table:
    rows: dict[str, list] = {c: [] for c in MEMBER_COLUMNS}
    for incident in incidents:
        for m in incident.members:
            rows["incident_id"].append(incident.incident_id)
            rows["member_type"].append(m.member_type)
            rows["member_id"].append(str(m.member_id)[:256])
            rows["tenant_id"].append(incident.tenant_id)
            rows["role"].append(m.role)
            rows["correlation_kind"].append(m.correlation_kind)
            rows["source_module"].append(m.source_module)
            rows["ts"].append(_utc(m.ts) if m.ts is not None else None)
            rows["detail"].append(_json(m.detail) if m.detail else None)
    schema = pa.schema(
        [(c, pa.timestamp("us", tz="UTC") if c == "ts" else pa.string()) for c in MEMBER_COLUMNS]
    )
    return pa.Table.from_pydict(rows, schema=schema)


@dataclass(frozen=True)
class Written:
    incidents: int
    members: int
    replaced: int


def write_incidents(
    warehouse: Warehouse,
    incidents: Sequence[Incident],
    partition_start: datetime,
    tenants: Sequence[str],
    run_id: str | None = None,
    detected_at: datetime | None = None,
) -> Written:
    """Replace the incidents of a day partition for `tenants` with `incidents`, in one transaction."""
    detected_at = detected_at or datetime.now(UTC)
    i, m = tables.incidents, tables.incident_members
    rows = [incident_row(x, partition_start, detected_at, run_id) for x in incidents]
    members = _members_table(incidents)
    with warehouse.begin() as conn:
        old = sa.select(i.c.incident_id).where(
            i.c.partition_start == partition_start, i.c.tenant_id.in_(list(tenants))
        )
        ids = [r[0] for r in conn.execute(old)] + [r["incident_id"] for r in rows]
        replaced = 0
        if ids:
            conn.execute(sa.delete(m).where(m.c.incident_id.in_(ids)))
            replaced = conn.execute(sa.delete(i).where(i.c.incident_id.in_(ids))).rowcount or 0
        if rows:
            conn.execute(sa.insert(i), rows)
        if members.num_rows:
            warehouse.stage(conn, "staged_incident_members", members)
            columns = ", ".join(MEMBER_COLUMNS)
            conn.exec_driver_sql(
                f"INSERT INTO incident_members ({columns}) SELECT {columns} FROM staged_incident_members"
            )
            warehouse.unstage(conn, "staged_incident_members")
    return Written(len(rows), members.num_rows, int(replaced))


def _loads(value):
    return orjson.loads(value) if value else None


def read_incidents(
    warehouse: Warehouse,
    start: datetime | None = None,
    end: datetime | None = None,
    tenant_id: str | None = None,
    limit: int | None = None,
) -> list[dict]:
    """Incidents that started in [start, end) (of one tenant), newest first, JSON columns parsed."""
    i = tables.incidents
    query = sa.select(i)
    if start is not None:
        query = query.where(i.c.start_time >= start)
    if end is not None:
        query = query.where(i.c.start_time < end)
    if tenant_id:
        query = query.where(i.c.tenant_id == tenant_id)
    query = query.order_by(i.c.start_time.desc(), i.c.incident_id)
    if limit:
        query = query.limit(limit)
    with warehouse.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(query)]
    for row in rows:
        for column in (
            "impact",
            "modules",
            "correlation_kinds",
            "root_cause_subject",
            "hypotheses",
            "correlations",
        ):
            row[column] = _loads(row[column])
        for column in ("start_time", "end_time", "partition_start", "detected_at"):
            if row[column] is not None:
                row[column] = _utc(row[column])
        row["start"], row["end"] = row["start_time"], row["end_time"]
    return rows


def read_members(warehouse: Warehouse, incident_id: str, member_type: str | None = None) -> pd.DataFrame:
    m = tables.incident_members
    query = sa.select(m).where(m.c.incident_id == incident_id)
    if member_type:
        query = query.where(m.c.member_type == member_type)
    with warehouse.connect() as conn:
        result = conn.execute(query.order_by(m.c.member_type, m.c.member_id))
        return pd.DataFrame(result.fetchall(), columns=list(result.keys()))
