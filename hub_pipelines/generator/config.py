"""What a simulation is asked to produce: `GeneratorConfig`."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

# A fixed default end, not "now": the same config must give the same bytes on any day. The CLI
# passes the current hour when it wants live-looking data.
DEFAULT_END = "2026-11-01T00:00:00Z"

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


def parse_end(value: str | datetime) -> datetime:
    """`end` as an aware UTC datetime on an hour boundary (naive datetimes and strings without an
    offset are taken as UTC)."""
    if isinstance(value, str):
        text = value.strip()
        if text[-1:] in ("Z", "z"):
            text = text[:-1] + "+00:00"
        moment = datetime.fromisoformat(text)
    elif isinstance(value, datetime):
        moment = value
    else:
        raise TypeError(f"end must be an ISO-8601 string or a datetime, not {type(value).__name__}")
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    if moment.minute or moment.second or moment.microsecond:
        raise ValueError(f"end must be on an hour boundary (got {moment.isoformat()}); floor it to the hour")
    return moment


@dataclass(frozen=True)
class GeneratorConfig:
    """A simulated LLM estate and how its events are written (docs/GENERATOR_SPEC.md).

    The same config (seed and end included) always gives the same simulation and the same bytes.
    """

    days: int = 14
    tenants: int = 3
    seed: int = 0
    # Exclusive end of the simulated window (UTC, hour-aligned); the window is [end - days, end).
    end: str | datetime = DEFAULT_END
    # Mean requests an hour of a tenant's busiest model (a "base" tenant of size 1 at the start of
    # the window; seasonal factors average 1). The tenant's other models run at 15-60% of it.
    requests_per_hour: float = 120.0
    anomalies: bool = True
    # Extra bad records mixed into the batches, as a fraction of the good events written.
    corrupt_rate: float = 0.0
    # Injected multi-module incidents with their ground truth (hub_pipelines.generator.scenarios;
    # DIR/scenarios.json). Off, the simulation and its bytes are exactly those without the option.
    scenarios: bool = False

    # -- the forms the contract accepts, mixed into the batches ------------------------------------
    # Share of observatory latency events sent in seconds (unit "s") instead of milliseconds.
    latency_seconds_fraction: float = 0.1
    # The last tenant's observatory agent still sends the legacy 1.x layout (needs >= 2 tenants).
    legacy_observatory_tenant: bool = True
    # Share of requests that the policy engine evaluates (one evaluation each).
    policy_fraction: float = 0.05
    # Security detections an hour for a tenant of size 1 (before the daily profile and bursts).
    security_per_hour: float = 1.0
    # Governance events a day per tenant (approvals, access reviews, audit logs, ...).
    governance_per_day: float = 3.0
    # Days are split into parts of at most this many records.
    max_events_per_file: int = 250_000

    def __post_init__(self) -> None:
        object.__setattr__(self, "end", parse_end(self.end))
        if int(self.days) != self.days or self.days < 1:
            raise ValueError("days must be a positive whole number")
        if int(self.tenants) != self.tenants or not 1 <= self.tenants <= 99:
            raise ValueError("tenants must be between 1 and 99")
        if self.requests_per_hour < 0:
            raise ValueError("requests_per_hour must not be negative")
        for name in ("corrupt_rate", "latency_seconds_fraction", "policy_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.max_events_per_file < 1:
            raise ValueError("max_events_per_file must be positive")

    @property
    def end_utc(self) -> datetime:
        assert isinstance(self.end, datetime)
        return self.end

    @property
    def start_utc(self) -> datetime:
        return self.end_utc - timedelta(days=self.days)

    @property
    def start_ms(self) -> int:
        return int(self.start_utc.timestamp()) * 1000

    @property
    def end_ms(self) -> int:
        return int(self.end_utc.timestamp()) * 1000

    @property
    def hours(self) -> int:
        return self.days * 24

    def rng(self, stream: str) -> np.random.Generator:
        """An independent random stream per part of the simulation, so that adding draws to one
        part never shifts the numbers another part gets."""
        return np.random.default_rng(np.random.SeedSequence([int(self.seed), zlib.crc32(stream.encode())]))

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "scenarios" and not value:
                continue  # absent when off, so manifests stay byte-identical to those before it
            out[f.name] = format_utc(value) if isinstance(value, datetime) else value
        return out


def format_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
