"""Bare timing loops, the independent timers of ``edgebench crosscheck``, each in a fresh process of its own:

    python -m edgebench.runtime.bare TIMER MODEL THREADS TENSOR.npy
    python -m edgebench.runtime.bare litert-benchmark [benchmark_litert_model flags]

A timer is the plainest loop a user would write around a runtime's own call: a second implementation on
purpose, beside the runners and sharing none of their code (it imports numpy and that runtime; the package
``__init__`` loads the runtime table and numpy, no runtime, no stage). It ships in bundles with the rest of
this package, so a device can check its own timings the same way. ``litert``
times ``Interpreter.invoke()``, ``onnxruntime`` times ``session.run``, both with ``time.perf_counter_ns``
around each call; ``polygraphy`` keeps Polygraphy's own per-call ``last_inference_time()``. TENSOR.npy holds
the model's input (the contract already applied); its first image is fed at batch 1.

Protocol (``crosscheck_timers.Served``): warm up, print ``READY {}``, then answer each stdin line ``k`` with
``BLOCK [k durations in ns]``. ``litert-benchmark`` runs ai-edge-litert's benchmark tool once.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

WARMUP = 20


def litert(path: str, threads: int, x: np.ndarray):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=path, num_threads=threads)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    if list(d["shape"][:1]) != [1]:
        it.resize_tensor_input(d["index"], [1, *d["shape"][1:]])
        it.allocate_tensors()
        d = it.get_input_details()[0]
    it.set_tensor(d["index"], x.astype(d["dtype"]))
    return it.invoke, None


def _ort_session(path: str, threads: int):
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])


def onnxruntime(path: str, threads: int, x: np.ndarray):
    s = _ort_session(path, threads)
    i = s.get_inputs()[0]
    feed = {i.name: x.astype({"tensor(uint8)": "uint8", "tensor(float)": "float32"}[i.type])}
    return (lambda: s.run(None, feed)), None


def polygraphy(path: str, threads: int, x: np.ndarray):
    from polygraphy.backend.onnxrt import OnnxrtRunner

    r = OnnxrtRunner(_ort_session(path, threads))
    r.activate()
    feed = {name: x for name in r.get_input_metadata().keys()}
    return (lambda: r.infer(feed)), (lambda: int(r.last_inference_time() * 1e9))


# runtime (a manifest artifact's ``runtime``) -> its bare loop; Polygraphy's runner times ONNX files
BARE = {"litert": litert, "onnxruntime": onnxruntime}
TIMERS = {**BARE, "polygraphy": polygraphy}
POLYGRAPHY_RUNTIMES = ("onnxruntime",)


def serve(timer: str, path: str, threads: int, tensor: str) -> None:
    """Warm the timer up, then time one block of calls per stdin line (see the module docstring)."""
    x = np.load(tensor)[:1]
    call, own_ns = TIMERS[timer](path, threads, x)
    for _ in range(WARMUP):
        call()
    print("READY {}", flush=True)
    samples: list[int] = []
    for line in sys.stdin:
        samples.clear()
        for _ in range(int(line)):
            t0 = time.perf_counter_ns()
            call()
            t1 = time.perf_counter_ns()
            samples.append(t1 - t0 if own_ns is None else own_ns())
        print("BLOCK", json.dumps(samples), flush=True)


def litert_benchmark(args: list[str]) -> int:
    from ai_edge_litert.tools.benchmark_litert_model import main

    sys.argv = ["litert-benchmark", *args]
    return main()


if __name__ == "__main__":
    if sys.argv[1] == "litert-benchmark":
        sys.exit(litert_benchmark(sys.argv[2:]))
    serve(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
