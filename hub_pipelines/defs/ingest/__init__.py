"""Landing zone -> validated events, dead letters and the asset catalog."""

import dagster as dg

from hub_pipelines.defs.ingest.assets import ingest_batches, ingest_job
from hub_pipelines.defs.ingest.checks import (
    dead_letter_rate,
    events_are_fresh,
    ingest_ledger_balances,
    no_duplicate_event_ids,
)
from hub_pipelines.defs.ingest.kafka_sensor import kafka_landing_sensor
from hub_pipelines.defs.ingest.sensors import landing_zone_sensor
from hub_pipelines.resources.kafka import KafkaLandingResource

defs = dg.Definitions(
    assets=[ingest_batches],
    asset_checks=[dead_letter_rate, no_duplicate_event_ids, events_are_fresh, ingest_ledger_balances],
    jobs=[ingest_job],
    sensors=[landing_zone_sensor, kafka_landing_sensor],
    resources={"kafka_landing": KafkaLandingResource()},
)
