"""Timing loops (run inside a worker) and the statistics of their samples (run in the parent).

A latency sample is one ``Runner.run()``: the runtime's own call on inputs set beforehand, with
``time.perf_counter_ns`` just around it. Batch-1 timing runs until ``min_samples`` samples or the time
cap; a p99 is reported only from at least ``P99_MIN_SAMPLES`` samples (from 50 samples a "p99" is the
second-largest value).
Harness overhead is measured for real on the same call: per-call timed loops against block-timed loops of
the same call, interleaved (overhead = per-call mean - block mean), not on a no-op.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

P99_MIN_SAMPLES = 1000


@dataclass
class LatencySettings:
    rounds: int = 3  # passes over all artifacts, order rotated each pass
    min_samples: int = 1000  # batch-1 samples per row and round (stops earlier only at the time cap)
    # Batch-1 timing per row and round: a 4 ms model gets its 1,000 samples; a 10 ms one 400, 1,200 pooled
    # over 3 rounds. Longer caps cost bench minutes the pooled rounds do not need (docs/design/timing.md).
    time_cap_s: float = 4.0
    warmup_runs: int = 10
    warmup_cap_s: float = 2.0
    throughput_time_cap_s: float = 1.0  # per batch size and round
    min_throughput_runs: int = 2
    overhead_block_s: float = 0.5  # length of the block-timed loop
    unstable_spread: float = 1.10  # max/min of the round medians above this marks the row unstable
    worker_timeout_s: float = 900.0

    def to_dict(self) -> dict:
        return dict(vars(self))


def warm_up(fn: Callable[[], object], runs: int, cap_s: float) -> dict:
    """``runs`` calls (fewer if that exceeds ``cap_s``, but at least one); their count and total time."""
    start = time.perf_counter()
    done = 0
    while done < runs and (done == 0 or time.perf_counter() - start < cap_s):
        fn()
        done += 1
    return {"runs": done, "total_ms": (time.perf_counter() - start) * 1e3}


def timed_samples(fn: Callable[[], object], min_samples: int, cap_s: float, min_runs: int = 1) -> np.ndarray:
    """Per-call durations (ns) until ``min_samples`` samples, or ``cap_s`` once ``min_runs`` are taken."""
    clock = time.perf_counter_ns
    samples = np.empty(max(min_samples, min_runs), dtype=np.int64)
    deadline = clock() + int(cap_s * 1e9)
    n = 0
    while n < len(samples):
        t0 = clock()
        fn()
        t1 = clock()
        samples[n] = t1 - t0
        n += 1
        if n >= min_runs and t1 >= deadline:
            break
    return samples[:n]


def block_mean_ns(fn: Callable[[], object], calls: int) -> float:
    """Mean duration of ``calls`` back-to-back calls timed as one block (no per-call clock reads)."""
    clock = time.perf_counter_ns
    t0 = clock()
    for _ in range(calls):
        fn()
    return (clock() - t0) / calls


def harness_overhead(
    fn: Callable[[], object], samples_ns: np.ndarray, block_s: float, pairs: int = 5
) -> dict:
    """Per-call timing cost on this call: per-call timed loop vs block-timed loop of the same call.

    ``pairs`` interleaved pairs of (K calls timed one by one, K calls timed as one block), so drift of the
    machine hits both halves alike; overhead = median over pairs of (per-call mean - block mean). Means on
    both sides: a per-call median against a block mean would subtract the tail, not the harness.
    """
    median = float(np.median(samples_ns))
    calls = int(np.clip(block_s * 1e9 / max(median, 1.0) / pairs, 3, 5000))
    diffs, blocks = [], []
    for _ in range(pairs):
        per_call = float(timed_samples(fn, calls, cap_s=3600.0).mean())
        block = block_mean_ns(fn, calls)
        diffs.append(per_call - block)
        blocks.append(block)
    over = float(np.median(diffs))
    return {
        "per_call_median_us": median / 1e3,
        "block_mean_us": float(np.median(blocks)) / 1e3,
        "block_calls": calls * pairs,
        "overhead_us": over / 1e3,
        "overhead_pct": over / median * 100 if median else None,
    }


def median_ci(samples, confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free confidence interval of the median: sorted samples x(j) .. x(n-j+1)."""
    from scipy.stats import binom

    xs = np.sort(np.asarray(samples, dtype=float))
    n = len(xs)
    if n == 0:
        raise ValueError("no samples")
    j = max(int(binom.ppf((1 - confidence) / 2, n, 0.5)), 1)  # 1-based
    return float(xs[j - 1]), float(xs[n - j])


def summarize(samples_ms) -> dict:
    """Pooled statistics of latency samples in ms; ``p99_ms`` is None below ``P99_MIN_SAMPLES``."""
    ms = np.asarray(samples_ms, dtype=float)
    lo, hi = median_ci(ms)
    return {
        "runs": int(len(ms)),
        "mean_ms": float(ms.mean()),
        "std_ms": float(ms.std(ddof=1)) if len(ms) > 1 else 0.0,
        "p50_ms": float(np.median(ms)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)) if len(ms) >= P99_MIN_SAMPLES else None,
        "min_ms": float(ms.min()),
        "max_ms": float(ms.max()),
        "median_ci95_ms": [lo, hi],
    }


def spread(round_medians) -> float:
    """Between-round spread: largest over smallest round median (1.0 = identical rounds)."""
    values = [float(v) for v in round_medians if v]
    return max(values) / min(values) if values else float("nan")


def p99_text(batch1: dict) -> str:
    return f"{batch1['p99_ms']:.2f}" if batch1.get("p99_ms") is not None else f"n/a (n={batch1['runs']})"
