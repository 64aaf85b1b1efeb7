"""Target CPU profiles: the recipe follows the target's flags, the manifest keeps target and host apart.

The host's flags are faked through their one reader (``EDGEBENCH_FAKE_CPU_FLAGS``, read by
``edgebench.runtime.cpuflags``), never by faking a runtime.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edgebench.cli import cli
from edgebench.runtime import cpuflags
from tests.test_export import _quantization

VNNI_HOST = "x86_64:avx2,fma,avx512f,avx512bw,avx512vl,avx512_vnni"
AVX2_HOST = "x86_64:avx2,fma"


@pytest.mark.parametrize(
    "target, expected",
    [
        ("x86-avx2", ("uint8", True)),  # U8S8, 7-bit weights: no VNNI
        ("x86-avx512-vnni", ("uint8", False)),  # U8S8, full range
        ("x86-amx", ("uint8", False)),
        ("arm64-dotprod", ("int8", False)),  # S8S8
        ("arm64-i8mm", ("int8", False)),
    ],
)
def test_profile_gives_its_recipe(target, expected):
    from edgebench import cpu, targets
    from edgebench.export.quant_recipe import ort_recipe

    fp = targets.fingerprint(target)
    assert set(fp) == set(cpu.fingerprint())  # the shape of the host's: ort_recipe takes it unchanged
    r = ort_recipe(fp)
    assert (r.quant_format, r.activation_type, r.reduce_range) == ("qdq", *expected)
    assert r.cpu == cpu.summary(fp) and f"target {target}" in r.cpu


def test_host_target_is_the_running_cpu(monkeypatch):
    from edgebench import cpu, targets
    from edgebench.export.pipeline import ExportSettings
    from edgebench.export.quant_recipe import ort_recipe

    for fake, rr in ((VNNI_HOST, False), (AVX2_HOST, True)):
        monkeypatch.setenv(cpuflags.FAKE_ENV, fake)
        assert targets.fingerprint("host") == cpu.fingerprint()
        # host: the recipe of today, unnamed; a profile names itself in the recipe
        assert ExportSettings().ort_recipe() == ort_recipe(cpu.fingerprint())
        assert ExportSettings().ort_recipe().reduce_range is rr
    assert ExportSettings(target="x86-avx2").ort_recipe().target == "x86-avx2"


def test_unknown_target_is_one_line_and_exit_2(tmp_path):
    for command in (["export", "--model", "m.keras"], ["tune", "--model", "m.keras"], ["bundle"]):
        res = CliRunner().invoke(cli, [*command, "--target", "x86-avx9"])
        assert res.exit_code == 2, res.output
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and "unknown target 'x86-avx9' (known: host, x86-avx2," in lines[0], lines


def test_requirements_follow_the_weight_range():
    from edgebench.export.quant_recipe import cpu_requirements, ort_recipe
    from edgebench.targets import fingerprint

    full = cpu_requirements(ort_recipe(fingerprint("x86-avx512-vnni")).describe())
    assert [r["any_of"] for r in full] == [["avx512_vnni", "avx_vnni"]] and full[0]["arch"] == "x86_64"
    assert cpu_requirements(ort_recipe(fingerprint("x86-avx2")).describe()) == []  # 7-bit
    assert cpu_requirements(None) == []  # a float artifact
    arm = cpu_requirements(ort_recipe(fingerprint("arm64-dotprod")).describe())
    # an ARM artifact's full-range weights: the rule is x86's only, so an ARM CPU meets it as it is
    assert cpuflags.unmet(arm, "arm64", []) == []
    assert cpuflags.unmet(full, "x86_64", ["avx2", "avx_vnni"]) == []
    assert cpuflags.unmet(full, "x86_64", ["avx2"]) == full


def _export(model, data, out, *extra):
    args = ["export", "--model", model, "--data", data, "--out", out, "--formats", "onnx-int8"]
    res = CliRunner().invoke(
        cli, [str(a) for a in (*args, "--calib-size", 10, "--parity-images", 10, *extra)]
    )
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "manifest.json").read_text())
    return res, manifest, next(a for a in manifest["artifacts"] if a["format"] == "onnx-int8")


def test_export_for_an_avx2_target_on_a_vnni_host(tmp_path, tiny_model_path, cifar_folder, monkeypatch):
    monkeypatch.setenv(cpuflags.FAKE_ENV, VNNI_HOST)
    res, manifest, entry = _export(tiny_model_path, cifar_folder, tmp_path, "--target", "x86-avx2")
    assert manifest["target"]["name"] == "x86-avx2" and "avx512_vnni" not in manifest["target"]["flags"]
    assert manifest["host"]["flags"]["avx512_vnni"] is True  # the building machine, recorded apart
    assert entry["recipe"]["reduce_range"] is True and entry["recipe"]["target"] == "x86-avx2"
    assert max(_quantization(tmp_path / entry["file"])[2]) == 64  # 7-bit weights in the file itself
    assert entry["options"]["target"] == "x86-avx2" and "target: target x86-avx2" in res.output

    # The same host with its own flags: the VNNI recipe, a rebuilt artifact.
    res, manifest, entry = _export(tiny_model_path, cifar_folder, tmp_path)
    assert "onnx-int8: up to date" not in res.output and manifest["target"]["name"] == "host"
    assert entry["recipe"]["reduce_range"] is False and "target" not in entry["options"]
    assert max(_quantization(tmp_path / entry["file"])[2]) == 127
    # Another target with the same recipe is still another artifact; asking again is up to date.
    res, manifest, entry = _export(tiny_model_path, cifar_folder, tmp_path, "--target", "x86-amx")
    assert "onnx-int8: up to date" not in res.output and entry["options"]["target"] == "x86-amx"
    res, _, _ = _export(tiny_model_path, cifar_folder, tmp_path, "--target", "x86-amx")
    assert "onnx-int8: up to date" in res.output


# ---------------------------------------------------------------- bundles check the CPU they land on


@pytest.fixture(scope="module")
def vnni_bundle(tmp_path_factory, tiny_model_path, cifar_folder):
    """onnx-int8 exported for x86-avx512-vnni (full-range weights) and bundled (for its export's target)."""
    run = tmp_path_factory.mktemp("vnni")
    _export(tiny_model_path, cifar_folder, run / "export", "--target", "x86-avx512-vnni")
    res = CliRunner().invoke(
        cli,
        [
            "bundle",
            "--export",
            str(run / "export"),
            "--format",
            "onnx-int8",
            "--out",
            str(run / "b"),
            "--samples",
            "3",
        ],
    )
    assert res.exit_code == 0, res.output
    return run


def _infer(bundle, fake, *args):
    import os
    import subprocess
    import sys

    env = {**os.environ, cpuflags.FAKE_ENV: fake}
    cmd = [sys.executable, str(bundle / "infer.py"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def test_bundle_records_what_its_artifact_needs(vnni_bundle):
    spec = json.loads((vnni_bundle / "b" / "model.json").read_text())
    assert [r["any_of"] for r in spec["cpu"]["requires"]] == [["avx512_vnni", "avx_vnni"]]
    assert (
        spec["cpu"]["target"]["name"] == "x86-avx512-vnni" and "full-range" in spec["cpu"]["requires_basis"]
    )
    assert spec["cpu"]["exported_on"]  # the building machine, beside the target
    assert "needs avx512_vnni or avx_vnni on x86_64" in (vnni_bundle / "b" / "README.md").read_text()


def test_bundle_for_a_target_without_the_flag_is_refused(vnni_bundle, tmp_path):
    args = [
        "bundle",
        "--export",
        str(vnni_bundle / "export"),
        "--format",
        "onnx-int8",
        "--out",
        str(tmp_path / "b"),
    ]
    res = CliRunner().invoke(cli, [*args, "--target", "x86-avx2"])
    assert (
        res.exit_code == 2
        and "needs avx512_vnni or avx_vnni" in res.output
        and "x86-avx2 lacks" in res.output
    )
    assert not (tmp_path / "b").exists()


@pytest.mark.skipif(cpuflags.machine_arch() != "x86_64", reason="the VNNI rule applies on x86 only")
def test_infer_py_refuses_a_host_without_vnni_unless_allowed(vnni_bundle, cifar_folder):
    bundle = vnni_bundle / "b"
    image = str(next((cifar_folder / "test" / "cat").iterdir()))
    refused = _infer(bundle, AVX2_HOST, image)
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 2 and refused.stdout == "" and len(lines) == 1, refused.stderr
    assert (
        lines[0].startswith("error: this x86_64 CPU lacks avx512_vnni or avx_vnni")
        and "--allow-cpu-mismatch" in lines[0]
    )
    assert _infer(bundle, AVX2_HOST, "--selftest").returncode == 2
    allowed = _infer(bundle, AVX2_HOST, "--selftest", "--allow-cpu-mismatch")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert allowed.stderr.count("\n") == 1 and allowed.stderr.startswith(
        "warning: this x86_64 CPU lacks avx512_vnni"
    )
    assert "cpu: host x86_64: avx2 fma" in allowed.stdout and "cpu: target x86-avx512-vnni" in allowed.stdout
    assert "MISSING here" in allowed.stdout
    fine = _infer(bundle, VNNI_HOST, "--selftest")
    assert fine.returncode == 0 and fine.stderr == "" and "present here" in fine.stdout, fine.stderr


def test_tune_leaves_out_candidates_the_target_cannot_run():
    from pathlib import Path

    from edgebench.tune.space import TuneSettings, search_space, target_space

    def ort(space):
        return [c.settings["reduce_range"] for c in space if c.family == "onnx-int8"]

    avx2, left_out = target_space(TuneSettings(model=Path("m.keras"), target="x86-avx2"))
    assert set(ort(avx2)) == {True}  # 7-bit only
    assert [needs for _, needs in left_out] == ["avx512_vnni or avx_vnni"]
    vnni, left_out = target_space(TuneSettings(model=Path("m.keras"), target="x86-avx512-vnni"))
    assert set(ort(vnni)) == {False, True} and left_out == []  # 7-bit needs nothing: still measured
    host, left_out = target_space(TuneSettings(model=Path("m.keras")))
    assert left_out == [] and len(host) == len(search_space(TuneSettings.runtimes, ort_options(), 300))


def ort_options():
    from edgebench import cpu
    from edgebench.export.quant_recipe import ort_recipe

    return ort_recipe(cpu.fingerprint()).quant_options()


@pytest.mark.skipif(cpuflags.machine_arch() != "x86_64", reason="the VNNI rule applies on x86 only")
def test_c_runner_refuses_a_host_without_vnni_unless_allowed(tmp_path, tiny_model_path, cifar_folder):
    """The C runner ships with TFLite bundles, whose artifacts need no flag: its check is compiled here
    with the VNNI rule an ONNX full-range artifact gets (``bundle.target.native_define``)."""
    import shutil
    import subprocess

    from edgebench.bundle import native
    from edgebench.bundle.target import native_define
    from edgebench.export.quant_recipe import VNNI_RULE

    cc = native.find_compiler()
    if cc is None:
        pytest.skip("no C compiler here")
    args = ["export", "--model", tiny_model_path, "--data", cifar_folder, "--out", tmp_path / "export"]
    res = CliRunner().invoke(cli, [str(a) for a in (*args, "--formats", "tflite-int8", "--calib-size", 10)])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(
        cli, ["bundle", "--export", str(tmp_path / "export"), "--out", str(tmp_path / "b"), "--samples", "2"]
    )
    assert res.exit_code == 0, res.output
    spec = json.loads((tmp_path / "b" / "model.json").read_text())
    assert spec["cpu"]["requires"] == [] and "-DRUNNER_CPU_REQUIRES" not in spec["native"]["build"]
    device = tmp_path / "device"
    shutil.copytree(tmp_path / "b", device)
    rules = native_define([VNNI_RULE])
    built = subprocess.run([cc, *native.build_flags(spec["model"]["file"], None, rules)], cwd=device)
    assert built.returncode == 0

    def run(fake, *extra):
        cmd = ["./runner", "--json", *extra, spec["samples"][0]["ppm"]]
        return subprocess.run(
            cmd, cwd=device, capture_output=True, text=True, timeout=120, env={fake[0]: fake[1]}
        )

    refused = run((cpuflags.FAKE_ENV, AVX2_HOST))
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.startswith(
        "error: this x86_64 CPU lacks avx512_vnni or avx_vnni, which the model needs"
    )
    allowed = run((cpuflags.FAKE_ENV, AVX2_HOST), "--allow-cpu-mismatch")
    assert allowed.returncode == 0 and json.loads(allowed.stdout)[0]["top_k"]
    assert (
        allowed.stderr.startswith("warning: this x86_64 CPU lacks avx512_vnni")
        and allowed.stderr.count("\n") == 1
    )
    assert run((cpuflags.FAKE_ENV, VNNI_HOST)).returncode == 0
    # the bundle's own runner (no rule compiled in) runs on the AVX2 host as it is
    plain = subprocess.run(
        ["./runner", spec["samples"][0]["ppm"]],
        cwd=tmp_path / "b",
        capture_output=True,
        env={cpuflags.FAKE_ENV: AVX2_HOST},
    )
    assert plain.returncode == 0
