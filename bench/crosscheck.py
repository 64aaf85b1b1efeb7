"""``edgebench crosscheck``: a bench report's batch-1 p50s against independent timers of the same files.

Each reference runs in a fresh process with nothing of edgebench imported:
- ``bare``: the plainest loop a user would write: ``Interpreter.invoke()`` (LiteRT) or ``session.run``
  (ONNX Runtime) with ``time.perf_counter_ns`` around each call, same thread count;
- ``polygraphy`` (ONNX files, where installed): Polygraphy's ``OnnxrtRunner`` on a session with the same
  thread count, its own per-call ``last_inference_time()``;
- ``litert-benchmark`` (TFLite files): ai-edge-litert's benchmark tool (CompiledModel API), its average.
edgebench's own timing worker runs beside them, in turn; a median edgebench/bare ratio more than 5% from 1
is flagged: the harness would be measuring something other than the model.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from edgebench.bench.report import all_rows, load
from edgebench.errors import EdgebenchError

TOLERANCE = 0.05
WARMUP = 20

_BARE = {
    "litert": """
from ai_edge_litert.interpreter import Interpreter
it = Interpreter(model_path=path, num_threads=threads)
it.allocate_tensors()
d = it.get_input_details()[0]
if list(d["shape"][:1]) != [1]:
    it.resize_tensor_input(d["index"], [1, *d["shape"][1:]])
    it.allocate_tensors()
    d = it.get_input_details()[0]
it.set_tensor(d["index"], x.astype(d["dtype"]))
call = it.invoke
""",
    "onnxruntime": """
import onnxruntime as ort
o = ort.SessionOptions(); o.intra_op_num_threads = threads; o.inter_op_num_threads = 1
s = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
i = s.get_inputs()[0]
feed = {i.name: x.astype({"tensor(uint8)": "uint8", "tensor(float)": "float32"}[i.type])}
call = lambda: s.run(None, feed)
""",
}
_POLYGRAPHY = """
import onnxruntime as ort
from polygraphy.backend.onnxrt import OnnxrtRunner
o = ort.SessionOptions(); o.intra_op_num_threads = threads; o.inter_op_num_threads = 1
r = OnnxrtRunner(ort.InferenceSession(path, o, providers=["CPUExecutionProvider"]))
r.activate()
feed = {name: x for name in r.get_input_metadata().keys()}
def call():
    r.infer(feed)
    samples.append(r.last_inference_time() * 1e9)
"""
_LOOP = """
import json, sys, time
import numpy as np
path, threads, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
x = np.load(sys.argv[4])[:1]
samples = []
{setup}
for _ in range({warmup}):
    call()
samples.clear()
for _ in range(n):
    t0 = time.perf_counter_ns(); call(); t1 = time.perf_counter_ns()
    {record}
print("RESULT", json.dumps({{"p50_ms": float(np.median(samples)) / 1e6, "n": len(samples)}}))
"""


def _python(setup: str, record: str) -> str:
    return _LOOP.format(setup=setup, warmup=WARMUP, record=record)


def _run(cmd: list[str], timeout: float = 900) -> dict:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        return {"error": tail[0]}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    return json.loads(lines[-1].split(" ", 1)[1]) if lines else {"error": "no result printed"}


def bare_loop(runtime: str, path: Path, threads: int, n: int, image: Path) -> dict:
    code = _python(_BARE[runtime], "samples.append(t1 - t0)")
    return _run([sys.executable, "-c", code, str(path), str(threads), str(n), str(image)])


def polygraphy_loop(path: Path, threads: int, n: int, image: Path) -> dict:
    import importlib.util

    if importlib.util.find_spec("polygraphy") is None:
        return {"error": "polygraphy not installed (pip install polygraphy)"}
    code = _python(_POLYGRAPHY, "pass")
    return _run([sys.executable, "-c", code, str(path), str(threads), str(n), str(image)])


def litert_benchmark(path: Path, threads: int, n: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        code = (
            "import sys; from ai_edge_litert.tools.benchmark_litert_model import main; "
            "sys.argv = ['litert-benchmark'] + sys.argv[1:]; sys.exit(main())"
        )
        args = ["--model", str(path), "--num_runs", str(n), "--warmup_runs", str(WARMUP)]
        args += ["--num_threads", str(threads), "--result_json", str(out)]
        proc = subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=900
        )
        if not out.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no result"]
            return {"error": tail[0]}
        data = json.loads(out.read_text())
    avg = next((v for k, v in _flatten(data) if "avg" in k.lower() and "ms" in k.lower()), None)
    return {"avg_ms": avg, "raw": data} if avg is not None else {"error": f"no average in {sorted(data)}"}


def _flatten(d, prefix=""):
    for k, v in d.items() if isinstance(d, dict) else []:
        if isinstance(v, dict):
            yield from _flatten(v, f"{prefix}{k}.")
        elif isinstance(v, int | float):
            yield f"{prefix}{k}", float(v)


def _edgebench_loop(
    row: dict, path: Path, threads: int, n: int, image: Path, workdir: Path, contract=None
) -> dict:
    """edgebench's own timing worker on the same file, batch 1 only (no throughput)."""
    from edgebench.bench.latency import LatencySettings
    from edgebench.bench.measure import Measurer, Target

    settings = LatencySettings(rounds=1, min_samples=n, time_cap_s=3600, overhead_block_s=0.01)
    measurer = Measurer(image, workdir, settings, [threads], [], 1, 0)
    try:
        options = {"contract": contract.to_dict()} if contract else {}
        _, samples = measurer.time_once(Target(row["format"], row["runtime"], path, options=options), threads)
    except Exception as exc:  # reported in the table, like the other timers' failures
        return {"error": str(exc).splitlines()[0]}
    return {"p50_ms": float(np.median(samples)) / 1e6, "n": len(samples)}


def _median(results: list[dict], key: str) -> dict:
    values = [r[key] for r in results if r.get(key) is not None]
    if not values:
        return {"error": next((r["error"] for r in results if "error" in r), "no result")}
    return {key: float(np.median(values)), "rounds": [round(v, 4) for v in values]}


def _other_p50(report: dict, fmt: str, threads: int) -> float | None:
    rows = [r for r in all_rows(report) if r["format"] == fmt]
    return next(
        (e["batch1"]["p50_ms"] for r in rows for e in r.get("latency") or [] if e["threads"] == threads), None
    )


def crosscheck(
    report_path: Path, threads: int, n: int, others: list[Path] = (), rounds: int = 3
) -> list[dict]:
    """Per evaluated row of the report: its p50 at ``threads`` beside independent timers of the same file.

    The timers (edgebench's own worker, the bare loop, Polygraphy or litert-benchmark) run in turn,
    ``rounds`` times, the order rotated: a machine that drifts by more than the tolerance between minutes
    (a VM with noisy neighbours does) shifts every timer of a round alike, so the per-round ratio of
    edgebench to the bare loop is the fair comparison; its median decides ``within_tolerance``.
    """
    from edgebench.bench.measure import round_orders

    report = load(report_path)
    if threads not in report["settings"]["threads"]:
        raise EdgebenchError(
            f"the report did not measure {threads} threads (it has {report['settings']['threads']})"
        )
    if rounds < 1:
        raise EdgebenchError(f"--rounds must be at least 1 (got {rounds})")
    export_dir = Path(report["export_dir"])
    extra = [load(p, "other report") for p in others]
    from edgebench.bench.artifacts import read_manifest
    from edgebench.runtime import Contract
    from edgebench.train.data import load_dataset

    contract = Contract.read(read_manifest(export_dir))
    ds = report["dataset"]
    pixels = load_dataset(ds["source"], None, contract.size, contract.channels, ds["split"]).x_test[:1]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        image, tensor = Path(tmp) / "image.npy", Path(tmp) / "tensor.npy"
        np.save(image, pixels)  # edgebench's worker applies the contract itself
        np.save(tensor, contract.model_input(pixels))  # what the bare loops feed
        for row in all_rows(report):
            if row["runtime"] not in _BARE or not row.get("latency"):
                continue
            path = export_dir / row["file"]
            other = "polygraphy" if row["runtime"] == "onnxruntime" else "litert_benchmark"
            timers = {
                "edgebench": lambda row=row, path=path: _edgebench_loop(
                    row, path, threads, n, image, Path(tmp), contract
                ),
                "bare": lambda row=row, path=path: bare_loop(row["runtime"], path, threads, n, tensor),
                other: (lambda path=path: polygraphy_loop(path, threads, n, tensor))
                if other == "polygraphy"
                else (lambda path=path: litert_benchmark(path, threads, n)),
            }
            results: dict[str, list[dict]] = {k: [] for k in timers}
            for order in round_orders(list(timers), rounds):
                for name in order:
                    results[name].append(timers[name]())
            ratios = [
                e["p50_ms"] / b["p50_ms"]
                for e, b in zip(results["edgebench"], results["bare"], strict=True)
                if e.get("p50_ms") and b.get("p50_ms")
            ]
            mine = next(e["batch1"]["p50_ms"] for e in row["latency"] if e["threads"] == threads)
            out = {
                "format": row["format"],
                "runtime": row["runtime"],
                "report_p50_ms": mine,
                "edgebench": _median(results["edgebench"], "p50_ms"),
                "bare": _median(results["bare"], "p50_ms"),
                other: _median(results[other], "p50_ms" if other == "polygraphy" else "avg_ms"),
                "ratio_to_bare": float(np.median(ratios)) if ratios else None,
                "ratio_rounds": [round(r, 4) for r in ratios],
                "other_reports_p50_ms": [_other_p50(o, row["format"], threads) for o in extra],
            }
            out["within_tolerance"] = bool(ratios) and abs(out["ratio_to_bare"] - 1) <= TOLERANCE
            rows.append(out)
    return rows


def markdown(rows: list[dict], threads: int, cpu: str) -> str:
    def pct(a, b):
        return f"{(a / b - 1) * 100:+.1f}%" if a is not None and b else "–"

    def fig(d: dict | None, key: str) -> str:
        if d is None:
            return "–"
        return f"{d[key]:.3f}" if d.get(key) is not None else f"({d.get('error', 'n/a')})"

    header = [
        "Format",
        "report p50 ms",
        "edgebench worker p50 ms",
        "bare loop p50 ms",
        "edgebench/bare per round",
        "Polygraphy p50 ms",
        "litert-benchmark avg ms",
        "other report p50 ms (Δ vs report)",
        "within 5%",
    ]
    lines = [
        f"Batch-1, {threads} threads, {cpu}; timers interleaved over rounds (medians of the rounds)",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for r in rows:
        others = ", ".join(f"{v:.3f} ({pct(v, r['report_p50_ms'])})" for v in r["other_reports_p50_ms"] if v)
        ratio = (
            "–"
            if r["ratio_to_bare"] is None
            else (f"{r['ratio_to_bare']:.3f} ({', '.join(f'{x:.3f}' for x in r['ratio_rounds'])})")
        )
        cells = [
            r["format"],
            f"{r['report_p50_ms']:.3f}",
            fig(r["edgebench"], "p50_ms"),
            fig(r["bare"], "p50_ms"),
            ratio,
            fig(r.get("polygraphy"), "p50_ms"),
            fig(r.get("litert_benchmark"), "avg_ms"),
            others or "–",
            "yes" if r["within_tolerance"] else "NO",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
