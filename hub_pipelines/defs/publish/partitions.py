"""Partitions of the reports: one per UTC day and tenant. Tenants are dynamic partitions, added by
the daily_reports schedule (and the demo) from the tenants that have data on the day."""

import dagster as dg

from hub_pipelines.defs.rollups.partitions import DAILY

TENANTS = dg.DynamicPartitionsDefinition(name="tenants")
REPORT_PARTITIONS = dg.MultiPartitionsDefinition({"date": DAILY, "tenant": TENANTS})


def report_partition_key(day: str, tenant_id: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"date": day, "tenant": tenant_id})


def ensure_tenants(instance: dg.DagsterInstance, tenants: list[str]) -> list[str]:
    """Add the tenants that are not partitions yet; returns those added."""
    missing = [t for t in tenants if not instance.has_dynamic_partition(TENANTS.name, t)]
    if missing:
        instance.add_dynamic_partitions(TENANTS.name, missing)
    return missing
