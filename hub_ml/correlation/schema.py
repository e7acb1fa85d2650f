"""What the correlation engine reads and the settings it runs with.

Inputs are pandas frames with the warehouse's column names (plain data: the engine never touches a
database):

- ``events``: the validated events of one tenant around the analysed window (``EVENT_COLUMNS``; the
  security indicators ``ip``, ``user_id``, ``api_key_id`` taken out of the payload);
- ``cells``: hourly aggregates of the events over the look-back and the window (``CELL_COLUMNS``),
  computed by SQL in the warehouse or by ``hub_ml.correlation.signals.cells_from_events``;
- ``security``: the tenant's security detections over the look-back and the window, with indicators
  (the baseline of which IPs, users and keys are usual);
- ``anomalies``: rows of the ``anomalies`` table (series_key, ts, metric, model, project, value,
  expected_low, expected_high, score, severity, detected_by, explanation), optional;
- ``assets``: the ``asset_catalog`` rows (asset_id, asset_name, asset_type, depends_on), optional.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

EVENT_COLUMNS = (
    "event_id",
    "event_time",
    "tenant_id",
    "source_module",
    "event_type",
    "correlation_id",
    "severity",
    "metric_name",
    "metric_value",
    "model",
    "project",
    "status",
    "asset_id",
    "cost_usd",
    "threat_type",
    "policy_id",
    "policy_category",
    "outcome",
    "ip",
    "user_id",
    "api_key_id",
)
# One row per (hour, kind, model, project, label): kind is attempt (latency_ms events, one per
# request attempt), tokens (tokens_input/tokens_output events), cost, detection or evaluation; label
# is the threat type of detections and the policy category of evaluations. n counts events,
# n_failed attempts whose status is not ok or evaluations that failed, n_calls distinct correlation
# ids, value_sum sums metric values (USD for cost), log_sum sums ln(latency_ms) of attempts.
CELL_COLUMNS = (
    "hour",
    "kind",
    "model",
    "project",
    "label",
    "n",
    "n_failed",
    "n_calls",
    "value_sum",
    "log_sum",
)
CELL_KINDS = ("attempt", "tokens", "cost", "detection", "evaluation")

OBSERVATORY = "llm-observatory"
COSTOPS = "llm-costops"
SENTINEL = "llm-sentinel"
POLICY = "llm-policy-engine"
GOVERNANCE = "llm-governance"
REGISTRY = "llm-registry"
MODULES = (OBSERVATORY, COSTOPS, SENTINEL, POLICY, GOVERNANCE, REGISTRY)

# The eight kinds of correlation (issue 7).
CORRELATION_KINDS = (
    "causal_chain",
    "temporal",
    "pattern",
    "anomaly_cluster",
    "cost_impact",
    "security_graph",
    "performance_chain",
    "compliance_cascade",
)

# Which module an `anomalies` table metric belongs to (by exact name, then by prefix).
ANOMALY_METRIC_MODULES = {
    "requests": OBSERVATORY,
    "calls": OBSERVATORY,
    "errors": OBSERVATORY,
    "error_rate": OBSERVATORY,
    "retries": OBSERVATORY,
    "throughput_rps": OBSERVATORY,
    "spend_usd": COSTOPS,
    "cost_usd": COSTOPS,
    "threats": SENTINEL,
    "detections": SENTINEL,
    "violations": POLICY,
    "compliance_rate": POLICY,
}
ANOMALY_METRIC_PREFIXES = {
    "latency": OBSERVATORY,
    "tokens": OBSERVATORY,
    "cost_": COSTOPS,
    "spend": COSTOPS,
    "policy": POLICY,
}


def module_of_metric(metric: str) -> str | None:
    if metric in ANOMALY_METRIC_MODULES:
        return ANOMALY_METRIC_MODULES[metric]
    for prefix, module in ANOMALY_METRIC_PREFIXES.items():
        if metric.startswith(prefix):
            return module
    return None


@dataclass(frozen=True)
class CorrelationSettings:
    """Thresholds of the engine. The defaults are those the acceptance tests measure."""

    lookback_days: int = 7  # history for the hourly baselines and the usual indicators
    margin_hours: int = 6  # read this far either side of the window, to see incidents whole
    min_history_days: int = 2  # fewer: no baseline, no signal
    # A signal: an hour whose value is this far above its baseline (one-sided z, after the
    # family-wise correction over every series and hour of the window)...
    family_alpha: float = 0.01
    min_z: float = 4.0
    # ...and this much larger, in ratio and in absolute excess (events) for count series.
    min_count_ratio: float = 1.6
    min_count_excess: float = 6.0
    min_value_ratio: float = 1.35  # latency (geometric mean)
    min_amount_ratio: float = 1.6  # spend, tokens
    # Series related to an episode (same entity and hours) are tested against the bound of those
    # few tests, but never below this z.
    min_corroboration_z: float = 2.5
    # Runs of up to this many hours are tested together (a surge of three hours, each a little
    # above baseline, is one strong signal).
    scan_hours: int = 4
    # Signals of one series less than this many hours apart are one episode.
    episode_gap_hours: int = 1
    # Episodes are clustered when their hours overlap with this tolerance and they share an entity.
    cluster_gap_hours: int = 1
    # A cluster of signals (without a security part or cascade) is an incident when the sum over
    # its episodes and hours of z above 3 reaches this: an hour of two series just past their
    # bounds is not enough, what the scenarios do is (engine.evidence_of).
    min_evidence: float = 10.0
    # Causal chains: events of a correlation id no more than this far apart.
    chain_gap_seconds: float = 60.0
    # Temporal correlation: lags tried (hours), the false discovery rate, the context either side.
    max_lag_hours: int = 3
    fdr_q: float = 0.05
    temporal_context_hours: int = 12
    # Security graph: an indicator joins detections when its count is this improbable under its
    # usual rate (Bonferroni over the indicators seen) and this many times its expected count.
    indicator_alpha: float = 0.001
    min_indicator_lift: float = 5.0
    min_component_detections: int = 5
    max_connector_share: float = 0.05  # values more common than this in the look-back never join
    security_link_gap_hours: float = 2.0
    # Compliance cascades: a consequence starts no later than this after its cause ends.
    cascade_gap_hours: int = 3
    # Incidents keep at most this many member events per piece of evidence (all are counted).
    max_member_events: int = 200


def empty_frame(columns) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
