"""The accuracy gate: each artifact's drop vs the reference and an optional absolute floor. Fails closed."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class GateSettings:
    max_drop_pp: float = 0.5
    min_accuracy: float | None = None  # a fraction in [0, 1]; None: off


@dataclass
class GateResult:
    passed: bool
    failed: list[str] = field(default_factory=list)  # rows that ran and missed a threshold, or exported badly
    errors: list[str] = field(default_factory=list)  # rows that could not be evaluated
    skipped: list[str] = field(default_factory=list)  # runtime unavailable here

    def to_dict(self) -> dict:
        return {"passed": self.passed, "failed": self.failed, "errors": self.errors, "skipped": self.skipped}


def check_row(row: dict, reference_ok: bool, settings: GateSettings) -> list[str]:
    """Reasons ``row`` fails the gate (empty when it passes); the row must have been evaluated."""
    acc = row["accuracy"]
    problems = []
    if not reference_ok:
        problems.append("no reference model to compare with")
    elif acc["drop_pp"] > settings.max_drop_pp:
        problems.append(f"drop {acc['drop_pp']:.2f} pp > {settings.max_drop_pp:g} pp")
    if settings.min_accuracy is not None and acc["top1"] < settings.min_accuracy:
        problems.append(f"top-1 {acc['top1']:.2%} < {settings.min_accuracy:.2%}")
    return problems


def apply(rows: list[dict], reference_ok: bool, settings: GateSettings) -> GateResult:
    """Set each row's ``gate`` and final ``status`` (pass/fail/error/skipped); the overall verdict."""
    result = GateResult(passed=True)
    for row in rows:
        if row["status"] == "skipped":
            row["gate"] = {"passed": None, "problems": []}
            result.skipped.append(row["format"])
            continue
        if row["status"] == "error":
            row["gate"] = {"passed": False, "problems": [row["message"]]}
            (result.failed if row["reason"] == "export-failed" else result.errors).append(row["format"])
            result.passed = False
            continue
        problems = check_row(row, reference_ok, settings)
        row["gate"] = {"passed": not problems, "problems": problems}
        row["status"] = "fail" if problems else "pass"
        if problems:
            result.failed.append(row["format"])
            result.passed = False
    if not any(row["status"] == "pass" for row in rows):
        result.passed = False  # nothing evaluated (or everything skipped) proves nothing
    return result
