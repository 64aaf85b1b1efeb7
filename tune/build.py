"""One tuning build in a fresh, memory-bounded process: ``python -m edgebench.tune.build TASK.json``.

The tuner builds many candidates; in one process the converters' state piles up (one ``edgebench export``
of the 95 MB ResNet50 peaks at 9.2 GiB RSS). Each build therefore runs in its own process that exits when
done, and the parent watches its resident memory (psutil, every 0.2 s) and kills it above a limit:
RLIMIT_AS cannot bound it, TensorFlow and ONNX Runtime reserve far more address space than they touch.
Calibration runs in chunks of at most 16 images (``export.onnx_formats.quantize_int8``). The worker reports
its own peak RSS (VmHWM) with the result.

Task kinds: ``onnx-float`` (tf2onnx), ``onnx-prepare`` (BatchNorm folding for quantization), ``onnx-int8``
(static quantization of the prepared model with a recipe, calibration method and excluded nodes),
``tflite`` (fp32, dynamic-range or full-integer int8 through the converter), ``openvino`` (the IR of the
export format), ``openvino-int8`` (NNCF PTQ with a preset, of the float ONNX file) and ``sensitivity``
(``tune.sensitivity``). ``onnx-float`` and ``tflite`` run the builder of the export format of the same
name (``export.registry``) on a ``BuildContext``; ``onnx-int8`` calls export's ``quantize_int8`` itself, on
a prepared model shared by all candidates and with excluded nodes, which the ``onnx-int8`` format's builder
does not take. Artifact builds also report kernel coverage and I/O / precision of the result.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

from edgebench.errors import ArtifactError, EdgebenchError

_counter = itertools.count()


# ---------------------------------------------------------------- parent side


def run_build(task: dict, workdir: Path, memory_mb: int, timeout_s: float = 1800) -> dict:
    """Run one task in a worker; its result dict, or ArtifactError (memory limit, timeout, crash, error)."""
    import psutil

    stem = Path(workdir) / f"build{os.getpid()}-{next(_counter):04d}"
    task_path, result_path = stem.with_suffix(".task.json"), stem.with_suffix(".json")
    task_path.write_text(json.dumps({**task, "result": str(result_path)}))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    log = stem.with_suffix(".log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgebench.tune.build", str(task_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    watched, peak, start = psutil.Process(proc.pid), 0, time.monotonic()
    try:
        while proc.poll() is None:
            try:
                rss = sum(p.memory_info().rss for p in (watched, *watched.children(recursive=True)))
            except psutil.Error:  # exited between poll and the read
                rss = 0
            peak = max(peak, rss)
            if rss > memory_mb * 2**20:
                proc.kill()
                proc.wait()
                raise ArtifactError(
                    "memory-limit", f"{task['kind']} build went over {memory_mb} MiB RSS and was stopped"
                )
            if time.monotonic() - start > timeout_s:
                proc.kill()
                proc.wait()
                raise ArtifactError("timeout", f"{task['kind']} build ran over {timeout_s:g} s")
            time.sleep(0.2)
    finally:
        if proc.poll() is None:  # interrupted (Ctrl-C): the build must not outlive the tuner
            proc.kill()
            proc.wait()
        log.close()
    if not result_path.is_file():
        tail = stem.with_suffix(".log").read_text(errors="replace").strip().splitlines()[-1:]
        raise ArtifactError("worker-crashed", f"{task['kind']} build died: {(tail or ['no output'])[0]}")
    result = json.loads(result_path.read_text())
    for path in (task_path, result_path, stem.with_suffix(".log")):
        path.unlink(missing_ok=True)
    if "error" in result:
        raise ArtifactError(result["error"]["reason"], result["error"]["message"])
    result["watched_peak_rss_mb"] = round(peak / 2**20, 1)
    return result


def candidate_task(
    cand, model: Path, work: Path, prepared: Path | None, exclude=(), target: str = "host"
) -> dict:
    """The build task of a ``tune.space.Candidate`` (its artifact goes to ``work/../candidates``) for the
    CPU profile ``target`` (``edgebench.targets``), which its recipe records."""
    from edgebench.tune.space import SUFFIX, label

    task = {
        "dest": str(Path(work).parent / "candidates" / (cand.slug + SUFFIX[cand.runtime])),
        "runtime": cand.runtime,  # the runner that opens the artifact: its inspection after the build
        "model": str(model),
        "quantized": cand.quantized,
        "calib_images": str(Path(work) / "calib_images.npy"),
    }
    if cand.family == "onnx":
        return {**task, "kind": "onnx-float"}
    if cand.family == "onnx-int8":
        from edgebench import cpu, targets
        from edgebench.export.quant_recipe import ort_recipe

        fp = targets.fingerprint(target)
        fields = {k: cand.settings[k] for k in ort_recipe(fp).quant_options()}
        reason = f"edgebench tune candidate: {label(cand.family, cand.settings)}"
        named = {} if target == targets.HOST else {"target": target}  # host: no profile to name
        return {
            **task,
            "kind": "onnx-int8",
            "prepared": str(prepared),
            "calib_method": cand.settings["calib_method"],
            "recipe": {**fields, "reason": reason, "cpu": cpu.summary(fp), **named},
            "exclude": list(exclude),
        }
    if cand.family == "openvino":
        return {**task, "kind": "openvino", "format": "openvino"}
    if cand.family == "openvino-int8":  # ``prepared``: the float ONNX file NNCF converts and quantizes
        return {
            **task,
            "kind": "openvino-int8",
            "preset": cand.settings["preset"],
            "float_onnx": str(prepared),
        }
    return {**task, "kind": "tflite", "format": cand.family}


# ---------------------------------------------------------------- worker side


def _vm_hwm_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def _calibration(task: dict):
    import numpy as np

    from edgebench.export.context import Calibration

    images = np.load(task["calib_images"])
    return Calibration(images, np.arange(len(images)), "tune", 0, task.get("calib_method", "minmax"))


def _context(task: dict):
    from edgebench.export.context import BuildContext

    return BuildContext(Path(task["model"]), _calibration(task), opset=task.get("opset", 17))


def _export_format(name: str, task: dict, dest: Path) -> dict | None:
    """Build ``dest`` with the builder of export format ``name`` (``export.registry``)."""
    import shutil

    from edgebench.export.registry import FORMATS

    ctx = _context(task)
    try:
        return FORMATS[name].build(ctx, dest)
    finally:
        shutil.rmtree(ctx.workdir, ignore_errors=True)


def _onnx_float(task: dict, dest: Path) -> dict | None:
    return _export_format("onnx", task, dest)


def _onnx_prepare(task: dict, dest: Path) -> dict:
    from edgebench.export.onnx_formats import prepare

    prepare(Path(task["float_onnx"]), dest)
    return {}


def _onnx_int8(task: dict, dest: Path) -> dict:
    from edgebench.export.onnx_formats import quantize_int8
    from edgebench.export.quant_recipe import OrtRecipe

    recipe = OrtRecipe(**task["recipe"])
    quantize_int8(Path(task["prepared"]), dest, _calibration(task), recipe, task.get("exclude") or ())
    return {"recipe": recipe.describe()}


def _tflite(task: dict, dest: Path) -> dict | None:
    return _export_format(task["format"], task, dest)  # tflite-fp32 | tflite-int8 | tflite-dynamic


def _openvino_int8(task: dict, dest: Path) -> dict:
    """NNCF PTQ with the candidate's preset, on the IR of the tuner's float ONNX file (no TensorFlow here)."""
    from edgebench.export.openvino_formats import quantize

    return {"nncf": quantize(Path(task["float_onnx"]), _calibration(task), dest, task["preset"])}


def _sensitivity(task: dict, dest: Path) -> dict:
    import numpy as np

    from edgebench.tune.sensitivity import onnx_layer_sensitivity

    ranking = onnx_layer_sensitivity(
        Path(task["prepared"]), Path(task["qdq"]), np.load(task["images"]), dest.parent
    )
    dest.write_text(json.dumps(ranking))
    return {"layers": len(ranking)}


BUILDERS = {
    "onnx-float": _onnx_float,
    "onnx-prepare": _onnx_prepare,
    "onnx-int8": _onnx_int8,
    "tflite": _tflite,
    "openvino": lambda task, dest: _export_format("openvino", task, dest),
    "openvino-int8": _openvino_int8,
    "sensitivity": _sensitivity,
}


def main(task_path: str) -> int:
    task = json.loads(Path(task_path).read_text())
    dest = Path(task["dest"])
    start = time.perf_counter()
    try:
        result = {"extra": BUILDERS[task["kind"]](task, dest) or {}}
        result["build_s"] = round(time.perf_counter() - start, 2)
        if task.get("runtime"):  # an artifact, not an intermediate (prepared model, sensitivity ranking)
            if not dest.is_file() or dest.stat().st_size == 0:
                raise EdgebenchError(f"{task['kind']}: the converter wrote no file")
            from edgebench.export.artifact_info import inspect  # what the export pipeline records

            info, cov = inspect(task["runtime"], dest, bool(task.get("quantized")))
            result.update(info=info, coverage=cov)
        result["peak_rss_mb"] = _vm_hwm_mb()
    except Exception as exc:  # converters raise anything; the parent records it as one line
        text = str(exc).strip().splitlines()
        reason = "build-error" if isinstance(exc, EdgebenchError) else "converter-crashed"
        result = {
            "error": {"reason": reason, "message": f"{type(exc).__name__}: {text[0] if text else ''}"},
            "traceback": traceback.format_exc(limit=5),
        }
    Path(task["result"]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
