"""How bench measures a runner, shared by the host's bench worker and a bundle's device bench
(``infer.py --bench``), so both sides time and score with the same code; numpy and the standard library only.

A latency sample is one call of the runner's bound function (inputs set beforehand), with
``time.perf_counter_ns`` just around it. Batch-1 timing runs until ``min_samples`` samples or the time cap;
a p99 is reported only from at least ``P99_MIN_SAMPLES`` samples (from 50 samples a "p99" is the
second-largest value). Harness overhead is measured for real on the same call: per-call timed loops against
block-timed loops of the same call, interleaved (overhead = per-call mean - block mean), not on a no-op.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .base import RUNTIMES, Runner, RunnerSpec, open_runner
from .latency_stats import LatencySettings

# Heavy modules a measuring process must not have loaded besides its own runtime: every runtime's, frameworks.
RUNTIME_MODULES = tuple(sorted({m for rt in RUNTIMES.values() for m in rt.modules} | {"torch", "jax"}))


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


EVAL_BATCH = 128


def predict(
    runner: Runner,
    images: np.ndarray,
    batch_size: int = EVAL_BATCH,
    fixed_batch: int | None = None,
    on_batch: Callable[[int], None] | None = None,
    num_classes: int = 10,
) -> np.ndarray:
    """Probabilities (N, classes) for ``images``; a fixed-batch artifact gets its own batch size, the last
    batch padded by repeating images (padding rows are dropped)."""
    size = fixed_batch or batch_size
    out = []
    for start in range(0, len(images), size):
        chunk = images[start : start + size]
        n = len(chunk)
        if fixed_batch and n < fixed_batch:
            chunk = np.resize(chunk, (fixed_batch, *chunk.shape[1:]))
        probs = np.asarray(runner.infer(chunk))
        if probs.ndim != 2 or probs.shape[0] != len(chunk) or probs.shape[1] != num_classes:
            raise ValueError(
                f"runner returned shape {probs.shape} for a batch of {len(chunk)}, "
                f"expected ({len(chunk)}, {num_classes})"
            )
        if not np.isfinite(probs).all():
            raise ValueError("runner returned non-finite outputs")
        out.append(probs[:n])
        if on_batch:
            on_batch(n)
    return np.concatenate(out)


def tile(images: np.ndarray, n: int) -> np.ndarray:
    """``n`` real test images (repeated when the test set is smaller), contiguous."""
    return np.ascontiguousarray(np.resize(images, (n, *images.shape[1:])) if len(images) < n else images[:n])


def status_kb(field: str) -> int | None:
    """A ``/proc/self/status`` field in kB (VmRSS, VmHWM); None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) so the peak counts from now on (Linux only)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def time_runner(runner: Runner, images: np.ndarray, s: LatencySettings, fixed_batch, batch_sizes, overhead):
    """(result, batch-1 samples in ns) of a loaded ``runner``: cold first call, warm-up, batch-1 samples,
    harness overhead (when ``overhead``), throughput per batch size and what the runner reports it ran."""
    run = runner.bind(tile(images, fixed_batch or 1))
    t0 = time.perf_counter_ns()
    run()
    cold_ms = (time.perf_counter_ns() - t0) / 1e6
    warm = warm_up(run, s.warmup_runs, s.warmup_cap_s)
    samples = timed_samples(run, s.min_samples, s.time_cap_s, min_runs=10)
    # The harness overhead belongs to runner and clock, not to the round: the first round measures it.
    over = harness_overhead(run, samples, s.overhead_block_s) if overhead else None
    throughput = []
    for b in batch_sizes:
        fn = runner.bind(tile(images, b))
        fn()  # one untimed call: a new batch size resizes or allocates
        t = timed_samples(fn, 10**6, s.throughput_time_cap_s, min_runs=s.min_throughput_runs)
        median_s = float(np.median(t)) / 1e9
        throughput.append(
            {"batch": b, "images_per_s": b / median_s, "median_ms": median_s * 1e3, "runs": len(t)}
        )
    result = {"runner": runner.describe(), "batch": fixed_batch or 1, "cold_ms": cold_ms, "warmup": warm}
    return {**result, "overhead": over, "throughput": throughput}, samples


def clamp_batches(sizes, max_batch: int | None) -> list[int]:
    """Batch sizes an artifact can take: sizes above ``max_batch`` become ``max_batch`` (deduplicated)."""
    if not max_batch:
        return list(dict.fromkeys(sizes))
    return list(dict.fromkeys(min(b, max_batch) for b in sizes))


def loaded_runtimes() -> list[str]:
    return sorted(m for m in RUNTIME_MODULES if m in sys.modules)


def time_fresh(spec: RunnerSpec, images: np.ndarray, s: LatencySettings, *, fixed, batches, overhead: bool):
    """``time_runner`` on a runner loaded here and now, with its load time and peak memory: the process's
    peak RSS (VmHWM, reset first) minus its RSS with only the runtime imported, like benchmark_model's
    memory footprint."""
    RUNTIMES[spec.runtime].runner_class().import_runtime(spec.threads)
    gc.collect()
    baseline_kb = status_kb("VmRSS")
    reset = reset_peak()
    runner = open_runner(spec)
    t0 = time.perf_counter()
    runner.load()
    load_s = time.perf_counter() - t0
    try:
        result, samples = time_runner(runner, images, s, fixed, batches, overhead)
    finally:
        runner.close()
    peak_kb = status_kb("VmHWM") if reset else None
    result.update(
        load_time_s=load_s,
        baseline_rss_mb=baseline_kb / 1024 if baseline_kb else None,
        peak_memory_mb=(peak_kb - baseline_kb) / 1024 if peak_kb and baseline_kb else None,
        worker_modules=loaded_runtimes(),
    )
    return result, samples
