"""``run_bench``: every artifact of an export measured against the fp32 Keras reference and gated.

Per artifact (runner chosen by the manifest's ``runtime``, file re-verified by sha256): accuracy on the test
set at the largest thread count (load time and peak RSS delta measured there), then batch-1 latency and
throughput at every thread count. One failing artifact never stops the others; the report is written
whatever the verdict.
"""

from __future__ import annotations

import datetime as dt
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgebench import __version__
from edgebench.bench import artifacts as arts
from edgebench.bench import env, stats
from edgebench.bench.accuracy import EVAL_BATCH, predict
from edgebench.bench.gate import GateResult, GateSettings, apply
from edgebench.bench.latency import LatencySettings, harness_overhead, measure_latency, measure_throughput
from edgebench.bench.memory import PeakRSS
from edgebench.bench.runners import availability, make_runner
from edgebench.errors import EdgebenchError
from edgebench.fileio import ensure_dir, sha256_file
from edgebench.runtime import INPUT_SIZE, InferenceError


@dataclass
class BenchSettings:
    export_dir: Path
    reference: Path | None = None  # default: <export dir>/../model.keras, else the manifest's source model
    data: str | None = None
    out_dir: Path | None = None  # default: <export dir>/../bench
    cache_dir: Path | None = None
    gate: GateSettings = field(default_factory=GateSettings)
    threads: tuple[int, ...] = (1, 2)
    batch_sizes: tuple[int, ...] = (1, 8, 32, 128)
    latency: LatencySettings = field(default_factory=LatencySettings)
    test_per_class: int | None = None  # None: the whole test split
    seed: int = 0
    providers: list[str] | None = None
    formats: list[str] | None = None
    eval_batch: int = EVAL_BATCH
    plots: bool = True

    def check(self) -> None:
        if not self.threads or min(self.threads) < 1:
            raise EdgebenchError(f"--threads must be positive integers (got {list(self.threads)})")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise EdgebenchError(f"--batch-sizes must be positive integers (got {list(self.batch_sizes)})")
        if self.gate.max_drop_pp < 0:
            raise EdgebenchError(f"--max-drop must be >= 0 pp (got {self.gate.max_drop_pp})")
        if self.gate.min_accuracy is not None and not 0 <= self.gate.min_accuracy <= 1:
            raise EdgebenchError(
                f"--min-accuracy must be a percentage in 0..100 (got {self.gate.min_accuracy * 100})"
            )
        if self.test_per_class is not None and self.test_per_class < 1:
            raise EdgebenchError(f"--test-per-class must be at least 1 (got {self.test_per_class})")
        if self.latency.time_cap_s <= 0 or self.latency.throughput_time_cap_s <= 0:
            raise EdgebenchError("latency time caps must be positive")
        if self.eval_batch < 1:
            raise EdgebenchError(f"evaluation batch must be at least 1 (got {self.eval_batch})")


@dataclass
class BenchResult:
    report: dict
    gate: GateResult
    out_dir: Path
    paths: dict[str, Path]
    samples_ms: dict[tuple[str, int | None], np.ndarray]


def resolve_reference(explicit, export_dir: Path, manifest: dict) -> Path | None:
    """An explicit ``--reference`` must exist (exit 2); otherwise the first default that exists, or None."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise EdgebenchError(f"reference model not found: {path}")
        return path
    for candidate in (export_dir.parent / "model.keras", Path(manifest["source_model"]["path"])):
        if candidate.is_file():
            return candidate
    return None


def load_test_set(settings: BenchSettings):
    from edgebench.train.data import load_dataset, subset

    ds = load_dataset(settings.data, settings.cache_dir)
    if settings.test_per_class is not None:
        ds = subset(ds, None, settings.test_per_class, settings.seed)
    if len(ds.y_test) == 0:
        raise EdgebenchError(f"no test images in {ds.source}")
    return ds


def _tile(images: np.ndarray, n: int) -> np.ndarray:
    """``n`` real test images (repeated when the test set is smaller), contiguous."""
    return np.ascontiguousarray(
        np.resize(images, (n, INPUT_SIZE, INPUT_SIZE, 3)) if len(images) < n else images[:n]
    )


class _Measure:
    """Runs one model file through its runner: accuracy, then latency/throughput per thread count."""

    def __init__(self, settings: BenchSettings, images: np.ndarray, log: Callable[[str], None], progress):
        self.s, self.images, self.log, self.progress = settings, images, log, progress
        self.samples_ms: dict[tuple[str, int | None], np.ndarray] = {}

    def __call__(self, name: str, runtime: str, path: Path, threads: list, fixed: int | None) -> dict:
        row = {"runner": None, "load_time_s": None, "rss_delta_mb": None, "latency": [], "warnings": []}
        probs = None
        eval_threads = threads[0]  # callers put the largest thread count first
        for t in threads:
            gc.collect()
            runner = make_runner(runtime, path, threads=t, providers=self.s.providers)
            try:
                with PeakRSS() as mem:
                    start = time.perf_counter()
                    try:
                        runner.load()
                    except InferenceError as exc:
                        raise arts.ArtifactProblem("load-error", str(exc)) from None
                    load_s = time.perf_counter() - start
                    if t == eval_threads:
                        probs = self._accuracy(name, runner, fixed)
                if t == eval_threads:
                    row.update(
                        runner=runner.describe(),
                        load_time_s=load_s,
                        rss_delta_mb=mem.delta_mb,
                        rss_before_mb=mem.before_mb,
                    )
                    fallback = row["runner"].get("fallback")
                    if fallback:
                        msg = (
                            f"{name}: requested provider(s) {', '.join(fallback)} not running; measured on "
                            f"{', '.join(row['runner']['providers'])}"
                        )
                        row["warnings"].append(msg)
                        self.log(f"warning: {msg}")
                row["latency"].append(self._speed(name, runner, t, fixed, load_s))
            finally:
                runner.close()
        row["probs"] = probs
        return row

    def _accuracy(self, name: str, runner, fixed) -> np.ndarray:
        task = self.progress.add_task(f"{name}: accuracy", total=len(self.images))
        try:
            return predict(
                runner,
                self.images,
                self.s.eval_batch,
                fixed,
                on_batch=lambda n: self.progress.advance(task, n),
            )
        finally:
            self.progress.remove_task(task)

    def _speed(self, name: str, runner, threads, fixed, load_s: float) -> dict:
        task = self.progress.add_task(f"{name}: latency ({threads or 'default'} threads)", total=None)
        try:
            one = _tile(self.images, fixed or 1)
            batch1, samples = measure_latency(runner.bind(one), self.s.latency)
            batch1["batch"] = len(one)
            self.samples_ms[(name, threads)] = samples
            throughput = []
            for b in self.s.batch_sizes:
                if fixed and b != fixed:
                    throughput.append(
                        {
                            "batch": b,
                            "images_per_s": None,
                            "median_ms": None,
                            "runs": 0,
                            "note": f"fixed batch {fixed}: other batch sizes cannot run",
                        }
                    )
                    continue
                throughput.append(measure_throughput(runner.bind(_tile(self.images, b)), b, self.s.latency))
        finally:
            self.progress.remove_task(task)
        rates = [t["images_per_s"] for t in throughput if t["images_per_s"]]
        return {
            "threads": threads,
            "load_time_s": load_s,
            "batch1": batch1,
            "throughput": throughput,
            "best_images_per_s": max(rates) if rates else None,
        }


def _row(artifact: dict) -> dict:
    precision = artifact.get("precision") or {}
    return {
        "format": artifact["format"],
        "runtime": artifact["runtime"],
        "file": artifact.get("file"),
        "status": None,
        "reason": None,
        "message": None,
        "precision": precision.get("label"),
        "precision_detail": {k: precision.get(k) for k in ("weights", "activations")} if precision else None,
        "bytes": artifact.get("bytes"),
        "dynamic_batch": artifact.get("dynamic_batch"),
        "fixed_batch": None,
        "runner": None,
        "load_time_s": None,
        "rss_delta_mb": None,
        "accuracy": None,
        "latency": [],
        "warnings": [],
        "best": None,
        "gate": None,
    }


def _best(latency: list[dict]) -> dict | None:
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
        "images_per_s_batch": max(top["throughput"], key=lambda t: t["images_per_s"] or 0)["batch"]
        if top
        else None,
    }


def _fail(row: dict, reason: str, message: str) -> dict:
    row.update(status="error", reason=reason, message=" ".join(str(message).split()) or reason)
    return row


def run_bench(
    settings: BenchSettings, log: Callable[[str], None] = print, on_row: Callable[[dict], None] | None = None
) -> BenchResult:
    """Benchmark every artifact of ``settings.export_dir``; write report.json, report.md and plots."""
    from edgebench.bench import report as rp
    from edgebench.train.progress import progress as make_progress

    settings.check()
    export_dir = Path(settings.export_dir)
    manifest = arts.read_manifest(export_dir)
    selected = arts.select(manifest, settings.formats)
    reference_path = resolve_reference(settings.reference, export_dir, manifest)
    out_dir = ensure_dir(settings.out_dir or export_dir.parent / "bench")
    ds = load_test_set(settings)
    images, labels, class_names = ds.x_test, ds.y_test, list(ds.class_names)
    threads = sorted(set(settings.threads), reverse=True)
    warnings: list[str] = []

    overhead = harness_overhead()
    with make_progress() as progress:
        measure = _Measure(settings, images, log, progress)

        # The reference: its failure to load is the user's input error (exit 2), found before anything runs.
        reference = None
        ref_pred = None
        if reference_path is None:
            msg = (
                f"no reference model (looked for {export_dir.parent / 'model.keras'} and "
                f"{manifest['source_model']['path']}): every artifact fails the gate"
            )
            warnings.append(msg)
            log(f"warning: {msg}")
        else:
            ref_sha = sha256_file(reference_path)
            reference = {
                "format": "keras",
                "runtime": "keras",
                "file": str(reference_path),
                "sha256": ref_sha,
                "matches_manifest": ref_sha == manifest["source_model"]["sha256"],
                "status": "reference",
                "precision": "fp32",
                "bytes": reference_path.stat().st_size,
                "dynamic_batch": True,
            }
            if not reference["matches_manifest"]:
                msg = (
                    f"reference {reference_path} is not the model the artifacts were exported from "
                    f"(sha256 differs from the manifest's source_model)"
                )
                warnings.append(msg)
                log(f"warning: {msg}")
            try:
                measured = measure("keras", "keras", reference_path, [None], None)
            except arts.ArtifactProblem as exc:
                raise EdgebenchError(f"cannot use the reference model: {exc}") from None
            ref_probs = measured.pop("probs")
            ref_pred = ref_probs.argmax(axis=1)
            reference.update(measured)
            reference["accuracy"] = stats.accuracy_summary(ref_pred, labels, class_names, None)
            reference["best"] = _best(reference["latency"])
            if on_row:
                on_row(reference)

        rows = []
        for artifact in selected:
            row = _row(artifact)
            rows.append(row)
            if artifact["status"] == "unavailable":
                row.update(status="skipped", reason=artifact["reason"], message=artifact["message"])
            elif artifact["status"] != "ok":
                _fail(
                    row,
                    "export-failed",
                    f"export {artifact['status']}: {artifact['reason']}: {artifact['message']}",
                )
            else:
                ok, reason, message = availability(artifact["runtime"])
                if not ok:
                    row.update(status="skipped", reason=reason, message=message)
                else:
                    _evaluate(row, artifact, export_dir, threads, measure, labels, class_names, ref_pred)
            if on_row:
                on_row(row)

    gate = apply(rows, reference is not None, settings.gate)
    report = {
        "schema_version": rp.SCHEMA_VERSION,
        "kind": rp.KIND,
        "edgebench_version": __version__,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "export_dir": str(export_dir),
        "manifest_sha256": sha256_file(export_dir / arts.MANIFEST_NAME),
        "source_model": manifest["source_model"],
        "dataset": {
            "source": ds.source,
            "split": "test",
            "images": int(len(labels)),
            "test_per_class": settings.test_per_class,
            "seed": settings.seed,
            "class_names": class_names,
        },
        "settings": {
            "max_drop_pp": settings.gate.max_drop_pp,
            "min_accuracy": settings.gate.min_accuracy,
            "threads": list(threads),
            "batch_sizes": list(settings.batch_sizes),
            "eval_batch": settings.eval_batch,
            "latency_time_cap_s": settings.latency.time_cap_s,
            "throughput_time_cap_s": settings.latency.throughput_time_cap_s,
            "latency_rel_tol": settings.latency.rel_tol,
            "providers": settings.providers,
            "formats": [a["format"] for a in selected],
        },
        "environment": env.fingerprint(threads),
        "harness_overhead": overhead,
        "reference": reference,
        "artifacts": rows,
        "gate": gate.to_dict(),
        "warnings": warnings + [w for r in rows for w in r["warnings"]],
    }
    paths = rp.write_all(out_dir, report, measure.samples_ms, plots=settings.plots)
    return BenchResult(report, gate, out_dir, paths, measure.samples_ms)


def _evaluate(row, artifact, export_dir, threads, measure: _Measure, labels, class_names, ref_pred) -> None:
    """Fill ``row`` with measurements, or mark it ``error`` with a reason; never raises for one artifact."""
    try:
        path = arts.verified_path(export_dir, artifact)
        fixed = arts.fixed_batch(artifact)
        row["fixed_batch"] = fixed
        measured = measure(artifact["format"], artifact["runtime"], path, threads, fixed)
    except arts.ArtifactProblem as exc:
        _fail(row, exc.reason, str(exc))
        return
    except InferenceError as exc:
        _fail(row, "inference-error", str(exc))
        return
    except Exception as exc:  # runtimes raise their own types mid-run; one artifact must not stop the rest
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        _fail(row, "inference-error", f"{artifact['format']}: {type(exc).__name__}: {first}")
        return
    probs = measured.pop("probs")
    row.update(measured)
    row["accuracy"] = stats.accuracy_summary(probs.argmax(axis=1), labels, class_names, ref_pred)
    row["best"] = _best(row["latency"])
    row["status"] = "evaluated"
