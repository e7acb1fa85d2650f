"""Synthetic LLM-traffic series with labelled anomalies, and anomaly injection.

``simulate_hourly`` follows docs/GENERATOR_SPEC.md closely enough to develop and test detectors without
``hub_pipelines.generator``: per-request simulation (Poisson volume with a business-hours daily peak
in the tenant's timezone, lower weekends, slow growth; lognormal tokens and latency), hourly
aggregation to the generator's columns, and the spec's anomaly kinds and magnitudes with labels in
the generator's format.

``inject_anomalies`` is the self-supervised proxy used by the ensemble to weigh detectors when no
labels exist: it plants spikes, drops and level shifts of the spec's magnitudes into a copy of a
series and returns their windows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

METRICS = [
    "requests",
    "errors",
    "error_rate",
    "latency_avg_ms",
    "latency_p95_ms",
    "tokens_input",
    "tokens_output",
    "tokens_total",
    "spend_usd",
]
# (name, base latency ms, ms per output token, usd per 1k tokens, mean output tokens)
_MODELS = [
    ("gpt-4o", 350.0, 9.0, 0.010, 300.0),
    ("gpt-4o-mini", 180.0, 4.0, 0.0006, 250.0),
    ("claude-sonnet", 420.0, 10.0, 0.009, 350.0),
    ("llama-3-70b", 260.0, 7.0, 0.0009, 280.0),
]
_VOLUME_METRICS = ["requests", "tokens_input", "tokens_output", "tokens_total", "spend_usd"]
_LATENCY_METRICS = ["latency_avg_ms", "latency_p95_ms"]
# Tokens per request drive latency too (latency grows with output tokens).
_TOKEN_METRICS = ["tokens_input", "tokens_output", "tokens_total", "spend_usd", *_LATENCY_METRICS]


@dataclass(frozen=True)
class SyntheticTraffic:
    """Hourly series (one row per ts, tenant_id, model) and the labels of the injected anomalies."""

    series: pd.DataFrame
    labels: list[dict]


def seasonal_counts(days: int, seed: int, *, base: float = 40.0, start: str = "2026-09-07") -> pd.Series:
    """Hourly Poisson counts with a business-hours daily peak (UTC) and quiet weekends: the simplest
    series with the spec's shape, for tests and examples."""
    rng = np.random.default_rng(seed)
    index = pd.date_range(start, periods=days * 24, freq="h", tz="UTC")
    hour = index.hour.to_numpy()
    weekend = index.dayofweek.to_numpy() >= 5
    rate = base * (0.15 + np.exp(-0.5 * ((hour - 14) / 3.5) ** 2)) * np.where(weekend, 0.4, 1.0)
    return pd.Series(rng.poisson(rate).astype(float), index=index, name="requests")


def _daily_factor(local_hour: np.ndarray) -> np.ndarray:
    # Business-hours peak around 14:00 local, a quiet night.
    return 0.15 + np.exp(-0.5 * ((local_hour - 14.0) / 3.5) ** 2)


def simulate_hourly(
    days: int = 30,
    tenants: int = 2,
    models: int = 3,
    seed: int = 0,
    *,
    end: str = "2026-11-01T00:00:00Z",
    requests_per_hour: float = 120.0,
    anomalies: bool = True,
) -> SyntheticTraffic:
    """Simulate ``days`` of hourly traffic for ``tenants`` x ``models`` series (see module docstring)."""
    rng = np.random.default_rng(seed)
    index = pd.date_range(end=pd.Timestamp(end), periods=days * 24 + 1, freq="h", tz="UTC")[:-1]
    hours = len(index)
    frames: list[pd.DataFrame] = []
    labels: list[dict] = []
    for t in range(tenants):
        tenant = f"tenant-{t + 1:02d}"
        tz_offset = int(rng.choice([-8, -5, 0, 1, 8]))
        local = index + pd.Timedelta(hours=tz_offset)
        daily = _daily_factor(local.hour.to_numpy().astype(float))
        weekly = np.where(local.dayofweek.to_numpy() >= 5, 0.4, 1.0)
        trend = 1.0 + 0.15 * np.arange(hours) / max(hours, 1)
        shares = rng.dirichlet(np.full(models, 2.0))
        for m in range(models):
            name, base_latency, per_token, price, mean_out = _MODELS[m % len(_MODELS)]
            rate = requests_per_hour * shares[m] * daily * weekly * trend / daily.mean() / 0.83
            spans = _plan_anomalies(rng, hours) if anomalies else []
            volume_mult = np.ones(hours)
            latency_mult = np.ones(hours)
            token_mult = np.ones(hours)
            spend_mult = np.ones(hours)
            for kind, start, length in spans:
                sl = slice(start, start + length)
                label_metrics: list[str]
                if kind == "spike_latency":
                    magnitude = float(rng.uniform(3, 6))
                    latency_mult[sl] *= magnitude
                    label_kind, label_metrics = "spike", _LATENCY_METRICS
                elif kind == "spike_volume":
                    magnitude = float(rng.uniform(3, 8))
                    volume_mult[sl] *= magnitude
                    label_kind, label_metrics = "spike", _VOLUME_METRICS
                elif kind == "drop":
                    magnitude = float(rng.uniform(0.05, 0.3))
                    volume_mult[sl] *= magnitude
                    label_kind, label_metrics = "drop", _VOLUME_METRICS
                elif kind == "shift_latency":
                    magnitude = float(rng.uniform(1.6, 2.5))
                    latency_mult[sl] *= magnitude
                    label_kind, label_metrics = "level_shift", _LATENCY_METRICS
                elif kind == "shift_tokens":
                    magnitude = float(rng.uniform(1.6, 2.5))
                    token_mult[sl] *= magnitude
                    label_kind, label_metrics = "level_shift", _TOKEN_METRICS
                else:  # cost_runaway: one project's spend ramps up; the project is ~40% of the spend
                    magnitude = float(rng.uniform(5, 15))
                    ramp = np.linspace(1.0, magnitude, length)
                    spend_mult[sl] *= 0.6 + 0.4 * ramp
                    label_kind, label_metrics = "cost_runaway", ["spend_usd"]
                labels.append(
                    {
                        "id": f"{tenant}-{name}-{len(labels)}",
                        "kind": label_kind,
                        "tenant_id": tenant,
                        "model": name,
                        "project": None,
                        "metrics": list(label_metrics),
                        "start": index[start].isoformat().replace("+00:00", "Z"),
                        "end": (index[start] + pd.Timedelta(hours=length)).isoformat().replace("+00:00", "Z"),
                        "magnitude": round(magnitude, 3),
                    }
                )
            counts = rng.poisson(rate * volume_mult)
            hour_of = np.repeat(np.arange(hours), counts)
            n = len(hour_of)
            tok_in = rng.lognormal(np.log(600.0), 0.6, n) * token_mult[hour_of]
            tok_out = rng.lognormal(np.log(mean_out), 0.5, n) * token_mult[hour_of]
            load = 1.0 + 0.3 * daily[hour_of] / daily.max()
            latency = (base_latency + per_token * tok_out) * load * rng.lognormal(0, 0.35, n)
            latency *= latency_mult[hour_of]
            status_err = rng.random(n) < 0.03
            spend = (tok_in + tok_out) / 1000.0 * price * spend_mult[hour_of]
            per_request = pd.DataFrame(
                {
                    "h": hour_of,
                    "errors": status_err.astype(float),
                    "latency": latency,
                    "tokens_input": tok_in,
                    "tokens_output": tok_out,
                    "spend_usd": spend,
                }
            )
            grouped = per_request.groupby("h")
            hourly = pd.DataFrame(index=pd.RangeIndex(hours))
            hourly["requests"] = counts.astype(float)
            hourly["errors"] = grouped["errors"].sum()
            hourly["latency_avg_ms"] = grouped["latency"].mean()
            hourly["latency_p95_ms"] = grouped["latency"].quantile(0.95)
            hourly["tokens_input"] = grouped["tokens_input"].sum().round()
            hourly["tokens_output"] = grouped["tokens_output"].sum().round()
            hourly["spend_usd"] = grouped["spend_usd"].sum()
            hourly = hourly.fillna(
                {"errors": 0.0, "tokens_input": 0.0, "tokens_output": 0.0, "spend_usd": 0.0}
            )
            hourly["error_rate"] = np.where(counts > 0, hourly["errors"] / np.maximum(counts, 1), 0.0)
            hourly["tokens_total"] = hourly["tokens_input"] + hourly["tokens_output"]
            hourly.insert(0, "ts", index)
            hourly.insert(1, "tenant_id", tenant)
            hourly.insert(2, "model", name)
            frames.append(hourly[["ts", "tenant_id", "model", *METRICS]])
    return SyntheticTraffic(series=pd.concat(frames, ignore_index=True), labels=labels)


def _plan_anomalies(rng: np.random.Generator, hours: int) -> list[tuple[str, int, int]]:
    """About one anomaly per 7-10 days, none in the first 7 days, >= 48 h apart (as the spec says)."""
    kinds = ["spike_latency", "spike_volume", "drop", "shift_latency", "shift_tokens", "cost_runaway"]
    lengths = {
        "spike_latency": (1, 3),
        "spike_volume": (1, 3),
        "drop": (2, 6),
        "shift_latency": (12, 72),
        "shift_tokens": (12, 72),
        "cost_runaway": (6, 24),
    }
    spans: list[tuple[str, int, int]] = []
    cursor = 7 * 24 + int(rng.integers(0, 72))
    while True:
        kind = str(rng.choice(kinds))
        lo, hi = lengths[kind]
        length = int(rng.integers(lo, hi + 1))
        if cursor + length >= hours:
            break
        spans.append((kind, cursor, length))
        cursor += length + 48 + int(rng.integers(5 * 24, 9 * 24))
    return spans


def inject_anomalies(
    series: pd.Series,
    rng: np.random.Generator,
    *,
    every: int = 72,
    margin: int = 24,
) -> tuple[pd.Series, list[tuple[pd.Timestamp, pd.Timestamp]]]:
    """Plant one anomaly per ``every`` points (after ``margin`` points) into a copy of ``series``.

    Kinds rotate through a spike (x3-x6 for 1-3 points), a drop (to 5-30% for 2-6 points) and a level
    shift (x1.6-x2.5 for 6-12 points); for metrics that take negative values the change is additive,
    in units of the series' spread. Returns the modified series and the [start, end) windows.
    """
    out = series.astype(float).copy()
    values = out.to_numpy(copy=True)
    n = len(values)
    valid = values[~np.isnan(values)]
    nonneg = bool(len(valid) and valid.min() >= 0)
    spread = float(np.nanstd(valid)) if len(valid) else 1.0
    step = out.index[1] - out.index[0] if n > 1 else pd.Timedelta(hours=1)
    windows: list[tuple[pd.Timestamp, pd.Timestamp]] = []
    kinds = ("spike", "drop", "shift")
    slot = 0
    for start in range(margin, n - 8, every):
        kind = kinds[slot % len(kinds)]
        slot += 1
        start = start + int(rng.integers(0, max(1, every // 3)))
        if kind == "spike":
            length, factor = int(rng.integers(1, 4)), float(rng.uniform(3, 6))
        elif kind == "drop":
            length, factor = int(rng.integers(2, 7)), float(rng.uniform(0.05, 0.3))
        else:
            length, factor = int(rng.integers(6, 13)), float(rng.uniform(1.6, 2.5))
        stop = min(start + length, n)
        if stop <= start:
            continue
        if nonneg:
            values[start:stop] *= factor
        else:
            values[start:stop] += np.sign(factor - 1) * 6 * spread
        windows.append((out.index[start], out.index[stop - 1] + step))
    out[:] = values
    return out, windows
