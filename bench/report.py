"""``report.json`` (validated against ``edgebench/schemas/report.schema.json``), ``report.md`` and plots."""

from __future__ import annotations

from pathlib import Path

from edgebench import environment
from edgebench.errors import EdgebenchError
from edgebench.fileio import write_json, write_text

SCHEMA_VERSION = 1
KIND = "edgebench-bench-report"
REPORT_JSON, REPORT_MD = "report.json", "report.md"


def validate(report: dict, what: str = "report") -> None:
    """Raise EdgebenchError naming the first schema violation."""
    environment.validate(report, "report", what)


# ---------------------------------------------------------------- Markdown

COLUMNS = (
    "Format",
    "Runtime",
    "Precision",
    "Size (MB)",
    "Top-1 % (95% CI)",
    "Drop (pp)",
    "Agreement",
    "McNemar p",
    "p50 / p90 / p99 ms (threads)",
    "Best img/s (batch, threads)",
    "Status",
)


def _f(x, fmt: str, missing: str = "–") -> str:
    return missing if x is None else format(x, fmt)


def _threads(t) -> str:
    return "TF default" if t is None else f"{t}t"


def status_text(row: dict) -> str:
    status = row["status"]
    if status == "reference":
        return "reference"
    if status == "pass":
        return "pass"
    if status == "fail":
        return "FAIL: " + "; ".join(row["gate"]["problems"])
    if status == "skipped":
        return f"skipped ({row['reason']})"
    return f"ERROR ({row['reason']}): {row['message']}"


def table_row(row: dict) -> list[str]:
    acc, best = row.get("accuracy"), row.get("best")
    by_threads = {e["threads"]: e for e in row.get("latency") or []}
    lat = "–"
    if best:
        b1 = by_threads[best["p50_threads"]]["batch1"]
        lat = (
            f"{b1['p50_ms']:.2f} / {b1['p90_ms']:.2f} / {b1['p99_ms']:.2f} ({_threads(best['p50_threads'])})"
        )
    rate = "–"
    if best and best["images_per_s"]:
        where = f"b{best['images_per_s_batch']}, {_threads(best['images_per_s_threads'])}"
        rate = f"{best['images_per_s']:.1f} ({where})"
    mc = acc.get("mcnemar") if acc else None
    return [
        row["format"] + (" (reference)" if row["status"] == "reference" else ""),
        row["runtime"],
        row.get("precision") or "–",
        _f(row["bytes"] / 1e6 if row.get("bytes") else None, ".2f"),
        f"{acc['top1'] * 100:.2f} ({acc['ci95'][0] * 100:.2f}–{acc['ci95'][1] * 100:.2f})" if acc else "–",
        _f(acc.get("drop_pp") if acc else None, "+.2f"),
        _f(acc["agreement"] * 100 if acc and acc.get("agreement") is not None else None, ".2f", "–")
        + ("%" if acc and acc.get("agreement") is not None else ""),
        _f(mc["pvalue"] if mc else None, ".3g"),
        lat,
        rate,
        status_text(row),
    ]


def _md_table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def all_rows(report: dict) -> list[dict]:
    return ([report["reference"]] if report.get("reference") else []) + report["artifacts"]


def summary_table(report: dict) -> tuple[tuple[str, ...], list[list[str]]]:
    return COLUMNS, [table_row(r) for r in all_rows(report)]


def latency_table(report: dict) -> str:
    sizes = report["settings"]["batch_sizes"]
    header = [
        "Format",
        "Threads",
        "Load s",
        "RSS Δ MB",
        "p50 ms (95% CI)",
        "p90 ms",
        "p99 ms",
        "mean ± std ms",
        "min ms",
        "runs",
        "stable",
        *[f"img/s b{b}" for b in sizes],
    ]
    rows = []
    for row in all_rows(report):
        for e in row.get("latency") or []:
            b1 = e["batch1"]
            rates = {t["batch"]: t for t in e["throughput"]}
            rows.append(
                [
                    row["format"],
                    _threads(e["threads"]),
                    f"{e['load_time_s']:.2f}",
                    _f(
                        row.get("rss_delta_mb") if e["threads"] == row["latency"][0]["threads"] else None,
                        ".0f",
                    ),
                    f"{b1['p50_ms']:.3f} ({b1['median_ci95_ms'][0]:.3f}–{b1['median_ci95_ms'][1]:.3f})",
                    f"{b1['p90_ms']:.3f}",
                    f"{b1['p99_ms']:.3f}",
                    f"{b1['mean_ms']:.3f} ± {b1['std_ms']:.3f}",
                    f"{b1['min_ms']:.3f}",
                    b1["runs"],
                    "yes" if b1["stable"] else "no (time cap)",
                    *[
                        _f(
                            rates.get(b, {}).get("images_per_s"),
                            ".1f",
                            rates.get(b, {}).get("note") and "fixed" or "–",
                        )
                        for b in sizes
                    ],
                ]
            )
    return _md_table(header, rows)


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
                out.append(
                    [
                        r["format"],
                        base["format"],
                        f"{base['best']['p50_ms'] / r['best']['p50_ms']:.2f}×",
                        f"{rate:.2f}×" if rate else "–",
                    ]
                )
    return out


def markdown(report: dict) -> str:
    env, ds, st, gate = report["environment"], report["dataset"], report["settings"], report["gate"]
    oh = report["harness_overhead"]
    verdict = "PASSED" if gate["passed"] else "FAILED"
    min_acc = "off" if st["min_accuracy"] is None else f"{st['min_accuracy'] * 100:g}%"
    lines = [
        "# edgebench report",
        "",
        f"Export `{report['export_dir']}` · {ds['images']} test images from `{ds['source']}` · "
        f"created {report['created']}",
        "",
        f"**Gate {verdict}** (max drop {st['max_drop_pp']:g} pp vs the Keras reference, "
        f"min accuracy {min_acc})"
        + (f" · failed: {', '.join(gate['failed'])}" if gate["failed"] else "")
        + (f" · not evaluated: {', '.join(gate['errors'])}" if gate["errors"] else "")
        + (f" · skipped: {', '.join(gate['skipped'])}" if gate["skipped"] else ""),
        "",
        _md_table(*summary_table(report)),
        "",
        "Top-1 with its 95% Wilson interval; drop = reference − artifact in percentage points; agreement = "
        "same top-1 class as the reference; McNemar = exact test on the paired predictions. "
        "Latency: batch 1, runtime call only, at the fastest thread setting; "
        "img/s: best over batch sizes and threads.",
        "",
        "## Latency and throughput by thread count",
        "",
        latency_table(report),
        "",
        f"Harness overhead (timing a no-op, {oh['runs']} runs): median {oh['median_ns']:.0f} ns, "
        f"p99 {oh['p99_ns']:.0f} ns per sample (included in every latency sample, not subtracted).",
        "",
    ]
    ratios = speedups(report)
    if ratios:
        header = ["Format", "vs", "batch-1 p50 speed-up", "best img/s ratio"]
        lines += ["## Speed-up over the fp32 artifact of the same runtime", "", _md_table(header, ratios), ""]
    drops = [
        (r["format"], r["accuracy"]["largest_class_drop"])
        for r in report["artifacts"]
        if r.get("accuracy") and r["accuracy"].get("largest_class_drop")
    ]
    if drops:
        lines += [
            "## Largest per-class drop",
            "",
            _md_table(
                ["Format", "Class", "Drop (pp)"], [[f, d["class"], f"{d['drop_pp']:+.2f}"] for f, d in drops]
            ),
            "",
        ]
    if report["warnings"]:
        lines += ["## Warnings", "", *[f"- {w}" for w in report["warnings"]], ""]
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
    commit = env["edgebench"]["commit"]
    lines += [
        "## Environment",
        "",
        f"- CPU: {env['cpu']} ({env['machine']}), {env['logical_cores']} logical / {env['physical_cores']} "
        f"physical cores, {env['usable_cores']} usable; {env['memory_gb']} GB RAM",
        f"- Threads swept: {', '.join(map(str, env['threads']))}",
        f"- OS: {env['os']}; Python {env['python']}",
        f"- Runtimes: {versions}",
        f"- edgebench {env['edgebench']['version']}, commit {commit or 'unknown'}"
        + (" (uncommitted changes)" if env["edgebench"]["dirty"] else ""),
        "",
    ]
    if report.get("plots"):
        lines += ["## Plots", "", *[f"![{name}]({path})" for name, path in report["plots"].items()], ""]
    return "\n".join(lines)


def write_all(out_dir: Path, report: dict, samples_ms: dict, plots: bool = True) -> dict[str, Path]:
    """Plots first (their names go into the report), then the validated report.json and report.md."""
    paths: dict[str, Path] = {}
    report["plots"] = {}
    if plots:
        from edgebench.bench.plots import write_plots

        for name, path in write_plots(out_dir, report, samples_ms).items():
            report["plots"][name] = path.name
            paths[name] = path
    validate(report)
    paths["json"] = write_json(out_dir / REPORT_JSON, report)
    paths["md"] = write_text(out_dir / REPORT_MD, markdown(report))
    return paths


def load(path, what: str = "report") -> dict:
    """A report.json of this schema version, validated; one-line errors otherwise."""
    from edgebench.fileio import read_json

    report = read_json(path, what)
    if not isinstance(report, dict) or report.get("kind") != KIND:
        raise EdgebenchError(f"{path} is not an edgebench bench report")
    if report.get("schema_version") != SCHEMA_VERSION:
        raise EdgebenchError(
            f"{path} has report schema_version {report.get('schema_version')!r}; "
            f"this edgebench reads {SCHEMA_VERSION}"
        )
    validate(report, f"{what} {path}")
    return report
