"""Retention: a daily job deletes raw events, dead letters and rollups past their retention.

Defaults: events 30 days, dead letters 90 (never less than the events' retention), rollups 365.
Per-tenant overrides come from the run config (`tenant_overrides`) and, for a deployment, from
HUB_RETENTION_TENANTS (JSON: {"tenant-01": {"events_days": 7}}), read when the job runs; the run
config wins where both name a tenant. What was deleted is reported in the op's output metadata and
as observations on the assets whose rows went.
"""

import json
import os

import dagster as dg
from pydantic import Field

from hub_pipelines.defs.ingest.assets import DEAD_LETTER_EVENTS, VALIDATED_EVENTS
from hub_pipelines.defs.rollups.assets import DAILY_KEYS, HOURLY, TABLES
from hub_pipelines.resources import WarehouseResource
from hub_pipelines.warehouse.retention import Retention, RetentionPolicy, apply_retention

TENANTS_ENV = "HUB_RETENTION_TENANTS"


class TenantRetentionConfig(dg.Config):
    events_days: int | None = Field(default=None, description="Raw events; unset: the default.")
    dead_letters_days: int | None = Field(default=None, description="Dead letters; unset: the default.")
    rollups_days: int | None = Field(
        default=None, description="Hourly and daily rollups; unset: the default."
    )


class RetentionConfig(dg.Config):
    events_days: int = Field(default=30, description="Days of raw events kept.")
    dead_letters_days: int = Field(
        default=90, description="Days of dead letters kept (at least as long as events)."
    )
    rollups_days: int = Field(default=365, description="Days of hourly and daily rollups kept.")
    tenant_overrides: dict[str, TenantRetentionConfig] = Field(
        default_factory=dict, description="Per-tenant retention, overriding the defaults above."
    )
    dry_run: bool = Field(default=False, description="Count what would be deleted; delete nothing.")


def policy_from(config: RetentionConfig) -> RetentionPolicy:
    tenants: dict[str, Retention] = {}
    raw = os.environ.get(TENANTS_ENV)
    if raw:
        for tenant, values in json.loads(raw).items():
            tenants[tenant] = Retention(**values)
    for tenant, override in config.tenant_overrides.items():
        tenants[tenant] = Retention(override.events_days, override.dead_letters_days, override.rollups_days)
    return RetentionPolicy(config.events_days, config.dead_letters_days, config.rollups_days, tenants)


@dg.op(tags={"hub/kind": "retention"})
def apply_retention_op(context: dg.OpExecutionContext, config: RetentionConfig, warehouse: WarehouseResource):
    """Delete (or with dry_run count) rows past their retention."""
    policy = policy_from(config)
    deleted = apply_retention(warehouse.warehouse, policy, dry_run=config.dry_run)
    verb = "would delete" if config.dry_run else "deleted"
    context.log.info(f"retention {verb}: {deleted}")
    owners = {
        VALIDATED_EVENTS: ("events",),
        DEAD_LETTER_EVENTS: ("dead_letter_events",),
        **{key: TABLES[key] for key in (HOURLY, *DAILY_KEYS)},
    }
    for key, tables in owners.items():
        yield dg.AssetObservation(
            asset_key=key,
            metadata={
                "retention_deleted_rows": sum(deleted.get(t, 0) for t in tables),
                "retention_dry_run": config.dry_run,
            },
        )
    yield dg.Output(
        deleted,
        metadata={
            **{f"deleted_{table}": n for table, n in deleted.items()},
            "deleted_total": sum(deleted.values()),
            "dry_run": config.dry_run,
            "policy": dg.MetadataValue.json(
                {
                    "events_days": policy.events_days,
                    "dead_letters_days": policy.dead_letters_days,
                    "rollups_days": policy.rollups_days,
                    "tenants": {t: r.__dict__ for t, r in policy.tenants.items()},
                }
            ),
        },
    )


@dg.job(description="Delete raw events, dead letters and rollups past their retention.")
def retention_job():
    apply_retention_op()


retention_schedule = dg.ScheduleDefinition(
    name="retention_schedule",
    job=retention_job,
    cron_schedule="30 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily at 03:30 UTC.",
)
