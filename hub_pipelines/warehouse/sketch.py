"""A mergeable quantile sketch (DDSketch-style log-bucket histogram) shared by SQL and Python.

Why a sketch: hourly rollups keep exact p50/p95/p99 computed from the raw events, but exact
percentiles of a day (or of any coarser grouping) cannot be derived from hourly percentiles, and raw
events are deleted after their retention (30 days by default) while rollups stay a year. So every
hourly rollup row also stores the histogram of its values over logarithmic buckets; histograms add
up exactly (bucket counts are summed), and any percentile of the merged histogram is within a known
relative error of the exact one, however many hours, days or series were merged.

The bucket of a value v:

- v > MIN_VALUE:       key = OFFSET + ceil(ln(v) / ln(GAMMA))   (covers (GAMMA^(k-1), GAMMA^k])
- v < -MIN_VALUE:      key = -(OFFSET + ceil(ln(-v) / ln(GAMMA)))
- otherwise (|v| tiny): key = 0, representing 0

Keys sort in the order of the values they hold. A bucket is represented by
2 * GAMMA^k / (GAMMA + 1) (signed), which is within ALPHA (relative) of every value in the bucket.

Percentiles follow the same definition as SQL's percentile_cont / numpy's default ("linear"): for
n values sorted, the virtual rank r = q * (n - 1) is interpolated between the values of ranks
floor(r) and floor(r) + 1. The sketch estimates those two order statistics by the representatives
of the buckets holding them and interpolates with the same weight, so:

**Error bound.** For values of one sign, |estimate - exact| <= ALPHA * |exact| (ALPHA = 1%),
plus at most MIN_VALUE (1e-9) absolute for values that round to the zero bucket. For a percentile
interpolated between a negative and a positive value, the bound is ALPHA * ((1 - f) |x_lo| + f |x_hi|).
The bound holds for any number of merges because merging is exact. tests/unit/rollups tests it
(hypothesis) for this module and for the SQL that builds and reads the stored sketches.

Size: the number of non-empty buckets of a series grows with the log of its dynamic range, not with
its number of values: latencies from 10 ms to 100 s need at most ~460 buckets at ALPHA = 1%. The
rollups store a sketch as text on its row ("key:count,..." in key order, `encode`/`decode`), and
SQL merges them by unnesting the entries and summing counts per key (`rollups.sketch_entries_sql`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

ALPHA = 0.01
GAMMA = (1 + ALPHA) / (1 - ALPHA)
INV_LN_GAMMA = 1.0 / math.log(GAMMA)
MIN_VALUE = 1e-9
# Added to the log index so that every positive key is >= 1 (ln(1e-9) / ln(GAMMA) is about -1036;
# ln(1.8e308) / ln(GAMMA) about 35,500).
OFFSET = 50_000
PERCENTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}


def key_of(value: float) -> int:
    """The bucket key of one value (the Python twin of `key_sql`)."""
    if value > MIN_VALUE:
        return OFFSET + math.ceil(math.log(value) * INV_LN_GAMMA)
    if value < -MIN_VALUE:
        return -(OFFSET + math.ceil(math.log(-value) * INV_LN_GAMMA))
    return 0


def keys_of(values: np.ndarray) -> np.ndarray:
    """Bucket keys of an array of values (vectorised `key_of`)."""
    values = np.asarray(values, dtype=np.float64)
    out = np.zeros(len(values), dtype=np.int64)
    pos = values > MIN_VALUE
    neg = values < -MIN_VALUE
    with np.errstate(divide="ignore", invalid="ignore"):
        out[pos] = OFFSET + np.ceil(np.log(values[pos]) * INV_LN_GAMMA).astype(np.int64)
        out[neg] = -(OFFSET + np.ceil(np.log(-values[neg]) * INV_LN_GAMMA).astype(np.int64))
    return out


def value_of(keys: np.ndarray | int) -> np.ndarray:
    """The representative value of bucket keys."""
    keys = np.asarray(keys, dtype=np.int64)
    magnitude = np.abs(keys) - OFFSET
    with np.errstate(over="ignore"):
        rep = 2.0 * np.power(GAMMA, magnitude.astype(np.float64)) / (GAMMA + 1.0)
    return np.where(keys > 0, rep, np.where(keys < 0, -rep, 0.0))


def sketch_of(values: Iterable[float]) -> dict[int, int]:
    """The sketch of some values: bucket key -> count."""
    keys, counts = np.unique(keys_of(np.fromiter(values, dtype=np.float64)), return_counts=True)
    return {int(k): int(c) for k, c in zip(keys, counts, strict=True)}


def encode(sketch: Mapping[int, int]) -> str:
    """The stored text of a sketch: "key:count,..." in key order (as the rollup SQL writes it)."""
    return ",".join(f"{key}:{sketch[key]}" for key in sorted(sketch))


def decode(text: str | None) -> dict[int, int]:
    """A stored sketch text back to {key: count}."""
    if not text:
        return {}
    out: dict[int, int] = {}
    for entry in text.split(","):
        key, count = entry.split(":")
        out[int(key)] = out.get(int(key), 0) + int(count)
    return out


def merge(*sketches: Mapping[int, int]) -> dict[int, int]:
    """Merged sketches (exact: counts add)."""
    out: dict[int, int] = {}
    for sketch in sketches:
        for key, count in sketch.items():
            out[key] = out.get(key, 0) + int(count)
    return out


def quantile(sketch: Mapping[int, int], q: float) -> float:
    """The q-quantile (linear interpolation, as percentile_cont) of a sketch; NaN when empty."""
    if not sketch:
        return math.nan
    keys = np.array(sorted(sketch), dtype=np.int64)
    counts = np.array([sketch[k] for k in keys], dtype=np.int64)
    return float(grouped_quantiles(np.zeros(len(keys), dtype=np.int64), keys, counts, [q])[0][0])


def grouped_quantiles(
    group: np.ndarray, keys: np.ndarray, counts: np.ndarray, qs: Sequence[float]
) -> list[np.ndarray]:
    """Quantiles per group from sketch rows (group id, bucket key, count), vectorised.

    `group` must be integers 0..G-1; rows need not be sorted. Returns one array of G values per
    quantile (NaN for a group without values).
    """
    group = np.asarray(group, dtype=np.int64)
    keys = np.asarray(keys, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    if len(group) == 0:
        return [np.zeros(0) for _ in qs]
    order = np.lexsort((keys, group))
    group, keys, counts = group[order], keys[order], counts[order]
    n_groups = int(group.max()) + 1
    totals = np.bincount(group, weights=counts, minlength=n_groups).astype(np.int64)
    cumulative = np.cumsum(counts)
    # Count of values in groups before each group: the offset of its ranks in `cumulative`.
    before = np.concatenate([[0], np.cumsum(totals)[:-1]])
    reps = value_of(keys)
    out = []
    for q in qs:
        virtual = q * (totals - 1).clip(min=0)
        lo = np.floor(virtual).astype(np.int64)
        hi = np.minimum(lo + 1, (totals - 1).clip(min=0))
        frac = virtual - lo
        # The row holding 0-based rank r of group g is the first whose cumulative count > before + r.
        row_lo = np.searchsorted(cumulative, before + lo, side="right")
        row_hi = np.searchsorted(cumulative, before + hi, side="right")
        row_lo = np.minimum(row_lo, len(reps) - 1)
        row_hi = np.minimum(row_hi, len(reps) - 1)
        value = reps[row_lo] + frac * (reps[row_hi] - reps[row_lo])
        out.append(np.where(totals > 0, value, np.nan))
    return out


def key_sql(value: str) -> str:
    """SQL for the bucket key of a numeric SQL expression (DuckDB and PostgreSQL alike).

    `value` is an expression built by hub from allowlisted column names, never user text.
    """
    return (
        f"CASE WHEN {value} > {MIN_VALUE!r} THEN {OFFSET} + CAST(ceil(ln({value}) * {INV_LN_GAMMA!r}) AS INTEGER)"
        f" WHEN {value} < -{MIN_VALUE!r} THEN -({OFFSET} + CAST(ceil(ln(-({value})) * {INV_LN_GAMMA!r}) AS INTEGER))"
        " ELSE 0 END"
    )


def value_sql(key: str) -> str:
    """SQL for the representative value of a bucket-key SQL expression."""
    rep = f"2.0 * power({GAMMA!r}, CAST(abs({key}) - {OFFSET} AS DOUBLE PRECISION)) / {GAMMA + 1.0!r}"
    return f"CASE WHEN {key} > 0 THEN {rep} WHEN {key} < 0 THEN -{rep} ELSE 0.0 END"
