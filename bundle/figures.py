"""What bench measured for the bundled artifact, read from its report, and the gate verdict it carries."""

from __future__ import annotations

from pathlib import Path

from edgebench import cpu
from edgebench.errors import EdgebenchError, StrictFailure
from edgebench.fileio import sha256_file


def find_report(export_dir: Path, report) -> tuple[Path | None, bool]:
    """(report path or None, given explicitly); default ``<export>/../bench/report.json`` if present."""
    if report is not None:
        return Path(report), True
    default = export_dir.parent / "bench" / "report.json"
    return (default if default.is_file() else None), False


def report_row(report: dict, fmt: str) -> dict | None:
    """The row of ``fmt``: an artifact, or the reference itself."""
    rows = report["artifacts"] + ([report["reference"]] if report.get("reference") else [])
    return next((r for r in rows if r["format"] == fmt), None)


def measured_figures(report_path: Path, report: dict, fmt: str, manifest_sha256: str) -> dict | None:
    """What bench measured for ``fmt``: accuracy, batch-1 latency at its fastest thread count, throughput."""
    row = report_row(report, fmt)
    if row is None:
        return None
    ref = report.get("reference") or {}
    acc, best = row.get("accuracy"), row.get("best")
    latency = None
    if best:
        entry = next(e for e in row["latency"] if e["threads"] == best["p50_threads"])
        at = entry["batch1"]
        latency = {
            "p50_ms": at["p50_ms"],
            "p90_ms": at["p90_ms"],
            "p99_ms": at["p99_ms"],
            "threads": best["p50_threads"],
            "images_per_s": best["images_per_s"],
            "images_per_s_batch": best.get("images_per_s_batch"),
            "images_per_s_threads": best.get("images_per_s_threads"),
            "samples": at["runs"],
            "load_time_s": entry["load_time_s"],
            "peak_memory_mb": entry["peak_memory_mb"],
        }
    env = report["environment"]
    return {
        "report": str(report_path),
        "report_created": report["created"],
        "matches_export": report["manifest_sha256"] == manifest_sha256,
        "status": row["status"],  # the bench gate's verdict (pass / fail / error / skipped) or reference
        "reason": row.get("reason"),
        "message": row.get("message"),
        "dataset": {k: report["dataset"][k] for k in ("source", "split", "images")},
        "accuracy": None
        if not acc
        else {
            "top1": acc["top1"],
            "ci95": acc["ci95"],
            "images": acc["images"],
            "drop_pp": acc["drop_pp"],
            "agreement": acc["agreement"],
            "reference_top1": (ref.get("accuracy") or {}).get("top1"),
        },
        "latency": latency,
        "environment": {
            **{k: env.get(k) for k in ("cpu", "logical_cores", "os")},
            "cpu_features": cpu.summary(env["cpu_features"]) if env.get("cpu_features") else None,
        },
    }


def read_figures(export_dir: Path, report, manifest, fmt: str, warnings: list[str]) -> dict | None:
    from edgebench.bench.report import BenchReport

    path, explicit = find_report(export_dir, report)
    if path is None:
        return None
    data = BenchReport.read(path, "bench report").to_dict()
    if data["source_model"]["sha256"] != manifest.source_model["sha256"]:
        msg = f"bench report {path} measured a different model than this export (source_model sha256 differs)"
        if explicit:
            raise EdgebenchError(msg)
        warnings.append(msg + "; its figures are left out")
        return None
    row = report_row(data, fmt) or {}
    entry = manifest.entry(fmt)
    # a null sha256 (bench.report.migrate: the file is unknown) cannot tell the files apart: kept
    if entry and row.get("sha256") and row["sha256"] != entry.sha256:
        msg = f"bench report {path} measured another {fmt} file than this export's (sha256 differs)"
        if explicit:
            raise EdgebenchError(msg)
        warnings.append(msg + "; its figures are left out")
        return None
    figures = measured_figures(path, data, fmt, sha256_file(manifest.path))
    if figures is None:
        warnings.append(f"bench report {path} has no row for {fmt}; no measured figures in the bundle")
    elif not figures["matches_export"]:
        warnings.append(
            f"bench report {path} was made from an earlier manifest of this export (same source model); "
            "its figures are kept, marked matches_export=false"
        )
    return figures


def check_gate(figures: dict | None, fmt: str, strict: bool, warnings: list[str]) -> None:
    """An artifact that did not pass bench's gate is bundled with a warning; ``strict`` refuses it, and
    refuses an artifact no bench report speaks for."""
    if figures is None:
        problem = "no bench report measured it"
    elif figures["status"] not in ("pass", "reference"):  # the reference row is the baseline itself
        why = f": {figures['message']}" if figures.get("message") else ""
        problem = f"it did not pass bench's gate (status {figures['status']}{why})"
    else:
        return
    if strict:
        raise StrictFailure(f"--strict: not bundling {fmt}: {problem}")
    if figures is not None:
        warnings.append(f"{fmt}: {problem}; bundled anyway (--strict refuses such an artifact)")
