"""The measurement code a bench worker and a device share (edgebench/runtime/timing.py)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom

from edgebench.runtime.latency_stats import _binomial_half_ppf, median_ci


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_the_exact_binomial_quantile_is_scipys(confidence):
    """The device computes the median's interval without scipy: the same order statistics as scipy."""
    q = (1 - confidence) / 2
    for n in [*range(1, 300), 999, 1000, 1001, 2500, 3000]:
        assert _binomial_half_ppf(q, n) == int(binom.ppf(q, n, 0.5)), n


def test_median_ci_brackets_the_median():
    samples = np.random.default_rng(0).exponential(1.0, 1000)
    lo, hi = median_ci(samples)
    assert lo < np.median(samples) < hi and (samples < lo).mean() < 0.5 < (samples <= hi).mean()
