"""The Kafka landing sensor: Kafka topics -> batch files in the Kafka landing store -> ingest runs.

Each tick, within the resource's bounds (messages and seconds, the group join included):
1. consumes from the topics with the consumer group and writes the messages as batch files named by
   topic, partition and offset range (hub_pipelines/landing/kafka.py), durably, and only then commits
   the offsets after them;
2. lists the store's pending files and launches ingest runs for those not launched yet (also when
   step 1 failed: files already landed do not wait for the broker), exactly as
   `landing_zone_sensor` does for its zone (the same plan_tick and cursor): files written by this
   tick, and any a tick that died after writing left behind. The runs read the store through the
   normal ingest path: `ingest_batches` with the landing_zone resource pointed at the Kafka store.

A consumer that dies between 1's write and its commit leaves the file and the old offsets: the next
tick writes the same file again (same messages, same name, same bytes) and the ingest ledger and
event_id de-duplication store every event once.
"""

import time

import dagster as dg

from hub_pipelines.defs.ingest.assets import INGEST_TAG, IngestConfig, ingest_job
from hub_pipelines.defs.ingest.sensors import (
    BYTES_PER_RUN,
    FILES_PER_RUN,
    MAX_FILES_PER_TICK,
    SensorState,
    plan_tick,
)
from hub_pipelines.resources.kafka import KafkaLandingResource

KAFKA_SENSOR_NAME = "kafka_landing_sensor"
SCAN_BUDGET_S = 10.0  # listing pending files after the drain; drain + scan stay well under 60 s
SOURCE_TAG = "hub/source"


def _failed_run_keys(instance: dg.DagsterInstance) -> set[str]:
    runs = instance.get_runs(
        filters=dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED],
            tags={"dagster/sensor_name": KAFKA_SENSOR_NAME},
        ),
        limit=500,
    )
    return {run.tags["dagster/run_key"] for run in runs if "dagster/run_key" in run.tags}


@dg.sensor(
    name=KAFKA_SENSOR_NAME,
    job=ingest_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Consumes event batches from Kafka (HUB_KAFKA_*), lands them as files and launches ingest runs.",
)
def kafka_landing_sensor(
    context: dg.SensorEvaluationContext, kafka_landing: KafkaLandingResource
) -> dg.SensorResult:
    if not kafka_landing.configured():
        return dg.SensorResult(
            skip_reason=dg.SkipReason(
                "Kafka landing is not configured (HUB_KAFKA_BOOTSTRAP_SERVERS, HUB_KAFKA_TOPICS)"
            ),
            cursor=context.cursor,
        )
    zone = kafka_landing.zone()
    failure: Exception | None = None
    try:
        drained = kafka_landing.batcher(zone, log=context.log.warning).drain()
    except Exception as exc:  # noqa: BLE001 - files already landed are still launched below
        failure, drained = exc, None
        context.log.error(f"consuming from {kafka_landing.describe()} failed: {exc}")
    else:
        context.log.info(
            f"{kafka_landing.describe()}: {drained.messages} messages -> {len(drained.batches)} batch files"
            f" in {zone.describe()} in {drained.seconds:.1f}s (stopped by {drained.stopped_by})"
        )

    state = SensorState.load(context.cursor)
    scan_started = time.monotonic()
    groups, run_keys, next_state = plan_tick(
        state,
        zone.list_pending(start_after=state.after),
        _failed_run_keys(context.instance),
        max_files=MAX_FILES_PER_TICK,
        time_budget_s=SCAN_BUDGET_S,
        files_per_run=FILES_PER_RUN,
        bytes_per_run=BYTES_PER_RUN,
    )
    landing_url = kafka_landing.resolved_landing_url()
    requests = [
        dg.RunRequest(
            run_key=run_key,
            run_config={
                "ops": {
                    "ingest_batches": {"config": IngestConfig(files=[f.key for f in group]).model_dump()}
                },
                "resources": {"landing_zone": {"config": {"url": landing_url}}},
            },
            tags={INGEST_TAG: zone.describe()[:63], SOURCE_TAG: "kafka"},
        )
        for group, run_key in zip(groups, run_keys, strict=True)
    ]
    context.log.info(f"scanned {zone.describe()} in {time.monotonic() - scan_started:.1f}s")
    if not requests:
        if failure is not None:
            raise failure  # nothing to launch: let the tick fail visibly, its cursor unchanged
        return dg.SensorResult(
            skip_reason=dg.SkipReason(f"no new Kafka batches ({drained.messages} messages consumed)"),
            cursor=next_state.dump(),
        )
    return dg.SensorResult(run_requests=requests, cursor=next_state.dump())
