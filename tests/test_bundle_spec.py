"""model.json as a type (``BundleSpec``): round trip, the migration of older files, hand validation on the
device, every named file confined to the bundle folder, and names from users' files kept out of the shell
lines and C defines a bundle holds (issue 39: a model file named ``m';touch PWNED;'.tflite``)."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from edgebench.bundle.native import build_flags, c_string, cc_line, render_makefile
from edgebench.cli import cli
from edgebench.runtime import Bundle, BundleSpec, Contract, InferenceError
from edgebench.runtime.bundle_spec import migrate
from edgebench.runtime.cli import main as infer_main
from edgebench.runtime.paths import is_safe_name, safe_name

REPO = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((REPO / "edgebench" / "schemas" / "bundle.schema.json").read_text())
EVIL = "m';touch PWNED;'.tflite"
SHA = "ab" * 32


def _current_doc() -> dict:
    """A model.json as this edgebench writes it (a TFLite bundle with a C runner and one sample)."""
    contract = Contract.cifar10()
    tensor = {"name": "x", "shape": [-1, 32, 32, 3], "dtype": "uint8", "quantization": None}
    return {
        "schema_version": 1,
        "kind": "edgebench-bundle",
        "edgebench_version": "0.1.0",
        "created": "2026-12-07T12:00:00+00:00",
        "format": "tflite-int8",
        "runtime": "litert",
        "description": "int8",
        "model": {"file": "model.int8.tflite", "sha256": SHA, "bytes": 1000},
        "inputs": [tensor],
        "outputs": [{**tensor, "name": "y", "shape": [-1, 10]}],
        "dynamic_batch": True,
        "precision": "int8",
        "preprocessing": {"input": "pixels", "image_files": "any image file", "in_graph": "none"},
        "class_names": list(contract.classes),
        "contract": contract.to_dict(),
        "source_model": {"sha256": SHA},
        "export": {"manifest_sha256": SHA, "parity": None, "options": {}, "calibration": None},
        "measured": None,
        "threads": 1,
        "cpu": {
            "requires": [],
            "requires_basis": "none",
            "target": None,
            "exported_on": None,
            "measured_on": None,
        },
        "native": {
            "api": "LiteRT C API (CompiledModel)",
            "sources": ["runner.c", "tflite_check.h", "litert_min.h", "Makefile"],
            "library": "libLiteRt.so",
            "library_sha256": SHA,
            "binary": "runner",
            "default_threads": 1,
        },
        "samples": [
            {
                "file": "samples/00_cat.png",
                "sha256": SHA,
                "ppm": "samples/00_cat.ppm",
                "ppm_sha256": SHA,
                "dataset_index": 3,
                "true_label": "cat",
                "expected": "cat",
                "probability": 0.9,
                "margin": 0.8,
            }
        ],
        "requirements": ["numpy==2.4.6", "pillow==13.0.0", "ai-edge-litert==2.3.0"],
    }


def _oldest_doc() -> dict:
    """A model.json as the first bundles wrote it (before model contracts, threads, the C runner, targets
    and sidecars): the same document without those blocks."""
    doc = _current_doc()
    for key in ("contract", "threads", "native", "cpu"):
        del doc[key]
    for sample in doc["samples"]:
        del sample["ppm"], sample["ppm_sha256"]
    return doc


def test_round_trip_gives_the_same_document():
    doc = _current_doc()
    jsonschema.validate(doc, SCHEMA)  # the fixture is a real model.json
    spec = BundleSpec.from_dict(doc)
    assert spec.to_dict() == doc and list(spec.to_dict()) == list(doc)
    assert spec.model.file == "model.int8.tflite" and spec.samples[0].ppm == "samples/00_cat.ppm"
    sidecar = {"file": "model.bin", "sha256": SHA, "bytes": 5}
    with_sidecar = {**doc, "model": {**doc["model"], "sidecars": [sidecar]}, "newer_field": [1]}
    assert BundleSpec.from_dict(with_sidecar).to_dict() == with_sidecar  # a newer writer's field is kept


def test_an_older_model_json_reads_through_the_one_migration():
    old = _oldest_doc()
    spec = BundleSpec.from_dict(old)
    assert spec.model_contract == Contract.cifar10().with_classes(old["class_names"])
    assert spec.threads is None and spec.cpu is None and spec.native is None
    assert spec.samples[0].ppm is None and spec.model.sidecars == ()
    assert "contract" in migrate(old) and "contract" not in old  # the caller's dict is left alone
    upgraded = spec.to_dict()
    jsonschema.validate(upgraded, SCHEMA)
    assert upgraded["contract"] == Contract.cifar10().to_dict() and upgraded["threads"] is None
    renamed = {**old, "class_names": [f"c{n}" for n in range(10)]}  # classes of its own, CIFAR-10 input
    assert BundleSpec.from_dict(renamed).model_contract.classes == tuple(renamed["class_names"])


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda d: d.pop("model"), "model is missing"),
        (lambda d: d["model"].update(bytes="1000"), "model.bytes must be an integer"),
        (lambda d: d["model"].update(sha256="x"), "model.sha256 is not a sha256"),
        (lambda d: d.update(class_names="cat"), "class_names must be a list"),
        (lambda d: d.update(samples=[]), "samples needs at least 1"),
        (lambda d: d["samples"][0].pop("expected"), "samples[0].expected is missing"),
        (lambda d: d.update(threads=0), "threads must be at least 1"),
        (lambda d: d.update(runtime="tensorflow"), "runtime 'tensorflow'"),
        (lambda d: d["native"].update(binary=7), "native.binary must be a string or null"),
        (lambda d: d["cpu"]["requires"].append({"arch": "x86_64"}), "cpu.requires[0].any_of is missing"),
        (lambda d: d.update(schema_version=2), "schema_version 2"),
        (lambda d: d.update(kind="other"), "not an edgebench bundle description"),
        (lambda d: d["contract"]["input"].update(channels=4), "4 channels"),
    ],
)
def test_a_bad_model_json_is_one_line_and_exit_2(tmp_path, capsys, change, words):
    doc = _current_doc()
    change(doc)
    (tmp_path / "model.json").write_text(json.dumps(doc))
    with pytest.raises(InferenceError, match="model.json: "):
        Bundle(tmp_path)
    assert infer_main(["--selftest"], bundle_dir=tmp_path) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and words in err[0], err


def _outside_names(doc: dict) -> dict:
    """model.json edits that name a file outside the bundle folder, by the field they go through."""
    cases = {}
    for where, name in (("up", "../x"), ("absolute", "/x")):
        cases[f"model file {where}"] = lambda d, n=name: d["model"].update(file=n)
        sidecar = {"file": name + ".bin", "sha256": SHA, "bytes": 5}
        cases[f"sidecar {where}"] = lambda d, s=sidecar: d["model"].update(sidecars=[s])
        cases[f"native binary {where}"] = lambda d, n=name: d["native"].update(binary=n)
        cases[f"sample {where}"] = lambda d, n=name: d["samples"][0].update(file=n + ".png")
        cases[f"sample ppm {where}"] = lambda d, n=name: d["samples"][0].update(ppm=n + ".ppm")
    return cases


def _refused(folder: Path, run_infer) -> None:
    """Every outside name in folder's model.json is refused: Bundle() raises, infer.py says one line, 2."""
    good = json.loads((folder / "model.json").read_text())
    for case, change in _outside_names(good).items():
        doc = copy.deepcopy(good)
        change(doc)
        (folder / "model.json").write_text(json.dumps(doc))
        with pytest.raises(InferenceError, match="must name a file inside|leaves its folder"):
            Bundle(folder)
        code, err = run_infer(folder)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), f"{case}: {lines}"
        assert "x" in lines[0] and ("absolute" in lines[0] or "leaves its folder" in lines[0]), case
    (folder / "model.json").write_text(json.dumps(good))


def test_files_outside_the_bundle_are_refused_by_the_runtime_reader(tmp_path, capsys):
    (tmp_path / "model.json").write_text(json.dumps(_current_doc()))
    Bundle(tmp_path)  # the good file reads

    def run_infer(folder):
        code = infer_main(["--selftest"], bundle_dir=folder)
        return code, capsys.readouterr().err

    _refused(tmp_path, run_infer)

    outside = tmp_path.parent / f"{tmp_path.name}-outside.tflite"
    outside.write_bytes(b"model")
    (tmp_path / "model.int8.tflite").symlink_to(outside)  # a symlink that leads out
    with pytest.raises(InferenceError, match="resolves outside its folder"):
        Bundle(tmp_path)


# ---------------------------------------------------------------- names from users' files


def test_names_from_files_become_safe_file_names():
    assert safe_name(EVIL) == "m__touch_PWNED__.tflite" and is_safe_name(safe_name(EVIL))
    assert safe_name("model.int8.tflite") == "model.int8.tflite"
    assert [safe_name(n) for n in (".hidden", "-rf", "a/../b", "é")] == ["_hidden", "_rf", "a_.._b", "_"]
    assert not any(map(is_safe_name, ("", "a b", "a;b", "../x", ".x", "-x", "a\nb")))


def test_a_format_name_outside_the_safe_characters_is_refused_by_import(tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"x")
    res = CliRunner().invoke(cli, ["import", f"a;b={model}", "--out", tmp_path / "o", "--data", tmp_path])
    assert res.exit_code == 2 and "format name 'a;b' may hold only" in res.output, res.output
    assert "Traceback" not in res.output


def test_the_makefile_and_readme_line_quote_every_name(tmp_path):
    """Makefile and README build line run with ``true`` for the compiler: the shell sees each argument
    whole, so a name holding quotes and ``;`` runs nothing."""
    for name in ("runner.c", "tflite_check.h", "litert_min.h", "libLiteRt.so"):
        (tmp_path / name).write_text("")
    (tmp_path / "Makefile").write_text(render_makefile(EVIL, 2, "x86_64:a|b"))
    if shutil.which("make"):
        made = subprocess.run(["make", "-B", "CC=true"], cwd=tmp_path, capture_output=True, text=True)
        assert made.returncode == 0, made.stderr
    line = cc_line(EVIL, 2, "x86_64:a|b")
    assert line.startswith("cc ")
    ran = subprocess.run(["sh", "-c", "true" + line[2:]], cwd=tmp_path, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")), reason="no C compiler")
def test_the_model_define_is_the_c_string_of_the_name(tmp_path):
    tricky = EVIL + ' "back\\slash" ??= é\n'
    src = tmp_path / "show.c"
    src.write_text("#include <stdio.h>\nint main(void) { fputs(RUNNER_DEFAULT_MODEL, stdout); return 0; }\n")
    define = next(f for f in build_flags(tricky, 1) if f.startswith("-DRUNNER_DEFAULT_MODEL="))
    assert define == f"-DRUNNER_DEFAULT_MODEL={c_string(tricky)}"
    cc = shutil.which("cc") or shutil.which("gcc")
    built = subprocess.run(
        [cc, "-std=c11", "-Wall", "-Werror", define, "-o", "show", "show.c"],
        cwd=tmp_path,
        capture_output=True,
    )
    assert built.returncode == 0, built.stderr
    shown = subprocess.run([str(tmp_path / "show")], capture_output=True)
    assert shown.stdout == tricky.encode()


# ---------------------------------------------------------------- through import, bundle and make


@pytest.fixture(scope="module")
def evil_bundle(tmp_path_factory, tiny_model_path, cifar_folder, cache_dir) -> Path:
    """``edgebench import evil=<m';touch PWNED;'.tflite>`` of the tiny model's fp32 TFLite, bundled."""
    from edgebench.export.pipeline import ExportSettings, export_model

    work = tmp_path_factory.mktemp("evil")
    export_model(
        tiny_model_path, work / "export", ["tflite-fp32"], cifar_folder, cache_dir,
        settings=ExportSettings(calib_size=20, parity_images=10),
    )  # fmt: skip
    shutil.copyfile(work / "export" / "model.fp32.tflite", work / EVIL)
    args = ["--data", cifar_folder, "--parity-images", 10]
    imported = CliRunner().invoke(
        cli, [str(a) for a in ["import", f"evil={work / EVIL}", "--out", work / "in", *args]]
    )
    assert imported.exit_code == 0, imported.output
    bundled = CliRunner().invoke(
        cli,
        [
            str(a)
            for a in [
                "bundle",
                "--export",
                work / "in",
                "--format",
                "evil",
                "--out",
                work / "b",
                "--samples",
                3,
            ]
        ],
    )
    assert bundled.exit_code == 0, bundled.output
    return work


def _make_b(bundle: Path) -> None:
    if shutil.which("make") is None:
        pytest.skip("no make here")
    subprocess.run(["make", "-B"], cwd=bundle, capture_output=True, text=True, timeout=300)


def test_a_quote_in_a_file_name_runs_nothing_through_import_bundle_and_make(evil_bundle):
    manifest = json.loads((evil_bundle / "in" / "manifest.json").read_text())
    assert [a["file"] for a in manifest["artifacts"]] == [safe_name(EVIL)]
    bundle = evil_bundle / "b"
    assert json.loads((bundle / "model.json").read_text())["model"]["file"] == safe_name(EVIL)
    _make_b(bundle)
    assert not (bundle / "PWNED").exists() and not Path("PWNED").exists()


def test_a_manifest_naming_an_unsafe_file_bundles_it_under_a_safe_name(evil_bundle, tmp_path):
    """An export whose manifest itself names the file ``m';touch PWNED;'.tflite`` (an older edgebench's
    import, someone's folder): the bundle's copy gets the safe name, and make runs nothing."""
    export = shutil.copytree(evil_bundle / "in", tmp_path / "in")
    manifest = json.loads((export / "manifest.json").read_text())
    os.replace(export / manifest["artifacts"][0]["file"], export / EVIL)
    manifest["artifacts"][0]["file"] = EVIL
    (export / "manifest.json").write_text(json.dumps(manifest))
    res = CliRunner().invoke(
        cli,
        [
            str(a)
            for a in [
                "bundle",
                "--export",
                export,
                "--format",
                "evil",
                "--out",
                tmp_path / "b",
                "--samples",
                2,
            ]
        ],
    )
    assert res.exit_code == 0, res.output
    spec = json.loads((tmp_path / "b" / "model.json").read_text())
    assert spec["model"]["file"] == safe_name(EVIL) and (tmp_path / "b" / safe_name(EVIL)).is_file()
    _make_b(tmp_path / "b")
    assert not (tmp_path / "b" / "PWNED").exists()


def test_infer_py_refuses_a_model_json_naming_files_outside_the_bundle(evil_bundle, tmp_path):
    bundle = shutil.copytree(evil_bundle / "b", tmp_path / "b", symlinks=True)

    def run_infer(folder):
        res = subprocess.run(
            [sys.executable, str(folder / "infer.py"), "--selftest"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        return res.returncode, res.stderr

    doc = json.loads((bundle / "model.json").read_text())
    if not (doc["native"] or {}).get("library"):  # the sidecar and binary cases need a TFLite C runner block
        pytest.skip("this bundle has no C runner block")
    assert run_infer(bundle)[0] == 0
    _refused(bundle, run_infer)
