"""Small stand-in for ``hub_pipelines.generator`` (docs/GENERATOR_SPEC.md) for fast unit tests.

One (tenant, model) traffic stream, simulated per request the way the spec describes: volume =
base rate x business-hours daily profile (in the tenant's time zone) x weekly profile (weekends
lower) x slow growth, Poisson noise; tokens lognormal per request; latency growing with output
tokens and load, lognormal noise; spend = tokens x price. Acceptance tests use the real generator.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def synthetic_hourly_traffic(
    *,
    days: int = 120,
    seed: int = 0,
    requests_per_hour: float = 1000.0,
    end: str = "2026-11-01T00:00:00Z",
    utc_offset_hours: int = -5,
    growth_per_day: float = 0.003,
    price_per_1k_tokens: float = 0.005,
) -> pd.DataFrame:
    """Hourly rows: ts, requests, tokens_total, latency_p95_ms, spend_usd (like ``hourly_series``)."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range(end=pd.Timestamp(end) - pd.Timedelta(hours=1), periods=days * 24, freq="h")
    local = ts + pd.Timedelta(hours=utc_offset_hours)
    hour, weekday = local.hour.to_numpy(), local.dayofweek.to_numpy()
    daily = 0.2 + np.exp(-0.5 * ((hour - 13.5) / 3.2) ** 2)
    weekly = np.where(weekday >= 5, 0.45, 1.0)
    growth = 1 + growth_per_day * np.arange(len(ts)) / 24
    requests = rng.poisson(requests_per_hour * daily * weekly * growth)

    hour_of_request = np.repeat(np.arange(len(ts)), requests)
    tokens_in = rng.lognormal(np.log(600), 0.6, hour_of_request.size)
    tokens_out = rng.lognormal(np.log(250), 0.5, hour_of_request.size)
    load = 1 + 0.3 * (daily[hour_of_request] - daily.min()) / np.ptp(daily)
    latency = (300 + 6 * tokens_out) * load * rng.lognormal(0, 0.25, hour_of_request.size)

    tokens_total = np.bincount(hour_of_request, tokens_in + tokens_out, minlength=len(ts))
    order = np.argsort(hour_of_request, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(requests)])
    sorted_latency = latency[order]
    p95 = np.array(
        [
            np.quantile(sorted_latency[a:b], 0.95) if b > a else np.nan
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]
    )
    return pd.DataFrame(
        {
            "ts": ts,
            "requests": requests.astype(float),
            "tokens_total": tokens_total,
            "latency_p95_ms": p95,
            "spend_usd": tokens_total / 1000 * price_per_1k_tokens,
        }
    )
