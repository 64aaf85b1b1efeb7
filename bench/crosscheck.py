"""``edgebench crosscheck``: a bench report's batch-1 p50s against independent timers of the same files.

Each timer (``bench.crosscheck_timers``) is its own process, kept warm while the others run; all but
edgebench's own are functions of ``edgebench.runtime.bare`` (run as a module: numpy and the one runtime,
nothing of edgebench's stages):
- ``bare``: the plainest loop a user would write: ``Interpreter.invoke()`` (LiteRT) or ``session.run``
  (ONNX Runtime) with ``time.perf_counter_ns`` around each call, same thread count;
- ``polygraphy`` (ONNX files, where installed): Polygraphy's ``OnnxrtRunner`` on a session with the same
  thread count, its own per-call ``last_inference_time()``;
- ``edgebench``: edgebench's own timing worker (``worker`` task ``serve``: the same runner and timed call).
The timers take turns in short blocks of ``iterations`` calls, the order rotated every round, so the
machine's drift (a VM with noisy neighbours drifts by more than the tolerance between minutes) hits
adjacent blocks alike: the per-round ratio edgebench/bare is the fair comparison, and a median ratio more
than 5% from 1 is flagged — the harness would be measuring something other than the model.
``litert-benchmark`` (TFLite files: ai-edge-litert's benchmark tool, its average) is a one-shot tool: it
runs three times between the rounds.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from edgebench.bench.crosscheck_timers import (
    Served,
    bare_loop,
    edgebench_loop,
    litert_benchmark,
    polygraphy_loop,
)
from edgebench.bench.report import BenchReport, all_rows
from edgebench.errors import EdgebenchError
from edgebench.runtime.bare import BARE, POLYGRAPHY_RUNTIMES

TOLERANCE = 0.05
# The command's defaults: a thread count bench sweeps by default, and blocks short enough to interleave.
THREADS, ITERATIONS, ROUNDS = 2, 50, 60


def _other_p50(report: dict, fmt: str, threads: int) -> float | None:
    rows = [r for r in all_rows(report) if r["format"] == fmt]
    return next(
        (e["batch1"]["p50_ms"] for r in rows for e in r.get("latency") or [] if e["threads"] == threads), None
    )


def _summary(blocks: list[list[int]]) -> dict:
    pooled = np.concatenate([np.asarray(b, float) for b in blocks]) / 1e6
    return {"p50_ms": float(np.median(pooled)), "n": int(len(pooled)), "rounds": len(blocks)}


def _ratio(edgebench: list[list[int]], bare: list[list[int]]) -> dict:
    """Median over rounds of (edgebench block median / bare block median), with a bootstrap 95% interval."""
    from scipy.stats import bootstrap

    ratios = np.array([np.median(e) / np.median(b) for e, b in zip(edgebench, bare, strict=True)])
    out = {
        "median": float(np.median(ratios)),
        "min": float(ratios.min()),
        "max": float(ratios.max()),
        "rounds": [round(float(r), 4) for r in ratios],
    }
    if len(ratios) >= 3:
        ci = bootstrap(
            (ratios,), np.median, n_resamples=2000, method="percentile", random_state=np.random.default_rng(0)
        ).confidence_interval
        out["ci95"] = [float(ci.low), float(ci.high)]
    return out


def _timers(row: dict, path: Path, threads: int, files: dict, tmp: Path, contract) -> dict[str, Served]:
    from edgebench.runtime import RunnerSpec

    spec = RunnerSpec(row["runtime"], str(path), threads, {"contract": contract.to_dict()})
    stem = row["format"]
    starts = {
        "edgebench": lambda: edgebench_loop(spec, files["image"], tmp, tmp / f"{stem}-edgebench.log"),
        "bare": lambda: bare_loop(row["runtime"], path, threads, files["tensor"], tmp / f"{stem}-bare.log"),
    }
    if row["runtime"] in POLYGRAPHY_RUNTIMES:
        starts["polygraphy"] = lambda: polygraphy_loop(
            path, threads, files["tensor"], tmp / f"{stem}-poly.log"
        )
    timers: dict[str, Served] = {}
    for name, start in starts.items():
        try:
            timers[name] = start()
        except EdgebenchError as exc:
            if name in ("edgebench", "bare"):
                for t in timers.values():
                    t.close()
                raise
            timers[name] = exc  # an optional timer that cannot run is reported, not fatal
    return timers


def _check_row(row: dict, path: Path, *, threads: int, n: int, rounds: int, files, tmp, contract, extra):
    """One report row against its independent timers: ``rounds`` rotated blocks of ``n`` calls each."""
    from edgebench.bench.measure import round_orders

    try:
        timers = _timers(row, path, threads, files, tmp, contract)
    except EdgebenchError as exc:  # reported in the table, like any timer's failure
        return {"format": row["format"], "runtime": row["runtime"], "error": str(exc)}
    live = {k: t for k, t in timers.items() if isinstance(t, Served)}
    blocks: dict[str, list[list[int]]] = {k: [] for k in live}
    benchmark_at = {0, rounds // 2, rounds - 1} if row["runtime"] == "litert" else set()
    litert: list[dict] = []
    try:
        for r, order in enumerate(round_orders(list(live), rounds)):
            for name in order:
                blocks[name].append(live[name].block(n))
            if r in benchmark_at:  # the warm timers idle meanwhile
                litert.append(litert_benchmark(path, threads, max(n, 100)))
    finally:
        worker_modules = live["edgebench"].info.get("worker_modules")
        for t in live.values():
            t.close()
    mine = next(e["batch1"]["p50_ms"] for e in row["latency"] if e["threads"] == threads)
    out = {
        "format": row["format"],
        "runtime": row["runtime"],
        "report_p50_ms": mine,
        "block_calls": n,
        "edgebench_worker_modules": worker_modules,
        **{k: _summary(v) for k, v in blocks.items()},
        "ratio_to_bare": _ratio(blocks["edgebench"], blocks["bare"]),
        "other_reports_p50_ms": [_other_p50(o, row["format"], threads) for o in extra],
    }
    for k, t in timers.items():
        if not isinstance(t, Served):
            out[k] = {"error": str(t)}
    if litert:
        avgs = [x["avg_ms"] for x in litert if "avg_ms" in x]
        out["litert_benchmark"] = {"avg_ms": float(np.median(avgs)), "runs": len(avgs)} if avgs else litert[0]
    out["within_tolerance"] = abs(out["ratio_to_bare"]["median"] - 1) <= TOLERANCE
    return out


def crosscheck(
    report_path: Path, threads: int, n: int, others: list[Path] = (), rounds: int = ROUNDS
) -> list[dict]:
    """Per evaluated row of the report: its p50 at ``threads`` beside independent timers of the same file.

    ``rounds`` rounds; in each, every timer runs one block of ``n`` calls, the order rotated between
    rounds (``round_orders``). The per-round ratio edgebench/bare compares blocks seconds apart, so the
    machine's slower drift cancels; its median decides ``within_tolerance``.
    """
    from edgebench.export.manifest import ExportManifest
    from edgebench.train.data.dataset import load_dataset

    report = BenchReport.read(report_path).to_dict()
    if threads not in report["settings"]["threads"]:
        raise EdgebenchError(
            f"the report did not measure {threads} threads (it has {report['settings']['threads']})"
        )
    if rounds < 1:
        raise EdgebenchError(f"--timer-rounds must be at least 1 (got {rounds})")
    export_dir = Path(report["export_dir"])
    extra = [BenchReport.read(p, "other report").to_dict() for p in others]
    contract = ExportManifest.read(export_dir).model_contract()
    ds = report["dataset"]
    pixels = load_dataset(
        ds["source"], None, size=contract.size, channels=contract.channels, split=ds["split"]
    ).x_test[:1]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = {"image": tmp / "image.npy", "tensor": tmp / "tensor.npy"}
        np.save(files["image"], pixels)  # edgebench's worker applies the contract itself
        np.save(files["tensor"], contract.model_input(pixels))  # what the bare loops feed
        return [
            _check_row(
                row,
                export_dir / row["file"],
                threads=threads,
                n=n,
                rounds=rounds,
                files=files,
                tmp=tmp,
                contract=contract,
                extra=extra,
            )
            for row in all_rows(report)
            if row["runtime"] in BARE and row.get("latency")
        ]


def markdown(rows: list[dict], threads: int, cpu: str) -> str:
    def pct(a, b):
        return f"{(a / b - 1) * 100:+.1f}%" if a is not None and b else "–"

    def fig(d: dict | None, key: str) -> str:
        if d is None:
            return "–"
        return f"{d[key]:.3f}" if d.get(key) is not None else f"({d.get('error', 'n/a')})"

    def ratio(r: dict) -> str:
        q = r["ratio_to_bare"]
        ci = f"; 95% CI {q['ci95'][0]:.3f}–{q['ci95'][1]:.3f}" if "ci95" in q else ""
        return f"{q['median']:.3f}{ci}; rounds {q['min']:.3f}–{q['max']:.3f}"

    header = [
        "Format",
        "report p50 ms",
        "edgebench worker p50 ms",
        "bare loop p50 ms",
        "edgebench/bare (median of rounds)",
        "Polygraphy p50 ms",
        "litert-benchmark avg ms",
        "other report p50 ms (Δ vs report)",
        "within 5%",
    ]
    n = next((r for r in rows if "block_calls" in r), {})
    lines = [
        f"Batch-1, {threads} threads, {cpu}; warm timers take turns in blocks of {n.get('block_calls', '?')} "
        f"calls over {n.get('bare', {}).get('rounds', '?')} rounds, order rotated (p50 of all their samples)",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['format']} | " + " | ".join(["–"] * 7) + f" | error: {r['error']} |")
            continue
        others = ", ".join(f"{v:.3f} ({pct(v, r['report_p50_ms'])})" for v in r["other_reports_p50_ms"] if v)
        cells = [
            r["format"],
            f"{r['report_p50_ms']:.3f}",
            fig(r["edgebench"], "p50_ms"),
            fig(r["bare"], "p50_ms"),
            ratio(r),
            fig(r.get("polygraphy"), "p50_ms"),
            fig(r.get("litert_benchmark"), "avg_ms"),
            others or "–",
            "yes" if r["within_tolerance"] else "NO",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
