"""What ``edgebench tune`` leaves behind: the winner as a named format of the export, the Pareto plot and the
summary table.

The winner is copied into the export folder as ``<family>-tuned`` (``onnx-int8-tuned``,
``tflite-int8-tuned``, ``onnx-tuned`` when float wins, ...) with a manifest entry built like the export
pipeline's (``export.entries.ok_entry``: hash, size, I/O, precision, kernel coverage, recipe), so bench and
bundle take it like any other format. Its parity is measured against the Keras model on the tuning
validation images (train split), not on test images: the tuner never reads the test split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.ticker import FormatStrFormatter

from edgebench.bench.plots import pareto_front, plt
from edgebench.export import entries as manifest_entries
from edgebench.export import manifest as mf
from edgebench.export.parity import compare
from edgebench.export.registry import FP32_TOLERANCE
from edgebench.fileio import atomic_path
from edgebench.runtime import RUNTIMES, copy_artifact
from edgebench.tune.space import SUFFIX, p50

_COLORS = {"onnxruntime": "tab:blue", "litert": "tab:orange", "openvino": "tab:purple"}


def tuned_name(family: str) -> str:
    return f"{family}-tuned"


def install(t, winner: dict) -> mf.ArtifactEntry:
    """Copy the winner into ``t.export_dir`` and enter it in the manifest (replacing an earlier tuned one)."""
    name = tuned_name(winner["family"])
    filename = f"model.{name}{SUFFIX[winner['runtime']]}"
    sidecars = RUNTIMES[winner["runtime"]].sidecars  # an OpenVINO IR's .bin goes with it
    with atomic_path(t.export_dir / filename, sidecars) as tmp:
        copy_artifact(winner["path"], tmp, winner["runtime"])
    probs = np.load(t.cands / f"{winner['slug']}.val_probs.npy")
    tolerance = None if winner["quantized"] else FP32_TOLERANCE  # a float winner is gated like export's
    parity = compare(probs, np.load(t.work / "reference_probs.npy"), tolerance)
    parity["images_from"] = "train split: the tuning validation images (tune.json data.validation)"
    built = winner["build"]
    cov = built.get("coverage")
    description = f"edgebench tune winner: {winner['family']} ({winner['label']})"
    options = {
        "description": description,
        "tuned": True,
        "tune_json": str(t.path),
        "candidate": winner["key"],
        "settings": winner["settings"],
        "excluded_nodes": winner.get("excluded_nodes"),
        "validation": t.state["data"]["validation"],
        "calibration": {  # the export manifest's calibration block, for the tune's own calibration set
            "source": t.state["data"]["source"],
            "split": t.state["data"]["split"],
            **t.state["data"]["calibration"],
            "method": winner["settings"].get("calib_method"),
        },
        "validation_top1": winner["val_top1"],
        "validation_drop_pp": winner["drop_pp"],
        "p50_ms": winner.get("runoff_p50_ms") or winner["p50_ms"],
        "decision": t.state.get("decision"),
    }
    entry = manifest_entries.ok_entry(
        name,
        winner["runtime"],
        t.export_dir / filename,
        quantized=winner["quantized"],
        coverage=cov,
        file=filename,
        options=options,
        wall_time_s=built["build_s"],
        **built["info"],
        parity=parity,
        recipe=(built.get("extra") or {}).get("recipe"),
    )
    manifest = mf.ExportManifest.read(t.export_dir)  # fresh: keep what others wrote meanwhile
    kept = []
    for old in manifest.artifacts:
        if (old.options or {}).get("tuned"):  # one tuned winner per export
            path = manifest.path_of(old)  # confined to the export folder
            if path is not None and old.file != filename:
                path.unlink(missing_ok=True)
            continue
        kept.append(old)
    manifest.replace(artifacts=(*kept, entry)).write()
    return entry


def pareto_plot(records: list[dict], winner: dict | None, max_drop: float, reference: dict, path: Path):
    """Validation top-1 vs batch-1 p50, marker area by file size; passing filled, failing hollow."""
    ok = [r for r in records if r["status"] == "ok"]
    if not ok:
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    points = [(p50(r), r["val_top1"] * 100) for r in ok]
    front = pareto_front(points)
    for i, (r, (lat, acc)) in enumerate(zip(ok, points, strict=True)):
        color = _COLORS.get(r["runtime"], "tab:gray")
        passed = r["drop_pp"] <= max_drop
        ax.scatter(
            lat, acc, s=20 + 4 * r["bytes"] / 1e6, facecolors=color if passed else "none", edgecolors=color
        )
        if i in front or r is winner:  # labels on the front only: the rest are in tune.json and the table
            text = f"{r['family']} {r['label']}" if r["quantized"] else r["family"]
            ax.annotate(text, (lat, acc), textcoords="offset points", xytext=(5, 3), fontsize=6)
    ax.plot([points[i][0] for i in front], [points[i][1] for i in front], "--", color="tab:red", lw=1)
    if winner is not None:
        ax.scatter(
            winner.get("runoff_p50_ms") or winner["p50_ms"],
            winner["val_top1"] * 100,
            marker="*",
            s=250,
            color="gold",
            edgecolors="black",
            zorder=5,
            label=f"winner: {winner['family']}",
        )
    ref = reference["top1"] * 100
    ax.axhline(ref, color="gray", lw=0.8, label=f"Keras reference {ref:.2f}%")
    ax.axhline(ref - max_drop, color="gray", lw=0.8, ls=":", label=f"reference - {max_drop:g} pp")
    for rt, color in _COLORS.items():
        ax.scatter([], [], color=color, label=rt)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(FormatStrFormatter("%g"))
    ax.set_xlabel("batch-1 p50 (ms, log scale)")
    ax.set_ylabel(f"validation top-1 (%), {reference['images']} train hold-out images")
    ax.set_title("edgebench tune: accuracy vs latency (marker area: file size; hollow: over the drop)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def summary_rows(state: dict) -> tuple[list[str], list[list[str]]]:
    """Header and one row per candidate, fastest first, failed builds last."""
    header = ["candidate", "runtime", "val top-1", "drop pp", "p50 ms", "MB", "int8 convs", "build", "result"]
    rows = []
    records = sorted(state["candidates"].values(), key=lambda r: (r["status"] != "ok", r.get("p50_ms") or 0))
    for r in records:
        name = f"{r['family']} ({r['label']})" if r["quantized"] else r["family"]
        star = " *" if r["key"] == state.get("winner") else ""
        if r["status"] != "ok":
            rows.append([name, r["runtime"], "-", "-", "-", "-", "-", "-", f"failed: {r['reason']}"])
            continue
        cov, build = r["build"].get("coverage") or {}, _build_text(r["build"])
        lat = f"{r['p50_ms']:.2f}" + (f" ({r['runoff_p50_ms']:.2f})" if r.get("runoff_p50_ms") else "")
        rows.append(
            [
                name + star,
                r["runtime"],
                f"{r['val_top1']:.2%}",
                f"{r['drop_pp']:+.2f}",
                lat,
                f"{r['bytes'] / 1e6:.1f}",
                f"{cov.get('int8_convolutions', '-')}/{cov.get('convolutions', '-')}",
                build,
                "pass" if r["drop_pp"] <= state["max_drop_pp"] else "fail",
            ]
        )
    return header, rows


def _build_text(built: dict) -> str:
    if built.get("source") == "export":
        return "export"
    peak = built.get("peak_rss_mb")
    return f"{built['build_s']:.0f}s" + (f" {peak / 1024:.1f}G" if peak else "")


def progress_line(rec: dict) -> str:
    name = f"{rec['family']} ({rec['label']})"
    if rec["status"] != "ok":
        return f"{name}: failed ({rec['reason']}: {rec['message']})"
    cov = rec["build"].get("coverage") or {}
    return (
        f"{name}: top-1 {rec['val_top1']:.2%} (drop {rec['drop_pp']:+.2f} pp)  p50 {rec['p50_ms']:.2f} ms  "
        f"{rec['bytes'] / 1e6:.1f} MB  int8 convs {cov.get('int8_convolutions', '-')}/"
        f"{cov.get('convolutions', '-')}  build {_build_text(rec['build'])}"
    )
