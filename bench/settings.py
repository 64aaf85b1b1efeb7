"""``BenchSettings``: what one ``edgebench bench`` run measures, and its CLI defaults. Kept apart from
``run_bench`` so that the command's options can read the defaults without importing the statistics."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgebench.bench.gate import GateSettings
from edgebench.errors import check_settings
from edgebench.runtime.latency_stats import LatencySettings
from edgebench.runtime.timing import EVAL_BATCH


@dataclass
class BenchSettings:
    export_dir: Path
    reference: Path | None = None  # default: <export dir>/../model.keras, else the manifest's source model
    reference_format: str | None = None  # an fp32 artifact of the manifest as the reference (no Keras)
    data: str | None = None
    split: str = "test"  # the image folder split measured
    out_dir: Path | None = None  # default: <export dir>/../bench
    cache_dir: Path | None = None
    gate: GateSettings = field(default_factory=GateSettings)
    threads: tuple[int, ...] = (1, 2)
    batch_sizes: tuple[int, ...] = (8, 32, 128)  # batch 1 is the latency rows
    throughput_threads: tuple[int, ...] | None = None  # None: the largest of ``threads``
    latency: LatencySettings = field(default_factory=LatencySettings)
    test_per_class: int | None = None  # None: the whole test split
    seed: int = 0
    providers: list[str] | None = None
    formats: list[str] | None = None
    eval_batch: int = EVAL_BATCH
    plots: bool = True
    # the reference's latency too (for Keras: minutes of TensorFlow on a ResNet50)
    time_reference: bool = True

    @property
    def throughput_thread_counts(self) -> list[int]:
        """Where the throughput sweep runs: ``throughput_threads``, by default the largest of ``threads``
        (where the model is deployed). At batch 128 a sweep costs more than batch-1 timing, and a 1-thread
        throughput rarely decides anything."""
        return sorted(set(self.throughput_threads or [max(self.threads)]))

    def check(self) -> None:
        s = self.latency
        problems = [
            (
                not self.threads or min(self.threads) < 1,
                f"--threads must be positive integers (got {list(self.threads)})",
            ),
            (
                not self.batch_sizes or min(self.batch_sizes) < 1,
                f"--batch-sizes must be positive integers (got {list(self.batch_sizes)})",
            ),
            (
                bool(self.throughput_threads) and not set(self.throughput_threads) <= set(self.threads),
                f"--throughput-threads must be among --threads (got {list(self.throughput_threads or [])})",
            ),
            (self.gate.max_drop_pp < 0, f"--max-drop must be >= 0 pp (got {self.gate.max_drop_pp})"),
            (
                self.gate.min_accuracy is not None and not 0 <= self.gate.min_accuracy <= 1,
                "--min-accuracy must be a percentage in 0..100",
            ),
            (
                self.test_per_class is not None and self.test_per_class < 1,
                f"--test-per-class must be at least 1 (got {self.test_per_class})",
            ),
            (s.time_cap_s <= 0 or s.throughput_time_cap_s <= 0, "latency time caps must be positive"),
            (s.rounds < 1, f"--rounds must be at least 1 (got {s.rounds})"),
            (s.min_samples < 1, f"--min-samples must be at least 1 (got {s.min_samples})"),
            (self.eval_batch < 1, f"evaluation batch must be at least 1 (got {self.eval_batch})"),
            (
                bool(self.reference and self.reference_format),
                "give --reference (a Keras model) or --reference-format (an artifact), not both",
            ),
        ]
        check_settings(problems)
