"""The bench report: rows, assembly, ``report.json`` (``edgebench/schemas/report.schema.json``),
``predictions.npz`` (per-image predictions and latency samples, for paired comparisons), ``report.md``
and plots."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgebench import __version__, environment
from edgebench.bench import env
from edgebench.errors import EdgebenchError
from edgebench.export.manifest import ArtifactEntry, ExportManifest
from edgebench.fileio import atomic_path, sha256_file, write_json, write_text

SCHEMA_VERSION = 2
KIND = "edgebench-bench-report"
REPORT_JSON, REPORT_MD, PREDICTIONS = "report.json", "report.md", "predictions.npz"


def validate(report: dict, what: str = "report") -> None:
    """Raise EdgebenchError naming the first schema violation."""
    environment.validate(report, "report", what)


def new_row(artifact: ArtifactEntry) -> dict:
    precision = artifact.precision or {}
    return {
        "format": artifact.format,
        "runtime": artifact.runtime,
        "file": artifact.file,
        "sha256": artifact.sha256,  # the file measured: what a bundle checks its figures against
        "status": None,
        "reason": None,
        "message": None,
        "precision": precision.get("label"),
        "precision_detail": {k: precision.get(k) for k in ("weights", "activations")} if precision else None,
        "coverage": artifact.coverage,
        "bytes": artifact.total_bytes,
        "dynamic_batch": artifact.dynamic_batch,
        "fixed_batch": None,
        "runner": None,
        "peak_memory_mb": None,
        "accuracy": None,
        "latency": [],
        "warnings": list(artifact.warnings or []),
        "best": None,
        "gate": None,
    }


def reference_row(path: Path, manifest: ExportManifest) -> dict:
    keras = ArtifactEntry("keras", "keras", "reference", file=str(path), bytes=path.stat().st_size)
    row = new_row(keras)
    row.update(
        status="reference", precision="fp32", dynamic_batch=True, sha256=manifest.source_model["sha256"]
    )
    return row


def fail(row: dict, reason: str, message: str) -> dict:
    row.update(status="error", reason=reason, message=" ".join(str(message).split()) or reason)
    return row


def warn_fallback(row: dict, log: Callable[[str], None]) -> None:
    """Requested execution providers that did not run: the row says what it was measured on."""
    runner = row.get("runner") or {}
    if runner.get("fallback"):
        msg = (
            f"{row['format']}: requested provider(s) {', '.join(runner['fallback'])} not running; "
            f"measured on {', '.join(runner['providers'])}"
        )
        row["warnings"].append(msg)
        log(f"warning: {msg}")


def best(latency: list[dict]) -> dict | None:
    if not latency:
        return None
    fastest = min(latency, key=lambda e: e["batch1"]["p50_ms"])
    rates = [e for e in latency if e["best_images_per_s"]]
    top = max(rates, key=lambda e: e["best_images_per_s"]) if rates else None
    return {
        "p50_ms": fastest["batch1"]["p50_ms"],
        "p50_threads": fastest["threads"],
        "images_per_s": top["best_images_per_s"] if top else None,
        "images_per_s_threads": top["threads"] if top else None,
        "images_per_s_batch": max(top["throughput"], key=lambda t: t["images_per_s"])["batch"]
        if top
        else None,
    }


def set_latency(row: dict, entries: list[dict]) -> None:
    row["latency"] = entries
    row["best"] = best(entries)
    memory = [e["peak_memory_mb"] for e in entries if e["peak_memory_mb"] is not None]
    row["peak_memory_mb"] = max(memory) if memory else None


def all_rows(report: dict) -> list[dict]:
    return ([report["reference"]] if report.get("reference") else []) + report["artifacts"]


def assemble(
    settings, export_dir: Path, manifest: ExportManifest, ds, threads, reference, rows, gate
) -> dict:
    lat = settings.latency
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": KIND,
        "edgebench_version": __version__,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "export_dir": str(export_dir),
        "manifest_sha256": sha256_file(manifest.path),
        "source_model": manifest.source_model,
        "dataset": {
            "source": ds.source,
            "split": ds.split,
            "images": int(len(ds.y_test)),
            "test_per_class": settings.test_per_class,
            "seed": settings.seed,
            "class_names": list(ds.class_names),
        },
        "settings": {
            "max_drop_pp": settings.gate.max_drop_pp,
            "min_accuracy": settings.gate.min_accuracy,
            "require": list(settings.gate.require),
            "threads": list(threads),
            "batch_sizes": list(settings.batch_sizes),
            "throughput_threads": settings.throughput_thread_counts,
            "eval_batch": settings.eval_batch,
            "latency": lat.to_dict(),
            "providers": settings.providers,
            "formats": [r["format"] for r in rows],
        },
        "environment": env.fingerprint(threads),
        "reference": reference,
        "artifacts": rows,
        "gate": gate.to_dict(),
        "warnings": [w for r in ([reference] if reference else []) + rows for w in r["warnings"]],
    }


def _key(*parts) -> str:
    return "__".join(str(p) for p in parts)


def write_predictions(path: Path, predictions: dict, labels: np.ndarray, samples_ms: dict) -> list[str]:
    """``labels``, ``pred__<format>`` (top-1 per test image) and ``latency_ms__<format>__<threads>``."""
    arrays = {"labels": np.asarray(labels, dtype=np.int16)}
    arrays |= {_key("pred", name): np.asarray(p, dtype=np.int16) for name, p in predictions.items()}
    arrays |= {_key("latency_ms", n, t): np.asarray(s, dtype=np.float32) for (n, t), s in samples_ms.items()}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    return sorted(arrays)


def read_predictions(report_path: Path, report: dict) -> dict[str, np.ndarray]:
    """The arrays beside a report, after checking the sha256 the report recorded for them."""
    info = report["predictions"]
    path = Path(report_path).parent / info["file"]
    if not path.is_file():
        raise EdgebenchError(f"{path} (the predictions of {report_path}) is missing")
    if sha256_file(path) != info["sha256"]:
        raise EdgebenchError(f"{path} is not the file {report_path} was written with (sha256 differs)")
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def write_all(out_dir: Path, report: dict, samples_ms: dict, predictions: dict, labels, plots: bool = True):
    """Predictions and plots first (their names go into the report), then report.json and report.md."""
    from edgebench.bench.markdown import markdown

    paths: dict[str, Path] = {"predictions": Path(out_dir) / PREDICTIONS}
    arrays = write_predictions(paths["predictions"], predictions, labels, samples_ms)
    report["predictions"] = {
        "file": PREDICTIONS,
        "sha256": sha256_file(paths["predictions"]),
        "arrays": arrays,
    }
    report["plots"] = {}
    if plots:
        from edgebench.bench.plots import write_plots

        for name, path in write_plots(out_dir, report, samples_ms).items():
            report["plots"][name] = path.name
            paths[name] = path
    validate(report)
    paths["json"] = write_json(Path(out_dir) / REPORT_JSON, report)
    paths["md"] = write_text(Path(out_dir) / REPORT_MD, markdown(report))
    return paths


def load(path, what: str = "report") -> dict:
    """A report.json of this schema version, validated; one-line errors otherwise."""
    from edgebench.fileio import read_json

    report = read_json(path, what)
    if not isinstance(report, dict) or report.get("kind") != KIND:
        raise EdgebenchError(f"{path} is not an edgebench bench report")
    if report.get("schema_version") != SCHEMA_VERSION:
        raise EdgebenchError(
            f"{path} has report schema_version {report.get('schema_version')!r}; "
            f"this edgebench reads {SCHEMA_VERSION} (rerun edgebench bench)"
        )
    validate(report, f"{what} {path}")
    return report
