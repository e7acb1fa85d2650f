"""Simulated LLM traffic for hub: in-memory series for the ML libraries and batch files of events
for ingest (docs/GENERATOR_SPEC.md). Plain Python and numpy; no Dagster import."""

from hub_pipelines.generator.batches import write_batches
from hub_pipelines.generator.config import GeneratorConfig
from hub_pipelines.generator.series import hourly_series, security_series
from hub_pipelines.generator.simulation import Simulation, simulate

__all__ = ["GeneratorConfig", "Simulation", "hourly_series", "security_series", "simulate", "write_batches"]
