"""Cross-module correlation of LLM-traffic events: from many alarms to one incident with its likely
cause (plain Python: no Dagster, no database here).

``correlate(CorrelationInput(...))`` finds, for one tenant and one window, the eight kinds of
correlation (``CORRELATION_KINDS``: causal chains, temporal correlation, patterns, anomaly clusters,
cost impact, security graphs, performance chains, compliance cascades), groups them into
``Incident``s with members, strength, confidence, impact scores and ranked root-cause
``Hypothesis``es. ``match_scenarios`` scores incidents against the generator's injected scenarios.
"""

from hub_ml.correlation.engine import ENGINE_VERSION, CorrelationInput, CorrelationResult, correlate
from hub_ml.correlation.evaluation import ScenarioMatch, match_scenarios, names_root_cause
from hub_ml.correlation.model import Correlation, Hypothesis, Incident, Member
from hub_ml.correlation.schema import CELL_COLUMNS, CORRELATION_KINDS, EVENT_COLUMNS, CorrelationSettings
from hub_ml.correlation.signals import cells_from_events

__all__ = [
    "CELL_COLUMNS",
    "CORRELATION_KINDS",
    "ENGINE_VERSION",
    "EVENT_COLUMNS",
    "Correlation",
    "CorrelationInput",
    "CorrelationResult",
    "CorrelationSettings",
    "Hypothesis",
    "Incident",
    "Member",
    "ScenarioMatch",
    "cells_from_events",
    "correlate",
    "match_scenarios",
    "names_root_cause",
]
