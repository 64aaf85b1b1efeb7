"""``edgebench bench --device``: bundles shipped to a real device and benched there. The device is a private
sshd on 127.0.0.1 (tests/sshd.py) logging into a fresh venv holding only numpy, Pillow and the three
runtimes (no TensorFlow), and ``local``; every failure is one line naming the device."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgebench.cli import cli

FORMATS = ["tflite-fp32", "tflite-int8", "onnx", "onnx-int8", "openvino-int8"]
DEVICE_FORMATS = ["tflite-int8", "onnx-int8", "openvino-int8"]
ONE = ("--formats", "tflite-int8", "--reference-format", "tflite-fp32")
FAST = [
    *("--threads", "1", "--rounds", "1", "--min-samples", "20", "--latency-time-cap", "0.1"),
    *("--throughput-time-cap", "0.02", "--no-plots", "--max-drop", "100", "--eval", "60"),
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model_path, cifar_folder, cache_dir) -> Path:
    import shutil

    from edgebench.export.pipeline import ExportSettings, export_model

    run = tmp_path_factory.mktemp("device-run")
    shutil.copy(tiny_model_path, run / "model.keras")
    settings = ExportSettings(calib_size=60, parity_images=20)
    export_model(run / "model.keras", run / "export", FORMATS, cifar_folder, cache_dir, settings=settings)
    return run


@pytest.fixture(scope="module")
def device_python(tmp_path_factory) -> Path:
    """A fresh venv with what the three bundles' requirements.txt pin (PyPI, pip's cache): no TensorFlow."""
    root = tmp_path_factory.mktemp("device-venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=120)
    pins = [f"{d}=={importlib.metadata.version(d)}" for d in ("numpy", "pillow", "ai-edge-litert")]
    pins += [f"{d}=={importlib.metadata.version(d)}" for d in ("onnxruntime", "openvino")]
    pip = [root / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *pins]
    done = subprocess.run(pip, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        pytest.skip(f"cannot build the device's venv from PyPI: {done.stderr.strip()[-300:]}")
    python = root / "bin" / "python"
    assert subprocess.run([python, "-c", "import tensorflow"], capture_output=True).returncode != 0
    return python


def _bench(run_dir, cifar_folder, *args):
    export = run_dir / "export"
    res = CliRunner().invoke(
        cli, ["bench", "--export", str(export), "--data", str(cifar_folder), *FAST, *args]
    )
    assert "Traceback" not in res.output, res.output
    return res


def _wrapper(tmp_path: Path, name: str, body: str) -> Path:
    """A stand-in for the device's python: a shell script doing ``body`` (``$PY`` is the real one)."""
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


@pytest.fixture(scope="module")
def two_devices(run_dir, cifar_folder, server, device_python):
    """One call, two devices in parallel: the loopback sshd and local."""
    res = _bench(
        run_dir, cifar_folder,
        *("--formats", ",".join(DEVICE_FORMATS), "--reference-format", "tflite-fp32"),
        *("--device", server.url, "--device", "local", "--ssh-config", server.client_config),
        *("--device-python", str(device_python)),
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    return res


def _report(run_dir, name) -> dict:
    return json.loads((run_dir / f"bench-{name}" / "report.json").read_text())


def test_loopback_device_scores_the_host_top1_exactly(two_devices, run_dir, server):
    ssh_name = server.url.removeprefix("ssh://").replace(":", "-")
    for name in (ssh_name, "local"):
        report = _report(run_dir, name)
        rows = {r["format"]: r for r in report["artifacts"]}
        # the tflite bundle's C runner (built with the bundle here) ran there too: its own row
        assert sorted(rows) == sorted([*DEVICE_FORMATS, "tflite-int8@c-runner"])
        for fmt, row in rows.items():
            acc = row["accuracy"]
            # the same images through the same runtime on the same CPU: the same predictions
            assert acc["host_agreement"] == 1.0 and acc["top1"] == acc["host_top1"], (name, fmt, acc)
            batch1 = row["latency"][0]["batch1"]
            assert batch1["p50_ms"] > 0 and row["latency"][0]["load_time_s"] > 0 and row["status"] == "pass"
        _check_c_runner_row(rows, run_dir / f"bench-{name}")
        env = report["environment"]
        assert env["device"]["url"] in (server.url, "local") and env["device"]["emulated"] is False
        assert env["machine"] == "x86_64" and report["dataset"]["images"] == 60
    assert "gate passed" in two_devices.output


def _check_c_runner_row(rows: dict, out: Path) -> None:
    """runner.c on the same images as infer.py's LiteRT: the same classes; its own load, first call and
    peak RSS (the whole process's), no harness overhead measured."""
    import numpy as np

    c, py = rows["tflite-int8@c-runner"], rows["tflite-int8"]
    with np.load(out / "predictions.npz") as saved:
        assert (saved["pred__tflite-int8@c-runner"] == saved["pred__tflite-int8"]).all()
    assert c["accuracy"]["top1"] == py["accuracy"]["top1"] and c["runtime"] == "litert"
    entry = c["latency"][0]
    assert entry["load_time_s"] > 0 and entry["cold_ms"] > 0 and entry["peak_memory_mb"] > 0
    assert entry["overhead"] is None and entry["batch1"]["runs"] >= 10 and c["status"] == "pass"


def test_compare_takes_a_host_and_a_device_report(two_devices, run_dir, cifar_folder):
    host = run_dir / "bench-host"
    res = _bench(run_dir, cifar_folder, *ONE, "--out", str(host))  # one file both reports hold
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(
        cli, ["compare", str(host / "report.json"), str(run_dir / "bench-local" / "report.json")]
    )
    assert res.exit_code in (0, 1) and "tflite-int8" in res.output, res.output


def _one_device_error(res, words: str) -> str:
    assert res.exit_code == 2, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert any(words in line for line in errors), res.output
    return errors[0]


def test_an_unreachable_device_and_a_refused_key(run_dir, cifar_folder, server, device_python):
    closed = f"ssh://{server.user}@127.0.0.1:1"
    res = _bench(run_dir, cifar_folder, *ONE, "--device", closed, "--ssh-config", server.client_config)
    assert closed in _one_device_error(res, "unreachable")
    other = str(server.folder / "other_config")
    res = _bench(run_dir, cifar_folder, *ONE, "--device", server.url, "--ssh-config", other)
    _one_device_error(res, "the key was refused")


def test_no_python_or_no_runtime_there(run_dir, cifar_folder, server):
    args = ("--device", server.url, "--ssh-config", server.client_config)
    res = _bench(run_dir, cifar_folder, *ONE, *args, "--device-python", "/nonexistent/python3")
    _one_device_error(res, "/nonexistent/python3")
    res = _bench(run_dir, cifar_folder, *ONE, *args, "--device-python", "/usr/bin/python3")
    _one_device_error(res, "not installed")  # the system Python has no numpy or LiteRT


def test_a_cpu_lacking_a_flag_is_refused_unless_allowed(run_dir, cifar_folder, device_python, tmp_path):
    """The onnx-int8 recipe built here needs VNNI; a device without it refuses that bundle (its own check):
    a failed row in the device's report, the other artifact still benched, exit 2."""
    avx2 = _wrapper(tmp_path, "python", f'EDGEBENCH_FAKE_CPU_FLAGS=x86_64:avx2,fma exec {device_python} "$@"')
    args = ("--formats", "tflite-int8,onnx-int8", "--reference-format", "onnx", "--device", "local")
    args += ("--device-python", avx2, "--out", tmp_path / "avx2")
    res = _bench(run_dir, cifar_folder, *args)
    if res.exit_code == 0:
        pytest.skip("this export's onnx-int8 needs no CPU flag (7-bit weights on a CPU without VNNI)")
    assert "local" in _one_device_error(res, "lacks")
    rows = {r["format"]: r for r in json.loads((tmp_path / "avx2" / "report.json").read_text())["artifacts"]}
    assert rows["onnx-int8"]["status"] == "error" and "lacks" in rows["onnx-int8"]["message"]
    assert rows["tflite-int8"]["status"] == "pass"
    assert _bench(run_dir, cifar_folder, *args, "--allow-cpu-mismatch").exit_code == 0


def _gone(pid_file: Path) -> bool:
    """Whether the process whose PID is in ``pid_file`` has ended (a zombie has ended too)."""
    stat = Path(f"/proc/{pid_file.read_text().strip()}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] in "ZX"
    except (FileNotFoundError, ProcessLookupError):
        return True


def test_a_device_that_hangs_or_answers_wrongly(run_dir, cifar_folder, device_python, tmp_path):
    local = ("--device", "local")
    hang = _wrapper(tmp_path, "hang", f"echo $$ > {tmp_path / 'hang.pid'}\nexec sleep 60")
    res = _bench(run_dir, cifar_folder, *ONE, *local, "--device-python", hang, "--device-timeout", "2")
    _one_device_error(res, "no answer within 2 s (--device-timeout); stopped there")
    assert _gone(tmp_path / "hang.pid")  # stopped, not left running
    for name, edit, words in [
        ("garbage", "printf 'not json' > result.json", "is not JSON"),
        ("other-model", "sed -i 's/\"sha256\": \"[0-9a-f]*\"/\"sha256\": \"" + "0" * 64 + "\"/' result.json",
         "another model file"),
        ("short", f"{device_python} -c \"import json; d=json.load(open('result.json')); "
         "d['accuracy']['predictions']=[0]; json.dump(d, open('result.json','w'))\"", "predicted classes"),
    ]:  # fmt: skip
        liar = _wrapper(tmp_path, name, f'{device_python} "$@" && {edit}')
        res = _bench(run_dir, cifar_folder, *ONE, *local, "--device-python", liar)
        _one_device_error(res, words)


def test_a_bundle_that_hangs_there_is_a_failed_row_and_is_stopped(
    run_dir, cifar_folder, server, device_python, tmp_path
):
    """Over ssh, the onnx-int8 bundle's bench hangs past --device-timeout: the device's own `timeout` stops
    it (nothing left running there), its row is an error and the tflite bundle is still benched."""
    pid = tmp_path / "hang.pid"
    hang = f'case "$PWD" in *onnx-int8*) echo $$ > {pid}; exec sleep 120;; esac\nexec {device_python} "$@"'
    python = _wrapper(tmp_path, "python", hang)
    args = ("--formats", "tflite-int8,onnx-int8", "--reference-format", "tflite-fp32")
    args += ("--out", tmp_path / "out")
    args += ("--device", server.url, "--ssh-config", server.client_config, "--device-python", python)
    res = _bench(run_dir, cifar_folder, *args, "--device-timeout", "10")
    line = _one_device_error(res, "onnx-int8")
    assert "no answer within 10 s (--device-timeout); stopped there" in line, line
    assert _gone(pid)
    rows = {r["format"]: r for r in json.loads((tmp_path / "out" / "report.json").read_text())["artifacts"]}
    assert rows["tflite-int8"]["status"] == "pass" and rows["onnx-int8"]["status"] == "error"


def test_a_c_runner_that_fails_there_is_a_failed_row(run_dir, cifar_folder, device_python, tmp_path):
    """The shipped runner replaced there by one that fails: its row is an error with the runner's one line,
    the Python row still passes, and the device is not lost."""
    broken = "printf '#!/bin/sh\\necho \"error: LiteRT crashed\" >&2\\nexit 2\\n' > runner"
    python = _wrapper(tmp_path, "python", f'{broken} && exec {device_python} "$@"')
    args = (*ONE, "--device", "local", "--device-python", python, "--out", tmp_path / "out")
    res = _bench(run_dir, cifar_folder, *args)
    line = _one_device_error(res, "c-runner")
    assert line == "error: local: tflite-int8@c-runner: the C runner failed: error: LiteRT crashed", line
    rows = {r["format"]: r for r in json.loads((tmp_path / "out" / "report.json").read_text())["artifacts"]}
    assert rows["tflite-int8"]["status"] == "pass" and rows["tflite-int8@c-runner"]["status"] == "error"
    assert rows["tflite-int8@c-runner"]["message"] == "the C runner failed: error: LiteRT crashed"


def test_tune_times_its_candidates_on_the_device(run_dir, cifar_folder, server, device_python, tmp_path):
    """tune --device: every candidate is timed there (a logging stand-in for the device's python counts the
    timing rounds it ran), tune.json says which device timed them, and a winner is written. A device that
    answers garbage stops the tune with one line, keeping what was measured (the reference); a candidate that
    hangs there is its own failed record (the device still answers), the only one a rerun measures again."""
    from edgebench.devices import DeviceError
    from edgebench.runtime.latency_stats import LatencySettings
    from edgebench.tune.search import _Tuner, run_tune
    from edgebench.tune.space import Candidate, TuneSettings

    def _candidate(rec: dict) -> Candidate:
        return Candidate(rec["family"], rec["runtime"], rec["quantized"], rec["settings"])

    calls, hung = tmp_path / "calls.log", tmp_path / "hung"
    bench_call = 'case "$*" in *edgebench_runtime.device_bench*)'
    hangs_once = f"{bench_call} [ -e {hung} ] || {{ touch {hung}; exec sleep 60; }};; esac"
    logging_python = _wrapper(
        tmp_path, "python", f'{hangs_once}\necho "$@" >> {calls}\nexec {device_python} "$@"'
    )
    garbage = {
        "the result is not JSON": 'echo "{" > result.json',
        "the samples are not an array": "echo {} > result.json; echo 1 > samples.npy",
    }
    latency = LatencySettings(rounds=1, min_samples=20, time_cap_s=0.1, warmup_runs=2, overhead_block_s=0.01)
    settings = TuneSettings(
        model=run_dir / "model.keras", data=str(cifar_folder), out_dir=tmp_path / "tune",
        runtimes=("litert",), val_images=40, calib_size=40, threads=1, latency=latency,
        device=server.url, ssh_config=server.client_config, device_python=str(logging_python),
        device_timeout=15,
    )  # fmt: skip
    tune_json = tmp_path / "tune" / "tune.json"
    for i, (words, answer) in enumerate(garbage.items()):
        wrong = _wrapper(
            tmp_path, f"garbage{i}", f'{bench_call} {answer}; exit 0;; esac\nexec {device_python} "$@"'
        )
        with pytest.raises(DeviceError, match=words):
            run_tune(dataclasses.replace(settings, device_python=str(wrong)), log=lambda _: None)
    aborted = json.loads(tune_json.read_text())
    assert aborted["reference"] and aborted["candidates"] == {}  # the device's fault is no candidate's

    result = run_tune(settings, log=lambda _: None)  # goes on from there: the first timing hangs once
    state = result.state
    timed_out = [r for r in state["candidates"].values() if r.get("reason") == "device-timeout"]
    assert len(timed_out) == 1
    assert "no answer within 15 s (--device-timeout); stopped there" in timed_out[0]["message"]
    timed = [r for r in state["candidates"].values() if r["status"] == "ok"]
    rounds = [line for line in calls.read_text().splitlines() if "edgebench_runtime.device_bench" in line]
    assert len(timed) == len(state["candidates"]) - 1 and len(rounds) >= len(timed)
    assert state["device"]["url"] == server.url and state["context"]["device"] == server.url
    assert state["device"]["arch"] == "x86_64" and result.entry.format.endswith("-tuned")

    rerun = _Tuner(settings, log=lambda _: None)  # what a rerun measures again: the timed-out one alone
    rerun.prepare()
    again = [r["key"] for r in state["candidates"].values() if rerun.cached(_candidate(r)) is None]
    assert again == [timed_out[0]["key"]]
    assert "--device" in CliRunner().invoke(cli, ["tune", "--help"]).output
