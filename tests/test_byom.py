"""Bring your own classifier: a second, different model (48x48 float input with its own normalisation,
5 classes named by the folder) through export -> bench -> bundle, contract detection, and bench from
imported artifacts without a Keras model."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edgebench.cli import cli
from edgebench.errors import EdgebenchError, storage_error
from edgebench.runtime import CIFAR10_CLASSES, Contract, ContractError, open_runner
from tests.conftest import JPEG_ROOT, make_image_folder

CLASSES = ("ship", "frog", "cat", "truck", "bird")  # the folder sorts them: bird, cat, frog, ship, truck
SIZE = 48
PRE = {"scale": 1 / 255, "mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]}
PRE_ARGS = ["--scale", str(PRE["scale"]), "--mean", "0.49,0.48,0.45", "--std", "0.25,0.24,0.26"]
FORMATS = ["tflite-fp32", "tflite-int8", "onnx", "onnx-int8"]
FAST = [
    *("--test-per-class", "10", "--threads", "1", "--batch-sizes", "1", "--rounds", "1"),
    *("--min-samples", "20", "--latency-time-cap", "0.1", "--throughput-time-cap", "0.05", "--no-plots"),
]


def _invoke(*args):
    res = CliRunner().invoke(cli, [str(a) for a in args])
    assert "Traceback" not in res.output, res.output
    return res


def _one_line_error(res, words: str) -> None:
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert lines[-1].startswith("error:") and words in lines[-1], lines
    assert len([line for line in lines if line.startswith("error:")]) == 1, lines


def _float_cnn(shape, classes: int, name: str = "byom_cnn"):
    """A Keras CNN that takes normalised float images (no preprocessing inside the graph)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape, dtype="float32", name="image")
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inputs)
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(classes, activation="softmax")(x), name=name)


@pytest.fixture(scope="module")
def folder(tmp_path_factory, cache_dir) -> Path:
    """5 CIFAR classes x (40 train, 20 test) real JPEGs, in a non-sorted listing order."""
    return make_image_folder(tmp_path_factory.mktemp("byom-data"), 40, 20, CLASSES)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, folder, cache_dir) -> Path:
    """model.keras (the float 48x48 CNN, trained a few seconds with its own normalisation) and export/."""
    import keras

    from edgebench.export.pipeline import ExportSettings, export_model
    from edgebench.runtime.contract import preprocessing
    from edgebench.train.data.dataset import load_dataset

    ds = load_dataset(folder, cache_dir, size=(SIZE, SIZE))
    contract = Contract(SIZE, SIZE, 3, "float32", tuple(ds.class_names), preprocessing(**PRE))
    model = _float_cnn((SIZE, SIZE, 3), len(CLASSES))
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(contract.model_input(ds.x_train), ds.y_train, epochs=10, batch_size=32, verbose=0)
    run = tmp_path_factory.mktemp("byom-run")
    model.save(run / "model.keras")
    settings = ExportSettings(calib_size=100, parity_images=50, preprocessing=PRE)
    export_model(run / "model.keras", run / "export", FORMATS, folder, cache_dir, settings=settings)
    return run


def _manifest(export: Path) -> dict:
    return json.loads((export / "manifest.json").read_text())


# ---------------------------------------------------------------- contract detection


def test_contract_is_read_from_the_model(tmp_path):
    from edgebench.export.contract import keras_contract
    from edgebench.train.model import build_tiny_model, model_contract

    pixels = model_contract(build_tiny_model())  # edgebench's own: uint8 pixels, 10 CIFAR-10 classes
    assert pixels == Contract.cifar10() and pixels.preprocessing is None

    wide = model_contract(_float_cnn((40, 56, 3), 4, "wide"))  # non-square float input, 4 classes
    assert (wide.height, wide.width, wide.channels, wide.dtype) == (40, 56, 3, "float32")
    assert wide.classes == ("class_0", "class_1", "class_2", "class_3")

    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\n\nc\nd\n")
    named = keras_contract(
        _float_cnn((40, 56, 3), 4, "wide"), labels, {"scale": 0.5, "mean": [1], "std": [2]}
    )
    assert named.classes == ("a", "b", "c", "d")
    assert named.preprocessing.mean == (1, 1, 1) and named.preprocessing.std == (2, 2, 2)

    with pytest.raises(EdgebenchError, match="scale/mean/std need a float32 input"):
        keras_contract(build_tiny_model(), None, {"scale": 1 / 255, "mean": [0], "std": [1]})
    with pytest.raises(EdgebenchError, match="not a fixed-size"):
        model_contract(_float_cnn((None, None, 3), 4, "any_size"))


def test_contract_round_trip_preprocessing_and_old_files():
    from edgebench.runtime.contract import preprocessing

    c = Contract(48, 40, 3, "float32", ("x", "y"), preprocessing(**PRE))
    assert Contract.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    x = c.model_input(np.full((2, 48, 40, 3), 255, np.uint8))
    assert x.dtype == np.float32 and np.allclose(x[0, 0, 0], (1 - np.array(PRE["mean"])) / PRE["std"])
    with pytest.raises(ContractError, match=r"expected \(N, 48, 40, 3\)"):
        c.check(np.zeros((1, 32, 32, 3), np.uint8))
    # manifests and model.json files from before contracts: the CIFAR-10 contract
    assert Contract.read({"class_names": list(CIFAR10_CLASSES)}) == Contract.cifar10()


def test_export_records_the_contract_with_the_folder_classes(run_dir):
    manifest = _manifest(run_dir / "export")
    assert manifest["contract"] == {
        "input": {"height": SIZE, "width": SIZE, "channels": 3, "dtype": "float32", "layout": "NHWC"},
        "preprocessing": {"scale": PRE["scale"], "mean": PRE["mean"], "std": PRE["std"]},
        "classes": sorted(CLASSES),
    }
    assert manifest["class_names"] == sorted(CLASSES)
    by_format = {a["format"]: a for a in manifest["artifacts"]}
    assert all(by_format[f]["status"] == "ok" for f in FORMATS), by_format
    assert by_format["onnx"]["parity"]["max_abs_diff"] < 1e-4  # the float artifacts match Keras
    assert by_format["tflite-int8"]["inputs"][0]["dtype"] == "uint8"  # float input quantized by the runner
    assert by_format["tflite-int8"]["parity"]["top1_agreement"] >= 0.8


def test_keras_runner_applies_the_float_contract(run_dir, folder, cache_dir):
    """The .keras reference and the ONNX file, both given 0..255 pixels, agree: the runner normalises."""
    from edgebench.train.data.dataset import load_dataset

    contract = Contract.read(_manifest(run_dir / "export"))
    pixels = load_dataset(folder, cache_dir, size=contract.size).x_test[:20]
    with open_runner(run_dir / "model.keras", contract=contract) as keras_runner:
        reference = keras_runner.infer(pixels)
    with open_runner(run_dir / "export" / "model.onnx", contract=contract) as onnx_runner:
        assert np.abs(onnx_runner.infer(pixels) - reference).max() < 1e-4
    with open_runner(run_dir / "export" / "model.onnx") as cifar_default:  # no contract: 32x32 uint8 pixels
        with pytest.raises(ContractError, match=r"expected \(N, 32, 32, 3\)"):
            cifar_default.infer(pixels)


def test_dataset_at_the_model_size_any_split_and_class_order(folder, cache_dir, tmp_path):
    from edgebench.train.data.dataset import align_classes, load_dataset

    ds = load_dataset(folder, cache_dir, size=(40, 56))
    assert ds.x_train.shape == (200, 40, 56, 3) and ds.x_test.shape == (100, 40, 56, 3)
    assert ds.class_names == sorted(CLASSES)
    (tmp_path / "val").symlink_to(folder / "test")  # an evaluation-only folder with another split name
    val = load_dataset(tmp_path, cache_dir, size=SIZE, split="val")
    assert val.split == "val" and len(val.y_train) == 0 and val.x_test.shape == (100, SIZE, SIZE, 3)
    reordered = align_classes(val, list(reversed(val.class_names)))
    assert [reordered.class_names[y] for y in reordered.y_test] == [val.class_names[y] for y in val.y_test]


# ---------------------------------------------------------------- bad input


def test_labels_and_classes_that_disagree_are_one_line_errors(
    run_dir, folder, cifar_folder, tiny_model_path, tmp_path
):
    model = run_dir / "model.keras"
    export = ["export", "--model", model, "--formats", "onnx", "--out", tmp_path / "x", *PRE_ARGS]
    four = tmp_path / "four.txt"
    four.write_text("bird\ncat\nfrog\nship\n")
    _one_line_error(
        _invoke(*export, "--data", folder, "--labels", four), "has 4 class names, but the model outputs 5"
    )
    _one_line_error(_invoke(*export, "--data", cifar_folder), "has 10 classes")
    other = tmp_path / "other.txt"
    other.write_text("bird\ncat\nfrog\nship\nplane\n")
    _one_line_error(_invoke(*export, "--data", folder, "--labels", other), "are not the model's")
    res = _invoke(
        "export", "--model", tiny_model_path, "--data", cifar_folder, "--out", tmp_path / "y", *PRE_ARGS
    )
    _one_line_error(res, "need a float32 input")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


# ---------------------------------------------------------------- the whole chain for the second model


def test_byom_bench_gate_report_and_bundle_selftest(run_dir, folder, tmp_path, capsys):
    """export (fixture) -> bench (the fp32 ONNX file as reference: no TensorFlow worker, cheap) -> bundle."""
    res = _invoke(
        "bench",
        *("--export", run_dir / "export", "--reference-format", "onnx", "--data", folder),
        *("--out", tmp_path / "bench", "--formats", "tflite-int8,tflite-fp32", "--max-drop", "10", *FAST),
    )
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "bench" / "report.json").read_text())
    assert report["reference"]["format"] == "onnx" and report["gate"]["passed"]
    assert report["dataset"]["class_names"] == sorted(CLASSES) and report["dataset"]["images"] == 50
    assert {r["format"]: r["status"] for r in report["artifacts"]} == {
        "tflite-int8": "pass",
        "tflite-fp32": "pass",
    }
    assert "vs the onnx (onnxruntime) reference" in (tmp_path / "bench" / "report.md").read_text()

    bundle = tmp_path / "bundle"
    res = _invoke(
        "bundle",
        *("--export", run_dir / "export", "--format", "tflite-int8", "--out", bundle),
        *("--report", tmp_path / "bench" / "report.json", "--samples", "5"),
    )
    assert res.exit_code == 0, res.output
    assert "selftest passed: 5/5" in res.output
    spec = json.loads((bundle / "model.json").read_text())
    assert spec["contract"] == _manifest(run_dir / "export")["contract"]
    assert spec["measured"]["status"] == "pass"
    assert (bundle / "labels.txt").read_text().split() == sorted(CLASSES)
    assert Image.open(bundle / spec["samples"][0]["file"]).size == (SIZE, SIZE)

    # infer.py's code (edgebench.runtime.cli, copied verbatim into the bundle; test_bundle runs it in a
    # clean venv): any image is resized to 48x48 and normalised as the contract says.
    from edgebench.runtime import load_images
    from edgebench.runtime.cli import main

    odd = tmp_path / "odd.png"
    Image.open(JPEG_ROOT / "test" / "cat" / "0001.jpg").resize((77, 51)).save(odd)
    capsys.readouterr()
    assert main(["--selftest"], bundle_dir=bundle) == 0
    capsys.readouterr()
    assert main([str(odd), "--json"], bundle_dir=bundle) == 0
    top1 = json.loads(capsys.readouterr().out)[0]["top_k"][0]
    contract = Contract.read(spec)
    with open_runner(bundle / "model.int8.tflite", contract=contract) as runner:
        probs = runner.infer(load_images([odd], contract.size))
    assert top1["class"] == contract.classes[int(probs.argmax())]


def test_bench_from_imported_artifacts_without_keras(run_dir, folder, tmp_path):
    export = run_dir / "export"
    imported = tmp_path / "imported"
    res = _invoke(
        "import",
        *(export / "model.onnx", export / "model.int8.tflite", export / "model.int8.onnx"),
        f"fp32={export / 'model.fp32.tflite'}",
        *("--out", imported, "--data", folder, "--parity-images", "30", *PRE_ARGS),
    )
    assert res.exit_code == 0, res.output
    manifest = _manifest(imported)
    assert manifest["imported"] and manifest["calibration"] is None
    assert manifest["contract"] == _manifest(export)["contract"]
    by_format = {a["format"]: a for a in manifest["artifacts"]}
    assert set(by_format) == {"onnx", "tflite-int8", "onnx-int8", "fp32"}  # named from runtime + precision
    assert (
        by_format["fp32"]["parity"]["max_abs_diff"] < 1e-4
        and by_format["fp32"]["precision"]["label"] == "fp32"
    )

    not_fp32 = _invoke("bench", "--export", imported, "--reference-format", "tflite-int8", "--data", folder)
    _one_line_error(not_fp32, "is not an fp32 artifact")

    res = _invoke(
        "bench",
        *("--export", imported, "--reference-format", "onnx", "--data", folder, "--out", tmp_path / "bench"),
        *("--formats", "tflite-int8,fp32", "--max-drop", "10", *FAST),
    )
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "bench" / "report.json").read_text())
    assert report["reference"]["format"] == "onnx" and report["reference"]["status"] == "reference"
    assert [r["format"] for r in report["artifacts"]] == ["tflite-int8", "fp32"]
    assert all(r["status"] == "pass" for r in report["artifacts"])
    assert report["artifacts"][1]["accuracy"]["drop_pp"] == 0  # fp32 TFLite vs fp32 ONNX: same predictions
    for row in [report["reference"], *report["artifacts"]]:  # no Keras, no TensorFlow anywhere
        assert not {"tensorflow", "keras"} & set(row["latency"][0]["worker_modules"]), row["format"]


def test_predict_uses_the_contract_the_export_recorded(run_dir, tmp_path):
    """predict finds the contract: the manifest beside an artifact, <dir>/export/manifest.json for .keras."""
    from edgebench.train.reference.predict import predict_files

    image = [str(JPEG_ROOT / "test" / "frog" / "0001.jpg")]
    onnx = predict_files(run_dir / "export" / "model.onnx", image, k=9)[0]["top_k"]
    keras = predict_files(run_dir / "model.keras", image, k=9)[0]["top_k"]
    assert [r["class"] for r in onnx] == [r["class"] for r in keras] and len(onnx) == len(CLASSES)
    assert {r["class"] for r in onnx} == set(CLASSES)
    assert abs(onnx[0]["probability"] - keras[0]["probability"]) < 1e-4
    four = tmp_path / "four.txt"
    four.write_text("a\nb\nc\nd\n")
    with pytest.raises(EdgebenchError, match="has 4 class names, but the model outputs 5"):
        predict_files(run_dir / "export" / "model.onnx", image, labels=four)


# ---------------------------------------------------------------- a full disk
# A full disk, a quota or a read-only folder is one ``error:`` line and exit 2 in every command, with no
# half-written file and no imported model left without the manifest that names it: on a real small tmpfs
# where the suite runs as root, and through one faked write elsewhere.


def _storage_line(res) -> str:
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, res.output
    return errors[0]


@pytest.fixture
def small_tmpfs(tmp_path):
    """A tmpfs of a few pages, mounted for the test (root only: the suite runs as root in CI)."""
    mount = tmp_path / "full"
    mount.mkdir()

    def make(size_bytes: int):
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(mount)], capture_output=True
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        return mount

    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (the faked-write test covers this machine)")
    yield make
    subprocess.run(["umount", str(mount)], capture_output=True, check=False)


def test_import_onto_a_full_disk_leaves_no_model_without_a_manifest(run_dir, folder, small_tmpfs):
    export = run_dir / "export"
    first = export / "model.fp32.tflite"
    # room for the first model and a little more: the second copy runs out of space
    mount = small_tmpfs(first.stat().st_size + 3 * 4096)
    out = mount / "imported"
    res = CliRunner().invoke(
        cli,
        [
            *("import", f"fp32={first}", str(export / "model.onnx")),
            *("--out", str(out), "--data", str(folder), "--parity-images", "10", *PRE_ARGS),
        ],
    )
    assert "no space left on the device" in _storage_line(res)
    assert not out.exists() or sorted(p.name for p in out.iterdir()) == []


def test_a_faked_full_disk_is_one_line_in_bench_and_import(run_dir, folder, tmp_path, monkeypatch):
    real_replace = os.replace

    def full(src, dst, *args, **kwargs):
        if str(dst).startswith(str(tmp_path)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", full)
    export = run_dir / "export"
    res = CliRunner().invoke(
        cli,
        [
            *("import", f"fp32={export / 'model.fp32.tflite'}", "--out", str(tmp_path / "imp")),
            *("--data", str(folder), "--parity-images", "10", *PRE_ARGS),
        ],
    )
    assert "no space left on the device while writing" in _storage_line(res)
    assert [p for p in (tmp_path / "imp").iterdir()] == []
    res = CliRunner().invoke(
        cli,
        [
            *("bench", "--export", str(export), "--data", str(folder), "--out", str(tmp_path / "bench")),
            *("--formats", "tflite-int8", "--no-time-reference", "--test-per-class", "2", "--threads", "1"),
            *("--batch-sizes", "1", "--rounds", "1", "--min-samples", "5", "--latency-time-cap", "0.05"),
            *("--throughput-time-cap", "0.05", "--no-plots", "--max-drop", "100"),
        ],
    )
    assert "no space left on the device" in _storage_line(res)
    assert not [p for p in (tmp_path / "bench").rglob("*") if p.name.startswith(".partial")]


def test_storage_errors_are_found_through_the_exceptions_that_wrap_them():
    try:
        try:
            raise OSError(errno.EDQUOT, "Disk quota exceeded", "/x/model.keras")
        except OSError as inner:
            raise RuntimeError("h5py: Unable to synchronously create file") from inner
    except RuntimeError as outer:
        assert (
            storage_error(outer)
            == "disk quota exceeded while writing /x/model.keras (free some space or write elsewhere)"
        )
    assert storage_error(OSError(errno.EACCES, "Permission denied")) is None
    assert storage_error(ValueError("x")) is None


def test_import_inlines_onnx_external_data_from_its_own_folder_only(run_dir, folder, tmp_path):
    import onnx

    src = tmp_path / "src"
    src.mkdir()
    model = onnx.load(run_dir / "export" / "model.onnx")
    onnx.save_model(
        model, src / "model.onnx", save_as_external_data=True, location="model.weights", size_threshold=1024
    )
    args = ("--data", folder, "--parity-images", "10", *PRE_ARGS)
    res = _invoke("import", src / "model.onnx", "--out", tmp_path / "imp", *args)
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "imp").iterdir()) == ["manifest.json", "model.onnx"]
    assert _manifest(tmp_path / "imp")["artifacts"][0]["parity"]["max_abs_diff"] == 0

    moved = onnx.load(src / "model.onnx", load_external_data=False)
    for tensor in moved.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../model.weights"
    (tmp_path / "model.weights").write_bytes((src / "model.weights").read_bytes())
    onnx.save_model(moved, src / "outside.onnx")
    res = _invoke("import", src / "outside.onnx", "--out", tmp_path / "imp2", *args)
    _one_line_error(res, "leaves its folder")
