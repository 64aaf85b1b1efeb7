"""The emulated arm64 device (edgebench.emulated): built from Debian's and PyPI's packages under qemu-user,
the runtimes import under emulation, and a tiny int8 TFLite model gives the x86 host's outputs bit for bit on
Cortex-A72 (no dot product) and Cortex-A76 (dot product).

Devices are built once per session under the test's tmp folder, downloads cached under $EDGEBENCH_CACHE as
the session found it (`make test`: runs/.cache, so a second run fetches nothing); EDGEBENCH_ARM64_DEVICES=DIR
reuses (or builds) DIR/arm64-<cpu> instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgebench import arm64_packages, emulated
from edgebench.errors import EdgebenchError

from .conftest import REPO, run_cli

SESSION_CACHE = os.environ.get("EDGEBENCH_CACHE")  # before conftest's cache_dir fixture points it elsewhere
CPUS = ("cortex-a72", "cortex-a76")
# What the guest reports: the runtimes import, /proc/cpuinfo is the overlay's, a child of sys.executable runs
# through qemu, the device fingerprint, and the int8 model's outputs on the given inputs.
GUEST = """
import json, subprocess, sys
import numpy as np, PIL, onnxruntime, openvino
from ai_edge_litert.interpreter import Interpreter
from edgebench.runtime import device_info
model, inputs, outputs = sys.argv[1:4]
interpreter = Interpreter(model_path=model, num_threads=1)
interpreter.allocate_tensors()
(source,), (sink,) = interpreter.get_input_details(), interpreter.get_output_details()
results = []
for x in np.load(inputs):
    interpreter.set_tensor(source["index"], x[None])
    interpreter.invoke()
    results.append(interpreter.get_tensor(sink["index"])[0])
np.save(outputs, np.stack(results))
child = subprocess.run([sys.executable, "-c", "import platform; print(platform.machine())"],
                       capture_output=True, text=True)
features = [l for l in open("/proc/cpuinfo").read().splitlines() if l.startswith("Features")][0]
print(json.dumps({"fingerprint": device_info.fingerprint(), "child": child.stdout.strip(),
                  "cpuinfo_features": features.split(":", 1)[1].split()}))
"""


@pytest.fixture(scope="module")
def devices(tmp_path_factory) -> dict[str, Path]:
    if shutil.which(emulated.QEMU) is None:
        pytest.skip(f"{emulated.QEMU} is not installed (Debian's qemu-user-static; .ci/run installs it)")
    base = os.environ.get("EDGEBENCH_ARM64_DEVICES") or tmp_path_factory.mktemp("devices")
    cache = SESSION_CACHE or tmp_path_factory.mktemp("downloads")
    return {cpu: _build(cpu, Path(base) / f"arm64-{cpu}", cache) for cpu in CPUS}


def _build(cpu: str, out: Path, cache) -> Path:
    emulated.build_device(cpu, out, cache, log=lambda _line: None)
    return out


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory) -> tuple[Path, Path, np.ndarray]:
    """A tiny conv net converted to a full-integer TFLite model, a handful of int8 inputs and the x86 host's
    outputs on them."""
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    keras = tf.keras
    keras.utils.set_random_seed(7)
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.DepthwiseConv2D(3, activation="relu"),
            keras.layers.Conv2D(24, 1, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10),
        ]
    )
    rng = np.random.default_rng(7)
    calibration = rng.uniform(-1, 1, (32, 16, 16, 3)).astype(np.float32)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[None]] for x in calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    folder = tmp_path_factory.mktemp("int8")
    (folder / "model.tflite").write_bytes(converter.convert())
    inputs = rng.integers(-128, 128, (6, 16, 16, 3), dtype=np.int8)
    np.save(folder / "inputs.npy", inputs)
    interpreter = Interpreter(model_path=str(folder / "model.tflite"), num_threads=1)
    interpreter.allocate_tensors()
    (source,), (sink,) = interpreter.get_input_details(), interpreter.get_output_details()
    host = []
    for x in inputs:
        interpreter.set_tensor(source["index"], x[None])
        interpreter.invoke()
        host.append(interpreter.get_tensor(sink["index"])[0])
    return folder / "model.tflite", folder / "inputs.npy", np.stack(host)


@pytest.fixture(scope="module")
def guest_runs(devices, int8_model, tmp_path_factory) -> dict[str, tuple[dict, np.ndarray]]:
    model, inputs, _ = int8_model
    runs = {}
    for cpu, out in devices.items():
        outputs = tmp_path_factory.mktemp(cpu) / "outputs.npy"
        argv = [str(out / "bin" / "python"), "-c", GUEST, str(model), str(inputs), str(outputs)]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        runs[cpu] = json.loads(done.stdout.strip().splitlines()[-1]), np.load(outputs)
    return runs


@pytest.mark.arm64
def test_int8_outputs_are_the_x86_hosts_bit_for_bit(int8_model, guest_runs):
    host = int8_model[2]
    assert host.dtype == np.int8 and len(np.unique(host)) > 10  # outputs that can differ
    for cpu, (_, outputs) in guest_runs.items():
        np.testing.assert_array_equal(outputs, host, err_msg=cpu)


@pytest.mark.arm64
def test_the_guest_sees_its_own_cpu_and_its_children_run_through_qemu(devices, guest_runs):
    for cpu, (report, _) in guest_runs.items():
        info = json.loads((devices[cpu] / "device.json").read_text())
        fingerprint = report["fingerprint"]
        assert (fingerprint["arch"], report["child"]) == ("arm64", "aarch64")
        assert fingerprint["cpu"] == {"cortex-a72": "Cortex-A72", "cortex-a76": "Cortex-A76"}[cpu]
        assert report["cpuinfo_features"] == info["features"]  # qemu's -L root, not the host's x86 cpuinfo
        assert set(fingerprint["flags"]) <= set(info["features"])
    assert "asimddp" in guest_runs["cortex-a76"][0]["fingerprint"]["flags"]
    assert "asimddp" not in guest_runs["cortex-a72"][0]["fingerprint"]["flags"]
    assert (
        guest_runs["cortex-a72"][0]["cpuinfo_features"] == "fp asimd aes pmull sha1 sha2 crc32 cpuid".split()
    )


@pytest.mark.arm64
def test_the_device_says_what_it_is_and_is_reused(devices):
    out = devices["cortex-a72"]
    info = json.loads((out / "device.json").read_text())
    assert info["emulated"] is True and info["qemu"].startswith("qemu-aarch64 version")
    assert info["python"].startswith("3.11.") and info["wheels"]["onnxruntime"] == "1.32.0"
    midr = out / "root/sys/devices/system/cpu/cpu0/regs/identification/midr_el1"
    assert midr.read_text() == "0x00000000410fd083\n"
    lock = json.loads((out / "packages.lock.json").read_text())
    assert {deb["package"] for deb in lock["debs"]} == set(arm64_packages.DEBS)
    assert all(len(entry["sha256"]) == 64 for entry in lock["debs"] + lock["wheels"])
    lines = []
    emulated.build_device("cortex-a72", out, SESSION_CACHE, log=lines.append)
    assert lines == [f"device {out.absolute()} is complete: reused"]
    with pytest.raises(EdgebenchError, match="holds an emulated cortex-a72, not cortex-a76"):
        emulated.build_device("cortex-a76", out, SESSION_CACHE)


@pytest.mark.parametrize("trouble", ["unknown cpu", "no qemu", "a folder of other things"])
def test_bad_input_is_one_line_and_exit_2(trouble, tmp_path, monkeypatch):
    out, cpu = tmp_path / "dev", "cortex-a72"
    expected = {
        "unknown cpu": "unknown --cpu 'cortex-a99'",
        "no qemu": "qemu-aarch64-static not found",
        "a folder of other things": f"{out} is not empty and holds no arm64 device",
    }[trouble]
    if trouble == "unknown cpu":
        cpu = "cortex-a99"
    elif trouble == "no qemu":
        monkeypatch.setenv("PATH", str(tmp_path))  # the CLI runs as sys.executable: only `which` is blinded
    elif shutil.which(emulated.QEMU) is None:
        pytest.skip(f"{emulated.QEMU} is not installed")
    else:
        (out / "bin").mkdir(parents=True)  # someone's folder: its bin is not ours to remove
    done = run_cli("device", "arm64", "--cpu", cpu, "--out", out)
    assert done.returncode == 2 and done.stdout.count("\n") == 1, done.stdout
    assert done.stdout.startswith(f"error: {expected}")
    if trouble == "a folder of other things":
        assert [path.name for path in out.iterdir()] == ["bin"]
    else:
        assert not out.exists()


def test_a_mirror_that_cannot_be_reached_is_a_failed_download(tmp_path, monkeypatch):
    if shutil.which("apt-get") is None:
        pytest.skip("apt-get is not installed (the arm64 device is built with Debian's apt)")
    monkeypatch.setattr(arm64_packages, "host_sources", lambda: [f"file:{tmp_path}/no-mirror bookworm"])
    with pytest.raises(EdgebenchError, match=r"^download of the arm64 package lists .* failed: "):
        arm64_packages.fetch(tmp_path / "downloads", log=lambda _line: None)


def test_host_apt_sources_give_the_mirrors_of_bookworm(tmp_path):
    etc = tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    (etc / "sources.list").write_text(
        "# none\ndeb [arch=amd64] http://mirror.example/debian/ bookworm main\n"
    )
    (etc / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\n"
        "Types: deb\nURIs: https://elsewhere.example/apt\nSuites: nodistro\nComponents: main\n"
    )
    assert arm64_packages.host_sources(etc) == [
        "http://mirror.example/debian bookworm",
        "http://deb.debian.org/debian-security bookworm-security",
    ]
    assert arm64_packages.host_sources(tmp_path / "nothing") == list(arm64_packages.DEFAULT_SOURCES)


def test_features_are_named_in_the_kernels_order():
    assert emulated.features(0b1111_1011, 0) == "fp asimd aes pmull sha1 sha2 crc32".split()
    assert emulated.features(1 << 20, 1 << 13) == ["asimddp", "i8mm"]
    text = emulated.cpuinfo_text(emulated.CPU_MODELS["cortex-a76"], ["fp", "asimddp"], cores=2)
    assert text.count("processor\t:") == 2 and "CPU part\t: 0xd0b\nCPU revision\t: 1\n" in text
    assert "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\n" in text


@pytest.mark.arm64
def test_a_bundle_is_benched_on_the_emulated_devices(
    devices, tiny_model_path, cifar_folder, cache_dir, tmp_path
):
    """bench --device qemu://…: the int8 bundle's top-1 on the shipped images is the x86 host's, image by
    image; the report's environment is the emulated arm64 CPU's and says it is emulated."""
    import json
    import shutil

    from click.testing import CliRunner

    from edgebench.cli import cli
    from edgebench.export.pipeline import ExportSettings, export_model

    shutil.copy(tiny_model_path, tmp_path / "model.keras")
    settings = ExportSettings(calib_size=40, parity_images=10)
    export = tmp_path / "export"
    export_model(
        tmp_path / "model.keras",
        export,
        ["tflite-fp32", "tflite-int8"],
        cifar_folder,
        cache_dir,
        settings=settings,
    )
    args = ["bench", "--export", str(export), "--data", str(cifar_folder), "--formats", "tflite-int8"]
    args += ["--reference-format", "tflite-fp32", "--eval", "20", "--threads", "1", "--rounds", "1"]
    args += [
        "--min-samples",
        "10",
        "--latency-time-cap",
        "0.05",
        "--throughput-time-cap",
        "0.01",
        "--no-plots",
    ]
    args += [x for cpu in CPUS for x in ("--device", f"qemu://{devices[cpu]}")]
    res = CliRunner().invoke(cli, [*args, "--max-drop", "100"])
    assert res.exit_code == 0, res.output
    import numpy as np

    c_runner = shutil.which("aarch64-linux-gnu-gcc") is not None  # the bundle's runner cross-built for it
    for cpu in CPUS:
        report = json.loads((tmp_path / f"bench-arm64-{cpu}" / "report.json").read_text())
        rows = {r["format"]: r for r in report["artifacts"]}
        assert sorted(rows) == ["tflite-int8", *(["tflite-int8@c-runner"] if c_runner else [])]
        row = rows["tflite-int8"]
        assert row["accuracy"]["host_agreement"] == 1.0 and row["accuracy"]["images"] == 20
        if c_runner:  # the aarch64 C runner under the emulator: the same top-1 as the Python path, each image
            native = rows["tflite-int8@c-runner"]
            assert native["accuracy"]["host_agreement"] == 1.0 and native["status"] == "pass"
            preds = np.load(tmp_path / f"bench-arm64-{cpu}" / "predictions.npz")
            assert (preds["pred__tflite-int8@c-runner"] == preds["pred__tflite-int8"]).all()
        env = report["environment"]
        assert env["machine"] == "arm64" and env["device"]["emulated"] is True
        assert env["cpu_features"]["flags"]["asimddp"] is (cpu == "cortex-a76")
        assert "EMULATED" in (tmp_path / f"bench-arm64-{cpu}" / "report.md").read_text()


@pytest.mark.arm64
def test_an_arm64_bundles_c_runner_passes_its_selftest_under_emulation(
    devices, tiny_model_path, cifar_folder, cache_dir, tmp_path
):
    """bundle --target arm64-dotprod: the C runner cross-compiled against the aarch64 wheel's libLiteRt.so;
    here it is refused as another machine's, under the emulated Cortex-A76 its self-test passes."""
    import json
    import subprocess

    from edgebench.bundle.build import build_bundle
    from edgebench.bundle.native import CROSS_COMPILERS
    from edgebench.export.pipeline import ExportSettings, export_model

    if shutil.which(CROSS_COMPILERS["arm64"]) is None:
        pytest.skip(
            f"{CROSS_COMPILERS['arm64']} is missing (Debian's gcc-aarch64-linux-gnu; .ci/run installs it)"
        )
    shutil.copy(tiny_model_path, tmp_path / "model.keras")
    settings = ExportSettings(calib_size=40, parity_images=10)
    export_model(
        tmp_path / "model.keras",
        tmp_path / "export",
        ["tflite-int8"],
        cifar_folder,
        cache_dir,
        settings=settings,
    )
    result = build_bundle(
        tmp_path / "export", "tflite-int8", tmp_path / "bundle", target="arm64-dotprod", eval_images=0
    )
    native = json.loads((result.path / "model.json").read_text())["native"]
    assert native["built_for"] == "aarch64 Linux" and native["binary"] == "runner"
    assert any("built for aarch64, this machine is x86_64" in line for line in result.selftest)
    guest = devices["cortex-a76"] / "bin" / "python"
    done = subprocess.run(
        [guest, "infer.py", "--selftest"], cwd=result.path, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "C runner selftest passed: 10/10" in done.stdout and "cpu: host arm64" in done.stdout
