"""The statistics of latency samples, computed alike on the host and on a device (numpy and the standard
library only): pooled percentiles, the median's distribution-free interval, the spread of round medians,
and one latency entry of a bench row per thread count."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

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


def _binomial_half_ppf(q: float, n: int) -> int:
    """The smallest k with P(Binomial(n, 1/2) <= k) >= q (scipy's ``binom.ppf(q, n, 0.5)``), in exact
    integers: a device has numpy but not scipy, and both sides of a comparison must use the same rule."""
    target = Fraction(q).limit_denominator(10**12)
    total, cumulative, k = 1 << n, 1, 0  # C(n, 0)
    term = 1
    while cumulative * target.denominator < target.numerator * total:
        term = term * (n - k) // (k + 1)
        k += 1
        cumulative += term
    return k


def median_ci(samples, confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free confidence interval of the median: sorted samples x(j) .. x(n-j+1)."""
    xs = np.sort(np.asarray(samples, dtype=float))
    n = len(xs)
    if n == 0:
        raise ValueError("no samples")
    j = max(_binomial_half_ppf((1 - confidence) / 2, n), 1)  # 1-based
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


def pooled_batch1(samples_ns: list[np.ndarray], batch: int, s) -> dict:
    """A row's batch-1 figures from its rounds' samples (ns): pooled percentiles, round medians, spread."""
    round_p50 = [float(np.median(x)) / 1e6 for x in samples_ns]
    batch1 = summarize(np.concatenate(samples_ns) / 1e6)
    between = spread(round_p50)
    batch1.update(batch=batch, round_p50_ms=round_p50, spread=between, stable=between <= s.unstable_spread)
    return batch1


def aggregate(threads: int | None, rounds: list[dict], samples_ns: list[np.ndarray], s) -> dict:
    """One thread setting of one row over its rounds: pooled percentiles, round medians and their spread."""
    batch1 = pooled_batch1(samples_ns, rounds[0]["batch"], s)
    measured = [r["overhead"] for r in rounds if r["overhead"]]
    overhead_us = float(np.median([o["overhead_us"] for o in measured]))
    throughput = []
    for i, first in enumerate(rounds[0]["throughput"]):
        rates = [r["throughput"][i]["images_per_s"] for r in rounds]
        throughput.append(
            {
                "batch": first["batch"],
                "images_per_s": float(np.median(rates)),
                "round_images_per_s": rates,
                "spread": spread(rates),
                "runs": int(sum(r["throughput"][i]["runs"] for r in rounds)),
            }
        )
    rates = [t["images_per_s"] for t in throughput]
    memory = [r["peak_memory_mb"] for r in rounds if r["peak_memory_mb"] is not None]
    return {
        "threads": threads,
        "rounds": len(rounds),
        "load_time_s": float(np.median([r["load_time_s"] for r in rounds])),
        "cold_ms": float(np.median([r["cold_ms"] for r in rounds])),
        "warmup_runs": int(rounds[0]["warmup"]["runs"]),
        "batch1": batch1,
        "overhead": {
            "overhead_us": overhead_us,
            "overhead_pct": overhead_us / 1e3 / batch1["p50_ms"] * 100,
            "block_mean_us": float(np.median([o["block_mean_us"] for o in measured])),
            "rounds": len(measured),
            "method": "per-call timed loop mean - block-timed loop mean, same call, 5 interleaved pairs",
        },
        "throughput": throughput,
        "best_images_per_s": max(rates) if rates else None,
        "peak_memory_mb": max(memory) if memory else None,
        "baseline_rss_mb": rounds[0]["baseline_rss_mb"],
        "worker_modules": sorted({m for r in rounds for m in r["worker_modules"]}),
        "runner": rounds[0]["runner"],
    }
