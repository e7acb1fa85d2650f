"""Bad records of the kinds real producers send, each made from a good event of the same batch
so that exactly one thing is wrong with it, and the reason code ingest must give it.

Every corrupt record except a duplicate gets a fresh event id, so that however ingest orders
de-duplication and validation, it is counted once, as a dead letter with its one reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import orjson

from hub_pipelines.generator.config import DAY_MS

ALL_SOURCES = None  # a kind that any source's event can be turned into


@dataclass(frozen=True)
class CorruptionKind:
    name: str
    weight: float
    sources: tuple[str, ...] | None  # None: any source
    reason: str | None  # the dead-letter reason code; None for a duplicate (stored once)
    description: str


# fmt: off
KINDS: tuple[CorruptionKind, ...] = (
    CorruptionKind("malformed", 0.10, ALL_SOURCES, "malformed_json", "line cut short (truncated JSON)"),
    CorruptionKind("missing_field", 0.07, ALL_SOURCES, "missing_field", "tenant field removed"),
    CorruptionKind("wrong_type", 0.07, ALL_SOURCES, "wrong_type", "a number sent as a string, or an id as a number"),
    CorruptionKind("bad_enum", 0.07, ALL_SOURCES, "invalid_value", "a value outside its enum"),
    CorruptionKind("unexpected_field", 0.06, ALL_SOURCES, "unexpected_field", "an envelope field the schema does not have"),
    CorruptionKind("unknown_unit", 0.06, ("llm-observatory",), "unknown_unit", "a unit hub does not know"),
    CorruptionKind("unit_mismatch", 0.06, ("llm-observatory",), "unit_mismatch", "a latency sent in bytes"),
    CorruptionKind("duplicate", 0.16, ALL_SOURCES, None, "exact copy of an event already written"),
    CorruptionKind("late", 0.08, ALL_SOURCES, "timestamp_too_old", "more than 7 days older than its batch"),
    CorruptionKind("future", 0.06, ALL_SOURCES, "timestamp_in_future", "days after the end of the window"),
    CorruptionKind("unsupported_schema", 0.06, ALL_SOURCES, "unsupported_schema_version", "schema_version 3.x or 4.x"),
    CorruptionKind("negative_metric", 0.06, ("llm-observatory",), "negative_metric_value", "negative metric value"),
    CorruptionKind("negative_cost", 0.03, ("llm-costops",), "non_positive_cost", "negative cost (a refund sent as cost)"),
    CorruptionKind("below_warning", 0.03, ("llm-sentinel",), "security_severity_below_warning", "security event at info"),
)
# fmt: on
KIND_BY_NAME = {k.name: k for k in KINDS}
# A JSON array cannot hold a cut-short element; the same producer bug there is an element that is
# a string of broken JSON, which ingest rejects as not an object.
MALFORMED_IN_ARRAY_REASON = "not_an_object"


def expected_reason(kind: str, fmt: str) -> str | None:
    if kind == "malformed" and fmt == "json":
        return MALFORMED_IN_ARRAY_REASON
    return KIND_BY_NAME[kind].reason


@dataclass(frozen=True)
class _Form:
    """Where the fields ingest reads are in one producer's layout."""

    event_id: str
    timestamp: str
    tenant: str
    metric_name: str = "metric_name"
    metric_value: str = "metric_value"


_CANONICAL = _Form("event_id", "timestamp", "tenant_id")
_LEGACY = _Form("id", "ts", "tenant", "metric", "value")
_POLICY = _Form("evaluation_id", "evaluated_at", "org_id")
_REGISTRY = _Form("record_id", "recorded_at", "organization")


def _form(record: dict) -> _Form:
    if "evaluation_id" in record:
        return _POLICY
    if "record_id" in record:
        return _REGISTRY
    if "module" in record and "id" in record:
        return _LEGACY
    return _CANONICAL


def _event_type(record: dict) -> str:
    return record.get("event_type") or record.get("type")


def retime(value, new_ms: int):
    """A timestamp moved to new_ms in the same style as `value` (epoch millis or ISO with the same
    offset notation)."""
    if isinstance(value, int):
        return new_ms
    text: str = value
    if text.endswith(("Z", "z")):
        suffix, minutes = text[-1], 0
    else:
        suffix = text[-6:] if text[-3] == ":" else text[-5:]
        sign = -1 if suffix[0] == "-" else 1
        digits = suffix[1:].replace(":", "")
        minutes = sign * (int(digits[:2]) * 60 + int(digits[2:]))
    local = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=new_ms + minutes * 60_000)
    return local.strftime("%Y-%m-%dT%H:%M:%S.") + f"{local.microsecond // 1000:03d}" + suffix


def timestamp_ms(value) -> int:
    if isinstance(value, int):
        return value
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    return round(datetime.fromisoformat(text).timestamp() * 1000)


def corrupt(
    kind: str,
    template: str,
    fresh_id: str,
    rng: np.random.Generator,
    batch_newest_ms: int,
    end_ms: int,
    fmt: str,
) -> str:
    """The corrupt record of `kind` made from the good event `template` (one JSON line)."""
    if kind == "duplicate":
        return template
    record = orjson.loads(template)
    form = _form(record)
    record[form.event_id] = fresh_id
    payload = record["payload"]
    etype = _event_type(record)
    if kind == "malformed":
        text = orjson.dumps(record).decode()
        cut = int(rng.integers(8, len(text) - 1))
        broken = text[:cut]
        return orjson.dumps(broken).decode() if fmt == "json" else broken
    if kind == "missing_field":
        del record[form.tenant]
    elif kind == "wrong_type":
        if etype == "telemetry":
            payload[form.metric_value] = str(payload[form.metric_value])
        elif etype == "cost":
            payload["amount"] = str(payload["amount"])
        else:
            record["correlation_id"] = int(rng.integers(1000, 99999))
    elif kind == "bad_enum":
        if etype == "cost":
            payload["cost_type"] = "compute"
        elif etype == "security":
            payload["threat_type"] = "phishing"
        elif etype == "policy":
            payload["decision"] = "maybe"
        elif etype == "governance":
            payload["action"] = "delete"
        elif etype == "metadata":
            payload["kind"] = "notebook"
        else:
            record["severity"] = "urgent"
    elif kind == "unexpected_field":
        record["user_agent"] = "curl/8.5.0"
    elif kind == "unknown_unit":
        payload["unit"] = "furlongs"
    elif kind == "unit_mismatch":
        payload["unit"] = "bytes" if payload[form.metric_name] == "latency_ms" else "ms"
    elif kind == "late":
        age_ms = int(rng.integers(8 * DAY_MS, 30 * DAY_MS))
        record[form.timestamp] = retime(record[form.timestamp], batch_newest_ms - age_ms)
    elif kind == "future":
        ahead_ms = int(rng.integers(DAY_MS * 3 // 2, 5 * DAY_MS))
        record[form.timestamp] = retime(record[form.timestamp], end_ms + ahead_ms)
    elif kind == "unsupported_schema":
        record["schema_version"] = ("3.0.0", "3.2.1", "4.0.0")[int(rng.integers(0, 3))]
    elif kind == "negative_metric":
        payload[form.metric_value] = -(payload[form.metric_value] + 1)
    elif kind == "negative_cost":
        payload["amount"] = -payload["amount"]
    elif kind == "below_warning":
        payload["severity"] = "info"
        record["severity"] = "info"
    else:
        raise ValueError(f"unknown corruption kind {kind}")
    return orjson.dumps(record).decode()
