"""Simulations with injected scenarios and the engine run over them day by day, as the
`correlations` asset runs it, made once per session (they are what several tests judge)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pytest

from hub_ml.correlation import CorrelationInput, Incident, cells_from_events, correlate
from hub_pipelines.generator import GeneratorConfig, Simulation, simulate
from hub_pipelines.generator.frames import asset_catalog_frame, events_frame

END = "2026-11-01T00:00:00Z"
# Small enough for the suite (a seed takes a few seconds), large enough for the baselines: 10 days,
# the first two only history. Scenarios start after a 3-day warm-up, about every 2 days a tenant.
SCENARIO_CONFIG = {"days": 10, "tenants": 2, "end": END, "requests_per_hour": 60.0, "anomalies": False}
FIRST_DAY = 2


@dataclass
class Correlated:
    sim: Simulation
    incidents: list[Incident]
    tenant_days: int


def run_engine(sim: Simulation, first_day: int = FIRST_DAY) -> Correlated:
    """Every tenant, every day from `first_day` to the end, one window a day."""
    events = events_frame(sim)
    assets = asset_catalog_frame(sim)
    start = pd.Timestamp(sim.config.start_utc)
    incidents: list[Incident] = []
    tenant_days = 0
    for tenant in [t.tenant_id for t in sim.catalogue.tenants]:
        own = events[events["tenant_id"] == tenant].reset_index(drop=True)
        cells = cells_from_events(own)
        catalog = assets[assets["tenant_id"] == tenant]
        for day in range(first_day, sim.config.days):
            window = start + pd.Timedelta(days=day)
            data = CorrelationInput(
                tenant, window, window + pd.Timedelta(days=1), own, cells=cells, assets=catalog
            )
            incidents += correlate(data).incidents
            tenant_days += 1
    return Correlated(sim, incidents, tenant_days)


@pytest.fixture(scope="session")
def engine_run():
    """`run_engine`, for tests that simulate their own data."""
    return run_engine


@pytest.fixture(scope="session")
def scenario_sim() -> Simulation:
    return simulate(GeneratorConfig(seed=1, scenarios=True, **SCENARIO_CONFIG))


@pytest.fixture(scope="session")
def scenario_runs() -> list[Correlated]:
    """Four seeds with scenarios, no other anomalies."""
    return [
        run_engine(simulate(GeneratorConfig(seed=seed, scenarios=True, **SCENARIO_CONFIG)))
        for seed in (1, 2, 3, 4)
    ]
