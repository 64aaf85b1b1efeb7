"""The accuracy gate: each artifact's drop vs the reference and an optional absolute floor. Fails closed:
no reference, a non-finite figure, or a required format that was skipped all fail."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from edgebench.bench.row import ERROR, PASS, SKIPPED, BenchRow
from edgebench.errors import EdgebenchError


@dataclass
class GateSettings:
    max_drop_pp: float = 0.5
    min_accuracy: float | None = None  # a fraction in [0, 1]; None: off
    require: tuple[str, ...] = ()  # formats that must be evaluated: skipping one fails the gate


def check_required(require, known: list[str]) -> None:
    """``--require`` names must be formats of the manifest (a typo must not pass silently)."""
    unknown = [n for n in require if n not in known]
    if unknown:
        raise EdgebenchError(f"--require names format(s) not in the manifest: {', '.join(unknown)}")


@dataclass
class GateResult:
    passed: bool
    failed: list[str] = field(default_factory=list)  # rows that ran and missed a threshold, or exported badly
    errors: list[str] = field(default_factory=list)  # rows that could not be evaluated
    skipped: list[str] = field(default_factory=list)  # runtime unavailable here

    def to_dict(self) -> dict:
        return {"passed": self.passed, "failed": self.failed, "errors": self.errors, "skipped": self.skipped}


def check_row(row: BenchRow, reference_ok: bool, settings: GateSettings) -> list[str]:
    """Reasons ``row`` fails the gate (empty when it passes); the row must have been evaluated."""
    acc = row.accuracy
    problems = []
    figures = {"top-1": acc.get("top1"), "drop": acc.get("drop_pp") if reference_ok else 0.0}
    bad = [k for k, v in figures.items() if v is None or not math.isfinite(v)]
    if bad:
        return [f"non-finite {' and '.join(bad)}"]
    if not reference_ok:
        problems.append("no reference model to compare with")
    elif acc["drop_pp"] > settings.max_drop_pp:
        problems.append(f"drop {acc['drop_pp']:.2f} pp > {settings.max_drop_pp:g} pp")
    if settings.min_accuracy is not None and acc["top1"] < settings.min_accuracy:
        problems.append(f"top-1 {acc['top1']:.2%} < {settings.min_accuracy:.2%}")
    return problems


def apply(rows: list[BenchRow], reference_ok: bool, settings: GateSettings) -> GateResult:
    """Judge each row (``BenchRow.judge`` sets its gate and final status); the overall verdict."""
    result = GateResult(passed=True)
    for row in rows:
        if row.status == SKIPPED:
            if row.format in settings.require:
                row.judge(False, [f"required but skipped ({row.reason})"])
                result.failed.append(row.format)
                result.passed = False
            else:
                row.judge(None, [])
                result.skipped.append(row.format)
            continue
        if row.status == ERROR:
            row.judge(False, [row.message])
            (result.failed if row.reason == "export-failed" else result.errors).append(row.format)
            result.passed = False
            continue
        problems = check_row(row, reference_ok, settings)
        row.judge(not problems, problems)
        if problems:
            result.failed.append(row.format)
            result.passed = False
    if not any(row.status == PASS for row in rows):
        result.passed = False  # nothing evaluated (or everything skipped) proves nothing
    return result
