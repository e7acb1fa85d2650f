"""Kafka as a landing zone, as a Dagster resource: which topics and consumer group, where their
batches are written, and how much one sensor tick may take. Read from the environment when used."""

import os

import dagster as dg
from pydantic import Field

from hub_pipelines import settings
from hub_pipelines.landing import LandingZone
from hub_pipelines.landing.kafka import KafkaBatcher, KafkaSource
from hub_pipelines.resources.landing import LandingZoneResource

DEFAULT_GROUP_ID = "hub-ingest"


class KafkaLandingResource(dg.ConfigurableResource):
    """Event batches consumed from Kafka topics with a consumer group and landed as batch files.

    Unset fields follow the environment at run time: HUB_KAFKA_BOOTSTRAP_SERVERS,
    HUB_KAFKA_TOPICS (comma-separated), HUB_KAFKA_GROUP_ID (default hub-ingest) and
    HUB_KAFKA_LANDING_URL (a folder or s3://bucket/prefix/; default $HUB_HOME/landing-kafka; keep it
    apart from HUB_LANDING_URL). Security settings, secrets included, come only from the environment:
    HUB_KAFKA_SECURITY_PROTOCOL, HUB_KAFKA_SASL_MECHANISM, HUB_KAFKA_SASL_USERNAME,
    HUB_KAFKA_SASL_PASSWORD. With no bootstrap servers the Kafka sensor skips.
    """

    bootstrap_servers: str | None = Field(default=None, description="host:port[,host:port]")
    topics: list[str] | None = Field(default=None, description="Topics to consume")
    group_id: str | None = Field(default=None, description="Consumer group; offsets are committed to it")
    landing_url: str | None = Field(
        default=None, description="Landing store of the batches: folder, file:// or s3://bucket/prefix/"
    )
    max_messages_per_tick: int = Field(default=10000, description="Messages one sensor tick consumes at most")
    max_seconds_per_tick: float = Field(
        default=20.0,
        description="Time one tick may spend consuming, writing and committing (group join included);"
        " the sensor timeout is 60 s",
    )
    batch_messages: int = Field(default=5000, description="Messages per batch file at most")
    session_timeout_ms: int = Field(default=45000, description="Consumer group session timeout")
    max_poll_interval_ms: int = Field(default=300000, description="Consumer max.poll.interval.ms")

    def configured(self) -> bool:
        return bool(self._bootstrap_servers() and self._topics())

    def _bootstrap_servers(self) -> str:
        return self.bootstrap_servers or os.environ.get("HUB_KAFKA_BOOTSTRAP_SERVERS", "")

    def _topics(self) -> tuple[str, ...]:
        topics = self.topics or os.environ.get("HUB_KAFKA_TOPICS", "").split(",")
        return tuple(t.strip() for t in topics if t and t.strip())

    def resolved_landing_url(self) -> str:
        return (
            self.landing_url
            or os.environ.get("HUB_KAFKA_LANDING_URL")
            or str(settings.hub_home() / "landing-kafka")
        )

    def source(self) -> KafkaSource:
        if not self.configured():
            raise ValueError("Kafka landing needs HUB_KAFKA_BOOTSTRAP_SERVERS and HUB_KAFKA_TOPICS")
        security = {
            "security.protocol": os.environ.get("HUB_KAFKA_SECURITY_PROTOCOL"),
            "sasl.mechanism": os.environ.get("HUB_KAFKA_SASL_MECHANISM"),
            "sasl.username": os.environ.get("HUB_KAFKA_SASL_USERNAME"),
            "sasl.password": os.environ.get("HUB_KAFKA_SASL_PASSWORD"),
        }
        return KafkaSource(
            bootstrap_servers=self._bootstrap_servers(),
            topics=self._topics(),
            group_id=self.group_id or os.environ.get("HUB_KAFKA_GROUP_ID") or DEFAULT_GROUP_ID,
            session_timeout_ms=self.session_timeout_ms,
            max_poll_interval_ms=self.max_poll_interval_ms,
            client_config={k: v for k, v in security.items() if v},
        )

    def zone(self) -> LandingZone:
        """The landing store the batches are written to, through the same LandingZone the ingest reads."""
        return LandingZoneResource(url=self.resolved_landing_url()).zone

    def batcher(self, zone: LandingZone | None = None, log=None) -> KafkaBatcher:
        return KafkaBatcher(
            self.source(),
            zone or self.zone(),
            max_messages=self.max_messages_per_tick,
            max_seconds=self.max_seconds_per_tick,
            batch_messages=self.batch_messages,
            log=log,
        )

    def describe(self) -> str:
        return (
            f"kafka://{self._bootstrap_servers()}/{','.join(self._topics())} (group {self.source().group_id})"
        )
