"""Correlate days of the warehouse's events and store the incidents: what the `correlations` asset
and `hub incidents --refresh` run."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from hub_ml.correlation import CorrelationResult, CorrelationSettings, correlate
from hub_pipelines.incidents.inputs import load_input, tenants_in
from hub_pipelines.incidents.store import write_incidents
from hub_pipelines.warehouse.store import Warehouse

log = logging.getLogger(__name__)


@dataclass
class DayResult:
    day: datetime
    tenants: list[str]
    results: list[CorrelationResult] = field(default_factory=list)
    written: int = 0
    members: int = 0
    load_seconds: float = 0.0
    correlate_seconds: float = 0.0
    write_seconds: float = 0.0

    @property
    def incidents(self):
        return [i for r in self.results for i in r.incidents]


def days_of(start: datetime, end: datetime) -> list[datetime]:
    """UTC midnights of the days in [start, end)."""
    day = start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    out = []
    while day < end:
        out.append(day)
        day += timedelta(days=1)
    return out


def correlate_day(
    warehouse: Warehouse,
    day: datetime,
    tenants: Sequence[str] | None = None,
    settings: CorrelationSettings | None = None,
    run_id: str | None = None,
    write: bool = True,
) -> DayResult:
    """Correlate one UTC day for every tenant with events that day (or `tenants`) and replace the
    day's incidents of those tenants."""
    settings = settings or CorrelationSettings()
    end = day + timedelta(days=1)
    chosen = sorted(tenants) if tenants else tenants_in(warehouse, day, end)
    result = DayResult(day=day, tenants=list(chosen))
    for tenant in chosen:
        started = time.perf_counter()
        data = load_input(warehouse, tenant, day, end, settings)
        loaded = time.perf_counter()
        result.results.append(correlate(data, settings))
        result.load_seconds += loaded - started
        result.correlate_seconds += time.perf_counter() - loaded
    if write:
        started = time.perf_counter()
        written = write_incidents(warehouse, result.incidents, day, chosen, run_id=run_id)
        result.written, result.members = written.incidents, written.members
        result.write_seconds = time.perf_counter() - started
    return result


def correlate_days(
    warehouse: Warehouse,
    start: datetime,
    end: datetime,
    tenants: Sequence[str] | None = None,
    settings: CorrelationSettings | None = None,
    run_id: str | None = None,
    progress: Callable[[DayResult], None] | None = None,
) -> list[DayResult]:
    out = []
    for day in days_of(start, end):
        result = correlate_day(warehouse, day, tenants, settings, run_id)
        if progress:
            progress(result)
        out.append(result)
    return out
