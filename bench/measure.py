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
from edgebench.runtime import RunnerSpec
from edgebench.runtime.latency_stats import aggregate
from edgebench.runtime.timing import LatencySettings, clamp_batches


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


def round_orders(names: list[str], rounds: int) -> list[list[str]]:
    """Round ``r`` starts at row ``r``: every row is measured early, late and in between."""
    n = len(names)
    return [names[r % n :] + names[: r % n] for r in range(rounds)] if n else [[] for _ in range(rounds)]


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
