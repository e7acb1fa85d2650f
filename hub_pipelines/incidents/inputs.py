"""What the correlation engine reads, loaded from the warehouse for one tenant and one window.

Three reads per tenant, all parameterised and the same on DuckDB and PostgreSQL:
- hourly cells over the look-back and the window, aggregated by the database (the engine's
  baselines need a week of hours, not a week of events);
- the detail of the window and its margins: request attempts (latency events), costs, security
  detections and policy evaluations, with the security indicators taken out of the payload;
- the security detections of the look-back (which IPs, users and keys are usual);
plus the tenant's asset catalog and its rows of the anomalies table.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import orjson
import pandas as pd
import sqlalchemy as sa

from hub_ml.correlation import CELL_COLUMNS, CorrelationInput, CorrelationSettings
from hub_ml.correlation.schema import EVENT_COLUMNS
from hub_pipelines.warehouse import tables
from hub_pipelines.warehouse.store import Warehouse

DETAIL_COLUMNS = [c for c in EVENT_COLUMNS if c not in ("ip", "user_id", "api_key_id")]

# The hourly cells (hub_ml.correlation.schema.CELL_COLUMNS); hub_ml.correlation.cells_from_events
# computes the same from a frame of events.
CELLS_SQL = sa.text(
    """
    SELECT date_trunc('hour', event_time) AS hour,
           CASE WHEN event_type = 'telemetry' AND metric_name = 'latency_ms' THEN 'attempt'
                WHEN event_type = 'telemetry' THEN 'tokens'
                WHEN event_type = 'cost' THEN 'cost'
                WHEN event_type = 'security' THEN 'detection'
                ELSE 'evaluation' END AS kind,
           model,
           project,
           CASE WHEN event_type = 'security' THEN threat_type
                WHEN event_type = 'policy' THEN policy_category END AS label,
           count(*) AS n,
           sum(CASE WHEN (event_type = 'telemetry' AND metric_name = 'latency_ms' AND coalesce(status, 'ok') <> 'ok')
                      OR (event_type = 'policy' AND outcome = 'fail') THEN 1 ELSE 0 END) AS n_failed,
           count(DISTINCT correlation_id) AS n_calls,
           coalesce(sum(CASE WHEN event_type = 'cost' THEN cost_usd
                             WHEN event_type = 'telemetry' THEN metric_value END), 0) AS value_sum,
           coalesce(sum(CASE WHEN event_type = 'telemetry' AND metric_name = 'latency_ms'
                             THEN ln(greatest(metric_value, 1.0)) END), 0) AS log_sum
    FROM events
    WHERE tenant_id = :tenant AND event_time >= :start AND event_time < :end
      AND (event_type IN ('cost', 'security', 'policy')
           OR (event_type = 'telemetry' AND metric_name IN ('latency_ms', 'tokens_input', 'tokens_output')))
    GROUP BY 1, 2, 3, 4, 5
    """
)


def tenants_in(warehouse: Warehouse, start: datetime, end: datetime) -> list[str]:
    """Tenants with events in [start, end)."""
    e = tables.events
    query = sa.select(e.c.tenant_id).where(e.c.event_time >= start, e.c.event_time < end).distinct()
    with warehouse.connect() as conn:
        return sorted(row[0] for row in conn.execute(query) if row[0] is not None)


def _frame(conn, query, columns: list[str]) -> pd.DataFrame:
    result = conn.execute(query)
    frame = pd.DataFrame(result.fetchall(), columns=list(result.keys()))
    if frame.empty:
        frame = pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    return frame


def _with_indicators(frame: pd.DataFrame) -> pd.DataFrame:
    """ip, user_id and api_key_id of security events, from their payload (dropped after)."""
    ips, users, keys = [], [], []
    for payload in frame["payload"].tolist():
        indicators = {}
        if payload:
            try:
                indicators = (orjson.loads(payload) or {}).get("indicators") or {}
            except orjson.JSONDecodeError:
                indicators = {}
        ips.append(indicators.get("ip"))
        users.append(indicators.get("user_id"))
        keys.append(indicators.get("api_key_id"))
    return frame.drop(columns=["payload"]).assign(ip=ips, user_id=users, api_key_id=keys)


def _times(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    if len(frame):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    else:
        frame[column] = pd.Series(dtype="datetime64[ns, UTC]")
    return frame


def load_cells(warehouse: Warehouse, tenant_id: str, start: datetime, end: datetime) -> pd.DataFrame:
    with warehouse.connect() as conn:
        cells = _frame(conn, CELLS_SQL.bindparams(tenant=tenant_id, start=start, end=end), list(CELL_COLUMNS))
    return _times(cells, "hour")


def load_detail(warehouse: Warehouse, tenant_id: str, start: datetime, end: datetime) -> pd.DataFrame:
    """Attempts, costs, detections and evaluations of [start, end) (tokens events are left out:
    the cells carry their sums)."""
    e = tables.events
    payload = sa.case((e.c.event_type == "security", e.c.payload), else_=sa.null()).label("payload")
    query = (
        sa.select(*(e.c[c] for c in DETAIL_COLUMNS), payload)
        .where(
            e.c.tenant_id == tenant_id,
            e.c.event_time >= start,
            e.c.event_time < end,
            sa.or_(
                e.c.event_type.in_(["cost", "security", "policy"]),
                sa.and_(e.c.event_type == "telemetry", e.c.metric_name == "latency_ms"),
            ),
        )
        .order_by(e.c.event_time, e.c.event_id)
    )
    with warehouse.connect() as conn:
        frame = _frame(conn, query, [*DETAIL_COLUMNS, "payload"])
    frame = _with_indicators(frame)
    for column in ("metric_value", "cost_usd"):
        frame[column] = pd.to_numeric(frame[column]).astype(float)
    return _times(frame, "event_time")


def load_security(warehouse: Warehouse, tenant_id: str, start: datetime, end: datetime) -> pd.DataFrame:
    e = tables.events
    columns = ["event_id", "event_time", "severity", "model", "project", "threat_type", "correlation_id"]
    query = (
        sa.select(*(e.c[c] for c in columns), e.c.payload)
        .where(
            e.c.tenant_id == tenant_id,
            e.c.event_type == "security",
            e.c.event_time >= start,
            e.c.event_time < end,
        )
        .order_by(e.c.event_time, e.c.event_id)
    )
    with warehouse.connect() as conn:
        frame = _frame(conn, query, [*columns, "payload"])
    return _times(_with_indicators(frame), "event_time")


def load_assets(warehouse: Warehouse, tenant_id: str) -> pd.DataFrame:
    a = tables.asset_catalog
    query = sa.select(a).where(a.c.tenant_id == tenant_id).order_by(a.c.asset_id)
    with warehouse.connect() as conn:
        frame = _frame(conn, query, [c.name for c in a.columns])
    frame["depends_on"] = [orjson.loads(d) if d else [] for d in frame["depends_on"].tolist()]
    return _times(frame, "updated_at")


def load_anomalies(warehouse: Warehouse, tenant_id: str, start: datetime, end: datetime) -> pd.DataFrame:
    a = tables.anomalies
    query = (
        sa.select(a)
        .where(a.c.tenant_id == tenant_id, a.c.ts >= start, a.c.ts < end)
        .order_by(a.c.series_key, a.c.ts)
    )
    with warehouse.connect() as conn:
        frame = _frame(conn, query, [c.name for c in a.columns])
    return _times(frame, "ts")


def load_input(
    warehouse: Warehouse,
    tenant_id: str,
    start: datetime,
    end: datetime,
    settings: CorrelationSettings | None = None,
) -> CorrelationInput:
    """Everything `hub_ml.correlation.correlate` needs for a tenant's window [start, end)."""
    settings = settings or CorrelationSettings()
    margin = timedelta(hours=settings.margin_hours)
    history_start = start - margin - timedelta(days=settings.lookback_days)
    return CorrelationInput(
        tenant_id=tenant_id,
        start=pd.Timestamp(start),
        end=pd.Timestamp(end),
        events=load_detail(warehouse, tenant_id, start - margin, end + margin),
        cells=load_cells(warehouse, tenant_id, history_start, end + margin),
        security=load_security(warehouse, tenant_id, history_start, end + margin),
        anomalies=load_anomalies(warehouse, tenant_id, start - margin, end + margin),
        assets=load_assets(warehouse, tenant_id),
    )
