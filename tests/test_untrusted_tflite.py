"""Untrusted .tflite files: a crafted or damaged model is refused in one line (exit 2) on every path that
hands it to LiteRT (the Python loader, ``edgebench predict``, ``edgebench import``, ``infer.py --model``,
the C runner), never a crash, a traceback or a gigabyte allocation.

A seeded mutation test of a small int8 model built here (no TensorFlow): edits aimed at the values LiteRT
trusts (operator and subgraph tensor indices, dimensions, quantization scales, zero points, quantized
dimensions and vtables, tensor types and buffers) and random bit flips, byte writes and cuts. Every mutant
goes through the Python check and the C runner (the two checks must agree word for word) and, where the
check passes it, through the probed Python loader; a sample through ``predict`` and ``infer.py --model``.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgebench import runtime
from edgebench.bundle import native
from edgebench.bundle.build import copy_runtime
from edgebench.runtime.tflite_check import TFLiteError, verify_model

SEED, MUTANTS, SUBPROCESS_SAMPLE = 39, 260, 12
GIB_KB = 1 << 20  # ru_maxrss is in KiB
INVALID = "is not a valid TFLite model: "


def small_int8_model(seed: int = 0) -> bytes:
    """A 22-KB int8 CIFAR-shaped classifier: CONV_2D (per-channel weights, int32 bias), RESHAPE,
    FULLY_CONNECTED, SOFTMAX, with a signature, written with the flatbuffers object API."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as S

    rng = np.random.default_rng(seed)
    m = S.ModelT()
    m.version, m.description, m.buffers, tensors = 3, "edgebench test model", [S.BufferT()], []

    def tensor(name, shape, ttype, data=None, scale=None, zero=None, dim=0) -> int:
        t = S.TensorT()
        t.name, t.shape, t.type, t.buffer = name, list(shape), ttype, 0
        if data is not None:
            m.buffers.append(S.BufferT())
            m.buffers[-1].data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
            t.buffer = len(m.buffers) - 1
        if scale is not None:
            t.quantization = S.QuantizationParametersT()
            t.quantization.scale, t.quantization.zeroPoint = (
                list(np.atleast_1d(scale)),
                list(np.atleast_1d(zero)),
            )
            t.quantization.quantizedDimension = dim
        tensors.append(t)
        return len(tensors) - 1

    i8, i32 = S.TensorType.INT8, S.TensorType.INT32
    w_scale = rng.uniform(0.002, 0.01, 8).astype(np.float32)
    x = tensor("pixels", [1, 32, 32, 3], i8, None, 1.0, -128)
    w = tensor("conv_w", [8, 3, 3, 3], i8, rng.integers(-127, 128, (8, 3, 3, 3), np.int8), w_scale, [0] * 8)
    b = tensor("conv_b", [8], i32, rng.integers(-500, 500, 8, np.int32), w_scale, [0] * 8)
    c = tensor("conv", [1, 16, 16, 8], i8, None, 0.5, -10)
    s = tensor("shape", [2], i32, np.array([1, 2048], np.int32))
    r = tensor("flat", [1, 2048], i8, None, 0.5, -10)
    fw = tensor("fc_w", [10, 2048], i8, rng.integers(-127, 128, (10, 2048), np.int8), 0.01, 0)
    fb = tensor("fc_b", [10], i32, rng.integers(-500, 500, 10, np.int32), 0.005, 0)
    f = tensor("logits", [1, 10], i8, None, 0.25, 0)
    p = tensor("probs", [1, 10], i8, None, 1 / 256, -128)
    ops = S.BuiltinOperator
    m.operatorCodes = []
    for code in (ops.CONV_2D, ops.RESHAPE, ops.FULLY_CONNECTED, ops.SOFTMAX):
        m.operatorCodes.append(S.OperatorCodeT())
        m.operatorCodes[-1].builtinCode, m.operatorCodes[-1].deprecatedBuiltinCode = code, code
    conv, reshape, softmax = S.Conv2DOptionsT(), S.ReshapeOptionsT(), S.SoftmaxOptionsT()
    conv.padding, conv.strideW, conv.strideH, conv.fusedActivationFunction = S.Padding.SAME, 2, 2, 1
    reshape.newShape, softmax.beta = [1, 2048], 1.0
    kinds = S.BuiltinOptions
    g = S.SubGraphT()
    g.tensors, g.inputs, g.outputs, g.name, g.operators = tensors, [x], [p], "main", []
    for code, ins, out, kind, options in (
        (0, [x, w, b], c, kinds.Conv2DOptions, conv),
        (1, [c, s], r, kinds.ReshapeOptions, reshape),
        (2, [r, fw, fb], f, kinds.FullyConnectedOptions, S.FullyConnectedOptionsT()),
        (3, [f], p, kinds.SoftmaxOptions, softmax),
    ):
        g.operators.append(S.OperatorT())
        o = g.operators[-1]
        o.opcodeIndex, o.inputs, o.outputs, o.builtinOptionsType, o.builtinOptions = (
            code,
            ins,
            [out],
            kind,
            options,
        )
    m.subgraphs = [g]
    sig = S.SignatureDefT()
    sig.signatureKey, sig.subgraphIndex, sig.inputs, sig.outputs = (
        "serving_default",
        0,
        [S.TensorMapT()],
        [S.TensorMapT()],
    )
    sig.inputs[0].name, sig.inputs[0].tensorIndex, sig.outputs[0].name, sig.outputs[0].tensorIndex = (
        "pixels",
        x,
        "probs",
        p,
    )
    m.signatureDefs = [sig]
    builder = flatbuffers.Builder(1 << 16)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _vector(tab, slot: int, elem: int) -> list[int]:
    """Byte offsets of the elements of vector field ``slot`` of a flatbuffers table."""
    o = tab.Offset(4 + 2 * slot)
    return [tab.Vector(o) + elem * i for i in range(tab.VectorLen(o))] if o else []


def _scalar(tab, slot: int) -> list[int]:
    o = tab.Offset(4 + 2 * slot)
    return [tab.Pos + o] if o else []


def target_fields(data: bytes) -> dict[str, list[int]]:
    """Where the values LiteRT trusts lie in ``data``: kind -> byte offsets."""
    from ai_edge_litert import schema_py_generated as S

    model = S.Model.GetRootAs(data, 0)
    graph = model.Subgraphs(0)
    out: dict[str, list[int]] = {
        k: [] for k in ("index", "io", "dim", "scale", "zero", "qdim", "qvtable", "type")
    }
    out["buffer"] = []
    out["io"] += _vector(graph._tab, 1, 4) + _vector(graph._tab, 2, 4)
    for i in range(graph.OperatorsLength()):
        out["index"] += _vector(graph.Operators(i)._tab, 1, 4) + _vector(graph.Operators(i)._tab, 2, 4)
    for i in range(graph.TensorsLength()):
        tab = graph.Tensors(i)._tab
        out["dim"] += _vector(tab, 0, 4)
        out["type"] += _scalar(tab, 1)
        out["buffer"] += _scalar(tab, 2)
        q = graph.Tensors(i).Quantization()
        if q is not None:
            out["scale"] += _vector(q._tab, 2, 4)
            out["zero"] += _vector(q._tab, 3, 8)
            out["qdim"] += _scalar(q._tab, 6)
            vtable = q._tab.Pos - struct.unpack_from("<i", data, q._tab.Pos)[0]
            out["qvtable"] += list(range(vtable + 4, vtable + struct.unpack_from("<H", data, vtable)[0], 2))
    return out


def _i32(x: int) -> bytes:
    return struct.pack("<I", x & 0xFFFFFFFF)


def mutants(data: bytes, count: int, seed: int) -> list[tuple[str, bytes]]:
    """``count`` seeded mutants of ``data``: three in four aimed at a field of ``target_fields`` with a value
    chosen to break it (-1, past the end, NaN, 0, huge, out of range), the rest random flips, writes, cuts."""
    rng = np.random.default_rng(seed)
    fields = target_fields(data)
    n_tensors = len(fields["buffer"])
    nasty_floats = [float("nan"), float("inf"), -1.0, 0.0, 3.0e38, 1e-40, 1e30, -0.0]
    values = {
        "index": lambda: _i32(
            int(rng.choice([-1, n_tensors, n_tensors + 7, 0x7FFFFFFF, rng.integers(n_tensors)]))
        ),
        "io": lambda: _i32(int(rng.choice([-1, n_tensors, 0x80000000, rng.integers(n_tensors)]))),
        "dim": lambda: _i32(int(rng.choice([-1, 0, 1 << 20, 0x7FFFFFFF, 50_000, rng.integers(1, 1 << 31)]))),
        "scale": lambda: struct.pack("<f", rng.choice(nasty_floats)) if rng.random() < 0.8 else rng.bytes(4),
        "zero": lambda: struct.pack("<q", int(rng.choice([128, -129, 256, 1 << 40, -(1 << 62)]))),
        "qdim": lambda: _i32(int(rng.choice([-1, 1, 3, 4, 1000]))),
        "qvtable": lambda: struct.pack("<H", int(rng.choice([0, 2, 4, 0xFFFF, rng.integers(1 << 16)]))),
        "type": lambda: bytes([int(rng.integers(0, 30))]),
        "buffer": lambda: _i32(int(rng.choice([len(fields["buffer"]) + 3, rng.integers(12)]))),
    }
    kinds = [k for k in values if fields[k]]
    out = []
    for i in range(count):
        buf = bytearray(data)
        if i % 4 != 3:
            kind = kinds[i % len(kinds)]
            at = int(rng.choice(fields[kind]))
            value = values[kind]()
            buf[at : at + len(value)] = value
            out.append((f"{i}: {kind} at {at} := {value.hex()}", bytes(buf)))
            continue
        how = rng.integers(3)
        at = int(rng.integers(8, len(data)))
        if how == 0:
            buf[at] ^= 1 << int(rng.integers(8))
        elif how == 1:
            buf[at : at + 4] = rng.bytes(4)
        else:
            buf = buf[:at]
        out.append((f"{i}: {('flip', 'write', 'cut')[how]} at {at}", bytes(buf)))
    return out


# Linux starts a child's peak RSS at what its parent held when it forked (and an exec keeps that peak), so a
# child of a pytest worker that already holds a gigabyte "peaks" at a gigabyte. The command runs as the
# child of a fresh small Python instead, which reports that child's own peak and exit status.
_MEASURE = """
import json, os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
with open(sys.argv[1], "w") as fh:
    json.dump([os.waitstatus_to_exitcode(status), usage.ru_maxrss], fh)
"""


def run_measured(cmd, cwd=None, timeout: float = 120) -> tuple[int, str, str, int]:
    """(exit status, stdout, stderr, peak RSS in KiB of the command and the children it waited for)."""
    import json
    import signal
    import tempfile

    with (
        tempfile.TemporaryDirectory() as tmp,
        open(os.devnull, "rb") as stdin,
        _Capture() as out,
        _Capture() as err,
    ):
        report = Path(tmp) / "measured.json"
        argv = [sys.executable, "-c", _MEASURE, str(report), *(str(c) for c in cmd)]
        proc = subprocess.Popen(
            argv, cwd=cwd, stdin=stdin, stdout=out.fh, stderr=err.fh, start_new_session=True
        )
        # a hang fails the test as a signal, not by waiting
        hung = threading.Timer(timeout, lambda: os.killpg(proc.pid, signal.SIGKILL))
        hung.start()
        proc.wait()
        hung.cancel()
        code, peak_kb = json.loads(report.read_text()) if report.is_file() else (-signal.SIGKILL, 0)
    return code, out.text, err.text, peak_kb


class _Capture:
    def __enter__(self):
        import tempfile

        self.fh = tempfile.TemporaryFile()
        return self

    def __exit__(self, *exc):
        self.fh.seek(0)
        self.text = self.fh.read().decode("utf-8", "replace")
        self.fh.close()


def _one_line_or_ok(rc: int, stdout: str, stderr: str, case: str) -> None:
    """Exit 0, or exit 2 with one ``error:`` line and nothing else: never a signal or a traceback."""
    assert rc in (0, 2), f"{case}: exit {rc}: {stderr[-500:]}"
    lines = [ln for ln in stderr.splitlines() if not ln.startswith("INFO: ")]  # LiteRT's delegate log line
    if rc == 2:
        assert len(lines) == 1 and lines[0].startswith("error: "), f"{case}: {stderr[-500:]}"
    assert "Traceback" not in stderr, f"{case}: {stderr[-500:]}"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The model, a labels file, a PNG (Python), the same pixels raw (C runner), a folder for import."""
    where = tmp_path_factory.mktemp("untrusted")
    (where / "model.tflite").write_bytes(small_int8_model())
    (where / "labels.txt").write_text("\n".join(runtime.CIFAR10_CLASSES) + "\n")
    pixels = np.random.default_rng(SEED).integers(0, 256, (32, 32, 3), np.uint8)
    Image.fromarray(pixels).save(where / "image.png")
    (where / "image.rgb").write_bytes(pixels.tobytes())
    (where / "data").mkdir()
    return {p.stem if p.suffix != ".rgb" else "raw": p for p in where.iterdir()} | {"dir": where}


@pytest.fixture(scope="module")
def c_runner(files, tmp_path_factory) -> Path:
    """The C runner as a bundle builds it: model.tflite beside it by default, its sha256 compiled in."""
    cc = native.find_compiler()
    if cc is None:
        pytest.skip("no C compiler here")
    where = tmp_path_factory.mktemp("runner")
    for name in native.SOURCES:
        shutil.copyfile(native.NATIVE_DIR / name, where / name)
    shutil.copyfile(native.litert_library(), where / native.LIBRARY)
    shutil.copyfile(files["model"], where / "model.tflite")
    shutil.copyfile(files["labels"], where / "labels.txt")
    native.build_runner(where, cc, "model.tflite", 1, sha256=runtime.sha256_file(files["model"]))
    return where / native.RUNNER


@pytest.fixture(scope="module")
def infer_py(tmp_path_factory) -> Path:
    """A folder with infer.py and edgebench_runtime/ only, as a bundle ships them (no model.json)."""
    where = tmp_path_factory.mktemp("device")
    copy_runtime(where)
    return where / "infer.py"


def _python_verdict(data: bytes, path: Path) -> str | None:
    try:
        verify_model(data, str(path))
    except TFLiteError as exc:
        return str(exc)
    return None


def test_the_small_model_runs_everywhere(files, c_runner, infer_py):
    model, png = files["model"], files["image"]
    verify_model(model.read_bytes())
    runs = {
        "C runner": run_measured([c_runner, files["raw"]]),
        "infer.py": run_measured([sys.executable, infer_py, "--model", model, png]),
        "predict": run_measured([sys.executable, "-m", "edgebench.cli", "predict", png, "--model", model]),
    }
    for case, (rc, stdout, stderr, _) in runs.items():
        assert rc == 0 and stdout.startswith(str(files["raw"] if case == "C runner" else png)), (
            f"{case}: {stderr}"
        )


def test_seeded_mutants_never_crash_the_c_runner_or_the_python_loader(files, c_runner, tmp_path):
    """Each mutant: the Python check and the C runner's give the same verdict (the same line when refused);
    the C runner exits 0 or 2 with one line, under 1 GiB; a mutant the check passes goes through the probed
    Python loader (one inference on zeros), which ends in results or an ``InferenceError`` here."""
    path = tmp_path / "mutant.tflite"
    refused, loaded, failed_in_litert = 0, 0, 0
    for case, data in mutants(files["model"].read_bytes(), MUTANTS, SEED):
        path.write_bytes(data)
        said = _python_verdict(data, path)
        rc, stdout, stderr, rss = run_measured([c_runner, "--model", path, files["raw"]])
        _one_line_or_ok(rc, stdout, stderr, case)
        assert rss < GIB_KB, f"{case}: the C runner peaked at {rss >> 10} MiB"
        assert "LiteRT crashed" not in stderr, f"{case}: the check let through {stderr}"
        if said is not None:
            refused += 1
            assert stderr == f"error: {said}\n", f"{case}: C and Python disagree: {stderr!r} vs {said!r}"
            continue
        assert INVALID not in stderr, f"{case}: only the C check refuses it: {stderr}"
        try:
            with runtime.open_runner(path, untrusted=True) as runner:
                runner.infer(np.zeros((1, 32, 32, 3), np.uint8))
            loaded += 1
        except runtime.InferenceError as exc:
            failed_in_litert += 1
            assert "\n" not in str(exc), case
    # Most aimed edits are refused by the check; some (a swapped tensor, a flipped weight) are valid models.
    assert refused >= MUTANTS // 2 and loaded + failed_in_litert >= 20, (refused, loaded, failed_in_litert)


def _sample(data: bytes, path: Path) -> list[tuple[str, bytes]]:
    """Mutants for the slower paths: those the check passes first (LiteRT sees them), then refused ones."""
    every = mutants(data, MUTANTS, SEED)
    passed = [m for m in every if _python_verdict(m[1], path) is None]
    refused = [m for m in every if m not in passed]
    return passed[: SUBPROCESS_SAMPLE // 2] + refused[: SUBPROCESS_SAMPLE - SUBPROCESS_SAMPLE // 2]


def test_mutants_through_predict_import_and_infer_py(files, infer_py, tmp_path):
    path = tmp_path / "mutant.tflite"
    png = files["image"]
    for case, data in _sample(files["model"].read_bytes(), path):
        path.write_bytes(data)
        commands = {
            "predict": [sys.executable, "-m", "edgebench.cli", "predict", png, "--model", path],
            "infer.py": [sys.executable, infer_py, "--model", path, png],
            "import": [
                sys.executable,
                "-m",
                "edgebench.cli",
                "import",
                path,
                "--out",
                tmp_path / "x",
                "--data",
                files["dir"] / "data",
            ],
        }
        for name, cmd in commands.items():
            rc, stdout, stderr, rss = run_measured(cmd)
            _one_line_or_ok(rc, stdout, stderr, f"{name} {case}")
            assert rss < GIB_KB, f"{name} {case}: peaked at {rss >> 10} MiB"


def _edited(data: bytes, change) -> bytes:
    """``data`` re-serialized after ``change(model, subgraph)`` edits its object tree."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as S

    model = S.ModelT.InitFromPackedBuf(data, 0)
    change(model, model.subgraphs[0])
    builder = flatbuffers.Builder(len(data))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _operand(op, which: str, at: int, tensor: int) -> None:
    operands = [int(x) for x in getattr(op, which)]
    operands[at] = tensor
    setattr(op, which, operands)


def _set(obj, **values):
    for name, value in values.items():
        setattr(obj, name, value)


# name -> (edit of the small model, the end of the line both checks refuse it with; None: accepted and run)
# Tensors: 0 pixels, 1 conv_w, 2 conv_b, 3 conv, 4 shape, 5 flat, 6 fc_w, 7 fc_b, 8 logits, 9 probs.
NAMED_CASES = {
    "conv bias left out (-1: optional there)": (lambda m, g: _operand(g.operators[0], "inputs", 2, -1), None),
    "conv input left out": (
        lambda m, g: _operand(g.operators[0], "inputs", 0, -1),
        "subgraph 0 operator 0 leaves out tensor 0 (-1), which is not optional",
    ),
    "operator output -1": (
        lambda m, g: _operand(g.operators[3], "outputs", 0, -1),
        "subgraph 0 operator 3 leaves out tensor 0 (-1), which is not optional",
    ),
    "subgraph input -1": (
        lambda m, g: _set(g, inputs=[-1]),
        "subgraph 0's input list leaves out tensor 0 (-1), which is not optional",
    ),
    "operator input past the end": (
        lambda m, g: _operand(g.operators[2], "inputs", 1, 10),
        "subgraph 0 operator 2 names tensor 10; there are 10",
    ),
    "NaN scale": (
        lambda m, g: _set(g.tensors[0].quantization, scale=[float("nan")]),
        "subgraph 0 tensor 0 has quantization scale nan (not in 5.42101e-20..4.29497e+09)",
    ),
    "zero scale": (
        lambda m, g: _set(g.tensors[8].quantization, scale=[0.0]),
        "subgraph 0 tensor 8 has quantization scale 0 (not in 5.42101e-20..4.29497e+09)",
    ),
    "huge scale": (
        lambda m, g: _set(g.tensors[3].quantization, scale=[3e38]),
        "subgraph 0 tensor 3 has quantization scale 3e+38 (not in 5.42101e-20..4.29497e+09)",
    ),
    "int8 zero point 128": (
        lambda m, g: _set(g.tensors[9].quantization, zeroPoint=[128]),
        "subgraph 0 tensor 9 has zero point 128 outside its type's -128..127",
    ),
    "fewer zero points than scales": (
        lambda m, g: _set(g.tensors[1].quantization, zeroPoint=[0]),
        "subgraph 0 tensor 1 has 8 quantization scales and 1 zero points",
    ),
    "quantized dimension out of range": (
        lambda m, g: _set(g.tensors[1].quantization, quantizedDimension=4),
        "subgraph 0 tensor 1 is quantized along dimension 4 of 4",
    ),
    "per-channel scales for another dimension": (
        lambda m, g: _set(g.tensors[1].quantization, quantizedDimension=3),
        "subgraph 0 tensor 1 has 8 quantization scales for dimension 3 of another size",
    ),
    "negative dimension": (
        lambda m, g: _set(g.tensors[5], shape=[1, -2048]),
        "subgraph 0 tensor 5 has dimension -2048",
    ),
    "weights shape and buffer disagree": (
        lambda m, g: _set(g.tensors[6], shape=[10, 2049]),
        "subgraph 0 tensor 6's shape needs 20490 bytes but its buffer holds 20480",
    ),
    "forged activation shape (a 1.6-GB allocation)": (
        lambda m, g: _set(g.tensors[3], shape=[1, 16, 16, 8 * 800_000]),
        "subgraph 0 tensor 3 takes the tensors past 256 MiB (a forged shape?)",
    ),
}


@pytest.mark.parametrize("case", NAMED_CASES)
def test_named_cases_the_c_and_python_checks_agree_on(case, files, c_runner, tmp_path):
    change, refusal = NAMED_CASES[case]
    path = tmp_path / "edited.tflite"
    path.write_bytes(_edited(files["model"].read_bytes(), change))
    said = _python_verdict(path.read_bytes(), path)
    rc, stdout, stderr, _ = run_measured([c_runner, "--model", path, files["raw"]])
    if refusal is None:  # LiteRT may still refuse it, in one line, never by a crash
        assert said is None and (rc == 0 or INVALID not in stderr), (said, stderr)
        assert "crashed" not in stderr, stderr
        with pytest.raises(runtime.InferenceError, match="Tensor at index 2 was optional but was expected"):
            with runtime.open_runner(path, untrusted=True) as runner:  # LiteRT's own check, for int8 kernels
                runner.infer(np.zeros((1, 32, 32, 3), np.uint8))
        return
    assert said == f"{path} {INVALID}{refusal}"
    assert rc == 2 and stdout == "" and stderr == f"error: {said}\n"


def test_c_runner_checks_its_models_sha256_options_and_device_files(files, c_runner, tmp_path):
    """The bundle's own model must be the file whose sha256 model.json records (compiled in); --model runs
    any file; integer options are range-checked; /dev/zero as image, model or labels is one line."""
    where = c_runner.parent
    assert run_measured([c_runner, files["raw"]])[0] == 0
    original = (where / "model.tflite").read_bytes()
    try:
        (where / "model.tflite").write_bytes(_edited(original, lambda m, g: _set(m, description="other")))
        rc, _, stderr, _ = run_measured([c_runner, files["raw"]])
        assert rc == 2 and "is not the one in model.json: sha256" in stderr and stderr.count("\n") == 1
        assert run_measured([c_runner, "--model", where / "model.tflite", files["raw"]])[0] == 0
    finally:
        (where / "model.tflite").write_bytes(original)
    cases = {
        "top-k past int": (["--top-k", "2147483648", files["raw"]], "--top-k must be an integer from 1 to"),
        "top-k past the classes": (["--top-k", "11", files["raw"]], "--top-k must be between 1 and 10"),
        "threads past int": (
            ["--threads", "4294967297", files["raw"]],
            "--threads must be an integer from 1",
        ),
        "bench runs": (["--bench", "99999999999"], "--bench must be an integer from 1 to"),
        "image /dev/zero": (["/dev/zero"], "image /dev/zero has more than"),
        "model /dev/zero": (
            ["--model", "/dev/zero", files["raw"]],
            "model file /dev/zero is not a regular file",
        ),
        "labels /dev/zero": (["--labels", "/dev/zero", files["raw"]], "labels file /dev/zero has more than"),
    }
    for case, (args, words) in cases.items():
        rc, stdout, stderr, rss = run_measured([c_runner, *args], timeout=60)
        assert rc == 2 and stdout == "" and stderr.startswith("error: ") and words in stderr, (
            f"{case}: {stderr}"
        )
        assert stderr.count("\n") == 1 and rss < GIB_KB, case


def test_python_tools_refuse_device_files(files, infer_py):
    png, model = files["image"], files["model"]
    edgebench = [sys.executable, "-m", "edgebench.cli"]
    cases = {
        "predict image": ([*edgebench, "predict", "/dev/zero", "--model", model], "not a regular file"),
        "predict model": ([*edgebench, "predict", png, "--model", "/dev/zero"], "unknown model format"),
        "predict labels": (
            [*edgebench, "predict", png, "--model", model, "--labels", "/dev/zero"],
            "not a regular",
        ),
        "infer.py image": ([sys.executable, infer_py, "--model", model, "/dev/zero"], "not a regular file"),
        "infer.py model": ([sys.executable, infer_py, "--model", "/dev/zero", png], "/dev/zero"),
    }
    for case, (cmd, words) in cases.items():
        rc, stdout, stderr, rss = run_measured(cmd, timeout=60)
        _one_line_or_ok(rc, stdout, stderr, case)
        assert rc == 2 and words in stderr and rss < GIB_KB, f"{case}: {stderr}"
    link = files["dir"] / "zero.tflite"
    link.unlink(missing_ok=True)
    link.symlink_to("/dev/zero")
    rc, stdout, stderr, _ = run_measured([*edgebench, "predict", png, "--model", link], timeout=60)
    assert rc == 2 and "is not a regular file" in stderr, stderr


def test_a_probe_that_dies_is_one_line(files):
    """A file the check passes but the runtime dies on: the probe's child dies, the caller gets one line.
    Here the child dies of an address-space limit too small for Python and LiteRT (the hard limit it
    inherits), as it would of a crash: the caller's exception says the trial run failed."""
    script = (
        "import resource, sys\n"
        "from edgebench.runtime import InferenceError, probe_model\n"
        "resource.setrlimit(resource.RLIMIT_AS, (120 << 20, 120 << 20))\n"
        "try:\n"
        "    probe_model(sys.argv[1], 'litert')\n"
        "except InferenceError as exc:\n"
        "    print(f'error: {exc}', file=sys.stderr)\n"
        "    sys.exit(2)\n"
    )
    rc, stdout, stderr, _ = run_measured([sys.executable, "-c", script, files["model"]])
    _one_line_or_ok(rc, stdout, stderr, "a probe out of memory")
    assert rc == 2 and "in a trial run (corrupt or crafted model file?)" in stderr, stderr
