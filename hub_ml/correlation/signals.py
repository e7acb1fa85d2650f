"""Per-module hourly series of a tenant, their baselines, and the episodes where they depart upward.

Series (``SERIES_METRICS``), by model and by project unless noted: ``calls`` (distinct correlation
ids of request attempts), ``retries`` (attempts beyond the first of a call), ``errors`` (attempts
that failed or timed out), ``latency`` (geometric mean of latency_ms), ``tokens``, ``spend`` (USD of
cost events); ``detections`` (llm-sentinel, in all and by threat type) and ``violations`` (failed
policy evaluations, by category).

Baseline of an hour: a daily profile (the median of each hour of the day over the look-back) times
the level of its UTC day (the median ratio of the day's hours to the profile, robust to the few
hours an incident takes). Departure: counts on the Anscombe (variance-stabilised) scale with the
dispersion measured on the look-back; latency, tokens and spend as log ratios with their look-back
spread, widened for hours with fewer requests. An hour is a signal when its one-sided z passes the
Bonferroni bound over every series and hour of the window and its ratio and excess are material;
signals of one series close in time are an episode.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from hub_ml.correlation.schema import (
    CELL_COLUMNS,
    CELL_KINDS,
    COSTOPS,
    OBSERVATORY,
    POLICY,
    SENTINEL,
    CorrelationSettings,
)

COUNT, AMOUNT, LEVEL = "count", "amount", "level"
# metric -> (module, cell kind, value type, dimensions it is kept by)
SERIES_METRICS: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "calls": (OBSERVATORY, "attempt", COUNT, ("model", "project")),
    "retries": (OBSERVATORY, "attempt", COUNT, ("model", "project")),
    "errors": (OBSERVATORY, "attempt", COUNT, ("model", "project")),
    "latency": (OBSERVATORY, "attempt", LEVEL, ("model", "project")),
    "tokens": (OBSERVATORY, "tokens", AMOUNT, ("model", "project")),
    "spend": (COSTOPS, "cost", AMOUNT, ("model", "project")),
    "detections": (SENTINEL, "detection", COUNT, ("all", "label")),
    "violations": (POLICY, "evaluation", COUNT, ("label",)),
}
LABEL_NAMES = {"detection": "threat_type", "evaluation": "policy_category"}


def cells_from_events(events: pd.DataFrame) -> pd.DataFrame:
    """Hourly cells (``CELL_COLUMNS``) of events: what the warehouse's SQL aggregation returns."""
    if events.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in CELL_COLUMNS})
    etype, metric = events["event_type"], events["metric_name"]
    is_attempt = (etype == "telemetry") & (metric == "latency_ms")
    is_tokens = (etype == "telemetry") & metric.isin(["tokens_input", "tokens_output"])
    kind = np.select(
        [is_attempt, is_tokens, etype == "cost", etype == "security", etype == "policy"],
        ["attempt", "tokens", "cost", "detection", "evaluation"],
        default="",
    )
    keep = kind != ""
    ev = events.loc[keep]
    kind = kind[keep]
    label = np.where(
        kind == "detection", ev["threat_type"], np.where(kind == "evaluation", ev["policy_category"], None)
    )
    failed = np.where(
        kind == "attempt",
        ev["status"].fillna("ok").to_numpy() != "ok",
        np.where(kind == "evaluation", ev["outcome"].to_numpy() == "fail", False),
    )
    value = np.where(
        kind == "cost", ev["cost_usd"].to_numpy(dtype=float), ev["metric_value"].to_numpy(dtype=float)
    )
    value = np.where(np.isin(kind, ["attempt", "tokens", "cost"]), value, np.nan)
    log = np.where(kind == "attempt", np.log(np.maximum(np.nan_to_num(value, nan=1.0), 1.0)), np.nan)
    frame = pd.DataFrame(
        {
            "hour": ev["event_time"].dt.floor("h").to_numpy(),
            "kind": kind,
            "model": ev["model"].to_numpy(dtype=object),
            "project": ev["project"].to_numpy(dtype=object),
            "label": label,
            "failed": failed.astype(np.int64),
            "value": value,
            "log": log,
            "correlation_id": ev["correlation_id"].to_numpy(dtype=object),
        }
    )
    grouped = frame.groupby(["hour", "kind", "model", "project", "label"], dropna=False, sort=True)
    out = grouped.agg(
        n=("failed", "size"),
        n_failed=("failed", "sum"),
        n_calls=("correlation_id", "nunique"),
        value_sum=("value", "sum"),
        log_sum=("log", "sum"),
    ).reset_index()
    out["hour"] = pd.to_datetime(out["hour"], utc=True)
    return out[list(CELL_COLUMNS)]


def normalise_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """Cells with their types fixed (from SQL or pandas alike)."""
    out = cells.copy()
    if not isinstance(out["hour"].dtype, pd.DatetimeTZDtype):
        out["hour"] = pd.to_datetime(out["hour"], utc=True)
    else:
        out["hour"] = out["hour"].dt.tz_convert("UTC")
    for column in ("n", "n_failed", "n_calls"):
        out[column] = pd.to_numeric(out[column]).fillna(0).astype(np.int64)
    for column in ("value_sum", "log_sum"):
        out[column] = pd.to_numeric(out[column]).astype(float).fillna(0.0)
    for column in ("model", "project", "label"):
        out[column] = out[column].astype(object).where(out[column].notna(), None)
    out["kind"] = pd.Categorical(out["kind"].astype(str), categories=CELL_KINDS)
    return out


@dataclass
class SeriesBank:
    """Every series of a tenant on one hourly grid: values, weights (requests behind each value),
    expected values, z-scores and ratios."""

    keys: list[tuple[str, str, str]]  # (metric, dimension, value)
    hours: pd.DatetimeIndex
    values: np.ndarray  # (S, T)
    weights: np.ndarray  # (S, T)
    expected: np.ndarray  # (S, T), NaN where there is no baseline
    z: np.ndarray  # (S, T)
    ratio: np.ndarray  # (S, T)
    analysed: np.ndarray  # (T,) bool: hours of the analysed span
    history_ok: np.ndarray  # (S,) bool

    def index_of(self, key: tuple[str, str, str]) -> int | None:
        try:
            return self.keys.index(key)
        except ValueError:
            return None

    def hour_index(self, moment: pd.Timestamp) -> int:
        return int((moment - self.hours[0]) / pd.Timedelta(hours=1))


def series_key(tenant_id: str, metric: str, dimension: str, value: str) -> str:
    """The key an episode is published under, e.g. ``tenant-01|calls|model=gpt-4o``."""
    if dimension == "all":
        return f"{tenant_id}|{metric}"
    return f"{tenant_id}|{metric}|{dimension}={value}"


def _metric_columns(metric: str, cells: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """(value to sum, weight to sum) of each cell for a metric."""
    if metric == "calls":
        return cells["n_calls"].astype(float), cells["n"].astype(float)
    if metric == "retries":
        return (cells["n"] - cells["n_calls"]).clip(lower=0).astype(float), cells["n"].astype(float)
    if metric == "errors":
        return cells["n_failed"].astype(float), cells["n"].astype(float)
    if metric == "latency":
        return cells["log_sum"].astype(float), cells["n"].astype(float)
    if metric in ("tokens", "spend"):
        return cells["value_sum"].astype(float), cells["n"].astype(float)
    if metric == "detections":
        return cells["n"].astype(float), cells["n"].astype(float)
    if metric == "violations":
        return cells["n_failed"].astype(float), cells["n"].astype(float)
    raise KeyError(metric)


def build_series(cells: pd.DataFrame, hours: pd.DatetimeIndex) -> tuple[list, np.ndarray, np.ndarray]:
    """Series keys and their (S, T) value and weight matrices on the hourly grid."""
    keys: list[tuple[str, str, str]] = []
    blocks_v: list[np.ndarray] = []
    blocks_w: list[np.ndarray] = []
    n_hours = len(hours)
    first = hours[0].value if n_hours else 0
    for metric, (_, kind, vtype, dims) in SERIES_METRICS.items():
        part = cells[cells["kind"] == kind]
        if part.empty or not n_hours:
            continue
        value, weight = _metric_columns(metric, part)
        slot = (part["hour"].to_numpy(dtype="datetime64[ns]").astype(np.int64) - first) // 3_600_000_000_000
        inside = (slot >= 0) & (slot < n_hours)
        slot = slot[inside]
        v_all, w_all = value.to_numpy(dtype=float)[inside], weight.to_numpy(dtype=float)[inside]
        for dim in dims:
            if dim == "all":
                codes, names = np.zeros(len(slot), dtype=np.int64), np.array(["all"], dtype=object)
            else:
                codes, names = pd.factorize(part[dim].to_numpy(dtype=object)[inside], sort=True)
            keep = codes >= 0  # no value of the dimension: not in its series
            if not keep.any():
                continue
            flat = codes[keep] * n_hours + slot[keep]
            size = len(names) * n_hours
            v = np.bincount(flat, weights=v_all[keep], minlength=size).reshape(len(names), n_hours)
            w = np.bincount(flat, weights=w_all[keep], minlength=size).reshape(len(names), n_hours)
            if vtype == LEVEL:
                with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                    v = np.where(w > 0, np.exp(v / np.maximum(w, 1)), np.nan)
            dim_name = LABEL_NAMES.get(kind, "label") if dim == "label" else dim
            keys += [(metric, dim_name, str(name)) for name in names]
            blocks_v.append(v)
            blocks_w.append(w)
    if not keys:
        return [], np.zeros((0, n_hours)), np.zeros((0, n_hours))
    return keys, np.vstack(blocks_v), np.vstack(blocks_w)


def _levels(ratio: np.ndarray, valid: np.ndarray, window: int = 13, min_hours: int = 5) -> np.ndarray:
    """Per series and hour, the median of `ratio` over the valid hours of the `window` hours around
    it: the level of traffic then relative to the daily profile (weekends, growth), robust to the few
    hours an incident takes, and following a weekend that starts at local, not UTC, midnight."""
    frame = pd.DataFrame(np.where(valid, ratio, np.nan).T)
    level = frame.rolling(window, center=True, min_periods=min_hours).median().to_numpy().T
    return np.clip(np.nan_to_num(level, nan=1.0), 0.25, 4.0)


def _mad_sigma(residuals: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per row, 1.4826 x the median absolute deviation of the masked residuals (NaN if none)."""
    r = np.where(mask, residuals, np.nan)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        centre = np.nanmedian(r, axis=1, keepdims=True)
        return 1.4826 * np.nanmedian(np.abs(r - centre), axis=1), centre[:, 0], r


def score_series(
    keys: list[tuple[str, str, str]],
    values: np.ndarray,
    weights: np.ndarray,
    hours: pd.DatetimeIndex,
    span_start: pd.Timestamp,
    settings: CorrelationSettings,
    data_start: pd.Timestamp | None = None,
) -> SeriesBank:
    """Baselines, z-scores and ratios of every series; the look-back is every hour from
    `data_start` (the tenant's first data, so that hours before it are not read as zeros) to
    `span_start`, the analysed span every hour from it. Vectorised over series."""
    n_series, n_hours = values.shape
    analysed = np.asarray(hours >= span_start)
    history = ~analysed
    if data_start is not None:
        history &= np.asarray(hours >= data_start.floor("h"))
    hod = np.asarray(hours.hour)
    day = np.asarray(hours.floor("D").asi8 // (86_400 * 10**9))  # UTC day numbers
    expected = np.full((n_series, n_hours), np.nan)
    z = np.full((n_series, n_hours), np.nan)
    ratio = np.full((n_series, n_hours), np.nan)
    history_ok = np.zeros(n_series, dtype=bool)
    history_days = len(np.unique(day[history])) if history.any() else 0
    if n_series == 0 or history_days < settings.min_history_days:
        return SeriesBank(keys, hours, values, weights, expected, z, ratio, analysed, history_ok)
    vtypes = np.array([SERIES_METRICS[metric][2] for metric, _, _ in keys])
    level_rows = vtypes == LEVEL
    valid = np.ones((n_series, n_hours), dtype=bool)
    valid[level_rows] = ~np.isnan(values[level_rows]) & (weights[level_rows] >= 3)
    masked = np.where(valid, values, np.nan)
    # Daily profile: the median of each hour of the day over the look-back (an hour of the day seen
    # once in a short look-back is still a better guess of that hour than the other hours are; one
    # never seen takes their median). The spread of departures is measured out of sample: each
    # look-back hour against the median of the *other* days at that hour, so a profile made of few
    # days is not credited with fitting its own data (with one other day, the error is that of
    # predicting from a single day, which is what such a profile does).
    profile = np.full((n_series, 24), np.nan)
    p_loo = np.full((n_series, n_hours), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for h in range(24):
            chosen = np.flatnonzero(history & (hod == h))
            if not len(chosen):
                continue
            block = masked[:, chosen]
            profile[:, h] = np.nanmedian(block, axis=1)
            if len(chosen) > 1:
                for j, column in enumerate(chosen.tolist()):
                    p_loo[:, column] = np.nanmedian(np.delete(block, j, axis=1), axis=1)
        fallback = np.nanmedian(profile, axis=1, keepdims=True)
    history_ok = ~np.isnan(fallback[:, 0])
    profile = np.where(np.isnan(profile), fallback, profile)
    p = profile[:, hod]
    x, w = values, weights
    hist_valid = valid & history[None, :] & np.isfinite(p_loo)

    # Counts: Anscombe residuals with the look-back's dispersion.
    rows = np.flatnonzero((vtypes == COUNT) & history_ok)
    if len(rows):
        xc, pc = x[rows], p[rows]
        pseudo = np.maximum(1.0, profile[rows].mean(axis=1, keepdims=True))
        level = _levels((xc + pseudo) / (pc + pseudo), valid[rows])
        e = level * pc
        a = 2.0 * (np.sqrt(xc + 0.375) - np.sqrt(e + 0.375))
        e_loo = level * np.nan_to_num(p_loo[rows])
        a_loo = 2.0 * (np.sqrt(xc + 0.375) - np.sqrt(e_loo + 0.375))
        spread, _, _ = _mad_sigma(a_loo, hist_valid[rows])
        phi = np.clip(np.nan_to_num(spread, nan=1.0) ** 2, 1.0, 25.0)
        z[rows] = a / np.sqrt(phi)[:, None]
        ratio[rows] = (xc + 1.0) / (e + 1.0)
        expected[rows] = e

    # Amounts and levels: log ratios, widened for hours with fewer requests, with the spread of the
    # middle of the look-back or of its upper tail (heavy-tailed sums), whichever is wider.
    rows = np.flatnonzero((vtypes != COUNT) & history_ok)
    if len(rows):
        xa, pa, wa, va = x[rows], p[rows], w[rows], valid[rows]
        amount = (vtypes[rows] == AMOUNT)[:, None]
        with np.errstate(all="ignore"):
            per_request = np.nansum(np.where(hist_valid[rows], xa, 0.0), axis=1) / np.maximum(
                np.nansum(np.where(hist_valid[rows], wa, 0.0), axis=1), 1.0
            )
            # For amounts, three typical requests' worth: an hour of a sparse series is not "x1000"
            # for one request more than its usual nothing.
            tiny = np.where(
                amount[:, 0],
                np.maximum(1e-9, 3.0 * per_request),
                np.maximum(1e-9, np.nanmedian(profile[rows], axis=1) * 1e-3),
            )[:, None]
            level = np.where(amount, _levels((xa + tiny) / (pa + tiny), va), 1.0)
            e = level * pa
            log_ratio = np.log((xa + tiny) / (e + tiny))
            typical = np.array(
                [
                    np.median(wa[i][hist_valid[rows][i]]) if hist_valid[rows][i].any() else 1.0
                    for i in range(len(rows))
                ]
            )
            widen = np.sqrt(np.clip(np.maximum(typical, 1.0)[:, None] / np.maximum(wa, 1.0), 1.0, 25.0))
            scaled = np.log((xa + tiny) / (level * p_loo[rows] + tiny)) / widen  # out of sample
            mad, centre, r = _mad_sigma(scaled, hist_valid[rows] & np.isfinite(scaled))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                tail = (np.nanquantile(r, 0.98, axis=1) - centre) / 2.054
        counts = (hist_valid[rows] & np.isfinite(scaled)).sum(axis=1)
        sigma = np.where(counts >= 10, np.fmax(mad, tail), 0.1)
        sigma = np.maximum(np.nan_to_num(sigma, nan=0.1), 0.03)
        z[rows] = np.where(va, log_ratio / (sigma[:, None] * widen), np.nan)
        ratio[rows] = np.where(va, np.exp(log_ratio), np.nan)
        expected[rows] = e
    return SeriesBank(keys, hours, values, weights, expected, z, ratio, analysed, history_ok)


@dataclass
class Episode:
    """Consecutive hours of one series above its baseline."""

    tenant_id: str
    metric: str
    dimension: str  # model, project, threat_type, policy_category or "all"
    value: str
    module: str
    start: pd.Timestamp
    end: pd.Timestamp  # exclusive
    peak_z: float
    peak_ratio: float
    observed: float
    expected: float
    hours: list[pd.Timestamp] = field(default_factory=list)
    z_by_hour: list[float] = field(default_factory=list)
    models: set[str] = field(default_factory=set)  # entities that carry the departure
    projects: set[str] = field(default_factory=set)
    source: str = "engine"  # engine, or anomalies (the anomalies table)
    stage: int = 1  # 1: stood out among every series; 2: corroborates an episode of its entity
    anomaly_ids: list[str] = field(default_factory=list)
    severity: str | None = None

    @property
    def key(self) -> str:
        return series_key(self.tenant_id, self.metric, self.dimension, self.value)

    @property
    def id(self) -> str:
        return f"{self.key}@{self.start.strftime('%Y-%m-%dT%H:%MZ')}"

    @property
    def excess(self) -> float:
        return self.observed - self.expected

    @property
    def signal(self) -> str:
        """What moved: calls_up, latency_up, violations:rate_limit, detections:prompt_injection, ..."""
        if self.metric in ("violations", "detections") and self.dimension != "all":
            return f"{self.metric}:{self.value}"
        return f"{self.metric}_up"

    def describe(self) -> str:
        subject = "" if self.dimension == "all" else f" of {self.dimension} {self.value}"
        when = f"{self.start:%H:%M}-{self.end:%H:%M} UTC"
        return (
            f"{self.metric}{subject} x{self.peak_ratio:.1f} its baseline (z={self.peak_z:.1f}) {when}"
            f" [{self.module}]"
        )


def critical_z(n_tests: int, settings: CorrelationSettings) -> float:
    """One-sided bound with the family-wise error over n_tests at settings.family_alpha."""
    bound = float(stats.norm.isf(settings.family_alpha / max(n_tests, 1)))
    return max(settings.min_z, bound)


# Series whose departure in the same entity and hours corroborates an episode of a metric.
RELATED: dict[str, tuple[str, ...]] = {
    "calls": ("spend", "tokens", "latency", "errors", "retries"),
    "retries": ("calls", "errors", "spend", "tokens"),
    "errors": ("retries", "calls", "spend", "latency"),
    "latency": ("errors", "retries", "calls"),
    "spend": ("calls", "tokens", "retries"),
    "tokens": ("spend", "calls"),
}


def _flags(bank: SeriesBank, s: int, bound: float, settings: CorrelationSettings) -> np.ndarray:
    """Hours of series `s` that are signals: an hour whose z passes `bound`, or every hour of a run
    of 2..``scan_hours`` hours whose weakest hour's z times the square root of its length (a lower
    bound of the run's Stouffer z) passes it;
    in both cases materially above baseline (ratio, and excess for counts)."""
    metric = bank.keys[s][0]
    vtype = SERIES_METRICS[metric][2]
    z, ratio, x, e = bank.z[s], bank.ratio[s], bank.values[s], bank.expected[s]
    zz = np.nan_to_num(z, nan=-np.inf)
    if vtype == COUNT:
        material = np.nan_to_num(ratio) >= settings.min_count_ratio
        excess = np.nan_to_num(x - e)
    else:
        material = np.nan_to_num(ratio) >= (
            settings.min_amount_ratio if vtype == AMOUNT else settings.min_value_ratio
        )
        excess = np.full(len(z), np.inf)
    usable = bank.analysed & material
    flagged = usable & (zz >= bound) & (excess >= settings.min_count_excess)
    n = len(z)
    for length in range(2, settings.scan_hours + 1):
        if n < length:
            break
        windows = np.lib.stride_tricks.sliding_window_view
        ok = windows(usable & (zz >= 1.5), length).all(axis=1)
        # The run as if every hour were as weak as its weakest: one strong hour does not carry a
        # weak neighbour in (its Stouffer z is at least this).
        combined = windows(np.where(np.isfinite(zz), zz, 0.0), length).min(axis=1) * np.sqrt(length)
        enough = (
            windows(np.where(np.isfinite(excess), excess, 1e9), length).sum(axis=1)
            >= settings.min_count_excess
        )
        hits = np.flatnonzero(ok & (combined >= bound) & enough)
        for start in hits.tolist():
            flagged[start : start + length] = True
    return flagged


def _make_episodes(bank, s, flagged, tenant_id, settings, cells, stage) -> list[Episode]:
    metric, dim, value = bank.keys[s]
    module, _, vtype, _ = SERIES_METRICS[metric]
    z, ratio, x, e = bank.z[s], bank.ratio[s], bank.values[s], bank.expected[s]
    idx = np.flatnonzero(flagged)
    if not len(idx):
        return []
    groups: list[list[int]] = [[int(idx[0])]]
    for i in idx[1:].tolist():
        if i - groups[-1][-1] <= settings.episode_gap_hours + 1:
            groups[-1].append(i)
        else:
            groups.append([i])
    out = []
    for group in groups:
        span = np.arange(group[0], group[-1] + 1)
        span = span[flagged[span] | (np.nan_to_num(z[span]) > 2.0)]
        peak = span[np.nanargmax(z[span])]
        observed = float(np.nansum(x[span])) if vtype != LEVEL else float(np.nanmax(x[span]))
        expect = float(np.nansum(e[span])) if vtype != LEVEL else float(e[peak])
        episode = Episode(
            tenant_id=tenant_id, metric=metric, dimension=dim, value=value, module=module,
            start=bank.hours[group[0]], end=bank.hours[group[-1]] + pd.Timedelta(hours=1),
            peak_z=float(z[peak]), peak_ratio=float(ratio[peak]), observed=observed, expected=expect,
            hours=[bank.hours[i] for i in span], z_by_hour=[float(z[i]) for i in span], stage=stage,
        )  # fmt: skip
        _attribute(episode, cells)
        out.append(episode)
    return out


def find_episodes(
    bank: SeriesBank,
    tenant_id: str,
    settings: CorrelationSettings,
    cells: pd.DataFrame,
) -> list[Episode]:
    """Episodes of every series in the analysed span, with the models and projects behind them.

    Two stages: every series and hour is tested against the Bonferroni bound of all of them; then,
    around each episode found, the related series of its entities (``RELATED``: the spend and
    latency of a model whose calls surged) are tested in its hours against the bound of those few
    tests, so that what an incident did to the other modules is seen even when it would not have
    stood out among every series of the tenant.
    """
    analysed = bank.analysed
    # Every series, hour and run length tested.
    tests = int(bank.history_ok.sum()) * int(analysed.sum()) * settings.scan_hours
    bound = critical_z(tests, settings)
    episodes: list[Episode] = []
    for s in range(len(bank.keys)):
        if bank.history_ok[s]:
            episodes.extend(
                _make_episodes(bank, s, _flags(bank, s, bound, settings), tenant_id, settings, cells, 1)
            )
    # Stage 2: corroboration.
    candidates: dict[int, np.ndarray] = {}
    for episode in episodes:
        if episode.dimension not in ("model", "project"):
            continue
        entities = {(episode.dimension, episode.value)}
        entities |= {("model", m) for m in episode.models} | {("project", p) for p in episode.projects}
        first = bank.hour_index(episode.start) - 1
        last = bank.hour_index(episode.end) + 1
        window = np.zeros(len(bank.hours), dtype=bool)
        window[max(first, 0) : min(last, len(bank.hours))] = True
        for metric in RELATED.get(episode.metric, ()):
            for dim, value in entities:
                s = bank.index_of((metric, dim, value))
                if s is None or not bank.history_ok[s]:
                    continue
                candidates[s] = candidates.get(s, np.zeros(len(bank.hours), dtype=bool)) | window
    found = {(e.metric, e.dimension, e.value) for e in episodes}
    candidates = {s: w & analysed for s, w in candidates.items() if bank.keys[s] not in found}
    n_tests = sum(int(w.sum()) for w in candidates.values()) * settings.scan_hours
    if n_tests:
        second = max(float(stats.norm.isf(settings.family_alpha / n_tests)), settings.min_corroboration_z)
        for s, window in sorted(candidates.items()):
            flagged = _flags(bank, s, second, settings) & window
            episodes.extend(_make_episodes(bank, s, flagged, tenant_id, settings, cells, 2))
    return episodes


def _attribute(episode: Episode, cells: pd.DataFrame) -> None:
    """The models and projects that carry an episode: its own entity, and for a count or amount,
    those whose part of the excess over their usual share is at least a fifth of the excess."""
    if episode.dimension == "model":
        episode.models.add(episode.value)
    elif episode.dimension == "project":
        episode.projects.add(episode.value)
    metric = episode.metric
    _, kind, vtype, _ = SERIES_METRICS[metric]
    if vtype == LEVEL:
        return
    part = cells[cells["kind"] == kind]
    if episode.dimension in ("model", "project"):
        part = part[part[episode.dimension] == episode.value]
    elif episode.dimension != "all":
        part = part[part["label"] == episode.value]
    if part.empty:
        return
    value, _ = _metric_columns(metric, part)
    inside = part["hour"].isin(episode.hours).to_numpy()
    before = (part["hour"] < episode.start - pd.Timedelta(hours=6)).to_numpy()
    for dim, target in (("model", episode.models), ("project", episode.projects)):
        if dim == episode.dimension:
            continue
        names = part[dim].astype(object).fillna("").to_numpy()
        frame = pd.DataFrame({"name": names, "v": value.to_numpy(), "inside": inside, "before": before})
        observed = frame[frame["inside"]].groupby("name")["v"].sum()
        usual = frame[frame["before"]].groupby("name")["v"].sum()
        if observed.sum() <= 0:
            continue
        share = (usual + 0.5) / (usual.sum() + 0.5 * max(len(usual), 1)) if usual.sum() > 0 else None
        total = max(episode.expected, 0.0)
        excess = {}
        for name, obs in observed.items():
            if not name:
                continue
            usual_share = float(share.get(name, 0.5 / (usual.sum() + 1.0))) if share is not None else 0.0
            excess[name] = float(obs) - usual_share * total
        positive = sum(v for v in excess.values() if v > 0)
        if positive <= 0:
            continue
        ranked = sorted(excess.items(), key=lambda kv: -kv[1])[:3]
        target.update(name for name, v in ranked if v >= 0.2 * positive)
