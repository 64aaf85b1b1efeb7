"""export/: every available format from the tiny model, verified against Keras and described by a manifest."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from click.testing import CliRunner

from edgebench.cli import cli
from edgebench.errors import EdgebenchError
from edgebench.export.parity import run_artifact
from edgebench.export.registry import FORMATS
from edgebench.fileio import sha256_file

REPO = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((REPO / "edgebench" / "schemas" / "manifest.schema.json").read_text())
CALIB, PARITY = 100, 50


def _settings(**kw):
    from edgebench.export.pipeline import ExportSettings

    return ExportSettings(calib_size=CALIB, parity_images=PARITY, **kw)


def _by_format(manifest: dict) -> dict[str, dict]:
    return {a["format"]: a for a in manifest["artifacts"]}


def _ok_entries_are_valid(out: Path, manifest: dict) -> list[str]:
    """Names of the ok entries; fails if any ok entry lacks its file or its hash."""
    oks = [a for a in manifest["artifacts"] if a["status"] == "ok"]
    for a in oks:
        assert (out / a["file"]).is_file(), a["format"]
        assert sha256_file(out / a["file"]) == a["sha256"], a["format"]
    return [a["format"] for a in oks]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_model_path, cifar_folder, cache_dir):
    """All formats exported once from the tiny model: (out dir, result)."""
    from edgebench.export.pipeline import export_model

    out = tmp_path_factory.mktemp("export")
    result = export_model(tiny_model_path, out, None, cifar_folder, cache_dir, settings=_settings())
    return out, result


@pytest.fixture(scope="module")
def reference(tiny_model_path, small_dataset):
    """Keras probabilities on real test images, computed here independently of the pipeline."""
    from edgebench.train.model import load_model

    images = small_dataset.x_test[::4]
    return images, load_model(tiny_model_path).predict(images, verbose=0)


AVAILABLE = [name for name, f in FORMATS.items() if f.available()[0]]


@pytest.mark.parametrize("name", AVAILABLE)
def test_available_format_converts_loads_and_matches_keras(exported, reference, name):
    out, result = exported
    entry = _by_format(result.manifest.to_dict())[name]
    assert entry["status"] == "ok", entry["message"]
    path = out / entry["file"]
    assert path.stat().st_size == entry["bytes"] and sha256_file(path) == entry["sha256"]
    assert entry["inputs"][0]["dtype"] == "uint8" and entry["inputs"][0]["shape"] == [-1, 32, 32, 3]
    assert entry["outputs"][0]["shape"][-1] == 10 and entry["dynamic_batch"] is True

    # Run the artifact again here, in its own runtime, on other images than the pipeline's parity batch.
    images, ref = reference
    probs = run_artifact(entry["runtime"], path, images)
    diff = float(np.abs(probs - ref).max())
    tolerance = FORMATS[name].tolerance
    if tolerance is not None:
        assert diff <= tolerance, f"{name}: max-abs-diff {diff:.3g} > {tolerance}"
        assert entry["parity"]["max_abs_diff"] <= tolerance
    else:
        # Quantized: not bit-close, but clearly the same classifier (probabilities stay probabilities).
        assert diff < 0.5 and np.allclose(probs.sum(axis=1), 1.0, atol=0.05)
        assert (probs.argmax(1) == ref.argmax(1)).mean() >= 0.4
    assert entry["parity"]["passed"] is True and entry["parity"]["images"] == PARITY


def test_manifest_validates_against_the_schema(exported):
    out, result = exported
    on_disk = json.loads((out / "manifest.json").read_text())
    jsonschema.validate(on_disk, SCHEMA, cls=jsonschema.Draft202012Validator)
    assert on_disk["calibration"]["size"] == CALIB and len(on_disk["calibration"]["indices_sha256"]) == 64
    assert on_disk["source_model"]["sha256"] == sha256_file(on_disk["source_model"]["path"])
    assert set(_by_format(on_disk)) == set(FORMATS)


def test_schema_rejects_an_ok_entry_without_a_file(exported):
    _, result = exported
    broken = json.loads(json.dumps(result.manifest.to_dict()))
    broken["artifacts"][0]["file"] = None
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA, cls=jsonschema.Draft202012Validator)


def test_precision_is_read_from_the_artifacts(exported):
    entries = _by_format(exported[1].manifest.to_dict())
    fp32 = entries["tflite-fp32"]["precision"]
    assert fp32["weights"]["fp32"] == 1.0 and fp32["activations"]["fp32"] == 1.0 and fp32["label"] == "fp32"
    assert entries["tflite-fp16"]["precision"]["weights"]["fp16"] == 1.0
    int8 = entries["tflite-int8"]["precision"]
    assert int8["weights"]["int8"] == 1.0 and int8["activations"]["int8"] >= 0.9 and int8["label"] == "int8"
    # Dynamic range keeps float activations: it must not be labelled int8.
    dynamic = entries["tflite-dynamic"]["precision"]
    assert dynamic["activations"]["fp32"] == 1.0 and dynamic["label"] != "int8"
    assert entries["onnx"]["precision"]["label"] == "fp32"
    qdq = entries["onnx-int8"]["precision"]
    assert qdq["weights"]["int8"] == 1.0 and qdq["activations"]["int8"] > 0.5


def test_int8_tflite_takes_raw_uint8_pixels(exported):
    entry = _by_format(exported[1].manifest.to_dict())["tflite-int8"]
    assert entry["inputs"][0]["dtype"] == "uint8"
    # Either no input quantization (pixels cast inside) or one that maps pixels onto themselves.
    q = entry["inputs"][0]["quantization"]
    assert q is None or (q["scale"] == pytest.approx(1.0) and q["zero_point"] == 0)
    assert (
        entry["outputs"][0]["dtype"] in ("uint8", "int8") and entry["outputs"][0]["quantization"]["scale"] > 0
    )


@pytest.mark.parametrize("name", [n for n, f in FORMATS.items() if f.runtime == "tensorrt"])
def test_tensorrt_engine(exported, reference, name):
    ok, reason, message = FORMATS[name].available()
    entry = _by_format(exported[1].manifest.to_dict())[name]
    if not ok:
        assert entry["status"] == "unavailable" and entry["reason"] == reason and entry["file"] is None
        pytest.skip(f"{reason}: {message}")
    assert entry["status"] == "ok", entry["message"]
    images, ref = reference
    probs = run_artifact("tensorrt", exported[0] / entry["file"], images)
    if FORMATS[name].tolerance is not None:
        assert float(np.abs(probs - ref).max()) <= FORMATS[name].tolerance


def test_up_to_date_artifacts_are_skipped_and_changed_options_rebuild(
    exported, tiny_model_path, cifar_folder, cache_dir
):
    from edgebench.export.pipeline import export_model

    out, first = exported
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != "manifest.json"}
    again = export_model(tiny_model_path, out, None, cifar_folder, cache_dir, settings=_settings())
    assert again.built == [] and sorted(again.skipped) == sorted(first.built)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != "manifest.json"} == mtimes

    # Another calibration method changes only the ONNX QDQ artifact (and TensorRT int8, where available).
    third = export_model(
        tiny_model_path,
        out,
        ["onnx-int8", "onnx"],
        cifar_folder,
        cache_dir,
        settings=_settings(calib_method="entropy"),
    )
    assert third.built == ["onnx-int8"] and third.skipped == ["onnx"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert _by_format(manifest)["onnx-int8"]["options"]["calib_method"] == "entropy"
    # Formats not requested this time keep their valid entries.
    assert set(_by_format(manifest)) == set(FORMATS)
    _ok_entries_are_valid(out, manifest)

    # The resolved recipe is the key: asking for what "auto" picks here changes nothing, the other weight
    # range rebuilds.
    from edgebench import cpu
    from edgebench.export.quant_recipe import ort_recipe

    auto = ort_recipe(cpu.fingerprint()).reduce_range
    for reduce_range, built in ((auto, []), (not auto, ["onnx-int8"])):
        settings = _settings(calib_method="entropy", onnx_reduce_range=reduce_range)
        again = export_model(tiny_model_path, out, ["onnx-int8"], cifar_folder, cache_dir, settings=settings)
        assert again.built == built
    entry = _by_format(json.loads((out / "manifest.json").read_text()))["onnx-int8"]
    assert entry["recipe"]["reduce_range"] is (not auto) and "overridden" in entry["recipe"]["reason"]

    # --force rebuilds what is asked for, and still keeps the other entries.
    forced = export_model(
        tiny_model_path,
        out,
        ["onnx"],
        cifar_folder,
        cache_dir,
        settings=_settings(calib_method="entropy", force=True),
    )
    assert forced.built == ["onnx"] and forced.skipped == []
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(_by_format(manifest)) == set(FORMATS)
    _ok_entries_are_valid(out, manifest)


def test_one_failing_format_does_not_stop_the_others(tmp_path, tiny_model_path, cifar_folder, cache_dir):
    from edgebench.export.pipeline import export_model

    (tmp_path / "model.onnx").mkdir()  # a real failure: the final name is taken by a folder
    result = export_model(
        tiny_model_path,
        tmp_path,
        ["onnx", "tflite-fp32", "onnx-int8"],
        cifar_folder,
        cache_dir,
        settings=_settings(),
    )
    entries = _by_format(result.manifest.to_dict())
    assert entries["onnx"]["status"] == "failed" and entries["onnx"]["reason"] == "write-error"
    assert entries["onnx"]["file"] is None and "\n" not in entries["onnx"]["message"]
    assert entries["tflite-fp32"]["status"] == "ok" and entries["onnx-int8"]["status"] == "ok"
    assert result.failed == ["onnx"]
    jsonschema.validate(json.loads((tmp_path / "manifest.json").read_text()), SCHEMA)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".partial")]


def test_cli_exit_code_is_1_when_a_requested_format_failed(
    tmp_path, tiny_model_path, cifar_folder, cache_dir
):
    (tmp_path / "model.fp32.tflite").mkdir()
    res = CliRunner().invoke(
        cli,
        [
            "export",
            "--model",
            str(tiny_model_path),
            "--data",
            str(cifar_folder),
            "--out",
            str(tmp_path),
            "--formats",
            "tflite-fp32,tflite-fp16",
            "--calib-size",
            "20",
            "--parity-images",
            "20",
        ],
    )
    assert res.exit_code == 1, res.output
    assert "tflite-fp32" in res.stderr.strip().splitlines()[-1]
    assert _by_format(json.loads((tmp_path / "manifest.json").read_text()))["tflite-fp16"]["status"] == "ok"


def _bad_input_cases(tmp: Path, model: Path, data: Path):
    corrupt = tmp / "corrupt.keras"
    corrupt.write_bytes(b"PK\x03\x04 this is not a keras archive")
    empty = tmp / "empty"
    for split in ("train", "test"):
        (empty / split / "cat").mkdir(parents=True)
    blocker = tmp / "a-file"
    blocker.write_text("x")
    base = ["--data", str(data), "--calib-size", "20", "--parity-images", "10", "--formats", "tflite-fp32"]
    return {
        "missing model": (["--model", str(tmp / "nope.keras"), *base], "not found"),
        "corrupt model": (["--model", str(corrupt), *base, "--out", str(tmp / "o1")], "cannot load"),
        "unknown format": (
            ["--model", str(model), *base, "--formats", "tflite-int3"],
            "unknown export format",
        ),
        "calib size 0": (["--model", str(model), *base, "--calib-size", "0"], "calibration set is empty"),
        "empty data": (["--model", str(model), *base, "--data", str(empty)], "empty"),
        "unwritable out": (["--model", str(model), *base, "--out", str(blocker / "sub")], "output directory"),
    }


def test_bad_input_gives_one_line_error_and_exit_2(tmp_path, tiny_model_path, cifar_folder, cache_dir):
    for case, (args, words) in _bad_input_cases(tmp_path, tiny_model_path, cifar_folder).items():
        res = CliRunner().invoke(cli, ["export", *args])
        assert res.exit_code == 2, f"{case}: {res.output}"
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], f"{case}: {lines}"
        assert "Traceback" not in res.output
    assert not (tmp_path / "o1").exists() or not list(
        (tmp_path / "o1").iterdir()
    )  # corrupt model: nothing written


def test_killed_export_leaves_no_ok_entry_without_its_file(
    tmp_path, tiny_model_path, cifar_folder, cache_dir
):
    """SIGKILL an export as soon as its first artifact is entered as ok; every ok entry must still be true."""
    out = tmp_path / "export"
    env = {**os.environ, "EDGEBENCH_CACHE": str(cache_dir), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "edgebench"),
            "export",
            "--model",
            str(tiny_model_path),
            "--data",
            str(cifar_folder),
            "--out",
            str(out),
            "--calib-size",
            "50",
            "--parity-images",
            "20",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    manifest = None
    deadline = time.monotonic() + 240
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                manifest = json.loads((out / "manifest.json").read_text())
            except (OSError, ValueError):
                manifest = None
            if manifest and any(a["status"] == "ok" for a in manifest["artifacts"]):
                os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the export finished before it could be killed"
    manifest = json.loads((out / "manifest.json").read_text())
    jsonschema.validate(manifest, SCHEMA)
    oks = _ok_entries_are_valid(out, manifest)
    interrupted = [a["format"] for a in manifest["artifacts"] if a["reason"] == "interrupted"]
    assert oks and interrupted, manifest["artifacts"]
    for name in interrupted:  # a file may exist for them, but the manifest does not call it ok
        assert _by_format(manifest)[name]["file"] is None


def test_list_formats_comes_from_the_registry():
    res = CliRunner().invoke(cli, ["export", "--list-formats"])
    assert res.exit_code == 0
    listed = [line.split()[0] for line in res.output.strip().splitlines()]
    assert listed == list(FORMATS)


# ---------------------------------------------------------------- int8 recipe and kernel coverage

AVX2 = {
    "model": "AMD EPYC",
    "arch": "x86_64",
    "flags": {"avx2": True, "avx512_vnni": False, "avx_vnni": False},
}
VNNI = {"model": "Xeon", "arch": "x86_64", "flags": {"avx2": True, "avx512_vnni": True, "avx_vnni": False}}
AVX_VNNI = {
    "model": "Core",
    "arch": "x86_64",
    "flags": {"avx2": True, "avx512_vnni": False, "avx_vnni": True},
}
ARM = {"model": "Neoverse-N1", "arch": "arm64", "flags": {"asimd": True, "asimddp": True, "i8mm": False}}
RISCV = {"model": "riscv", "arch": "riscv64", "flags": {}}


def test_recipe_follows_the_cpu_flags():
    from edgebench.export.quant_recipe import ort_recipe

    for fp in (VNNI, AVX_VNNI):  # VNNI sums u8*s8 in int32: full-range weights are safe
        r = ort_recipe(fp)
        assert (r.quant_format, r.activation_type, r.weight_type) == ("qdq", "uint8", "int8")
        assert r.reduce_range is False and r.per_channel and not r.activation_symmetric
        assert "with avx" in r.reason and "vnni" in r.reason
    r = ort_recipe(AVX2)  # no VNNI: saturating int16 sums, 7-bit weights
    assert (r.activation_type, r.reduce_range) == ("uint8", True)
    assert "without avx512_vnni/avx_vnni" in r.reason and "avx2" in r.reason
    assert r.cpu.startswith("AMD EPYC (x86_64; avx2")
    r = ort_recipe(ARM)
    assert (r.quant_format, r.activation_type, r.reduce_range) == (
        "qdq",
        "int8",
        False,
    ) and "asimddp" in r.reason
    r = ort_recipe(RISCV)  # unknown: the choice that is correct everywhere
    assert (r.activation_type, r.reduce_range) == ("uint8", True) and "riscv64" in r.reason


def test_recipe_options_override_the_machine_choice():
    from edgebench.export.pipeline import ExportSettings
    from edgebench.export.quant_recipe import ort_recipe

    r = ort_recipe(AVX2, quant_format="qoperator", activation_type="int8", reduce_range=False)
    assert (r.quant_format, r.activation_type, r.reduce_range) == ("qoperator", "int8", False)
    assert r.reason.endswith("overridden: quant_format=qoperator, activation_type=int8, reduce_range=False")
    assert ort_recipe(VNNI, reduce_range=True).reduce_range is True
    assert ExportSettings(onnx_reduce_range=False).ort_recipe(AVX2).reduce_range is False
    assert ExportSettings().ort_recipe(AVX2) == ort_recipe(AVX2)
    with pytest.raises(EdgebenchError, match="unknown ONNX quantization format"):
        ExportSettings(onnx_quant_format="qlinear").check()


@pytest.fixture(scope="module")
def build_ctx(tiny_model_path, small_dataset, tmp_path_factory):
    """A BuildContext with the recipe of an AVX2 CPU without VNNI, whatever CPU runs the tests."""
    from edgebench.export.context import BuildContext, Calibration
    from edgebench.export.quant_recipe import ort_recipe

    idx = np.arange(0, len(small_dataset.x_train), 20)
    calibration = Calibration(small_dataset.x_train[idx], idx, "test", 0, "minmax")
    workdir = tmp_path_factory.mktemp("ctx")
    return BuildContext(tiny_model_path, calibration, ort_recipe=ort_recipe(AVX2), workdir=workdir)


def _quantization(path: Path) -> tuple[set[str], bool, list[int]]:
    """(activation zero-point dtypes, all of them 0, max |q| of each quantized weight)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(path).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    zero_points = [
        inits[n.input[2]] for n in graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2
    ]
    weights = [
        int(np.abs(inits[n.input[0]].astype(np.int32)).max())
        for n in graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].ndim >= 2
    ]
    return {z.dtype.name for z in zero_points}, all((z == 0).all() for z in zero_points), weights


def test_tensorrt_gets_a_symmetric_full_range_qdq_graph_whatever_the_cpu(build_ctx):
    ort_types, _, ort_weights = _quantization(build_ctx.ort_int8_onnx_path)
    assert ort_types == {"uint8"} and max(ort_weights) == 64  # U8S8, 7-bit weights (AVX2 recipe)
    trt_types, symmetric, trt_weights = _quantization(build_ctx.trt_qdq_onnx_path)
    assert trt_types == {"int8"} and symmetric  # TensorRT: int8 activations, zero point 0
    assert trt_weights and all(w == 127 for w in trt_weights)  # symmetric per channel, full range


def _residual_block(path: Path) -> None:
    """conv -> relu -> (conv -> relu) + skip -> conv: a tensor with two consumers, as in ResNet."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.normal(0, 0.2, (8, 8, 3, 3)).astype(np.float32), f"w{i}")
        for i in range(3)
    ]
    conv = {"pads": [1, 1, 1, 1]}
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["c0"], name="conv0", **conv),
        helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
        helper.make_node("Conv", ["r0", "w1"], ["c1"], name="conv1", **conv),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Add", ["r0", "r1"], ["sum"], name="add"),
        helper.make_node("Conv", ["sum", "w2"], ["y"], name="conv2", **conv),
    ]
    shape = [1, 8, 16, 16]
    graph = helper.make_graph(
        nodes,
        "residual",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        weights,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_coverage_below_90_percent_is_labelled_and_warned(tmp_path):
    """Symmetric int8 activations on x86: ORT leaves the convs behind a shared tensor in float."""
    from edgebench import cpu
    from edgebench.export import coverage
    from edgebench.export.context import Calibration
    from edgebench.export.onnx_formats import quantize_int8
    from edgebench.export.quant_recipe import TRT_RECIPE, ort_recipe

    _residual_block(tmp_path / "float.onnx")
    images = np.random.default_rng(1).normal(size=(8, 8, 16, 16)).astype(np.float32)
    calibration = Calibration(images, np.arange(8), "synthetic", 0, "minmax")
    for name, recipe in (("u8s8", ort_recipe(AVX2)), ("s8s8", TRT_RECIPE)):
        quantize_int8(tmp_path / "float.onnx", tmp_path / f"{name}.onnx", calibration, recipe)

    u8s8 = coverage.describe("onnxruntime", tmp_path / "u8s8.onnx")
    assert (u8s8["convolutions"], u8s8["int8_convolutions"], u8s8["float_ops_between_qdq"]) == (3, 3, 0)
    assert u8s8["int8_ops"]["com.microsoft:QLinearAdd"] == 1 and u8s8["float_ops"] == {}
    assert coverage.precision_label("int8", u8s8) == "int8" and coverage.warnings("onnx-int8", u8s8) == []

    if cpu.architecture() != "x86_64":
        pytest.skip("the int8 Q/DQ -> uint8 rewrite that misses shared tensors is ORT's x86 behaviour")
    s8s8 = coverage.describe("onnxruntime", tmp_path / "s8s8.onnx")
    assert (s8s8["convolutions"], s8s8["int8_convolutions"]) == (3, 2) and s8s8["int8_fraction"] < 0.9
    assert s8s8["float_ops"]["Conv"] == 1 and s8s8["float_ops_between_qdq"] >= 2  # Conv and Add at least
    assert s8s8["quantize_nodes"] > u8s8["quantize_nodes"]
    assert coverage.precision_label("int8", s8s8) == "int8 (67% of convs; rest float)"
    (warning,) = coverage.warnings("onnx-int8", s8s8)
    assert "only 2 of 3 convolutions run int8 kernels (67%)" in warning and "between DQ and Q" in warning


def test_coverage_is_read_from_the_graph_the_runtime_runs(exported):
    entries = _by_format(exported[1].manifest.to_dict())
    fp32 = entries["onnx"]["coverage"]  # the tiny model: two convolutions and one dense layer
    assert (fp32["convolutions"], fp32["int8_convolutions"], fp32["int8_fraction"]) == (3, 0, 0.0)
    assert fp32["quantize_nodes"] == 0 and "CPUExecutionProvider, ORT_ENABLE_ALL" in fp32["runtime_graph"]
    q = entries["onnx-int8"]["coverage"]
    assert q["int8_convolutions"] == q["convolutions"] == 3 and q["int8_fraction"] == 1.0
    assert q["float_ops_between_qdq"] == 0 and "com.microsoft:QGemm" in q["int8_ops"]  # the dense layer
    t = entries["tflite-int8"]["coverage"]
    assert t["int8_convolutions"] == t["convolutions"] == 3 and t["int8_fraction"] == 1.0
    assert t["delegate_nodes"] >= 1 and t["delegated_convolutions"] == 3  # XNNPACK takes every int8 conv
    assert entries["tflite-fp32"]["coverage"]["int8_fraction"] == 0.0
    assert entries["tflite-dynamic"]["coverage"]["int8_convolutions"] == 0  # float activations
    for name in ("onnx-int8", "tflite-int8", "tflite-dynamic", "onnx"):
        assert entries[name]["warnings"] == [], name


def test_onnx_int8_entry_carries_the_recipe_of_this_cpu(exported):
    from edgebench import cpu
    from edgebench.export.quant_recipe import ort_recipe

    out, result = exported
    entry = _by_format(result.manifest.to_dict())["onnx-int8"]
    expected = ort_recipe(cpu.fingerprint())
    assert entry["recipe"] == expected.describe() and entry["recipe"]["cpu"] == cpu.summary()
    assert entry["options"]["onnx_recipe"] == expected.quant_options()
    # The file is what its entry says (read from disk: other tests rebuild it with other recipes).
    entry = _by_format(json.loads((out / "manifest.json").read_text()))["onnx-int8"]
    zero_point_types, _, weights = _quantization(out / entry["file"])
    assert zero_point_types == {entry["recipe"]["activation_type"]}
    assert max(weights) == (64 if entry["recipe"]["reduce_range"] else 127)


def _build_perturbed_onnx(ctx, dest):
    """The real float ONNX model with its dense weights scaled by 1.05: a wrong artifact that still runs."""
    import onnx
    from onnx import numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(ctx.onnx_model)
    dense = next(n for n in model.graph.node if n.op_type in ("MatMul", "Gemm"))
    weight = next(t for t in model.graph.initializer if t.name == dense.input[1])
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 1.05, weight.name))
    onnx.save(model, dest)


def _build_partly_int8_onnx(ctx, dest):
    """onnx-int8 with its first convolution left float (ORT fuses a float-weight Conv between DQ and Q
    itself, so the excluded one is the Conv fed by the float preprocessing)."""
    import onnx

    from edgebench.export.onnx_formats import quantize_int8

    convs = [n.name for n in onnx.load(ctx.prepared_onnx_path).graph.node if n.op_type == "Conv"]
    quantize_int8(ctx.prepared_onnx_path, dest, ctx.calibration, ctx.ort_recipe, convs[:1])
    return {"recipe": ctx.ort_recipe.describe()}


@pytest.fixture(scope="module")
def custom_export(tmp_path_factory, tiny_model_path, cifar_folder, cache_dir):
    """Formats built by this module's builders (not in the registry) beside the real onnx, in one export."""
    from edgebench.export.pipeline import export_model

    perturbed = dataclasses.replace(
        FORMATS["onnx"],
        name="onnx-perturbed",
        filename="model.perturbed.onnx",
        builder="tests.test_export:_build_perturbed_onnx",
    )
    partly = dataclasses.replace(
        FORMATS["onnx-int8"],
        name="onnx-int8-partly",
        filename="model.partly.onnx",
        builder="tests.test_export:_build_partly_int8_onnx",
    )
    out = tmp_path_factory.mktemp("custom")
    result = export_model(
        tiny_model_path, out, [perturbed, "onnx", partly], cifar_folder, cache_dir, settings=_settings()
    )
    return out, result


def test_float_artifact_outside_its_tolerance_fails_export(custom_export):
    out, result = custom_export
    entries = _by_format(result.manifest.to_dict())
    bad = entries["onnx-perturbed"]
    assert bad["status"] == "failed" and bad["reason"] == "parity-error" and bad["file"] is None
    assert "max-abs-diff" in bad["message"] and f"> {FORMATS['onnx'].tolerance:g}" in bad["message"]
    assert entries["onnx"]["status"] == "ok"  # the same graph unperturbed passes the same gate
    assert "onnx-perturbed" in result.failed
    assert not (out / "model.perturbed.onnx").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".partial")]
    jsonschema.validate(json.loads((out / "manifest.json").read_text()), SCHEMA)


def test_partly_int8_artifact_is_labelled_from_coverage_and_warned(custom_export, capsys):
    from edgebench.export.commands import _print_row

    entry = _by_format(custom_export[1].manifest.to_dict())["onnx-int8-partly"]
    assert entry["status"] == "ok", entry["message"]
    cov = entry["coverage"]
    assert (cov["int8_convolutions"], cov["convolutions"]) == (2, 3)
    assert entry["precision"]["weights"]["int8"] > 0.9  # stored tensors alone would say int8 ...
    assert entry["precision"]["label"] == "int8 (67% of convs; rest float)"  # ... coverage says what runs
    assert len(entry["warnings"]) == 1 and "2 of 3 convolutions" in entry["warnings"][0]
    _print_row(entry["format"], custom_export[1].manifest.entry("onnx-int8-partly"))
    printed = capsys.readouterr()
    assert "int8 convs 2/3" in printed.out and "recipe: " in printed.out
    assert printed.err.startswith("warning: onnx-int8-partly: only 2 of 3")


def test_cli_recipe_options(tmp_path, tiny_model_path, cifar_folder, cache_dir):
    import onnx

    args = ["--model", str(tiny_model_path), "--data", str(cifar_folder), "--out", str(tmp_path)]
    res = CliRunner().invoke(
        cli,
        [
            "export",
            *args,
            *("--formats", "onnx-int8", "--calib-size", "20", "--parity-images", "20"),
            *("--onnx-full-range", "--onnx-quant-format", "qoperator"),
        ],
    )
    assert res.exit_code == 0, res.output
    entry = _by_format(json.loads((tmp_path / "manifest.json").read_text()))["onnx-int8"]
    recipe = entry["recipe"]
    assert (recipe["quant_format"], recipe["reduce_range"]) == ("qoperator", False)
    assert recipe["reason"].endswith("overridden: quant_format=qoperator, reduce_range=False")
    assert entry["coverage"]["int8_fraction"] == 1.0 and "int8 convs 3/3" in res.output
    ops = {n.op_type for n in onnx.load(tmp_path / entry["file"]).graph.node}
    assert "QLinearConv" in ops and "Softmax" in ops and "QLinearSoftmax" not in ops  # softmax stays float
