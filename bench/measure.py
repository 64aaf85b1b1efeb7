"""Measurements of bench rows, each in its own worker process.

Accuracy: one ``predict`` worker per row. Timing: ``rounds`` passes over all rows, the order rotated each
pass, one ``time`` worker per row and thread count; a row's figures pool its rounds, and the spread of
its round medians says whether the machine held still (a systematic error, such as another process on the
cores, shows up as spread, where a within-run interval would hide it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgebench.bench.isolation import run_worker
from edgebench.bench.latency import LatencySettings, spread, summarize
from edgebench.runtime import RunnerSpec


@dataclass
class MeasureTask:
    """One row to measure: the Keras reference or an exported artifact."""

    name: str
    runtime: str
    path: Path
    fixed_batch: int | None = None
    options: dict = field(default_factory=dict)  # runner options: providers, max_batch

    @property
    def max_batch(self) -> int | None:
        return self.fixed_batch or self.options.get("max_batch")

    def spec(self, threads: int | None) -> RunnerSpec:
        return RunnerSpec(self.runtime, str(self.path), threads, dict(self.options))


def clamp_batches(sizes, max_batch: int | None) -> list[int]:
    """Batch sizes an artifact can take: sizes above ``max_batch`` become ``max_batch`` (deduplicated)."""
    if not max_batch:
        return list(dict.fromkeys(sizes))
    return list(dict.fromkeys(min(b, max_batch) for b in sizes))


def round_orders(names: list[str], rounds: int) -> list[list[str]]:
    """Round ``r`` starts at row ``r``: every row is measured early, late and in between."""
    n = len(names)
    return [names[r % n :] + names[: r % n] for r in range(rounds)] if n else [[] for _ in range(rounds)]


def aggregate(
    threads: int | None, rounds: list[dict], samples_ns: list[np.ndarray], s: LatencySettings
) -> dict:
    """One thread setting of one row over its rounds: pooled percentiles, round medians and their spread."""
    round_p50 = [float(np.median(x)) / 1e6 for x in samples_ns]
    pooled = np.concatenate(samples_ns) / 1e6
    batch1 = summarize(pooled)
    between = spread(round_p50)
    batch1.update(
        batch=rounds[0]["batch"], round_p50_ms=round_p50, spread=between, stable=between <= s.unstable_spread
    )
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


class Measurer:
    """Runs workers for ``MeasureTask`` rows on the test images saved at ``images_path``."""

    def __init__(
        self,
        images_path: Path,
        workdir: Path,
        settings: LatencySettings,
        threads: list[int],
        batch_sizes: list[int],
        eval_batch: int,
        num_classes: int,
        log: Callable[[str], None] = print,
        throughput_threads: Sequence[int] = (),  # where batch_sizes are swept (BenchSettings decides)
    ):
        self.images_path, self.workdir, self.s = images_path, workdir, settings
        self.threads, self.batch_sizes, self.eval_batch = threads, batch_sizes, eval_batch
        self.throughput_threads = set(throughput_threads)
        self.num_classes, self.log = num_classes, log

    def accuracy(self, task: MeasureTask) -> tuple[np.ndarray, dict]:
        """(probabilities, runner description) at the largest thread count."""
        eval_batch = min(self.eval_batch, task.max_batch or self.eval_batch)
        result, probs = run_worker(
            "predict",
            task.spec(max(self.threads)),
            self.images_path,
            self.workdir,
            self.s.worker_timeout_s,
            eval_batch=eval_batch,
            fixed_batch=task.fixed_batch,
            num_classes=self.num_classes,
        )
        return probs, result["runner"]

    def describe(self, task: MeasureTask) -> dict:
        """The runner's description once loaded in a worker (no inference)."""
        result, _ = run_worker(
            "describe",
            task.spec(max(self.threads)),
            self.images_path,
            self.workdir,
            self.s.worker_timeout_s,
        )
        return result["runner"]

    def time_once(self, task: MeasureTask, threads: int, first_round: bool = True) -> tuple[dict, np.ndarray]:
        batches = [task.fixed_batch] if task.fixed_batch else clamp_batches(self.batch_sizes, task.max_batch)
        if threads not in self.throughput_threads:
            batches = []
        return run_worker(
            "time",
            task.spec(threads),
            self.images_path,
            self.workdir,
            self.s.worker_timeout_s,
            settings=self.s.to_dict(),
            batch_sizes=batches,
            fixed_batch=task.fixed_batch,
            overhead=first_round,
        )

    def timing(
        self, tasks: list[MeasureTask], on_error: Callable[[str, Exception], None]
    ) -> tuple[dict[str, list[dict]], dict[tuple[str, int], np.ndarray]]:
        """Latency entries per row name (one per thread count) over rotated rounds, and the pooled batch-1
        samples (ms) per (row, threads). A failing row is reported through ``on_error`` once and left out."""
        by_name = {t.name: t for t in tasks}
        results: dict[tuple[str, int], list] = {}
        failed: set[str] = set()
        for r, order in enumerate(round_orders(list(by_name), self.s.rounds)):
            for name in order:
                for threads in self.threads:
                    if name in failed:
                        continue
                    try:
                        result, samples = self.time_once(by_name[name], threads, first_round=r == 0)
                    except Exception as exc:  # one row's failure must not stop the others
                        failed.add(name)
                        on_error(name, exc)
                        continue
                    results.setdefault((name, threads), []).append((result, samples))
                    self.log(
                        f"round {r + 1}/{self.s.rounds} {name} {threads}t: "
                        f"p50 {np.median(samples) / 1e6:.3f} ms ({len(samples)} samples)"
                    )
        out: dict[str, list[dict]] = {}
        pooled: dict[tuple[str, int], np.ndarray] = {}
        for name in by_name:
            if name in failed:
                continue
            entries = []
            for t in self.threads:
                rounds, samples = zip(*results[(name, t)], strict=True)
                entries.append(aggregate(t, list(rounds), list(samples), self.s))
                pooled[(name, t)] = np.concatenate(samples) / 1e6
            out[name] = entries
        return out, pooled
