"""The event contract: the JSON Schema, the mappings to it, and the normalisation tables.

Everything that decides whether an event is valid and how it is normalised lives here as data, so
that the fast vectorised validator (`sql_validator`) and the event-at-a-time reference
(`reference`) read the same rules.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from importlib import resources
from typing import Any

CURRENT_MAJOR = 2
# The current major and the two before it (issue 2): anything else is a dead letter.
ACCEPTED_MAJORS = (CURRENT_MAJOR, CURRENT_MAJOR - 1, CURRENT_MAJOR - 2)

SOURCE_MODULES = (
    "llm-observatory",
    "llm-sentinel",
    "llm-costops",
    "llm-governance",
    "llm-registry",
    "llm-policy-engine",
)
EVENT_TYPES = ("telemetry", "security", "cost", "governance", "metadata", "policy")
SEVERITIES = ("info", "warning", "error", "critical")
# Security detections below this severity are noise the sentinel should not have sent.
MIN_SECURITY_SEVERITY = "warning"

MAX_EVENT_AGE = timedelta(days=7)
MAX_FUTURE_SKEW = timedelta(hours=1)

# Unit normalisation: unit as sent (case-insensitive) -> (canonical unit, multiplier).
UNIT_FACTORS: dict[str, tuple[str, float]] = {
    # time -> milliseconds
    "ns": ("ms", 1e-6),
    "us": ("ms", 1e-3),
    "µs": ("ms", 1e-3),
    "ms": ("ms", 1.0),
    "millisecond": ("ms", 1.0),
    "milliseconds": ("ms", 1.0),
    "s": ("ms", 1000.0),
    "sec": ("ms", 1000.0),
    "second": ("ms", 1000.0),
    "seconds": ("ms", 1000.0),
    "min": ("ms", 60_000.0),
    "minutes": ("ms", 60_000.0),
    "h": ("ms", 3_600_000.0),
    # size -> bytes (SI and IEC prefixes are different numbers)
    "b": ("bytes", 1.0),
    "byte": ("bytes", 1.0),
    "bytes": ("bytes", 1.0),
    "kb": ("bytes", 1e3),
    "kib": ("bytes", 1024.0),
    "mb": ("bytes", 1e6),
    "mib": ("bytes", 1024.0**2),
    "gb": ("bytes", 1e9),
    "gib": ("bytes", 1024.0**3),
    # counts
    "count": ("count", 1.0),
    "1": ("count", 1.0),
    "tokens": ("count", 1.0),
    "requests": ("count", 1.0),
    # rates -> per second
    "per_second": ("per_second", 1.0),
    "/s": ("per_second", 1.0),
    "rps": ("per_second", 1.0),
    "per_minute": ("per_second", 1 / 60),
    "/min": ("per_second", 1 / 60),
    "rpm": ("per_second", 1 / 60),
    "per_hour": ("per_second", 1 / 3600),
    "/h": ("per_second", 1 / 3600),
    # fractions
    "ratio": ("ratio", 1.0),
    "percent": ("ratio", 0.01),
    "%": ("ratio", 0.01),
}

# Known metrics and the canonical unit their values must normalise to; a known metric sent in a
# unit of another kind (latency in bytes) is a dead letter. Unknown metric names are accepted in
# any known unit.
METRIC_UNITS: dict[str, str] = {
    "latency_ms": "ms",
    "ttft_ms": "ms",
    "queue_time_ms": "ms",
    "tokens_input": "count",
    "tokens_output": "count",
    "tokens_total": "count",
    "request_bytes": "bytes",
    "response_bytes": "bytes",
    "throughput_rps": "per_second",
    "error_rate": "ratio",
    "gpu_utilization": "ratio",
}

# Static conversion rates to USD. hub reports in USD; a deployment that needs daily rates replaces
# this table (HUB_FX_RATES_JSON). Amounts keep their original currency in the `original` column.
FX_TO_USD: dict[str, float] = {
    "USD": 1.0,
    "EUR": 1.08,
    "GBP": 1.27,
    "CHF": 1.13,
    "CAD": 0.73,
    "JPY": 0.0067,
    "INR": 0.012,
}

# Dimension columns of the events table and where each is found in each payload type.
DIMENSION_SOURCES: dict[str, dict[str, tuple[str, ...]]] = {
    "model": {
        "telemetry": ("dimensions.model",),
        "cost": ("attribution.model",),
        "security": ("indicators.model",),
        "policy": ("subject.model",),
        "metadata": ("model",),
    },
    "provider": {
        "telemetry": ("dimensions.provider",),
        "cost": ("attribution.provider",),
        "metadata": ("provider",),
        "policy": ("subject.provider",),
    },
    "project": {
        "telemetry": ("dimensions.project",),
        "cost": ("attribution.project",),
        "policy": ("subject.project",),
        "security": ("indicators.project",),
    },
    "team": {
        "telemetry": ("dimensions.team",),
        "cost": ("attribution.team",),
        "policy": ("subject.team",),
    },
    "region": {"telemetry": ("dimensions.region",), "cost": ("attribution.region",)},
    "status": {"telemetry": ("dimensions.status",)},
    "asset_id": {
        "telemetry": ("dimensions.asset_id",),
        "cost": ("attribution.asset_id",),
        "policy": ("asset_id", "subject.asset_id"),
        "metadata": ("asset_id",),
        "security": ("indicators.asset_id",),
    },
}
DIMENSIONS = tuple(DIMENSION_SOURCES)


@dataclass(frozen=True)
class Reason:
    """Why a record was dead-lettered. `code` is stable (counted in metadata); `field` is the
    dotted path in the canonical envelope it concerns, or "" for the record as a whole."""

    code: str
    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "field": self.field, "message": self.message}


@cache
def event_schema() -> dict[str, Any]:
    """The canonical v2 envelope schema shipped in the package."""
    return json.loads(resources.files("hub_pipelines.events").joinpath("schemas/event.v2.json").read_text())


@cache
def source_mappings() -> dict[str, Any]:
    return json.loads(
        resources.files("hub_pipelines.events").joinpath("schemas/source_mappings.json").read_text()
    )


def payload_schema(event_type: str) -> dict[str, Any]:
    return event_schema()["$defs"][event_type]


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity)
