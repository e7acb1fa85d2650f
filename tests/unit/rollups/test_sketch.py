"""The quantile sketch: its documented error bound, exact merging, and the SQL twin of its rules."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from hub_pipelines.warehouse import sketch
from hub_pipelines.warehouse.rollups import sketch_quantiles_sql

positive = st.floats(min_value=1e-6, max_value=1e9, allow_nan=False, allow_infinity=False)
quantiles = st.sampled_from([0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0])


def _within_bound(estimate: float, values: np.ndarray, q: float) -> bool:
    """|estimate - exact| <= ALPHA * ((1 - f) |x_lo| + f |x_hi|) (= ALPHA |exact| for one sign)."""
    ordered = np.sort(values)
    virtual = q * (len(ordered) - 1)
    lo = math.floor(virtual)
    hi = min(lo + 1, len(ordered) - 1)
    frac = virtual - lo
    exact = float(np.quantile(values, q))
    bound = sketch.ALPHA * ((1 - frac) * abs(ordered[lo]) + frac * abs(ordered[hi]))
    return abs(estimate - exact) <= bound * (1 + 1e-9) + sketch.MIN_VALUE


@settings(max_examples=300, deadline=None)
@given(st.lists(positive, min_size=1, max_size=300), quantiles)
def test_percentile_within_relative_error_of_exact(values, q):
    values = np.array(values)
    estimate = sketch.quantile(sketch.sketch_of(values), q)
    assert _within_bound(estimate, values, q)
    exact = float(np.quantile(values, q))
    assert abs(estimate - exact) <= sketch.ALPHA * exact * (1 + 1e-9)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(positive, min_size=1, max_size=60), min_size=1, max_size=30), quantiles)
def test_merging_is_exact_so_the_bound_survives_any_number_of_merges(parts, q):
    merged = sketch.merge(*(sketch.sketch_of(p) for p in parts))
    union = np.concatenate([np.array(p) for p in parts])
    assert merged == sketch.sketch_of(union)
    assert sum(merged.values()) == len(union)
    assert _within_bound(sketch.quantile(merged, q), union, q)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(st.just(0.0), st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)),
        min_size=1,
        max_size=200,
    ),
    quantiles,
)
def test_zero_and_negative_values(values, q):
    values = np.array(values)
    assert _within_bound(sketch.quantile(sketch.sketch_of(values), q), values, q)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(min_value=-1e9, max_value=1e9, allow_nan=False), max_size=100))
def test_stored_text_round_trips(values):
    s = sketch.sketch_of(np.array(values))
    text = sketch.encode(s)
    assert sketch.decode(text) == s
    assert [int(e.split(":")[0]) for e in text.split(",") if e] == sorted(s)  # keys in order


def test_keys_sort_like_values_and_buckets_are_tight():
    values = np.sort(np.concatenate([-np.logspace(-8, 8, 500), [0.0], np.logspace(-8, 8, 500)]))
    keys = sketch.keys_of(values)
    assert np.all(np.diff(keys) >= 0)
    reps = sketch.value_of(keys)
    assert np.all(np.abs(reps - values) <= sketch.ALPHA * np.abs(values) * (1 + 1e-12) + sketch.MIN_VALUE)
    # Sizes: latencies from 10 ms to 100 s need at most a few hundred buckets.
    assert len(sketch.sketch_of(np.logspace(1, 5, 100_000))) < 470


def test_grouped_quantiles_equal_one_group_at_a_time():
    rng = np.random.default_rng(5)
    groups = [rng.lognormal(5, 1, rng.integers(1, 400)) for _ in range(25)]
    ids, keys, counts = [], [], []
    for g, values in enumerate(groups):
        for key, count in sketch.sketch_of(values).items():
            ids.append(g)
            keys.append(key)
            counts.append(count)
    order = rng.permutation(len(ids))  # rows need not be sorted
    got = sketch.grouped_quantiles(
        np.array(ids)[order], np.array(keys)[order], np.array(counts)[order], [0.5, 0.99]
    )
    for g, values in enumerate(groups):
        s = sketch.sketch_of(values)
        assert got[0][g] == sketch.quantile(s, 0.5) and got[1][g] == sketch.quantile(s, 0.99)


def test_the_sql_sketch_is_the_python_sketch(warehouse):
    """Keys computed in SQL equal the Python keys, and percentiles read from stored sketches in SQL
    equal the Python ones, on DuckDB and PostgreSQL."""
    rng = np.random.default_rng(8)
    values = np.concatenate(
        [rng.lognormal(4, 2, 3000), [0.0, 1e-12, 1.0, 3.5, 1e12], -rng.lognormal(1, 1, 50)]
    )
    groups = rng.integers(0, 12, len(values)).astype(str)
    table = pa.table({"g": pa.array(groups), "v": pa.array(values, pa.float64())})
    with warehouse.begin() as conn:
        warehouse.stage(conn, "sketch_values", table)
        rows = conn.execute(
            sa.text(f"SELECT g, v, {sketch.key_sql('v')} AS k FROM sketch_values ORDER BY g, v")
        ).all()
        sql_keys = {(g, v): k for g, v, k in rows}
        quantile_rows = conn.execute(
            sa.text(
                sketch_quantiles_sql(
                    f"SELECT g, {sketch.key_sql('v')} AS bucket_key, 1 AS bucket_count FROM sketch_values",
                    ("g",),
                )
            )
        ).all()
    for g, v in zip(groups, values, strict=True):
        assert sql_keys[(g, float(v))] == sketch.key_of(float(v))
    assert len(quantile_rows) == 12
    for g, p50, p95, p99 in quantile_rows:
        s = sketch.sketch_of(values[groups == g])
        for got, q in ((p50, 0.5), (p95, 0.95), (p99, 0.99)):
            assert got == pytest.approx(sketch.quantile(s, q), rel=1e-12)
