"""Lagged Pearson correlation with Benjamini-Hochberg: real leads are found, coincidences are not."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from hub_ml.correlation.temporal import benjamini_hochberg, lagged_links, pearson_p


def test_benjamini_hochberg_matches_statsmodels():
    p = np.random.default_rng(0).uniform(0, 0.2, 40) ** 2
    expected = multipletests(p, method="fdr_bh")[1]
    assert np.allclose(benjamini_hochberg(p), expected)


def test_pearson_p_is_one_sided():
    assert pearson_p(0.8, 30) < 1e-6
    assert pearson_p(-0.8, 30) > 0.99
    assert pearson_p(0.0, 30) == pytest.approx(0.5)


def test_a_lagged_follower_is_found_at_its_lag():
    rng = np.random.default_rng(1)
    lead = rng.normal(0, 1, 60)
    lead[30:33] += 8.0  # an incident
    follower = np.r_[np.zeros(2), lead[:-2]] + rng.normal(0, 0.5, 60)
    links = lagged_links(np.vstack([lead, follower]), [(0, 1)], max_lag=3, q=0.05)
    assert len(links) == 1 and links[0].lag == 2 and links[0].r > 0.8


def test_independent_series_yield_no_links():
    """1,000 pairs of independent series, 7 lags each: BH at 5% reports (almost) nothing."""
    rng = np.random.default_rng(2)
    residuals = rng.normal(0, 1, (200, 36))
    pairs = [(a, b) for a in range(0, 200, 2) for b in range(1, 200, 20)][:1000]
    links = lagged_links(residuals, pairs, max_lag=3, q=0.05)
    assert len(links) <= 2


def test_nan_hours_are_left_out():
    rng = np.random.default_rng(3)
    a = rng.normal(0, 1, 40)
    b = a + rng.normal(0, 0.2, 40)
    a[:20] = np.nan
    links = lagged_links(np.vstack([a, b]), [(0, 1)], max_lag=0, q=0.05)
    assert links and links[0].n == 20
