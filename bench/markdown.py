"""``report.md`` and the terminal summary table of a bench report."""

from __future__ import annotations

from edgebench import cpu
from edgebench.bench.report import all_rows

COLUMNS = (
    "Format",
    "Runtime",
    "Precision",
    "Size (MB)",
    "Top-1 % (95% CI)",
    "Drop (pp)",
    "McNemar p",
    "p50 / p90 / p99 ms (threads)",
    "Samples",
    "Spread",
    "Overhead",
    "Peak MB",
    "Best img/s (batch, threads)",
    "Status",
)


def p99_text(batch1: dict) -> str:
    return f"{batch1['p99_ms']:.2f}" if batch1.get("p99_ms") is not None else f"n/a (n={batch1['runs']})"


def _f(x, fmt: str, missing: str = "–") -> str:
    return missing if x is None else format(x, fmt)


def status_text(row: dict) -> str:
    status = row["status"]
    if status in ("reference", "pass"):
        return status
    if status == "fail":
        return "FAIL: " + "; ".join(row["gate"]["problems"])
    if status == "skipped":
        return f"skipped ({row['reason']})"
    return f"ERROR ({row['reason']}): {row['message']}"


def _entry(row: dict) -> dict | None:
    best = row.get("best")
    if not best:
        return None
    return next(e for e in row["latency"] if e["threads"] == best["p50_threads"])


def table_row(row: dict) -> list[str]:
    acc, best, e = row.get("accuracy"), row.get("best"), _entry(row)
    lat = samples = spread = overhead = "–"
    if e:
        b1 = e["batch1"]
        lat = f"{b1['p50_ms']:.2f} / {b1['p90_ms']:.2f} / {p99_text(b1)} ({e['threads']}t)"
        samples = f"{b1['runs']} ({e['rounds']} rounds)"
        spread = f"{(b1['spread'] - 1) * 100:.1f}%" + ("" if b1["stable"] else " UNSTABLE")
        if e["overhead"]:  # None: not measured (the C runner's row)
            overhead = f"{e['overhead']['overhead_us']:.1f} µs ({e['overhead']['overhead_pct']:.2f}%)"
    rate = "–"
    if best and best["images_per_s"]:
        rate = f"{best['images_per_s']:.1f} (b{best['images_per_s_batch']}, {best['images_per_s_threads']}t)"
    mc = acc.get("mcnemar") if acc else None
    return [
        row["format"] + (" (reference)" if row["status"] == "reference" else ""),
        row["runtime"],
        row.get("precision") or "–",
        _f(row["bytes"] / 1e6 if row.get("bytes") else None, ".2f"),
        f"{acc['top1'] * 100:.2f} ({acc['ci95'][0] * 100:.2f}–{acc['ci95'][1] * 100:.2f})" if acc else "–",
        _f(acc.get("drop_pp") if acc else None, "+.2f"),
        _f(mc["pvalue"] if mc else None, ".3g"),
        lat,
        samples,
        spread,
        overhead,
        _f(row.get("peak_memory_mb"), ".0f"),
        rate,
        status_text(row),
    ]


def md_table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def summary_table(report: dict) -> tuple[tuple[str, ...], list[list[str]]]:
    return COLUMNS, [table_row(r) for r in all_rows(report)]


def latency_table(report: dict) -> str:
    sizes = sorted(
        {t["batch"] for r in all_rows(report) for e in r.get("latency") or [] for t in e["throughput"]}
    )
    header = [
        "Format",
        "Threads",
        "Load s",
        "Cold ms",
        "p50 ms (95% CI)",
        "Round p50s ms",
        "Spread",
        "p90 ms",
        "p99 ms",
        "Samples",
        "Overhead µs",
        "Peak MB",
        *[f"img/s b{b}" for b in sizes],
    ]
    rows = []
    for row in all_rows(report):
        for e in row.get("latency") or []:
            b1, rates = e["batch1"], {t["batch"]: t["images_per_s"] for t in e["throughput"]}
            rows.append(
                [
                    row["format"],
                    e["threads"],
                    f"{e['load_time_s']:.2f}",
                    f"{e['cold_ms']:.1f}",
                    f"{b1['p50_ms']:.3f} ({b1['median_ci95_ms'][0]:.3f}–{b1['median_ci95_ms'][1]:.3f})",
                    ", ".join(f"{v:.3f}" for v in b1["round_p50_ms"]),
                    f"{(b1['spread'] - 1) * 100:.1f}%" + ("" if b1["stable"] else " UNSTABLE"),
                    f"{b1['p90_ms']:.3f}",
                    p99_text(b1),
                    b1["runs"],
                    f"{e['overhead']['overhead_us']:.1f}" if e["overhead"] else "–",
                    _f(e["peak_memory_mb"], ".0f"),
                    *[_f(rates.get(b), ".1f") for b in sizes],
                ]
            )
    return md_table(header, rows)


def speedups(report: dict) -> list[list[str]]:
    """Each artifact against the fp32 artifact of its own runtime: batch-1 p50 and best img/s ratios."""
    rows = [r for r in report["artifacts"] if r.get("best")]
    out = []
    for runtime in dict.fromkeys(r["runtime"] for r in rows):
        base = next((r for r in rows if r["runtime"] == runtime and r["precision"] == "fp32"), None)
        if base is None:
            continue
        for r in rows:
            if r["runtime"] == runtime and r is not base:
                rate = (r["best"]["images_per_s"] or 0) / (base["best"]["images_per_s"] or float("inf"))
                ratio = base["best"]["p50_ms"] / r["best"]["p50_ms"]
                note = "" if ratio >= 1 else " (slower than fp32)"
                out.append(
                    [r["format"], base["format"], f"{ratio:.2f}×{note}", f"{rate:.2f}×" if rate else "–"]
                )
    return out


def _reference_name(report: dict) -> str:
    ref = report.get("reference")
    return "Keras" if not ref or ref["format"] == "keras" else f"{ref['format']} ({ref['runtime']})"


def _emulated_banner(env: dict) -> list[str]:
    if not (env.get("device") or {}).get("emulated"):
        return []
    return [
        f"**Emulated device** (`{env['device']['url']}`): top-1 and the per-image agreement with the host "
        "are this CPU model's; every time below is the emulator's, 100-500× a real core's: no device figure.",
        "",
    ]


def _environment_section(env: dict) -> list[str]:
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
    commit = env["edgebench"]["commit"]
    device = env.get("device")
    where = []
    if device:
        emulated = " (EMULATED: its latencies are not this device's figures)" if device["emulated"] else ""
        where = [f"- Device: `{device['url']}`{emulated}; bundles built on {env.get('built_on')}"]
    return [
        "## Environment",
        "",
        *where,
        f"- CPU: {env['cpu']} ({env['machine']}), {env['logical_cores']} logical / {env['physical_cores']} "
        f"physical cores, {env['usable_cores']} usable; {env['memory_gb']} GB RAM",
        f"- CPU features ({env['cpu_features']['source']}): "
        + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in env["cpu_features"]["flags"].items()),
        f"- Threads swept: {', '.join(map(str, env['threads']))} (ONNX Runtime intra-op, LiteRT num_threads, "
        "TensorFlow intra-op with inter-op 1; set in each worker before its runtime starts)",
        f"- OS: {env['os']}; Python {env['python']}",
        f"- Runtimes: {versions}",
        f"- edgebench {env['edgebench']['version']}, commit {commit or 'unknown'}"
        + (" (uncommitted changes)" if env["edgebench"]["dirty"] else ""),
        "",
    ]


def markdown(report: dict) -> str:
    env, ds, st, gate = report["environment"], report["dataset"], report["settings"], report["gate"]
    lat = st["latency"]
    verdict = "PASSED" if gate["passed"] else "FAILED"
    min_acc = "off" if st["min_accuracy"] is None else f"{st['min_accuracy'] * 100:g}%"
    lines = [
        "# edgebench report",
        "",
        f"Export `{report['export_dir']}` · {ds['images']} test images from `{ds['source']}` · "
        f"created {report['created']}",
        "",
        f"**CPU: {cpu.summary(env['cpu_features'])}**",
        "",
        *_emulated_banner(env),
        f"**Gate {verdict}** (max drop {st['max_drop_pp']:g} pp vs the {_reference_name(report)} reference, "
        f"min accuracy {min_acc}"
        + (f", required: {', '.join(st['require'])}" if st["require"] else "")
        + ")"
        + (f" · failed: {', '.join(gate['failed'])}" if gate["failed"] else "")
        + (f" · not evaluated: {', '.join(gate['errors'])}" if gate["errors"] else "")
        + (f" · skipped: {', '.join(gate['skipped'])}" if gate["skipped"] else ""),
        "",
        md_table(*summary_table(report)),
        "",
        "Top-1 with its 95% Wilson interval; drop = reference − artifact in percentage points; "
        "McNemar = exact test on the paired predictions. Latency: batch 1, the runtime's own call only, "
        f"each row and thread count timed in a fresh worker process over {lat['rounds']} rounds (order "
        "rotated), pooled; the fastest thread count is shown. p99 only from ≥1,000 samples. "
        "Spread: largest/smallest round median − 1 "
        f"(over {(lat['unstable_spread'] - 1) * 100:.0f}%: UNSTABLE). Overhead: per-call timing loop "
        "mean − block-timed loop mean of the same call (5 interleaved pairs). Peak MB: worker peak RSS "
        "minus its RSS with only the runtime imported.",
        "",
        "## Latency and throughput by thread count",
        "",
        latency_table(report),
        "",
    ]
    ratios = speedups(report)
    if ratios:
        header = ["Format", "vs", "batch-1 p50 speed-up", "best img/s ratio"]
        lines += ["## Speed-up over the fp32 artifact of the same runtime", "", md_table(header, ratios), ""]
    drops = [
        (r["format"], r["accuracy"]["largest_class_drop"])
        for r in report["artifacts"]
        if r.get("accuracy") and r["accuracy"].get("largest_class_drop")
    ]
    if drops:
        rows = [[f, d["class"], f"{d['drop_pp']:+.2f}"] for f, d in drops]
        lines += ["## Largest per-class drop", "", md_table(["Format", "Class", "Drop (pp)"], rows), ""]
    if report["warnings"]:
        lines += ["## Warnings", "", *[f"- {w}" for w in report["warnings"]], ""]
    lines += _environment_section(env)
    if report.get("plots"):
        lines += ["## Plots", "", *[f"![{name}]({path})" for name, path in report["plots"].items()], ""]
    return "\n".join(lines)
