"""The bench report: ``BenchReport`` holds the rows (``BenchRow``), what they were measured on and the
gate's verdict; it writes ``report.json`` (checked against ``edgebench/schemas/report.schema.json``,
atomically) and ``report.md``, and reads a report of any version through ``migrate``, the one place older
reports are read (compare, results-doc, crosscheck and bundle read reports only through it).
``predictions.npz`` (per-image predictions and latency samples, for paired comparisons) and the plots are
written beside it first, their names recorded in the report."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgebench import __version__, environment
from edgebench.bench import env
from edgebench.bench.row import BenchRow
from edgebench.errors import EdgebenchError
from edgebench.export.manifest import ExportManifest
from edgebench.fileio import atomic_path, read_json, sha256_file, write_json, write_text
from edgebench.runtime.paths import UnsafePath, confined

SCHEMA_VERSION = 2  # the version written; ``migrate`` reads every earlier one it can
KIND = "edgebench-bench-report"
REPORT_JSON, REPORT_MD, PREDICTIONS = "report.json", "report.md", "predictions.npz"


def validate(report: dict, what: str = "report") -> None:
    """Raise EdgebenchError naming the first schema violation."""
    environment.validate(report, "report", what)


def migrate(doc) -> dict:
    """A report of any schema version as the current version's dict: the one place older reports are read.

    Version 2 reports written before rows recorded the sha256 of the file they measured (before commit
    40193d4) have rows without ``sha256``: it becomes null, which readers take as "file unknown" (a bundle
    then cannot tell another export's file from its own and keeps the figures). Version 1 reports (before
    the per-image predictions beside the report) hold nothing a paired comparison can use: refused."""
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise EdgebenchError("is not an edgebench bench report")
    version = doc.get("schema_version")
    if version != SCHEMA_VERSION:
        raise EdgebenchError(
            f"has report schema_version {version!r}; "
            f"this edgebench reads {SCHEMA_VERSION} (rerun edgebench bench)"
        )
    rows = [doc.get("reference")] + list(doc.get("artifacts") or [])
    for row in rows:
        if isinstance(row, dict):
            row.setdefault("sha256", None)
    return doc


@dataclass
class BenchReport:
    """A bench run: its rows (the reference apart), what it measured them on, and the gate's verdict."""

    export_dir: str
    manifest_sha256: str
    source_model: dict
    dataset: dict
    settings: dict
    environment: dict
    reference: BenchRow | None
    rows: list[BenchRow]
    gate: dict
    edgebench_version: str = __version__
    created: str = ""
    predictions: dict | None = None  # set by ``write_all`` once predictions.npz is written
    plots: dict = field(default_factory=dict)

    @property
    def all_rows(self) -> list[BenchRow]:
        return ([self.reference] if self.reference else []) + self.rows

    def row(self, fmt: str) -> BenchRow | None:
        """The row of ``fmt``: an artifact, or the reference itself."""
        return next(
            (r for r in self.rows + ([self.reference] if self.reference else []) if r.format == fmt), None
        )

    @property
    def warnings(self) -> list[str]:
        return [w for r in self.all_rows for w in r.warnings]

    def to_dict(self) -> dict:
        out = {"schema_version": SCHEMA_VERSION, "kind": KIND, "edgebench_version": self.edgebench_version}
        out |= {k: getattr(self, k) for k in _HEAD}
        out |= {
            "reference": self.reference.to_dict() if self.reference else None,
            "artifacts": [r.to_dict() for r in self.rows],
            "gate": self.gate,
            "warnings": self.warnings,
        }
        if self.predictions is not None:
            out["predictions"] = self.predictions
        return out | {"plots": self.plots}

    @classmethod
    def from_dict(cls, doc: dict) -> BenchReport:
        ref = doc.get("reference")
        return cls(
            **{k: doc[k] for k in (*_HEAD, "edgebench_version", "gate")},
            reference=BenchRow.from_dict(ref) if ref else None,
            rows=[BenchRow.from_dict(r) for r in doc["artifacts"]],
            predictions=doc.get("predictions"),
            plots=doc.get("plots") or {},
        )

    @classmethod
    def read(cls, path, what: str = "report") -> BenchReport:
        """A report.json of any version this edgebench reads, migrated and validated; one-line errors."""
        doc = read_json(path, what)
        try:
            doc = migrate(doc)
        except EdgebenchError as exc:
            raise EdgebenchError(f"{path} {exc}") from None
        validate(doc, f"{what} {path}")
        names = [(doc.get("predictions") or {}).get("file"), *(doc.get("plots") or {}).values()]
        for name in filter(None, names):  # files the report names: inside its folder
            try:
                confined(Path(path).parent, name, "file named by the report")
            except UnsafePath as exc:
                raise EdgebenchError(f"{path}: {exc}") from None
        return cls.from_dict(doc)

    @classmethod
    def assemble(cls, settings, *, manifest: ExportManifest, dataset: dict, threads, reference, rows, gate):
        """The report of a finished run (predictions and plots are added as they are written)."""
        settings_block = {
            "max_drop_pp": settings.gate.max_drop_pp,
            "min_accuracy": settings.gate.min_accuracy,
            "require": list(settings.gate.require),
            "threads": list(threads),
            "batch_sizes": list(settings.batch_sizes),
            "throughput_threads": settings.throughput_thread_counts,
            "eval_batch": settings.eval_batch,
            "latency": settings.latency.to_dict(),
            "providers": settings.providers,
            "formats": [r.format for r in rows],
        }
        return cls(
            created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            export_dir=str(manifest.folder),
            manifest_sha256=sha256_file(manifest.path),
            source_model=manifest.source_model,
            dataset=dataset,
            settings=settings_block,
            environment=env.fingerprint(threads),
            reference=reference,
            rows=rows,
            gate=gate.to_dict(),
        )

    def to_markdown_text(self) -> str:
        from edgebench.bench.markdown import markdown

        return markdown(self.to_dict())

    def write(self, out_dir) -> dict[str, Path]:
        """report.json (schema-checked, written atomically) and report.md."""
        doc = self.to_dict()
        validate(doc)
        return {
            "json": write_json(Path(out_dir) / REPORT_JSON, doc),
            "md": write_text(Path(out_dir) / REPORT_MD, self.to_markdown_text()),
        }


_HEAD = ("created", "export_dir", "manifest_sha256", "source_model", "dataset", "settings", "environment")


def dataset_block(settings, ds, test_set_sha256: str) -> dict:
    """What the rows were measured on: the test images and how they were chosen."""
    return {
        "source": ds.source,
        "split": ds.split,
        "images": int(len(ds.y_test)),
        "test_per_class": settings.test_per_class,
        "seed": settings.seed,
        "class_names": list(ds.class_names),
        "test_set_sha256": test_set_sha256,
    }


def all_rows(report: dict) -> list[dict]:
    return ([report["reference"]] if report.get("reference") else []) + report["artifacts"]


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
    path = confined(Path(report_path).parent, info["file"], "the report's predictions file")
    if not path.is_file():
        raise EdgebenchError(f"{path} (the predictions of {report_path}) is missing")
    if sha256_file(path) != info["sha256"]:
        raise EdgebenchError(f"{path} is not the file {report_path} was written with (sha256 differs)")
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def write_all(out_dir: Path, report: BenchReport, samples_ms: dict, predictions: dict, labels, plots=True):
    """Predictions and plots first (their names go into the report), then report.json and report.md."""
    paths: dict[str, Path] = {"predictions": Path(out_dir) / PREDICTIONS}
    arrays = write_predictions(paths["predictions"], predictions, labels, samples_ms)
    report.predictions = {
        "file": PREDICTIONS,
        "sha256": sha256_file(paths["predictions"]),
        "arrays": arrays,
    }
    report.plots = {}
    if plots:
        from edgebench.bench.plots import write_plots

        for name, path in write_plots(out_dir, report.to_dict(), samples_ms).items():
            report.plots[name] = path.name
            paths[name] = path
    return paths | report.write(out_dir)
