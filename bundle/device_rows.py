"""A device report's rows from checked device results: each bundle's row (its runtime under infer.py) and,
where the bundle's C runner ran there, its ``<format>@c-runner`` row, scored alike: against the labels, the
reference's predictions on the same images (paired) and this machine's predictions of the same artifact."""

from __future__ import annotations

import numpy as np

from edgebench.bench import stats
from edgebench.bench.row import BenchRow

C_RUNNER_FAILED = "c-runner-error"


def score(pred, labels, names, ref_pred, host_pred) -> dict:
    """Accuracy summary of a device's predictions, with ``host_top1`` and ``host_agreement`` where this
    machine ran the same artifact on the same images."""
    pred = np.asarray(pred)
    summary = stats.accuracy_summary(pred, labels, names, ref_pred)
    if host_pred is not None:
        summary["host_agreement"] = float((host_pred == pred).mean())
        summary["host_top1"] = float((host_pred == labels).mean())
    return summary


def measured_row(planned: BenchRow, part: dict, labels, names, ref_pred, host_pred) -> BenchRow:
    """``planned`` filled from a result (or its C runner entry): accuracy, then latency."""
    accuracy = part["accuracy"]
    planned.measured(accuracy["runner"], score(accuracy["predictions"], labels, names, ref_pred, host_pred))
    planned.evaluated(part["latency"])
    return planned


def c_runner_row(entry, native: dict, labels, names, ref_pred, host_pred) -> BenchRow:
    """The C runner's row: the same file as the bundle's row, run by runner.c; a failed row where it
    failed there (its one line)."""
    planned = BenchRow.planned(entry)
    row = planned.variant(native["format"], planned.precision)
    if "error" in native:
        row.fail(C_RUNNER_FAILED, native["error"])
        return row
    return measured_row(row, native, labels, names, ref_pred, host_pred)


def measured_parts(results: dict) -> dict:
    """row format -> the result part holding its predictions and samples: each bundle's and each C
    runner's that ran."""
    parts = dict(results)
    for result in results.values():
        native = result.get("c_runner")
        if native and "error" not in native:
            parts[native["format"]] = native
    return parts


def c_runner_failures(results: dict, url: str) -> dict:
    """row format -> the line of a C runner that failed on the device."""
    failed = [r["c_runner"] for r in results.values() if "error" in (r.get("c_runner") or {})]
    return {n["format"]: f"{url}: {n['format']}: {n['error']}" for n in failed}
