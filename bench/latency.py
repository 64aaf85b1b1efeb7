"""Batch-1 latency until the median is stable, throughput at larger batches, and the timing overhead.

Only the runtime's own call is timed (``Runner.bind`` does input conversion and copies once, outside the
timer), with ``time.perf_counter_ns`` just around it. The stop rule uses the distribution-free 95%
interval of the median (order statistics of Binomial(n, 1/2)): timing stops once its half-width is below
``rel_tol`` of the median, or at the time cap.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.stats import binom


@dataclass
class LatencySettings:
    time_cap_s: float = 10.0  # per artifact and thread setting, batch-1 latency
    throughput_time_cap_s: float = 3.0  # per batch size
    warmup_runs: int = 10
    warmup_cap_s: float = 2.0
    min_runs: int = 30
    max_runs: int = 100_000
    rel_tol: float = 0.02  # stop when the median's 95% half-width is below 2% of it
    check_every: int = 10
    min_throughput_runs: int = 2


def median_ci(samples, confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free confidence interval of the median: sorted samples x(j) .. x(n-j+1)."""
    xs = np.sort(np.asarray(samples, dtype=float))
    n = len(xs)
    if n == 0:
        raise ValueError("no samples")
    j = max(int(binom.ppf((1 - confidence) / 2, n, 0.5)), 1)  # 1-based
    return float(xs[j - 1]), float(xs[n - j])


def _timed_loop(
    fn: Callable[[], object], settings: LatencySettings, cap_s: float, min_runs: int
) -> np.ndarray:
    samples: list[int] = []
    clock = time.perf_counter_ns
    deadline = time.perf_counter() + cap_s
    while len(samples) < settings.max_runs:
        t0 = clock()
        fn()
        t1 = clock()
        samples.append(t1 - t0)
        n = len(samples)
        if n >= min_runs and n % settings.check_every == 0:
            lo, hi = median_ci(samples)
            if (hi - lo) / 2 <= settings.rel_tol * float(np.median(samples)):
                break
        if n >= min_runs and time.perf_counter() >= deadline:
            break
        if n >= 1 and time.perf_counter() >= deadline + cap_s:  # a single call longer than the cap
            break
    return np.asarray(samples, dtype=np.int64)


def warm_up(fn: Callable[[], object], settings: LatencySettings) -> int:
    """Run ``fn`` ``warmup_runs`` times (fewer if that exceeds the warm-up cap, but at least once)."""
    deadline = time.perf_counter() + settings.warmup_cap_s
    runs = 0
    while runs < settings.warmup_runs and (runs == 0 or time.perf_counter() < deadline):
        fn()
        runs += 1
    return runs


def summarize(samples_ns: np.ndarray, settings: LatencySettings, warmup_runs: int) -> dict:
    ms = np.asarray(samples_ns, dtype=float) / 1e6
    lo, hi = median_ci(ms)
    p50 = float(np.median(ms))
    rel = (hi - lo) / 2 / p50 if p50 > 0 else float("inf")
    return {
        "runs": int(len(ms)),
        "warmup_runs": warmup_runs,
        "mean_ms": float(ms.mean()),
        "std_ms": float(ms.std(ddof=1)) if len(ms) > 1 else 0.0,
        "p50_ms": p50,
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "min_ms": float(ms.min()),
        "max_ms": float(ms.max()),
        "median_ci95_ms": [lo, hi],
        "median_rel_halfwidth": rel,
        "stable": bool(rel <= settings.rel_tol),
        "total_s": float(ms.sum() / 1e3),
    }


def measure_latency(fn: Callable[[], object], settings: LatencySettings) -> tuple[dict, np.ndarray]:
    """Batch-1 latency statistics of ``fn`` (a bound runtime call) and the raw samples in ms."""
    warm = warm_up(fn, settings)
    samples = _timed_loop(fn, settings, settings.time_cap_s, settings.min_runs)
    return summarize(samples, settings, warm), samples / 1e6


def measure_throughput(fn: Callable[[], object], batch: int, settings: LatencySettings) -> dict:
    """Images per second for ``fn`` bound to a batch of ``batch`` images (median call time)."""
    warm_up(fn, LatencySettings(warmup_runs=1))  # one call: large batches of a big model take seconds
    samples = _timed_loop(fn, settings, settings.throughput_time_cap_s, settings.min_throughput_runs)
    median_s = float(np.median(samples)) / 1e9
    return {
        "batch": batch,
        "images_per_s": batch / median_s,
        "median_ms": median_s * 1e3,
        "runs": int(len(samples)),
        "note": None,
    }


def harness_overhead(runs: int = 20_000) -> dict:
    """The timing loop around a no-op: what every latency sample includes besides the call itself."""

    def nothing():
        return None

    clock = time.perf_counter_ns
    samples = np.empty(runs, dtype=np.int64)
    for i in range(runs):
        t0 = clock()
        nothing()
        samples[i] = clock() - t0
    return {
        "runs": runs,
        "median_ns": float(np.median(samples)),
        "p99_ns": float(np.percentile(samples, 99)),
        "min_ns": float(samples.min()),
    }
