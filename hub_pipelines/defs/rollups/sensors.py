"""Continuous refresh: rollups follow the events, late ones included, with nobody launching backfills.

- `late_events_rollup_sensor` reads the materialisations of `validated_events` from the instance's
  event log, after the storage id kept in its cursor (never a wall-clock time), and collects their
  `hours_touched` metadata: every UTC hour that gained events. Ended hours are (re)computed at once,
  contiguous hours of one day in one run (a partition range, single-run backfill policy); hours that
  have not ended yet wait in the cursor and are requested on the first tick after they end.
- `rollups_automation_sensor` evaluates the daily assets' automation condition: a day whose hours
  were re-materialised is refreshed once none of them is still running.

A tick reads at most MAX_RECORDS materialisations; the rest are read by the next ticks. A tick that
fails saves no cursor, so the same records are read again. Every run is idempotent (delete and
insert per partition), so a repeated request only costs time.
"""

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from hub_pipelines.defs.ingest.assets import VALIDATED_EVENTS
from hub_pipelines.defs.rollups.assets import DAILY_KEYS, hourly_rollups_job
from hub_pipelines.defs.rollups.partitions import HOURLY

SENSOR_NAME = "late_events_rollup_sensor"
MAX_RECORDS = 200
HOUR = timedelta(hours=1)
REFRESH_TAG = "hub/rollup_refresh"


@dataclass
class RefreshState:
    after: int | None = None  # storage id of the last validated_events materialisation read
    pending: list[str] = field(default_factory=list)  # touched hours (ISO) that had not ended

    @staticmethod
    def load(cursor: str | None) -> "RefreshState":
        if not cursor:
            return RefreshState()
        raw = json.loads(cursor)
        return RefreshState(raw.get("after"), list(raw.get("pending", [])))

    def dump(self) -> str:
        return json.dumps({"after": self.after, "pending": sorted(set(self.pending))})


def _hour(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.replace(minute=0, second=0, microsecond=0)


def plan_refresh(
    hours: Iterable[str], now: datetime, first_partition: datetime
) -> tuple[list[tuple[datetime, datetime]], list[str], list[str]]:
    """Touched hours -> (ranges to refresh now [first, last] hour starts, still pending, ignored).

    Ranges are runs of consecutive ended hours within one UTC day.
    """
    ready, pending, ignored = [], [], []
    for text in sorted({_hour(h).isoformat() for h in hours}):
        hour = _hour(text)
        if hour < first_partition:
            ignored.append(text)
        elif hour + HOUR > now:
            pending.append(text)
        else:
            ready.append(hour)
    ranges: list[tuple[datetime, datetime]] = []
    for hour in ready:
        if ranges and ranges[-1][1] + HOUR == hour and ranges[-1][0].date() == hour.date():
            ranges[-1] = (ranges[-1][0], hour)
        else:
            ranges.append((hour, hour))
    return ranges, pending, ignored


def _key(hour: datetime) -> str:
    return hour.strftime("%Y-%m-%d-%H:%M")


def _hours_touched(record) -> list[str]:
    entry = (
        record.asset_materialization.metadata.get("hours_touched") if record.asset_materialization else None
    )
    if entry is None:
        return []
    value = getattr(entry, "value", entry)
    if isinstance(value, str):
        value = json.loads(value)
    return [str(v) for v in value or []]


@dg.sensor(
    name=SENSOR_NAME,
    job=hourly_rollups_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Re-materialises the hourly rollups of every hour an ingest touched (late events included),"
    " reading validated_events' hours_touched from the event log.",
)
def late_events_rollup_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    state = RefreshState.load(context.cursor)
    result = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=VALIDATED_EVENTS, after_storage_id=state.after),
        limit=MAX_RECORDS,
        ascending=True,
    )
    touched = list(state.pending)
    after = state.after
    for record in result.records:
        touched += _hours_touched(record)
        after = max(after or 0, record.storage_id)
    now = datetime.now(UTC)
    first = HOURLY.start.astimezone(UTC)
    ranges, pending, ignored = plan_refresh(touched, now, first)
    if ignored:
        context.log.warning(
            f"{len(ignored)} touched hours precede the first partition {first}: {ignored[:5]}"
        )
    next_state = RefreshState(after, pending)
    requests = [
        dg.RunRequest(
            run_key=f"rollup-{_key(lo)}-{_key(hi)}-{after}",
            tags={
                ASSET_PARTITION_RANGE_START_TAG: _key(lo),
                ASSET_PARTITION_RANGE_END_TAG: _key(hi),
                REFRESH_TAG: "events_landed",
            },
        )
        for lo, hi in ranges
    ]
    if not requests:
        reason = f"{len(result.records)} new ingests; no ended hour to refresh"
        if pending:
            reason += f" ({len(pending)} hours wait for their end)"
        return dg.SensorResult(skip_reason=dg.SkipReason(reason), cursor=next_state.dump())
    context.log.info(
        f"refreshing {sum(int((hi - lo) / HOUR) + 1 for lo, hi in ranges)} hours in {len(requests)} runs"
        f" after {len(result.records)} ingests"
    )
    return dg.SensorResult(run_requests=requests, cursor=next_state.dump())


rollups_automation_sensor = dg.AutomationConditionSensorDefinition(
    "rollups_automation_sensor",
    target=dg.AssetSelection.assets(*DAILY_KEYS),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="Refreshes a day's rollups after any of its hours was re-materialised.",
)
