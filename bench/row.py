"""``BenchRow``: one row of a bench report (an artifact, or the reference it is compared with).

A row is planned from a manifest entry (or the Keras model), then either skipped, failed, or measured
(accuracy, then latency: ``evaluated``) and judged by the gate. Its ``status`` changes only in ``_move``,
which refuses a transition the life of a row does not have (a skipped row cannot pass; a judged row is
not judged again).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edgebench.export.manifest import ArtifactEntry
from edgebench.runtime.fields import with_extra

REFERENCE, EVALUATED, PASS, FAIL, ERROR, SKIPPED = (
    "reference",
    "evaluated",
    "pass",
    "fail",
    "error",
    "skipped",
)
# status -> the statuses it may move to (None: planned, not yet measured)
_TRANSITIONS = {
    None: {REFERENCE, SKIPPED, ERROR, EVALUATED},
    REFERENCE: {ERROR},
    EVALUATED: {PASS, FAIL},
}


class RowStateError(ValueError):
    """A status change a row's life does not have (a programming error, not bad input)."""


def fastest(latency: list[dict]) -> dict | None:
    """The row's headline figures: batch-1 p50 at its fastest thread count and its best throughput."""
    if not latency:
        return None
    quickest = min(latency, key=lambda e: e["batch1"]["p50_ms"])
    rates = [e for e in latency if e["best_images_per_s"]]
    top = max(rates, key=lambda e: e["best_images_per_s"]) if rates else None
    return {
        "p50_ms": quickest["batch1"]["p50_ms"],
        "p50_threads": quickest["threads"],
        "images_per_s": top["best_images_per_s"] if top else None,
        "images_per_s_threads": top["threads"] if top else None,
        "images_per_s_batch": max(top["throughput"], key=lambda t: t["images_per_s"])["batch"]
        if top
        else None,
    }


@dataclass
class BenchRow:
    """The fields of a report row, in the order report.json writes them."""

    format: str
    runtime: str
    file: str | None = None
    sha256: str | None = None  # the file measured: what a bundle checks its figures against
    status: str | None = None
    reason: str | None = None
    message: str | None = None
    precision: str | None = None
    precision_detail: dict | None = None
    coverage: dict | None = None
    bytes: int | None = None
    dynamic_batch: bool | None = None
    fixed_batch: int | None = None
    runner: dict | None = None
    peak_memory_mb: float | None = None
    accuracy: dict | None = None
    latency: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    best: dict | None = None
    gate: dict | None = None
    extra: dict = field(default_factory=dict)  # fields a newer edgebench wrote: kept, not interpreted

    @classmethod
    def planned(cls, artifact: ArtifactEntry) -> BenchRow:
        """The row of a manifest entry, before anything is measured."""
        precision = artifact.precision or {}
        return cls(
            format=artifact.format,
            runtime=artifact.runtime,
            file=artifact.file,
            sha256=artifact.sha256,
            precision=precision.get("label"),
            precision_detail={k: precision.get(k) for k in ("weights", "activations")} if precision else None,
            coverage=artifact.coverage,
            bytes=artifact.total_bytes,
            dynamic_batch=artifact.dynamic_batch,
            warnings=list(artifact.warnings or []),
        )

    @classmethod
    def keras_reference(cls, path: Path, source_sha256: str) -> BenchRow:
        """The reference row of the Keras model the artifacts were exported from."""
        keras = ArtifactEntry("keras", "keras", "reference", file=str(path), bytes=path.stat().st_size)
        row = cls.planned(keras)
        row.precision, row.dynamic_batch, row.sha256 = "fp32", True, source_sha256
        row._move(REFERENCE)
        return row

    def variant(self, name: str, precision: str | None) -> BenchRow:
        """A planned row of the same file run another way (its own name and precision)."""
        return dataclasses.replace(self, format=name, precision=precision, warnings=list(self.warnings))

    def _move(self, status: str) -> None:
        if status not in _TRANSITIONS.get(self.status, ()):
            raise RowStateError(f"row {self.format}: status {self.status!r} cannot become {status!r}")
        self.status = status

    @property
    def is_reference(self) -> bool:
        return self.status == REFERENCE

    def as_reference(self) -> None:
        """An exported fp32 artifact standing in for the Keras model."""
        self._move(REFERENCE)

    def skip(self, reason: str, message: str | None) -> None:
        """Not measurable here (runtime unavailable, export unavailable)."""
        self._move(SKIPPED)
        self.reason, self.message = reason, message

    def fail(self, reason: str, message) -> None:
        """Could not be evaluated: ``reason`` a short code, ``message`` kept to one line."""
        self._move(ERROR)
        self.reason, self.message = reason, " ".join(str(message).split()) or reason

    def measured(self, runner: dict, accuracy: dict) -> None:
        """The accuracy pass; ``precision`` becomes what the runtime reports it ran (OpenVINO: bf16 …)."""
        if self.status not in (None, REFERENCE):
            raise RowStateError(f"row {self.format}: accuracy of a row already {self.status}")
        self.runner, self.accuracy = runner, accuracy
        if runner.get("precision"):
            self.precision = runner["precision"]

    def evaluated(self, latency: list[dict]) -> None:
        """The timing pass: latency entries, headline figures and peak memory; ready for the gate."""
        if self.accuracy is None:
            raise RowStateError(f"row {self.format}: timed before its accuracy was measured")
        self.latency, self.best = latency, fastest(latency)
        memory = [e["peak_memory_mb"] for e in latency if e["peak_memory_mb"] is not None]
        self.peak_memory_mb = max(memory) if memory else None
        if not self.is_reference:
            self._move(EVALUATED)

    def judge(self, passed: bool | None, problems: list[str]) -> None:
        """The gate's verdict: an evaluated row passes or fails; a skipped or failed row keeps its status
        and carries the verdict (``passed`` None: not judged, e.g. skipped and not required)."""
        if self.gate is not None or self.status not in (EVALUATED, SKIPPED, ERROR):
            raise RowStateError(f"row {self.format}: the gate cannot judge a row {self.status}")
        self.gate = {"passed": passed, "problems": list(problems)}
        if self.status == EVALUATED:
            self._move(PASS if passed else FAIL)

    def warn_fallback(self, log: Callable[[str], None]) -> None:
        """Requested execution providers that did not run: the row says what it was measured on."""
        runner = self.runner or {}
        if runner.get("fallback"):
            msg = (
                f"{self.format}: requested provider(s) {', '.join(runner['fallback'])} not running; "
                f"measured on {', '.join(runner['providers'])}"
            )
            self.warnings.append(msg)
            log(f"warning: {msg}")

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**out, **self.extra}

    @classmethod
    def from_dict(cls, d: dict) -> BenchRow:
        return with_extra(cls, d)
