"""Injected anomalies: where they go, what they do to the traffic, and their labels.

Each (tenant, model) series gets about one anomaly every 7-10 days, none in the first 7 days (the
detectors' warm-up), and consecutive anomalies of a series start 7-10 days apart, so they are always
more than 48 hours apart (the longest lasts 72 hours). Threat bursts follow the same rules on each
tenant's security series. Labels are as docs/GENERATOR_SPEC.md describes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np

from hub_pipelines.generator.catalogue import Catalogue
from hub_pipelines.generator.config import GeneratorConfig, format_utc

WARM_UP_HOURS = 7 * 24
MIN_GAP_HOURS = 48
# Consecutive anomalies of one series start this many hours apart (7-10 days).
SPACING_HOURS = (7 * 24, 10 * 24)

VOLUME_METRICS = ("requests", "errors", "tokens_input", "tokens_output", "tokens_total", "spend_usd")
LATENCY_METRICS = ("latency_avg_ms", "latency_p95_ms")
# Longer completions also take longer, so a token shift moves latency too.
TOKEN_METRICS = ("tokens_input", "tokens_output", "tokens_total", "spend_usd", *LATENCY_METRICS)
# A runaway agent re-sends an ever longer context: input tokens and spend grow, latency does not.
RUNAWAY_METRICS = ("spend_usd", "tokens_input", "tokens_total")
THREAT_METRICS = ("threats",)

# (variant, label kind, weight, duration hours (min, max), magnitude (min, max))
_SERIES_VARIANTS: tuple[tuple[str, str, float, tuple[int, int], tuple[float, float]], ...] = (
    ("spike_latency", "spike", 0.15, (1, 3), (3.0, 6.0)),
    ("spike_volume", "spike", 0.15, (1, 3), (3.0, 8.0)),
    ("drop", "drop", 0.2, (2, 6), (0.05, 0.3)),
    ("shift_latency", "level_shift", 0.125, (12, 72), (1.6, 2.5)),
    ("shift_tokens", "level_shift", 0.125, (12, 72), (1.6, 2.5)),
    ("cost_runaway", "cost_runaway", 0.25, (6, 24), (5.0, 15.0)),
)
_BURST_DURATION = (1, 4)
_BURST_MAGNITUDE = (5.0, 20.0)
_BURST_THREATS = ("prompt_injection", "jailbreak", "model_abuse", "data_exfiltration")
# Volume anomalies and runaways (which start with a deploy) are moved into the tenant's working
# day, where there is traffic to move.
_BUSY_LOCAL_HOURS = (9, 16)


@dataclass
class AnomalyEffects:
    """Multipliers the simulation applies, per (hour, tenant, model) cell or (hour, tenant)."""

    volume: np.ndarray  # (H, T, M) request rate
    latency: np.ndarray  # (H, T, M) latency of every request
    tokens: np.ndarray  # (H, T, M) input and output tokens
    runaway_project: np.ndarray  # (H, T, M) project index whose input tokens run away, -1 if none
    runaway_input: np.ndarray  # (H, T, M) input-token multiplier of that project
    threats: np.ndarray  # (H, T) security detections, in multiples of the tenant's mean rate
    burst: np.ndarray  # (H, T) index into `bursts`, -1 if none
    bursts: list[tuple[str, str]] = field(default_factory=list)  # (threat type, attacker ip)


def no_effects(hours: int, tenants: int, models: int) -> AnomalyEffects:
    cells = (hours, tenants, models)
    return AnomalyEffects(
        volume=np.ones(cells),
        latency=np.ones(cells),
        tokens=np.ones(cells),
        runaway_project=np.full(cells, -1, dtype=np.int32),
        runaway_input=np.ones(cells),
        threats=np.ones((hours, tenants)),
        burst=np.full((hours, tenants), -1, dtype=np.int32),
    )


def _local_hour(config: GeneratorConfig, offset_minutes: int, hour: int) -> float:
    return ((config.start_ms // 3_600_000 + hour) % 24 + offset_minutes / 60.0) % 24


def _into_working_day(config: GeneratorConfig, offset_minutes: int, start: int) -> int:
    lo, hi = _BUSY_LOCAL_HOURS
    for shift in range(24):
        if lo <= _local_hour(config, offset_minutes, start + shift) <= hi:
            return start + shift
    return start


def _starts(rng: np.random.Generator, hours: int) -> list[int]:
    """Candidate start hours of one series: the first after the warm-up, then every 7-10 days."""
    out = []
    start = WARM_UP_HOURS + int(rng.integers(0, 72))
    while start < hours:
        out.append(start)
        start += int(rng.integers(SPACING_HOURS[0], SPACING_HOURS[1] + 1))
    return out


def expected_cost_share_of_input(
    config: GeneratorConfig, catalogue: Catalogue, model: int, project: int
) -> float:
    """E[request cost] / E[input-token cost] for a model and project: how much input tokens must
    grow for the request's cost to grow by a given factor."""
    spec = catalogue.models[model]
    context = catalogue.projects[project].context_factor
    mean_in = spec.input_median * context * np.exp(spec.input_sigma**2 / 2)
    mean_out = (
        spec.output_median * np.exp(spec.output_sigma**2 / 2) * (1 - spec.error_rate - spec.timeout_rate)
    )
    cost_in = mean_in * spec.usd_per_1k_input
    cost_out = mean_out * spec.usd_per_1k_output
    return float((cost_in + cost_out) / cost_in)


def plan_anomalies(config: GeneratorConfig, catalogue: Catalogue) -> tuple[AnomalyEffects, list[dict]]:
    """The effects to apply and the labels, in order of start time."""
    hours, n_tenants, n_models = config.hours, len(catalogue.tenants), len(catalogue.models)
    effects = no_effects(hours, n_tenants, n_models)
    if not config.anomalies:
        return effects, []
    rng = config.rng("anomalies")
    weights = np.array([v[2] for v in _SERIES_VARIANTS])
    weights /= weights.sum()
    planned: list[tuple[int, int, int | None, dict]] = []  # (start, tenant, model or None, label)
    start_dt = config.start_utc

    def label(
        kind: str, tenant: int, model: int | None, project: int | None, metrics, start, length, magnitude
    ):
        return {
            "id": "",
            "kind": kind,
            "tenant_id": catalogue.tenants[tenant].tenant_id,
            "model": catalogue.models[model].name if model is not None else None,
            "project": catalogue.projects[project].name if project is not None else None,
            "metrics": list(metrics),
            "start": format_utc(start_dt + timedelta(hours=start)),
            "end": format_utc(start_dt + timedelta(hours=start + length)),
            "magnitude": round(float(magnitude), 3),
        }

    for t, tenant in enumerate(catalogue.tenants):
        for m in tenant.models:
            for start in _starts(rng, hours):
                variant_idx = int(rng.choice(len(_SERIES_VARIANTS), p=weights))
                variant, kind, _, (lo_len, hi_len), (lo_mag, hi_mag) = _SERIES_VARIANTS[variant_idx]
                length = int(rng.integers(lo_len, hi_len + 1))
                magnitude = float(rng.uniform(lo_mag, hi_mag))
                project_pick = float(rng.random())
                if variant in ("spike_volume", "drop", "cost_runaway"):
                    start = _into_working_day(config, tenant.utc_offset_minutes, start)
                if start + length > hours:
                    break
                window = slice(start, start + length)
                project = None
                if variant == "spike_latency":
                    effects.latency[window, t, m] *= magnitude
                    metrics = LATENCY_METRICS
                elif variant in ("spike_volume", "drop"):
                    effects.volume[window, t, m] *= magnitude
                    metrics = VOLUME_METRICS
                elif variant == "shift_latency":
                    effects.latency[window, t, m] *= magnitude
                    metrics = LATENCY_METRICS
                elif variant == "shift_tokens":
                    effects.tokens[window, t, m] *= magnitude
                    metrics = TOKEN_METRICS
                else:
                    shares = np.array([catalogue.projects[p].share for p in tenant.projects])
                    local = min(
                        int(np.searchsorted(np.cumsum(shares) / shares.sum(), project_pick)), len(shares) - 1
                    )
                    project = tenant.projects[local]
                    # Spend of the project ramps linearly from x1 to x magnitude over the window.
                    ramp = np.linspace(1.0, magnitude, length + 1)[1:]
                    ratio = expected_cost_share_of_input(config, catalogue, m, project)
                    effects.runaway_project[window, t, m] = project
                    effects.runaway_input[window, t, m] = 1.0 + (ramp - 1.0) * ratio
                    metrics = RUNAWAY_METRICS
                planned.append((start, t, m, label(kind, t, m, project, metrics, start, length, magnitude)))
        for start in _starts(rng, hours):
            length = int(rng.integers(_BURST_DURATION[0], _BURST_DURATION[1] + 1))
            magnitude = float(rng.uniform(*_BURST_MAGNITUDE))
            threat = _BURST_THREATS[int(rng.integers(0, len(_BURST_THREATS)))]
            ip = f"203.0.113.{int(rng.integers(1, 255))}"
            if start + length > hours:
                break
            effects.threats[start : start + length, t] *= magnitude
            effects.burst[start : start + length, t] = len(effects.bursts)
            effects.bursts.append((threat, ip))
            planned.append(
                (
                    start,
                    t,
                    None,
                    label("threat_burst", t, None, None, THREAT_METRICS, start, length, magnitude),
                )
            )
    planned.sort(key=lambda p: (p[0], p[1], -1 if p[2] is None else p[2]))
    labels = []
    for number, (*_, item) in enumerate(planned, start=1):
        item["id"] = f"anomaly-{number:04d}"
        labels.append(item)
    return effects, labels
