"""Kafka as a landing zone: event batches consumed from topics with a consumer group, written as
batch files to a landing store (a local folder or an S3 prefix) before their offsets are committed.

No Dagster here: the sensor in hub_pipelines/defs/ingest/kafka_sensor.py calls `drain` once a tick,
and the files it writes are ingested by the normal path (the ingest ledger, event_id de-duplication).

Delivery is at-least-once from Kafka, effectively-once in the warehouse:
- A tick consumes at most `max_messages` messages and stops consuming when its time budget is
  spent (the group join counts), so it returns well inside the sensor timeout.
- The messages of one partition become batch files named from their offset range:
  `kafka/<topic>/<partition>/<topic>-<partition>-<first>-<last>.jsonl`, at most `batch_messages`
  messages each, cut on offsets that are multiples of `batch_messages`. The same messages always
  give the same name and the same bytes.
- Every file is written durably (fsync + atomic rename on a folder; a completed PUT on S3) before
  the offsets after it are committed, synchronously. A consumer that dies in between leaves the file
  and the old offsets: the next tick reads the same messages again and writes the same file again.
  A file ingested twice is recognised by the ingest ledger (the SHA-256 of its bytes); events seen
  again in a batch cut differently are dropped by event_id.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, TopicPartition

from hub_pipelines.landing.base import LandingZone
from hub_pipelines.landing.local import LocalFolder
from hub_pipelines.landing.s3 import S3Prefix

KEY_PREFIX = "kafka"
OFFSET_DIGITS = 20  # offsets are int64: names sort in offset order


@dataclass(frozen=True)
class KafkaSource:
    """Where to consume from. `client_config` holds any further librdkafka settings (security
    protocol, SASL mechanism and credentials...), passed through unlogged."""

    bootstrap_servers: str
    topics: tuple[str, ...]
    group_id: str
    session_timeout_ms: int = 45000
    max_poll_interval_ms: int = 300000
    client_config: Mapping[str, str] = field(default_factory=dict)

    def consumer_config(self) -> dict:
        return {
            "auto.offset.reset": "earliest",
            **self.client_config,
            "bootstrap.servers": self.bootstrap_servers,
            "group.id": self.group_id,
            "enable.auto.commit": False,  # offsets are committed only after the files are durable
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,  # to stop early once every assigned partition is drained
            "session.timeout.ms": self.session_timeout_ms,
            "max.poll.interval.ms": self.max_poll_interval_ms,
        }


@dataclass(frozen=True)
class WrittenBatch:
    key: str
    topic: str
    partition: int
    first_offset: int
    last_offset: int
    messages: int
    records: int
    size: int


@dataclass
class DrainResult:
    batches: list[WrittenBatch] = field(default_factory=list)
    messages: int = 0
    committed: dict[tuple[str, int], int] = field(default_factory=dict)  # next offset per partition
    assigned: list[tuple[str, int]] = field(default_factory=list)
    stopped_by: str = "drained"  # "count", "time" or "drained" (every assigned partition at its end)
    seconds: float = 0.0


def batch_key(topic: str, partition: int, first_offset: int, last_offset: int) -> str:
    """The landing key of the batch holding offsets first..last of a partition (deterministic)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in topic)
    return (
        f"{KEY_PREFIX}/{safe}/{partition:05d}/"
        f"{safe}-{partition:05d}-{first_offset:0{OFFSET_DIGITS}d}-{last_offset:0{OFFSET_DIGITS}d}.jsonl"
    )


def message_records(value: bytes | None) -> list[bytes]:
    """The records of one message as JSON Lines: an event object, a JSON array of events, or
    JSON Lines. Text that is not JSON is kept as it came, so ingest dead-letters it with its raw text."""
    if not value:
        return []
    text = value.strip()
    if text[:1] == b"[":
        try:
            items = json.loads(text)
        except ValueError:
            return [b" ".join(text.splitlines())]
        return [json.dumps(item, separators=(",", ":")).encode() for item in items]
    return [line for line in text.splitlines() if line.strip()]


def encode_batch(values: Iterable[bytes | None]) -> tuple[bytes, int]:
    """(JSON Lines bytes, record count) of the messages of one batch, in offset order."""
    lines = [record for value in values for record in message_records(value)]
    return b"\n".join(lines) + (b"\n" if lines else b""), len(lines)


def write_durably(zone: LandingZone, key: str, data: bytes) -> None:
    """Put a batch file in the landing store, durable once this returns. On a folder the file is
    written under a hidden temporary name (the sensors skip names starting with '.'), fsynced and
    renamed; a rewrite replaces the file with the same bytes."""
    if isinstance(zone, LocalFolder):
        target = zone.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
        _fsync_dir(target.parent)
        return
    if isinstance(zone, S3Prefix):
        zone.client.put_object(Bucket=zone.bucket, Key=zone.prefix + key, Body=data)
        return
    raise TypeError(f"cannot write Kafka batches to {type(zone).__name__}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def plan_batches(messages: list, batch_messages: int) -> list[list]:
    """Messages of one partition (in offset order) -> batches: a new batch starts at every offset
    that is a multiple of batch_messages, so a batch never spans two such blocks."""
    batches: list[list] = []
    block = None
    for message in messages:
        this_block = message.offset() // batch_messages
        if not batches or this_block != block:
            batches.append([])
            block = this_block
        batches[-1].append(message)
    return batches


class KafkaBatcher:
    """One bounded pass over a consumer group: consume, write batch files, then commit."""

    def __init__(
        self,
        source: KafkaSource,
        zone: LandingZone,
        *,
        max_messages: int = 10000,
        max_seconds: float = 20.0,
        batch_messages: int = 5000,
        commit_reserve_s: float | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        if max_messages < 1 or batch_messages < 1 or max_seconds <= 0:
            raise ValueError("max_messages, batch_messages and max_seconds must be positive")
        self.source = source
        self.zone = zone
        self.max_messages = max_messages
        self.max_seconds = max_seconds
        self.batch_messages = batch_messages
        # Time kept back from consuming for writing, committing and closing.
        self.commit_reserve_s = (
            commit_reserve_s if commit_reserve_s is not None else min(5.0, max_seconds * 0.25)
        )
        self.log = log or (lambda _message: None)

    def drain(self) -> DrainResult:
        began = time.monotonic()
        consume_until = began + max(0.0, self.max_seconds - self.commit_reserve_s)
        result = DrainResult()
        consumer = Consumer(self.source.consumer_config())
        assigned: set[tuple[str, int]] = set()
        at_end: set[tuple[str, int]] = set()

        def on_assign(_consumer, partitions) -> None:
            assigned.update((p.topic, p.partition) for p in partitions)

        def on_revoke(_consumer, partitions) -> None:
            for p in partitions:
                assigned.discard((p.topic, p.partition))

        try:
            consumer.subscribe(list(self.source.topics), on_assign=on_assign, on_revoke=on_revoke)
            by_partition: dict[tuple[str, int], list] = {}
            count = 0
            while True:
                remaining = consume_until - time.monotonic()
                if count >= self.max_messages:
                    result.stopped_by = "count"
                    break
                if remaining <= 0:
                    result.stopped_by = "time"
                    break
                if assigned and at_end >= assigned:
                    result.stopped_by = "drained"
                    break
                batch = consumer.consume(
                    num_messages=min(500, self.max_messages - count), timeout=min(remaining, 0.5)
                )
                for message in batch:
                    tp = (message.topic(), message.partition())
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            at_end.add(tp)
                            continue
                        if error.fatal():
                            raise RuntimeError(f"Kafka consumer error: {error}")
                        self.log(f"Kafka: {error}")
                        continue
                    at_end.discard(tp)
                    by_partition.setdefault(tp, []).append(message)
                    count += 1
            result.assigned = sorted(assigned)
            result.messages = count
            self._write(by_partition, result)
            self.before_commit(result)
            self._commit(consumer, by_partition, result)
        finally:
            consumer.close()
        result.seconds = time.monotonic() - began
        return result

    def _write(self, by_partition: dict[tuple[str, int], list], result: DrainResult) -> None:
        for (topic, partition), messages in sorted(by_partition.items()):
            messages.sort(key=lambda m: m.offset())
            for group in plan_batches(messages, self.batch_messages):
                data, records = encode_batch(m.value() for m in group)
                if not records:  # tombstones only: nothing to land, the offsets are still committed
                    continue
                first, last = group[0].offset(), group[-1].offset()
                key = batch_key(topic, partition, first, last)
                write_durably(self.zone, key, data)
                result.batches.append(
                    WrittenBatch(key, topic, partition, first, last, len(group), records, len(data))
                )

    def before_commit(self, result: DrainResult) -> None:
        """Called once the batch files are durable and before any offset is committed."""

    def _commit(self, consumer, by_partition: dict[tuple[str, int], list], result: DrainResult) -> None:
        if not by_partition:
            return
        offsets = [
            TopicPartition(topic, partition, max(m.offset() for m in messages) + 1)
            for (topic, partition), messages in sorted(by_partition.items())
        ]
        committed = consumer.commit(offsets=offsets, asynchronous=False)
        for tp in committed or []:
            if tp.error is not None:
                raise RuntimeError(f"commit of {tp.topic}[{tp.partition}] failed: {tp.error}")
            result.committed[(tp.topic, tp.partition)] = tp.offset
