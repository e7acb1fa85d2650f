"""The landing-zone sensor: finds batch files not yet ingested and launches ingest runs.

No file is skipped and none is ingested twice, whatever the timing:
- The zone is listed in key order from where the last tick stopped (the cursor keeps that key,
  never a time), and the scan wraps around when it reaches the end, so files with equal
  modification times, or arriving with keys that sort before the cursor, are found on a later tick.
- A tick lists at most `max_files_per_tick` files and stops early when its time budget is spent, so
  it returns well inside the sensor timeout; a tick that fails anyway saves no cursor and requests
  no runs, and the next tick does the same work again.
- The cursor remembers which version of each pending file was launched, so a file is not launched
  again while its run is in flight; a run that failed or was cancelled releases its files for a new
  run (with a new run key). Archived files leave the pending listing and are forgotten.
- A re-upload of the same name is a new version and gets a run; the ingest ledger recognises the
  content and archives it without writing anything twice.
"""

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field

import dagster as dg

from hub_pipelines.defs.ingest.assets import INGEST_TAG, IngestConfig, ingest_job
from hub_pipelines.landing import LandedFile
from hub_pipelines.resources import LandingZoneResource

SENSOR_NAME = "landing_zone_sensor"
MAX_FILES_PER_TICK = 5000
FILES_PER_RUN = 50
BYTES_PER_RUN = 512 * 1024 * 1024
TIME_BUDGET_S = 20.0  # the default sensor evaluation timeout is 60 s


@dataclass
class Launched:
    version: str
    run_key: str
    attempt: int = 1


@dataclass
class SensorState:
    after: str = ""  # last key listed by the previous tick; "" starts from the beginning
    launched: dict[str, Launched] = field(default_factory=dict)

    @staticmethod
    def load(cursor: str | None) -> "SensorState":
        if not cursor:
            return SensorState()
        raw = json.loads(cursor)
        return SensorState(
            raw.get("after", ""), {k: Launched(**v) for k, v in raw.get("launched", {}).items()}
        )

    def dump(self) -> str:
        return json.dumps(
            {"after": self.after, "launched": {k: asdict(v) for k, v in sorted(self.launched.items())}}
        )


def plan_tick(
    state: SensorState,
    listing,
    failed_run_keys: set[str],
    max_files: int = MAX_FILES_PER_TICK,
    time_budget_s: float = TIME_BUDGET_S,
    files_per_run: int = FILES_PER_RUN,
    bytes_per_run: int = BYTES_PER_RUN,
) -> tuple[list[list[LandedFile]], list[str], SensorState]:
    """One tick's decisions, separate from Dagster so they can be tested on their own:
    (groups of files to launch, their run keys, the next state)."""
    deadline = time.monotonic() + time_budget_s
    seen: list[LandedFile] = []
    exhausted = True
    for landed in listing:
        seen.append(landed)
        if len(seen) >= max_files or time.monotonic() > deadline:
            exhausted = False
            break
    scanned = {f.key for f in seen}
    upper = None if exhausted else seen[-1].key
    launched = {
        key: entry
        for key, entry in state.launched.items()
        # keep what this scan did not cover; drop what it covered but did not see (archived)
        if key in scanned or key <= state.after or (upper is not None and key > upper)
    }
    candidates = []
    for landed in seen:
        entry = launched.get(landed.key)
        if entry is None or entry.version != landed.version or entry.run_key in failed_run_keys:
            candidates.append(landed)

    groups: list[list[LandedFile]] = []
    current: list[LandedFile] = []
    size = 0
    for landed in candidates:
        if current and (len(current) >= files_per_run or size + landed.size > bytes_per_run):
            groups.append(current)
            current, size = [], 0
        current.append(landed)
        size += landed.size
    if current:
        groups.append(current)

    run_keys = []
    for group in groups:
        attempt = 1 + max(
            (
                launched[f.key].attempt
                for f in group
                if f.key in launched and launched[f.key].version == f.version
            ),
            default=0,
        )
        digest = hashlib.sha256("|".join(f"{f.key}@{f.version}" for f in group).encode()).hexdigest()[:24]
        run_key = f"ingest-{digest}-{attempt}"
        run_keys.append(run_key)
        for landed in group:
            launched[landed.key] = Launched(landed.version, run_key, attempt)
    return groups, run_keys, SensorState(after="" if exhausted else seen[-1].key, launched=launched)


def _failed_run_keys(instance: dg.DagsterInstance) -> set[str]:
    runs = instance.get_runs(
        filters=dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED],
            tags={"dagster/sensor_name": SENSOR_NAME},
        ),
        limit=500,
    )
    return {run.tags["dagster/run_key"] for run in runs if "dagster/run_key" in run.tags}


@dg.sensor(
    name=SENSOR_NAME,
    job=ingest_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Launches ingest runs for batch files waiting in the landing zone.",
)
def landing_zone_sensor(
    context: dg.SensorEvaluationContext, landing_zone: LandingZoneResource
) -> dg.SensorResult:
    state = SensorState.load(context.cursor)
    zone = landing_zone.zone
    groups, run_keys, next_state = plan_tick(
        state,
        zone.list_pending(start_after=state.after),
        _failed_run_keys(context.instance),
        max_files=MAX_FILES_PER_TICK,
        time_budget_s=TIME_BUDGET_S,
        files_per_run=FILES_PER_RUN,
        bytes_per_run=BYTES_PER_RUN,
    )
    requests = [
        dg.RunRequest(
            run_key=run_key,
            run_config=dg.RunConfig(ops={"ingest_batches": IngestConfig(files=[f.key for f in group])}),
            tags={INGEST_TAG: zone.describe()[:63]},
        )
        for group, run_key in zip(groups, run_keys, strict=True)
    ]
    if not requests:
        return dg.SensorResult(
            skip_reason=dg.SkipReason(f"no new batch files in {zone.describe()}"), cursor=next_state.dump()
        )
    context.log.info(f"launching {len(requests)} ingest runs for {sum(len(g) for g in groups)} files")
    return dg.SensorResult(run_requests=requests, cursor=next_state.dump())
