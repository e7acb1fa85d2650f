"""Retention: delete raw events, dead letters and rollups older than their policy (no Dagster).

Defaults: raw events 30 days, dead letters 90 days (kept longer than events so that a rejected
record can still be investigated after its good neighbours are gone; never shorter than the events'
retention), rollups 365 days. A tenant may override any of them. Each table is cleaned in its own
short transaction, and cutoffs fall on UTC midnight; rollup_partitions rows go with the hourly/daily rollups they describe (by the
longest rollup retention of any tenant, since that table is not per tenant).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from hub_pipelines.warehouse.rollups import DAILY_TABLES, HOURLY_TABLES
from hub_pipelines.warehouse.store import Warehouse


@dataclass(frozen=True)
class Retention:
    """Days to keep; None in a tenant override means "as the default"."""

    events_days: int | None = None
    dead_letters_days: int | None = None
    rollups_days: int | None = None


@dataclass
class RetentionPolicy:
    events_days: int = 30
    dead_letters_days: int = 90
    rollups_days: int = 365
    tenants: dict[str, Retention] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("events_days", "dead_letters_days", "rollups_days"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1 day")
        for tenant, override in self.tenants.items():
            for name in ("events_days", "dead_letters_days", "rollups_days"):
                value = getattr(override, name)
                if value is not None and value < 1:
                    raise ValueError(f"{tenant}: {name} must be at least 1 day")

    def days(self, kind: str, tenant: str | None = None) -> int:
        """Effective days of `kind` (events, dead_letters, rollups) for a tenant (None: default)."""
        override = self.tenants.get(tenant) if tenant is not None else None
        value = getattr(override, f"{kind}_days") if override else None
        days = value if value is not None else getattr(self, f"{kind}_days")
        if kind == "dead_letters":
            # Dead letters outlive the events they were rejected beside.
            days = max(days, self.days("events", tenant))
        return days


# table -> (time column, kind)
_TABLES: dict[str, tuple[str, str]] = {
    "events": ("event_time", "events"),
    "dead_letter_events": ("received_at", "dead_letters"),
    **{t: ("bucket_start", "rollups") for t in (*HOURLY_TABLES, *DAILY_TABLES)},
}


def apply_retention(
    warehouse: Warehouse, policy: RetentionPolicy, now: datetime | None = None, dry_run: bool = False
) -> dict[str, int]:
    """Delete what is past its retention; returns rows deleted (or that would be) per table."""
    # Cutoffs fall on UTC midnight, so an hour's events of one tenant are deleted all together:
    # an hour is never half deleted, and rollups of the hours that remain stay recomputable.
    now = (now or datetime.now(UTC)).astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    overrides = sorted(policy.tenants)
    deleted: dict[str, int] = {}
    for table, (column, kind) in _TABLES.items():
        total = 0
        with warehouse.begin() as conn:
            # Tenants with an override, one statement each; everyone else by the default.
            for tenant in overrides:
                cutoff = now - timedelta(days=policy.days(kind, tenant))
                total += _delete(
                    conn, table, column, "tenant_id = :tenant", {"tenant": tenant, "cutoff": cutoff}, dry_run
                )
            cutoff = now - timedelta(days=policy.days(kind))
            if overrides:
                where = "(tenant_id IS NULL OR tenant_id NOT IN :tenants)"
                params = {"tenants": overrides, "cutoff": cutoff}
            else:
                where, params = "TRUE", {"cutoff": cutoff}
            total += _delete(conn, table, column, where, params, dry_run, expanding=bool(overrides))
            if dry_run:
                conn.rollback()
        deleted[table] = total
    longest = max([policy.days("rollups"), *(policy.days("rollups", t) for t in overrides)])
    with warehouse.begin() as conn:
        deleted["rollup_partitions"] = _delete(
            conn,
            "rollup_partitions",
            "partition_start",
            "TRUE",
            {"cutoff": now - timedelta(days=longest)},
            dry_run,
        )
    return deleted


def _delete(
    conn, table: str, column: str, where: str, params: dict, dry_run: bool, expanding: bool = False
) -> int:
    verb = "SELECT count(*) FROM" if dry_run else "DELETE FROM"
    statement = sa.text(f"{verb} {table} WHERE {column} < :cutoff AND {where}")
    if expanding:
        statement = statement.bindparams(sa.bindparam("tenants", expanding=True))
    result = conn.execute(statement, params)
    return int(result.scalar_one()) if dry_run else int(result.rowcount)
