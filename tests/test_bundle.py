"""bundle: a deployable folder that runs without TensorFlow, proven in a clean virtual environment.

The ``venv`` tests build one fresh virtual environment per bundle from its requirements.txt only (PyPI; pip's
cache makes reinstalls fast) and run ``infer.py`` there; ``-m 'not venv'`` runs the same checks with this
project's interpreter instead.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from click.testing import CliRunner

from edgebench import runtime
from edgebench.cli import cli
from edgebench.fileio import sha256_file
from tests.conftest import write_bomb_png

REPO = Path(__file__).resolve().parents[1]
RUNTIME_DIR = REPO / "edgebench" / "runtime"
SCHEMA = json.loads((REPO / "edgebench" / "schemas" / "bundle.schema.json").read_text())
EXPORTED = ["tflite-fp32", "tflite-int8", "onnx", "trt-fp16"]  # trt-fp16: unavailable without TensorRT
BUNDLED = ["tflite-int8", "onnx"]
RUNTIME_DIST = {"tflite-int8": "ai-edge-litert", "onnx": "onnxruntime"}
SAMPLES = 10


def _invoke(*args):
    res = CliRunner().invoke(cli, [str(a) for a in args])
    assert "Traceback" not in res.output, res.output
    return res


def _one_line_error(stderr: str, words: str, case: str = "") -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], f"{case}: {lines}"


def _test_images(cifar_folder: Path, per_class: int) -> list[Path]:
    """Real CIFAR-10 test JPEGs, ``per_class`` of each class."""
    return [p for d in sorted((cifar_folder / "test").iterdir()) for p in sorted(d.iterdir())[:per_class]]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model_path, cifar_folder, cache_dir) -> Path:
    """runs/<name>-like folder: model.keras, export/ (tiny model) and bench/report.json for two formats."""
    from edgebench.bench.benchmark import BenchSettings, run_bench
    from edgebench.export.pipeline import ExportSettings, export_model
    from edgebench.runtime.latency_stats import LatencySettings

    run = tmp_path_factory.mktemp("run")
    shutil.copy(tiny_model_path, run / "model.keras")
    settings = ExportSettings(calib_size=100, parity_images=20)
    export_model(run / "model.keras", run / "export", EXPORTED, cifar_folder, cache_dir, settings=settings)
    bench = BenchSettings(
        export_dir=run / "export",
        data=cifar_folder,
        cache_dir=cache_dir,
        threads=(1,),
        batch_sizes=(1, 4),
        latency=LatencySettings(rounds=1, min_samples=30, time_cap_s=0.2, throughput_time_cap_s=0.05),
        test_per_class=10,
        formats=BUNDLED,
        plots=False,
        time_reference=False,
    )
    run_bench(bench, log=lambda msg: None)
    return run


@pytest.fixture(scope="module")
def bundles(run_dir, tmp_path_factory) -> dict[str, Path]:
    """``edgebench bundle`` of tflite-int8 and onnx (sample source and report found by default)."""
    dist = tmp_path_factory.mktemp("dist")
    made = {}
    for fmt in BUNDLED:
        out = dist / f"tiny-{fmt}"
        res = _invoke("bundle", "--export", run_dir / "export", "--format", fmt, "--out", out)
        assert res.exit_code == 0, res.output
        assert f"bundle: {out}" in res.output and "selftest passed" in res.output
        made[fmt] = out
    return made


def _spec(bundle: Path) -> dict:
    return json.loads((bundle / "model.json").read_text())


# ---------------------------------------------------------------- what the bundle holds


@pytest.mark.parametrize("fmt", BUNDLED)
def test_bundle_holds_exactly_the_device_files(bundles, run_dir, fmt):
    bundle = bundles[fmt]
    spec = _spec(bundle)
    jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker()).validate(spec)
    files = {str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file()}
    samples = {s["file"] for s in spec["samples"]} | {s["ppm"] for s in spec["samples"]}
    eval_files = {spec["eval"]["images"], spec["eval"]["labels"]}  # the device bench's evaluation set
    runtime_files = {f"edgebench_runtime/{p.name}" for p in RUNTIME_DIR.glob("*.py")}
    model_file = spec["model"]["file"]
    # TFLite bundles carry the C runner: sources, Makefile, LiteRT's library and the binary built here.
    native = (
        {"runner.c", "tflite_check.h", "litert_min.h", "Makefile", "libLiteRt.so", "runner"}
        if fmt == "tflite-int8"
        else set()
    )
    if fmt == "tflite-int8" and spec["native"]["binary"] is None:  # no C compiler here: sources only
        native.discard("runner")
    assert (
        files
        == {model_file, "labels.txt", "model.json", "infer.py", "requirements.txt", "README.md"}
        | samples
        | eval_files
        | runtime_files
        | native
    )
    assert len(samples) == 2 * SAMPLES

    # edgebench_runtime/ IS the project's runtime package, byte for byte; infer.py only starts its CLI.
    for name in runtime_files:
        assert (bundle / name).read_bytes() == (RUNTIME_DIR / Path(name).name).read_bytes(), name
    assert "edgebench_runtime.cli import main" in (bundle / "infer.py").read_text()
    # requirements: exactly numpy, Pillow and this format's runtime, at the versions installed here.
    pins = [f"{d}=={importlib.metadata.version(d)}" for d in ("numpy", "pillow", RUNTIME_DIST[fmt])]
    assert (bundle / "requirements.txt").read_text().splitlines() == pins == spec["requirements"]

    manifest = json.loads((run_dir / "export" / "manifest.json").read_text())
    entry = next(a for a in manifest["artifacts"] if a["format"] == fmt)
    assert sha256_file(bundle / model_file) == spec["model"]["sha256"] == entry["sha256"]
    assert (
        (bundle / "labels.txt").read_text().splitlines()
        == spec["class_names"]
        == list(runtime.CIFAR10_CLASSES)
    )
    readme = (bundle / "README.md").read_text()
    assert model_file in readme and "infer.py --selftest" in readme and spec["model"]["sha256"] in readme


def test_model_json_has_the_quantization_the_file_really_has(bundles):
    """Input/output spec of the int8 bundle, compared with what LiteRT itself reads from the bundled file."""
    from ai_edge_litert.interpreter import Interpreter

    bundle = bundles["tflite-int8"]
    spec = _spec(bundle)
    interp = Interpreter(model_path=str(bundle / spec["model"]["file"]))
    for described, actual in (
        (spec["inputs"][0], interp.get_input_details()[0]),
        (spec["outputs"][0], interp.get_output_details()[0]),
    ):
        scale, zero = actual["quantization"]
        assert described["dtype"] == np.dtype(actual["dtype"]).name == "uint8"
        expected = {"scale": pytest.approx(scale), "zero_point": zero} if scale else None
        assert described["quantization"] == expected
    # Raw pixels go in as they are (the cast is inside the graph); the probabilities come out quantized.
    assert spec["inputs"][0]["quantization"] is None and spec["outputs"][0]["quantization"]["scale"] > 0
    assert spec["inputs"][0]["shape"] == [-1, 32, 32, 3]
    assert "uint8" in spec["preprocessing"]["input"] and "(N, 32, 32, 3)" in spec["preprocessing"]["input"]
    assert spec["precision"] == "int8" and spec["export"]["calibration"]["size"] == 100
    assert _spec(bundles["onnx"])["export"]["calibration"] is None  # float: no calibration involved


@pytest.mark.parametrize("fmt", BUNDLED)
def test_samples_are_lossless_test_images_with_the_artifacts_own_top1(bundles, small_dataset, fmt):
    bundle = bundles[fmt]
    spec = _spec(bundle)
    names = spec["class_names"]
    index = [s["dataset_index"] for s in spec["samples"]]
    pixels = np.stack([runtime.load_image(bundle / s["file"]) for s in spec["samples"]])
    np.testing.assert_array_equal(pixels, small_dataset.x_test[index])  # PNG: the very pixels
    assert [s["true_label"] for s in spec["samples"]] == [names[c] for c in small_dataset.y_test[index]]
    assert sorted(s["true_label"] for s in spec["samples"]) == sorted(names)  # one per class
    with runtime.open_runner(bundle / spec["model"]["file"]) as runner:
        probs = runner.infer(pixels)
    assert [s["expected"] for s in spec["samples"]] == [names[i] for i in probs.argmax(axis=1)]
    np.testing.assert_allclose([s["probability"] for s in spec["samples"]], probs.max(axis=1), atol=1e-6)


@pytest.mark.parametrize("fmt", BUNDLED)
def test_measured_figures_are_the_bench_reports(bundles, run_dir, fmt):
    report = json.loads((run_dir / "bench" / "report.json").read_text())
    row = next(r for r in report["artifacts"] if r["format"] == fmt)
    measured = _spec(bundles[fmt])["measured"]
    assert measured["matches_export"] is True and measured["report"] == str(run_dir / "bench" / "report.json")
    assert measured["accuracy"]["top1"] == row["accuracy"]["top1"]
    assert measured["accuracy"]["images"] == row["accuracy"]["images"] == 100
    assert measured["accuracy"]["reference_top1"] == report["reference"]["accuracy"]["top1"]
    assert measured["latency"]["p50_ms"] == row["best"]["p50_ms"]
    readme = (bundles[fmt] / "README.md").read_text()
    assert f"{row['accuracy']['top1'] * 100:.2f}%" in readme and f"{row['best']['p50_ms']:.2f} ms" in readme


def test_another_model_in_the_bundles_place_keeps_its_contract_and_threads(bundles, run_dir, tmp_path):
    from edgebench.runtime.cli import model_runner

    bundle = bundles["tflite-int8"]
    spec = _spec(bundle)
    assert spec["threads"] == 1  # what the bench report measured
    other = run_dir / "export" / "model.fp32.tflite"
    assert other.is_file()
    contract, runner = model_runner(bundle, str(other), None)
    assert runner.threads == spec["threads"] and runner.path == other
    assert contract.to_dict() == spec["contract"]
    assert model_runner(bundle, str(other), 2)[1].threads == 2  # --threads still wins
    contract, runner = model_runner(tmp_path, str(other), None)  # no model.json: CIFAR-10, runtime default
    assert runner.threads is None and contract.classes[0] == "airplane"


def test_without_a_report_the_bundle_says_not_benchmarked(run_dir, tmp_path):
    shutil.copytree(run_dir / "export", tmp_path / "run" / "export")
    res = _invoke(
        "bundle", "--export", tmp_path / "run" / "export", "--format", "onnx", "--out", tmp_path / "b"
    )
    assert res.exit_code == 0, res.output
    assert _spec(tmp_path / "b")["measured"] is None and "not benchmarked" in res.output
    assert "Not benchmarked" in (tmp_path / "b" / "README.md").read_text()


def test_rebuilding_replaces_an_earlier_bundle_and_leaves_no_temporaries(run_dir, tmp_path):
    out = tmp_path / "dist" / "tiny"
    args = ("bundle", "--export", run_dir / "export", "--format", "onnx", "--out", out, "--samples", 3)
    assert _invoke(*args).exit_code == 0
    (out / "stale.txt").write_text("from the earlier bundle")
    res = _invoke(*args)
    assert res.exit_code == 0, res.output
    assert not (out / "stale.txt").exists() and len(_spec(out)["samples"]) == 3
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny"]


# ---------------------------------------------------------------- bad input to edgebench bundle


def _tampered_export(run_dir: Path, dest: Path) -> Path:
    shutil.copytree(run_dir / "export", dest)
    with open(dest / "model.int8.tflite", "r+b") as fh:
        fh.seek(-64, os.SEEK_END)
        fh.write(b"\x00" * 16)
    return dest


def test_bundle_bad_input_is_one_line_and_exit_2(run_dir, tmp_path):
    export = run_dir / "export"
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("keep me")
    other_report = json.loads((run_dir / "bench" / "report.json").read_text())
    other_report["source_model"]["sha256"] = "0" * 64
    (tmp_path / "other.json").write_text(json.dumps(other_report))
    other_file = json.loads((run_dir / "bench" / "report.json").read_text())
    next(r for r in other_file["artifacts"] if r["format"] == "onnx")["sha256"] = "0" * 64
    (tmp_path / "other-file.json").write_text(json.dumps(other_file))  # another export folder's onnx
    trt_words = "cannot be bundled"  # unavailable here; on a TensorRT machine: engines are device-specific
    cases = {
        "missing export": (["--export", tmp_path / "nope"], "export folder not found"),
        "format not exported": (["--export", export, "--format", "onnx-int8"], "not in the export manifest"),
        "unknown format": (["--export", export, "--format", "coreml"], "not in the export manifest"),
        "tensorrt": (["--export", export, "--format", "trt-fp16"], trt_words),
        "out under a file": (["--export", export, "--out", a_file / "b"], "cannot create output directory"),
        "out is a file": (["--export", export, "--out", a_file], "not a folder"),
        "out is someone's folder": (["--export", export, "--out", occupied], "not an edgebench bundle"),
        "no samples": (["--export", export, "--samples", 0], "--samples must be at least 1"),
        "tampered artifact": (
            ["--export", _tampered_export(run_dir, tmp_path / "t")],
            "changed since export",
        ),
        "report of another model": (
            ["--export", export, "--report", tmp_path / "other.json"],
            "different model",
        ),
        "report of another file": (
            ["--export", export, "--format", "onnx", "--report", tmp_path / "other-file.json"],
            "measured another onnx file",
        ),
        "missing report": (
            ["--export", export, "--report", tmp_path / "none.json"],
            "bench report not found",
        ),
    }
    for case, (args, words) in cases.items():
        if "--out" not in args:
            args = [*args, "--out", tmp_path / "dist" / "b"]
        res = _invoke("bundle", *args)
        assert res.exit_code == 2, f"{case}: {res.output}"
        _one_line_error(res.stderr, words, case)
    assert (occupied / "notes.txt").read_text() == "keep me" and a_file.read_text() == "not a folder"
    assert not (tmp_path / "dist").exists() or not any((tmp_path / "dist").iterdir())  # nothing half-written


def test_infer_py_without_numpy_says_what_to_install(bundles):
    """A device Python without the bundle's requirements gets one line naming the module, not a traceback."""
    proc = subprocess.run(
        [sys.executable, "-S", "infer.py", "--selftest"],  # -S: no site-packages, so no numpy
        cwd=bundles["tflite-int8"],
        capture_output=True,
        text=True,
    )
    requirements = bundles["tflite-int8"] / "requirements.txt"
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: Python module numpy not installed: pip install -r {requirements}"
    ]


def test_tensorrt_engines_are_refused_with_the_reason():
    from edgebench.bundle.build import check_bundlable
    from edgebench.errors import EdgebenchError
    from edgebench.export.manifest import ArtifactEntry

    with pytest.raises(EdgebenchError, match="TensorRT engines are built for one GPU"):
        check_bundlable(ArtifactEntry(format="trt-int8", runtime="tensorrt", status="ok"))


# ---------------------------------------------------------------- infer.py, here and in a clean venv


@pytest.fixture(scope="session")
def clean_venv(tmp_path_factory):
    """venv factory: a fresh virtual environment holding only ``pip install -r requirements`` (cached)."""
    made: dict[str, Path] = {}

    def make(requirements: Path) -> Path:
        key = requirements.read_text()
        if key not in made:
            root = tmp_path_factory.mktemp("venv") / "env"
            subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=120)
            python = root / "bin" / "python"
            pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
            res = subprocess.run([*pip, "-r", requirements], capture_output=True, text=True, timeout=600)
            assert res.returncode == 0, res.stderr[-3000:]
            made[key] = python
        return made[key]

    return make


PYTHONS = [pytest.param("host", id="host"), pytest.param("venv", id="venv", marks=pytest.mark.venv)]
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


@pytest.fixture(params=PYTHONS)
def python(request, clean_venv):
    """(interpreter factory): the project's own, or the clean venv built from a bundle's requirements."""
    if request.param == "host":
        return lambda bundle: Path(sys.executable)
    return lambda bundle: clean_venv(bundle / "requirements.txt")


def _run(python: Path, bundle: Path, *args, script: Path | None = None):
    """``python infer.py ARGS`` run from inside the bundle folder, as on a device."""
    cmd = [str(python), str(script or bundle / "infer.py"), *[str(a) for a in args]]
    return subprocess.run(cmd, cwd=bundle, capture_output=True, text=True, timeout=120, env=CLEAN_ENV)


@pytest.mark.venv
@pytest.mark.parametrize("fmt", BUNDLED)
def test_clean_venv_has_the_runtime_but_no_tensorflow(bundles, clean_venv, fmt):
    python = clean_venv(bundles[fmt] / "requirements.txt")
    absent = ["tensorflow", "keras", "edgebench", *(["onnxruntime"] if fmt == "tflite-int8" else [])]
    for module in absent:
        res = subprocess.run(
            [python, "-c", f"import {module}"],
            cwd=bundles[fmt],
            capture_output=True,
            text=True,
            env=CLEAN_ENV,
        )
        assert res.returncode != 0 and f"No module named '{module}'" in res.stderr, (module, res.stderr)
    runtime_module = {"tflite-int8": "ai_edge_litert.interpreter", "onnx": "onnxruntime"}[fmt]
    res = subprocess.run(
        [python, "-c", f"import numpy, PIL, {runtime_module}"], capture_output=True, env=CLEAN_ENV
    )
    assert res.returncode == 0, res.stderr
    listed = subprocess.run([python, "-m", "pip", "list", "--format=json"], capture_output=True, text=True)
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert not names & {"tensorflow", "tensorflow-cpu", "keras", "edgebench", "tf2onnx"}, names


@pytest.mark.parametrize("fmt", BUNDLED)
def test_selftest_passes(bundles, python, fmt):
    res = _run(python(bundles[fmt]), bundles[fmt], "--selftest")
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.strip().splitlines()
    assert lines[-1].startswith(f"selftest passed: {SAMPLES}/{SAMPLES} samples") and "sha256 ok" in lines[-1]
    assert sum(line.startswith("ok ") for line in lines) == SAMPLES


@pytest.mark.parametrize("fmt", BUNDLED)
def test_infer_classifies_image_files_like_the_runner(bundles, python, cifar_folder, fmt):
    bundle = bundles[fmt]
    images = _test_images(cifar_folder, 1)  # 10 real JPEGs, not the bundled PNGs
    res = _run(python(bundle), bundle, *images, "--json", "--top-k", 3, "--threads", 1)
    assert res.returncode == 0, res.stderr
    results = json.loads(res.stdout)
    with runtime.open_runner(bundle / _spec(bundle)["model"]["file"]) as runner:
        probs = runner.infer(runtime.load_images(images))
    assert [r["image"] for r in results] == [str(p) for p in images]
    assert all(len(r["top_k"]) == 3 for r in results)
    assert [r["top_k"][0]["class"] for r in results] == [runtime.CIFAR10_CLASSES[i] for i in probs.argmax(1)]
    np.testing.assert_allclose([r["top_k"][0]["probability"] for r in results], probs.max(1), atol=1e-5)

    text = _run(python(bundle), bundle, images[0])
    assert text.returncode == 0 and text.stdout.startswith(f"{images[0]}: {results[0]['top_k'][0]['class']} ")


def _tampered_bundle(bundle: Path, dest: Path) -> Path:
    shutil.copytree(bundle, dest)
    model = dest / _spec(bundle)["model"]["file"]
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    return dest


def _changed_expectation(bundle: Path, dest: Path) -> Path:
    shutil.copytree(bundle, dest)
    spec = _spec(dest)
    first = spec["samples"][0]
    first["expected"] = next(c for c in spec["class_names"] if c != first["expected"])
    (dest / "model.json").write_text(json.dumps(spec))
    return dest


@pytest.mark.parametrize("fmt", BUNDLED)
def test_infer_bad_input_is_one_line_and_non_zero(bundles, python, cifar_folder, tmp_path, fmt):
    bundle = bundles[fmt]
    interpreter = python(bundle)
    image = _test_images(cifar_folder, 1)[0]
    corrupt = tmp_path / Path(_spec(bundle)["model"]["file"]).name
    corrupt.write_bytes(os.urandom(4096))
    tampered = _tampered_bundle(bundle, tmp_path / "tampered")
    swapped = shutil.copytree(bundle, tmp_path / "swapped")
    shutil.copyfile(swapped / "samples" / "01_automobile.png", swapped / "samples" / "00_airplane.png")
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("hello")
    cases = {
        "decompression bomb": (bundle, [write_bomb_png(tmp_path / "bomb.png")], "image too large"),
        "missing image": (bundle, [tmp_path / "missing.jpg"], "image not found"),
        "not an image": (bundle, [not_an_image], "not a readable image"),
        "corrupt model": (bundle, [image, "--model", corrupt], "cannot load"),
        "tampered model, classify": (tampered, [image], "sha256"),
        "tampered model, selftest": (tampered, ["--selftest"], "sha256"),
        "replaced sample image": (swapped, ["--selftest"], "sample image"),
        "no images": (bundle, [], "give image files, --selftest or --bench"),
        "bad top-k": (bundle, [image, "--top-k", 11], "--top-k must be between 1 and 10"),
    }
    for case, (where, args, words) in cases.items():
        res = _run(interpreter, where, *args)
        assert res.returncode == 2, f"{case}: {res.stdout} {res.stderr}"
        _one_line_error(res.stderr, words, case)

    # A sample whose recorded top-1 no longer matches: the self-test fails (exit 1) and says which one.
    changed = _changed_expectation(bundle, tmp_path / "changed")
    res = _run(interpreter, changed, "--selftest")
    assert res.returncode == 1, res.stdout + res.stderr
    lines = res.stdout.strip().splitlines()
    assert lines[0].startswith("FAIL samples/00_") and lines[-1].startswith(
        f"selftest FAILED: {SAMPLES - 1}/"
    )


# ---------------------------------------------------------------- edgebench predict across formats


def test_predict_gives_the_same_top1_for_keras_and_every_float_artifact(run_dir, cifar_folder):
    images = _test_images(cifar_folder, 2)  # 20 real test images
    models = {
        "keras": run_dir / "model.keras",
        "tflite-fp32": run_dir / "export" / "model.fp32.tflite",
        "onnx": run_dir / "export" / "model.onnx",
    }
    top1 = {}
    for name, model in models.items():
        res = _invoke("predict", "--model", model, "--json", "--top-k", 1, *images)
        assert res.exit_code == 0, res.output
        top1[name] = [r["top_k"][0]["class"] for r in json.loads(res.stdout)]
    assert len(top1["keras"]) == 20
    assert top1["tflite-fp32"] == top1["keras"] and top1["onnx"] == top1["keras"], top1
    # Quantized artifacts are accepted too (their top-1 may differ: that is bench's accuracy question).
    res = _invoke("predict", "--model", run_dir / "export" / "model.int8.tflite", "--json", *images[:3])
    assert res.exit_code == 0 and len(json.loads(res.stdout)) == 3


# ---------------------------------------------------------------- the C runner of TFLite bundles


def _c_runner(bundles) -> Path:
    bundle = bundles["tflite-int8"]
    if _spec(bundle)["native"]["binary"] is None:
        pytest.skip("no C compiler here: the bundle ships the C runner as source only")
    return bundle


def _runner(where: Path, *args, exe: Path | None = None):
    """``./runner ARGS`` from inside ``where`` with an empty environment: no Python, no venv."""
    cmd = [str(exe or where / "runner"), *[str(a) for a in args]]
    return subprocess.run(cmd, cwd=where, capture_output=True, text=True, timeout=120, env={})


def test_c_runner_prints_what_infer_py_prints(bundles):
    """Same samples (PPM for C, PNG for Python: the same pixels): identical JSON and text, top-3."""
    bundle = _c_runner(bundles)
    spec = _spec(bundle)
    ppm, png = [s["ppm"] for s in spec["samples"]], [s["file"] for s in spec["samples"]]
    for mode in (["--json"], []):
        c = _runner(bundle, *ppm, "--top-k", 3, *mode)
        py = _run(Path(sys.executable), bundle, *png, "--top-k", 3, *mode)
        assert c.returncode == 0 and py.returncode == 0, c.stderr + py.stderr
        assert c.stderr == "", c.stderr  # LiteRT's own log lines stay out of the runner's output
        assert c.stdout.replace(".ppm", ".png") == py.stdout
    # Both default to the thread count the bundled latency was measured with (the fixture benches 1 thread).
    assert spec["threads"] == spec["measured"]["latency"]["threads"] == spec["native"]["default_threads"] == 1
    assert "-DRUNNER_DEFAULT_THREADS=1" in (bundle / "Makefile").read_text()


def test_c_runner_builds_and_runs_from_the_bundle_alone(bundles, tmp_path):
    """The bundle's sources, Makefile and libLiteRt.so only: rebuilt with the compiler (warnings as errors)
    and run without Python, it gives every sample its recorded top-1 and times the run call."""
    bundle = _c_runner(bundles)
    spec = _spec(bundle)
    device = tmp_path / "device"
    device.mkdir()
    for name in [
        "runner.c",
        "tflite_check.h",
        "litert_min.h",
        "Makefile",
        "libLiteRt.so",
        "labels.txt",
        spec["model"]["file"],
    ]:
        shutil.copy(bundle / name, device / name)
    shutil.copytree(bundle / "samples", device / "samples")
    make = shutil.which("make")
    cmd = [make] if make else ["sh", "-c", spec["native"]["build"]]
    built = subprocess.run(cmd, cwd=device, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0 and (device / "runner").is_file(), built.stdout + built.stderr
    res = _runner(device, *[s["ppm"] for s in spec["samples"]], "--json", "--top-k", 1)
    assert res.returncode == 0, res.stderr
    assert [r["top_k"][0]["class"] for r in json.loads(res.stdout)] == [
        s["expected"] for s in spec["samples"]
    ]

    timed = _runner(device, "--bench", 20, "--warmup", 2, "--json", spec["samples"][0]["ppm"])
    assert timed.returncode == 0, timed.stderr
    bench = json.loads(timed.stdout)
    assert bench["runs"] == 20 and bench["threads"] == 1 and len(bench["samples_ms"]) == 20
    # p99 only from 1,000 samples (bench's rule); the load, the first call and the process's peak RSS always
    assert 0 < bench["p50_ms"] <= bench["p90_ms"] and bench["p99_ms"] is None
    assert bench["load_ms"] > 0 and bench["first_ms"] > 0 and bench["peak_rss_kb"] > 0


def test_c_runner_bad_input_is_one_line_and_exit_2(bundles, tmp_path):
    bundle = _c_runner(bundles)
    spec = _spec(bundle)
    model, sample = bundle / spec["model"]["file"], spec["samples"][0]
    data = model.read_bytes()
    # TFL3 identifier, garbage after; seeded, so that every run refuses the same bytes.
    (tmp_path / "random.tflite").write_bytes(data[:8] + np.random.default_rng(0).bytes(4096))
    (tmp_path / "truncated.tflite").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.tflite").write_bytes(np.random.default_rng(1).bytes(4096))
    (tmp_path / "short.rgb").write_bytes(bytes(32 * 32 * 3 - 1))
    (tmp_path / "big.ppm").write_bytes(b"P6\n64 64\n255\n" + bytes(64 * 64 * 3))
    (tmp_path / "no-labels.txt").write_text("")
    invalid = "is not a valid TFLite model: "  # refused by the runner's own check, before LiteRT reads it
    cases = {
        "missing model": (["--model", tmp_path / "nope.tflite", sample["ppm"]], "model file not found"),
        "not a model": (["--model", tmp_path / "junk.tflite", sample["ppm"]], "not a TFLite model"),
        "corrupt model": (["--model", tmp_path / "random.tflite", sample["ppm"]], invalid),
        "truncated model": (["--model", tmp_path / "truncated.tflite", sample["ppm"]], invalid),
        "wrong-size raw image": ([tmp_path / "short.rgb"], "raw image for this model is 32x32x3"),
        "wrong-size PPM": ([tmp_path / "big.ppm"], "the model takes 32x32x3"),
        "PNG instead of PPM": ([sample["file"]], "is a PNG file"),
        "missing image": ([tmp_path / "nope.ppm"], "image not found"),
        "empty labels": (["--labels", tmp_path / "no-labels.txt", sample["ppm"]], "lists no classes"),
        "bad top-k": ([sample["ppm"], "--top-k", 11], "--top-k must be between 1 and 10"),
        "no images": ([], "give image files or --bench"),
    }
    for case, (args, words) in cases.items():
        res = _runner(bundle, *args)
        assert res.returncode == 2 and res.stdout == "", f"{case}: {res.returncode} {res.stdout} {res.stderr}"
        _one_line_error(res.stderr, words, case)


def _repacked(data: bytes, change) -> bytes:
    """The model re-serialized by the flatbuffers library after ``change(model)`` edits its object tree."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(data, 0)
    change(model)
    builder = flatbuffers.Builder(len(data))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _weights_after_the_flatbuffer(data: bytes) -> tuple[bytes, int]:
    """The model with its weights stored after the flatbuffer (Buffer.offset and size, as the converter writes
    models over 2 GB), and the index of the last buffer moved there."""
    blobs: dict[int, bytes] = {}

    def move(model, offsets):
        for i, buffer in enumerate(model.buffers):
            if buffer.data is not None and len(buffer.data):
                blobs[i] = bytes(buffer.data)
                buffer.data, buffer.offset, buffer.size = None, offsets.get(i, 1 << 40), len(blobs[i])

    end, offsets = len(_repacked(data, lambda m: move(m, {}))), {}  # same layout, whatever the offsets
    for i, blob in blobs.items():
        offsets[i] = -(-end // 16) * 16
        end = offsets[i] + len(blob)
    out = bytearray(_repacked(data, lambda m: move(m, offsets)))
    for i, blob in blobs.items():
        out += bytes(offsets[i] - len(out)) + blob
    return bytes(out), max(blobs)


def test_c_runner_verifies_the_model_file_before_loading_it(bundles, tmp_path):
    """LiteRT's C API loads a flatbuffer unverified (a truncated model once grew it to 10-22 GB): the runner
    checks every offset, length and index itself and refuses a damaged file in one line before LiteRT sees
    it, and still runs the model laid out by another flatbuffers writer or with its weights after the
    flatbuffer."""
    from ai_edge_litert import schema_py_generated as schema

    bundle = _c_runner(bundles)
    spec = _spec(bundle)
    data, ppm = (bundle / spec["model"]["file"]).read_bytes(), spec["samples"][0]["ppm"]
    model = schema.Model.GetRootAs(data, 0)
    largest = max(range(model.BuffersLength()), key=lambda i: model.Buffers(i).DataLength())
    table = model.Buffers(largest)._tab
    length_at = table.Vector(table.Offset(4)) - 4  # the data vector's length field
    rng = np.random.default_rng(0)
    cuts = {len(data) * p // 100 for p in (10, 50, 90)} | {len(data) - 1}
    cuts |= {int(c) for c in rng.integers(8, len(data), 4)}

    def bad_buffer_index(m):
        m.subgraphs[0].tensors[0].buffer = len(m.buffers)

    def bad_operand(m):
        op = m.subgraphs[0].operators[0]
        op.inputs = [len(m.subgraphs[0].tensors), *op.inputs[1:]]

    cases = {f"cut at {cut} of {len(data)} bytes": (data[:cut], "") for cut in sorted(cuts)}
    cases["data length past the end"] = (
        data[:length_at] + (0x7FFFFFFF).to_bytes(4, "little") + data[length_at + 4 :],
        f"buffer {largest}'s data runs past the end of the file",
    )
    after, last = _weights_after_the_flatbuffer(data)
    cases["weights after the flatbuffer, cut short"] = (
        after[:-1],
        f"buffer {last}'s data runs past the end of the file",
    )
    n_buffers, n_tensors = model.BuffersLength(), model.Subgraphs(0).TensorsLength()
    cases["tensor names a missing buffer"] = (
        _repacked(data, bad_buffer_index),
        f"subgraph 0 tensor 0 names buffer {n_buffers}; there are {n_buffers}",
    )
    cases["operator names a missing tensor"] = (
        _repacked(data, bad_operand),
        f"subgraph 0 operator 0 names tensor {n_tensors}; there are {n_tensors}",
    )
    for case, (damaged, words) in cases.items():
        path = tmp_path / "damaged.tflite"
        path.write_bytes(damaged)
        res = _runner(bundle, "--model", path, ppm)
        assert res.returncode == 2 and res.stdout == "", f"{case}: {res.returncode} {res.stdout} {res.stderr}"
        _one_line_error(res.stderr, f"{path} is not a valid TFLite model: {words}", case)

    # In bounds, its values sound, but not a model a kernel takes (a convolution's filter with its input
    # channels and height swapped: the same bytes, a shape the input does not fit): LiteRT refuses it when
    # it prepares its kernels (XNNPACK at the first run), and its own log of why stays off stderr.
    def bad_filter(m):
        conv = next(
            op
            for op in m.subgraphs[0].operators
            if m.operatorCodes[op.opcodeIndex].builtinCode == schema.BuiltinOperator.CONV_2D
            and m.subgraphs[0].tensors[op.inputs[1]].shape[-1]
            != m.subgraphs[0].tensors[op.inputs[1]].shape[1]
        )
        filt = m.subgraphs[0].tensors[conv.inputs[1]]
        filt.shape = [filt.shape[0], filt.shape[3], filt.shape[2], filt.shape[1]]

    path = tmp_path / "bad-filter.tflite"
    path.write_bytes(_repacked(data, bad_filter))
    res = _runner(bundle, "--model", path, ppm)
    assert res.returncode == 2 and res.stdout == "", res.stderr
    _one_line_error(res.stderr, "LiteRT status", "a filter of the wrong shape")

    # The flatbuffers library lays the same model out differently from the converter, and weights may lie
    # after the flatbuffer: each still runs, with the very same scores.
    repacked, moved = tmp_path / "repacked.tflite", tmp_path / "after.tflite"
    repacked.write_bytes(_repacked(data, lambda m: None))
    moved.write_bytes(after)
    outputs = []
    for model_file in (bundle / spec["model"]["file"], repacked, moved):
        res = _runner(bundle, "--model", model_file, ppm, "--json")
        assert res.returncode == 0 and res.stderr == "", f"{model_file.name}: {res.stderr}"
        outputs.append(res.stdout)
    assert outputs[1:] == outputs[:1] * 2
    assert json.loads(outputs[0])[0]["top_k"][0]["class"] == spec["samples"][0]["expected"]


def test_a_failed_gate_warns_and_strict_refuses(run_dir, tmp_path):
    report = json.loads((run_dir / "bench" / "report.json").read_text())
    row = next(r for r in report["artifacts"] if r["format"] == "tflite-int8")
    row["status"], row["message"] = "fail", "drop 3.00 pp > 0.50"
    failed = tmp_path / "failed.json"
    failed.write_text(json.dumps(report))
    args = ["bundle", "--export", run_dir / "export", "--format", "tflite-int8", "--samples", 2]

    refused = _invoke(*args, "--report", failed, "--out", tmp_path / "strict", "--strict")
    assert refused.exit_code == 1 and not (tmp_path / "strict").exists()
    _one_line_error(refused.stderr, "--strict: not bundling tflite-int8: it did not pass bench's gate")
    lone = shutil.copytree(run_dir / "export", tmp_path / "run" / "export")  # no bench/ beside it
    unmeasured = _invoke(*args[:2], lone, *args[3:], "--out", tmp_path / "none", "--strict")
    assert unmeasured.exit_code == 1 and not (tmp_path / "none").exists()
    _one_line_error(unmeasured.stderr, "no bench report measured it")
    made = _invoke(*args, "--report", failed, "--out", tmp_path / "warned")
    assert made.exit_code == 0, made.output
    assert "warning: tflite-int8: it did not pass bench's gate (status fail: drop 3.00 pp" in made.stderr
    assert _spec(tmp_path / "warned")["measured"]["status"] == "fail"


def test_without_a_c_compiler_the_runner_ships_as_source(run_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no cc, gcc or clang to be found
    monkeypatch.delenv("CC", raising=False)
    out = tmp_path / "b"
    res = _invoke(
        "bundle", "--export", run_dir / "export", "--format", "tflite-int8", "--out", out, "--samples", 2
    )
    assert res.exit_code == 0, res.output
    assert "warning: no C compiler" in res.stderr and "C runner: skipped (runner is not built" in res.output
    spec = _spec(out)
    assert spec["native"]["binary"] is None and not (out / "runner").exists()
    assert {"runner.c", "tflite_check.h", "litert_min.h", "Makefile", "libLiteRt.so"} <= {
        p.name for p in out.iterdir()
    }
