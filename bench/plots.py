"""Report plots (matplotlib, Agg): accuracy vs latency with the Pareto front, latency distributions and the
per-class accuracy drop heat map."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FormatStrFormatter  # noqa: E402

from edgebench.fileio import atomic_path  # noqa: E402


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both latency (lower) and accuracy (higher)."""
    front = []
    for i, (lat, acc) in enumerate(points):
        dominated = any(
            (l2 <= lat and a2 >= acc) and (l2 < lat or a2 > acc)
            for j, (l2, a2) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def _measured(report: dict) -> list[dict]:
    rows = ([report["reference"]] if report.get("reference") else []) + report["artifacts"]
    return [r for r in rows if r.get("accuracy") and r.get("best")]


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def accuracy_vs_latency(report: dict, path: Path) -> Path | None:
    rows = _measured(report)
    if not rows:
        return None
    points = [(r["best"]["p50_ms"], r["accuracy"]["top1"] * 100) for r in rows]
    front = pareto_front(points)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (r, (lat, acc)) in enumerate(zip(rows, points, strict=True)):
        lo, hi = (v * 100 for v in r["accuracy"]["ci95"])
        ax.errorbar(
            lat,
            acc,
            yerr=[[acc - lo], [hi - acc]],
            fmt="o",
            capsize=3,
            color="tab:red" if i in front else "tab:blue",
        )
        ax.annotate(r["format"], (lat, acc), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.plot(
        [points[i][0] for i in front],
        [points[i][1] for i in front],
        "--",
        color="tab:red",
        label="Pareto front",
    )
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.set_xlabel("batch-1 latency p50 (ms, fastest thread setting, log scale)")
    ax.set_ylabel("top-1 accuracy (%) with 95% CI")
    ax.set_title("Accuracy vs latency")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return _save(fig, path)


def latency_distributions(samples_ms: dict, path: Path) -> Path | None:
    if not samples_ms:
        return None
    keys = list(samples_ms)
    labels = [f"{name} ({t}t)" for name, t in keys]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(keys) + 1.5))
    ax.boxplot(
        [samples_ms[k] for k in keys], vert=False, showfliers=True, whis=(1, 99), flierprops={"markersize": 2}
    )
    ax.set_yticks(range(1, len(keys) + 1), labels, fontsize=8)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.set_xlabel("batch-1 latency (ms, log scale); whiskers p1–p99")
    ax.set_title("Latency distributions")
    ax.grid(alpha=0.3, axis="x", which="both")
    return _save(fig, path)


def per_class_drop(report: dict, path: Path) -> Path | None:
    rows = [r for r in report["artifacts"] if r.get("accuracy") and r["accuracy"].get("per_class_drop_pp")]
    if not rows:
        return None
    classes = report["dataset"]["class_names"]
    data = np.array(
        [
            [
                np.nan
                if r["accuracy"]["per_class_drop_pp"][c] is None
                else r["accuracy"]["per_class_drop_pp"][c]
                for c in classes
            ]
            for r in rows
        ]
    )
    limit = max(float(np.nanmax(np.abs(data))) if np.isfinite(data).any() else 0.0, 0.5)
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.8))
    im = ax.imshow(data, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), [r["format"] for r in rows], fontsize=8)
    for (i, j), v in np.ndenumerate(data):
        if np.isfinite(v):
            ax.text(j, i, f"{v:+.1f}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=ax, label="accuracy drop vs reference (pp); red = worse")
    ax.set_title("Per-class accuracy drop")
    return _save(fig, path)


def write_plots(out_dir: Path, report: dict, samples_ms: dict) -> dict[str, Path]:
    made = {
        "accuracy_vs_latency": accuracy_vs_latency(report, out_dir / "accuracy_vs_latency.png"),
        "latency_distributions": latency_distributions(samples_ms, out_dir / "latency_distributions.png"),
        "per_class_drop": per_class_drop(report, out_dir / "per_class_drop.png"),
    }
    return {k: v for k, v in made.items() if v is not None}
