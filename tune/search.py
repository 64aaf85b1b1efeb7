"""``run_tune``: the fastest artifact that keeps accuracy on this machine, chosen on validation images.

Candidates (``tune.space.search_space``) are built one at a time in memory-bounded workers
(``tune.build``) and measured with bench's own workers (``bench.measure``): top-1 on the validation
images and batch-1 p50 in a fresh process. ``tune.second_pass`` then repairs ONNX Runtime int8 when no
candidate keeps accuracy (sensitive layers kept float) and re-times the finalists side by side;
``tune.space.select`` decides and ``tune.report`` writes the winner into the export folder.

tune.json is rewritten after every candidate; a rerun with the same model, validation and calibration
images and timing setup measures only what is missing (an interrupted build is simply redone).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgebench import cpu, targets
from edgebench.bench.benchmark import data_source
from edgebench.bench.device_measure import DEVICE_TIMEOUT, DeviceMeasurer
from edgebench.bench.measure import Measurer, MeasureTask
from edgebench.devices import Device, DeviceError
from edgebench.errors import ArtifactError, EdgebenchError
from edgebench.export.context import indices_sha256
from edgebench.export.manifest import ArtifactEntry, ExportManifest
from edgebench.fileio import ensure_dir, read_json, sha256_file, write_json
from edgebench.runtime import sidecar_entries, sidecar_problem
from edgebench.train.data.dataset import align_classes, load_dataset
from edgebench.tune import report, second_pass
from edgebench.tune.build import candidate_task, run_build
from edgebench.tune.space import (
    TUNE_JSON,
    Candidate,
    TuneSettings,
    label,
    p50,
    select,
    split_indices,
    target_space,
    training_hold_out,
)

_EXPORT_FIELDS = ("inputs", "outputs", "dynamic_batch", "precision")


@dataclass
class TuneResult:
    state: dict
    path: Path
    export_dir: Path
    winner: dict | None
    entry: ArtifactEntry | None  # the winner's manifest entry
    plot: Path | None


class _Tuner:
    def __init__(self, s: TuneSettings, log: Callable[[str], None]):
        self.s, self.log = s, log
        self.model = Path(s.model)
        self.export_dir = Path(s.export_dir or self.model.parent / "export")
        self.manifest = ExportManifest.read(self.export_dir)
        self.model_sha = sha256_file(self.model)
        if self.manifest.source_model["sha256"] != self.model_sha:
            raise EdgebenchError(f"{self.model} is not the model {self.export_dir} was exported from")
        self.out = ensure_dir(s.out_dir or self.model.parent / "tune")
        self.work = ensure_dir(self.out / "work")
        self.cands = ensure_dir(self.out / "candidates")
        self.path = self.out / TUNE_JSON
        self._device_measurer = None

    def measurer(self, latency=None, log=None) -> Measurer:
        """Times candidates in workers here, or on ``--device`` (one measurer per device: it ships each
        candidate there once)."""
        args = (self.work / "val_images.npy", self.work, latency or self.s.latency, [self.s.threads])
        # no throughput sweep: batch-1 p50 decides
        rest = ([], 100, len(self.manifest.class_names), log or self.log)
        if not self.s.device:
            return Measurer(*args, *rest)
        if self._device_measurer is None:
            device = Device.parse(self.s.device, self.s.ssh_config)
            self._device_measurer = DeviceMeasurer(
                *args, *rest, device=device, python=self.s.device_python, timeout_s=self.s.device_timeout
            )
        measurer = self._device_measurer
        measurer.s, measurer.log = latency or self.s.latency, log or self.log
        return measurer

    def prepare(self) -> None:
        """Validation and calibration images, and the state of an earlier run if it still applies."""
        # Only the train split is read, at the model contract's input size, labels in the model's class order.
        contract = self.manifest.model_contract()
        source = data_source(self.s.data, self.manifest)
        ds = load_dataset(source, self.s.cache_dir, size=contract.size, channels=contract.channels)
        ds = align_classes(ds, contract.classes)
        hold_out, origin = training_hold_out(self.model)
        val, calib = split_indices(ds.y_train, self.s.val_images, self.s.calib_size, self.s.seed, hold_out)
        self.y_val = ds.y_train[val]
        np.save(self.work / "val_images.npy", np.ascontiguousarray(ds.x_train[val]))
        np.save(self.work / "calib_images.npy", np.ascontiguousarray(ds.x_train[calib]))
        data = {
            "source": ds.source,
            "split": "train",
            "hold_out": {**hold_out, "from": origin},
            "validation": {"size": int(len(val)), "indices_sha256": indices_sha256(val)},
            "calibration": {"size": int(len(calib)), "indices_sha256": indices_sha256(calib)},
        }
        self.log(
            f"validation: {len(val)} train hold-out images; calibration: {len(calib)} other train images"
        )
        ctx = {
            "model_sha256": self.model_sha,
            "data": data,
            "threads": self.s.threads,
            "cpu": cpu.summary(),
            "latency": self.s.latency.to_dict(),
        }
        if self.s.target != targets.HOST:  # recorded in each recipe: another target, other candidates
            ctx["target"] = self.s.target
        if self.s.device:  # timings from another machine: no earlier timing of this one applies
            ctx["device"] = self.s.device
        old = read_json(self.path, "tune.json") if self.path.is_file() else {}
        if old and old.get("context") != ctx:
            self.log("tune.json is from another model, data or timing setup: measuring everything again")
            old = {}
        self.state = {
            "kind": "edgebench-tune",
            "schema_version": 1,
            "context": ctx,
            "data": data,
            "max_drop_pp": self.s.max_drop,
            "reference": old.get("reference"),
            "sensitivity": old.get("sensitivity", {}),
            "candidates": old.get("candidates", {}),
        }

    def save(self) -> None:
        write_json(self.path, self.state)

    def reference(self) -> None:
        if self.state["reference"] and (self.work / "reference_probs.npy").is_file():
            return
        self.log("reference: the Keras model on the validation images ...")
        probs, _ = self.measurer().accuracy(MeasureTask("keras", "keras", self.model))
        np.save(self.work / "reference_probs.npy", probs)
        top1 = float((probs.argmax(1) == self.y_val).mean())
        self.state["reference"] = {"top1": top1, "images": int(len(self.y_val))}
        self.save()

    def records(self) -> list[dict]:
        return list(self.state["candidates"].values())

    # -- one candidate ---------------------------------------------------------------------------
    def cached(self, cand: Candidate) -> dict | None:
        rec = self.state["candidates"].get(cand.key)
        if rec and rec.get("reason") == DEVICE_TIMEOUT:  # the device was busy or slow then: timed again
            return None
        if rec and (
            rec["status"] != "ok"
            or (
                Path(rec["path"]).is_file()
                and sha256_file(rec["path"]) == rec["sha256"]
                and not sidecar_problem(rec["path"], rec.get("sidecars"))  # an IR's .bin too
            )
        ):
            return rec
        return None

    def build(self, cand: Candidate, exclude=()) -> tuple[Path, dict]:
        export = self.manifest.entry(cand.family)
        if not cand.quantized and export and export.ok:  # the export's own float artifact
            info = {k: getattr(export, k) for k in _EXPORT_FIELDS}
            built = {"build_s": 0.0, "source": "export", "coverage": export.coverage, "info": info}
            return self.manifest.verify(export), built
        prepared = {"onnx-int8": self.prepared, "openvino-int8": self.float_onnx}.get(cand.family)
        prepared = prepared() if prepared else None
        task = candidate_task(cand, self.model, self.work, prepared, exclude, self.s.target)
        return Path(task["dest"]), run_build(task, self.work, self.s.memory_mb)

    def float_onnx(self) -> Path:
        """The float ONNX file NNCF quantizes: the export's ``onnx`` artifact (the same model: checked at
        start), else one built here once. Not a candidate: tuning OpenVINO alone ranks no ONNX file."""
        export = self.manifest.entry("onnx")
        if export and export.ok:
            return self.manifest.verify(export)
        path = self.work / "model.float.onnx"
        if not path.is_file():
            cand = Candidate("onnx", "onnxruntime", False, {"precision": "fp32"})
            run_build({**candidate_task(cand, self.model, self.work, None), "dest": str(path)}, self.work,
                      self.s.memory_mb)  # fmt: skip
        return path

    def prepared(self) -> Path:
        """The float ONNX folded for quantization, shared by every ONNX int8 candidate."""
        path = self.work / "model.prepared.onnx"
        if not path.is_file():
            cand = Candidate("onnx", "onnxruntime", False, {"precision": "fp32"})
            rec = self.cached(cand) or self.evaluate(cand)
            if rec["status"] != "ok":
                raise ArtifactError("no-float-onnx", "the float ONNX model could not be built")
            task = {"kind": "onnx-prepare", "float_onnx": rec["path"], "dest": str(path)}
            run_build(task, self.work, self.s.memory_mb)
        return path

    def evaluate(self, cand: Candidate, exclude=()) -> dict:
        """Build, validate and time one candidate (or return its finished record); saves tune.json."""
        rec = self.cached(cand)
        if rec:
            self.log(report.progress_line(rec) + "  (tune.json)")
            return rec
        rec = {
            "key": cand.key,
            "slug": cand.slug,
            "family": cand.family,
            "runtime": cand.runtime,
            "quantized": cand.quantized,
            "label": label(cand.family, cand.settings),
            "settings": cand.settings,
            "excluded_nodes": list(exclude) or None,
            "status": "failed",
        }
        self.log(f"{cand.family} ({rec['label']}): building ...")
        try:
            path, built = self.build(cand, exclude)
            task = MeasureTask(cand.slug, cand.runtime, path)
            probs, _ = self.measurer().accuracy(task)
            _, samples = self.measurer().time_once(task, self.s.threads)
            if self.s.device and "device" not in self.state:  # what timed the candidates
                self.state["device"] = {"url": self.s.device, **self.measurer().fingerprint(task)}
        except DeviceError:  # the device, not this candidate: every later one would fail the same way
            self.save()  # what was measured stays; a rerun goes on from there
            raise
        except EdgebenchError as exc:
            rec.update(reason=getattr(exc, "reason", "error"), message=str(exc))
        else:
            np.save(self.cands / f"{cand.slug}.val_probs.npy", probs)
            ref = np.load(self.work / "reference_probs.npy")
            top1 = float((probs.argmax(1) == self.y_val).mean())
            ms = samples / 1e6
            rec.update(
                status="ok",
                path=str(path),
                sha256=sha256_file(path),
                sidecars=(sides := sidecar_entries(path, cand.runtime)),
                bytes=path.stat().st_size + sum(s["bytes"] for s in sides),  # with an IR's .bin
                val_top1=top1,
                drop_pp=round((self.state["reference"]["top1"] - top1) * 100, 6),  # 0.5, not 0.500000001
                agreement=float((probs.argmax(1) == ref.argmax(1)).mean()),
                p50_ms=float(np.median(ms)),
                p90_ms=float(np.percentile(ms, 90)),
                samples=int(len(ms)),
                precision=built["info"]["precision"]["label"],
                build=built,
                measured=time.strftime("%Y-%m-%dT%H:%M:%S"),
            )
        self.log(report.progress_line(rec))
        self.state["candidates"][cand.key] = rec
        self.save()
        return rec


def run_tune(settings: TuneSettings, log: Callable[[str], None] = print) -> TuneResult:
    """Tune, pick, write the winner into the export folder and the Pareto plot; returns what was found."""
    settings.check()
    started = time.perf_counter()
    t = _Tuner(settings, log)
    t.prepare()
    t.reference()
    space, left_out = target_space(settings)
    if settings.target != targets.HOST:
        aimed = cpu.summary(targets.fingerprint(settings.target))
        log(f"target {settings.target}: int8 candidates for {aimed}, measured on {cpu.summary()}")
    for cand, needs in left_out:
        log(f"left out {cand.family} ({label(cand.family, cand.settings)}): the target lacks {needs}")
    last_ort = max((i for i, c in enumerate(space) if c.family == "onnx-int8"), default=None)
    for i, cand in enumerate(space):
        log(f"[{i + 1}/{len(space)}] {cand.family} ({label(cand.family, cand.settings)})")
        t.evaluate(cand)
        if i == last_ort:  # ONNX Runtime's screening is complete: repair it if nothing passed
            onnx = [r for r in t.records() if r["family"] == "onnx" and r["status"] == "ok"]
            second_pass.fallback(t, p50(onnx[0]) if onnx else float("inf"))
    finalists = second_pass.runoff(t)
    winner, why = select(finalists or t.records(), settings.max_drop)
    log(f"decision: {why}")
    t.state.update(decision=why, winner=winner and winner["key"])
    entry = report.install(t, winner) if winner else None
    t.state["winner_format"] = entry and entry.format
    t.state["wall_time_s"] = round(time.perf_counter() - started, 1)
    t.save()
    plot = report.pareto_plot(
        t.records(), winner, settings.max_drop, t.state["reference"], t.out / "pareto.png"
    )
    return TuneResult(t.state, t.path, t.export_dir, winner, entry, plot)
