"""Time partitions of the rollups (UTC). Hour and day partitions exist once they have ended."""

import dagster as dg

PARTITIONS_START = "2025-01-01"
HOURLY = dg.HourlyPartitionsDefinition(start_date=f"{PARTITIONS_START}-00:00", timezone="UTC")
DAILY = dg.DailyPartitionsDefinition(start_date=PARTITIONS_START, timezone="UTC")
