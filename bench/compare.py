"""``edgebench compare OLD NEW``: paired accuracy and latency changes per artifact, with a verdict.

Accuracy is compared on the same test images (checked by the reports' test-set hash) with McNemar's exact
test on the per-image correctness of the two runs: a 1 pp drop on 10,000 images is ~100 discordant pairs,
far beyond chance, where overlapping Wilson intervals would call it noise. Latency: the ratio of the two
pooled batch-1 medians with a bootstrap 95% interval; a regression (improvement) needs the whole interval
above 1 + tolerance (below 1 - tolerance), so the few-percent drift between runs of the same files is not
flagged. An artifact that passed the gate before and does not now, or that disappeared, is a regression.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgebench.bench.report import BenchReport, all_rows, read_predictions
from edgebench.bench.stats import mcnemar_exact

REGRESSION, IMPROVEMENT, NOISE, NEW = "regression", "improvement", "within noise", "new"
_GOOD = {"pass", "reference"}


@dataclass
class CompareSettings:
    alpha: float = 0.05  # McNemar significance level
    latency_tolerance: float = 0.05  # relative change of the median that counts as a change at all
    resamples: int = 2000
    seed: int = 0


@dataclass
class Comparison:
    rows: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[str]:
        return [r["format"] for r in self.rows if r["verdict"] == REGRESSION]


def paired_accuracy(old_pred, new_pred, labels, alpha: float) -> dict:
    """McNemar on the per-image correctness of two runs over the same images."""
    old_ok, new_ok = np.asarray(old_pred) == labels, np.asarray(new_pred) == labels
    test = mcnemar_exact(old_ok, new_ok)
    worse, better = test["ref_only_correct"], test["artifact_only_correct"]
    verdict = NOISE
    if test["pvalue"] < alpha:
        verdict = REGRESSION if worse > better else IMPROVEMENT
    return {
        "old": float(old_ok.mean()),
        "new": float(new_ok.mean()),
        "change_pp": float(new_ok.mean() - old_ok.mean()) * 100,
        "only_old_correct": worse,
        "only_new_correct": better,
        "pvalue": test["pvalue"],
        "verdict": verdict,
    }


def median_ratio(old_ms, new_ms, s: CompareSettings) -> dict:
    """new/old ratio of medians with a percentile-bootstrap 95% interval (scipy.stats.bootstrap)."""
    from scipy.stats import bootstrap

    old_ms, new_ms = np.asarray(old_ms, float), np.asarray(new_ms, float)

    def ratio(a, b, axis=-1):
        return np.median(b, axis=axis) / np.median(a, axis=axis)

    ci = bootstrap(
        (old_ms, new_ms),
        ratio,
        n_resamples=s.resamples,
        method="percentile",
        random_state=np.random.default_rng(s.seed),
        vectorized=True,
    ).confidence_interval
    lo, hi = float(ci.low), float(ci.high)
    verdict = NOISE
    if lo > 1 + s.latency_tolerance:
        verdict = REGRESSION
    elif hi < 1 - s.latency_tolerance:
        verdict = IMPROVEMENT
    return {
        "old_p50_ms": float(np.median(old_ms)),
        "new_p50_ms": float(np.median(new_ms)),
        "ratio": float(ratio(old_ms, new_ms)),
        "ratio_ci95": [lo, hi],
        "verdict": verdict,
    }


def _cpu(report: dict) -> tuple:
    features = report["environment"]["cpu_features"]
    return features["model"], features["arch"], {k for k, v in features["flags"].items() if v}


def compare_rows(
    name: str, old: dict | None, new: dict | None, arrays: tuple | None, s: CompareSettings, missing_ok=False
) -> dict:
    row = {
        "format": name,
        "old_status": old and old["status"],
        "new_status": new and new["status"],
        "accuracy": None,
        "latency": [],
        "verdict": NOISE,
        "notes": [],
    }
    if new is None:
        row.update(verdict=NOISE if missing_ok else REGRESSION, notes=["missing from the new report"])
        return row
    if old is None:
        row["verdict"] = NEW
        return row
    verdicts = []
    if old["status"] in _GOOD and new["status"] not in _GOOD:
        verdicts.append(REGRESSION)
        row["notes"].append(f"status {old['status']} -> {new['status']}")
    elif old["status"] not in _GOOD and new["status"] in _GOOD:
        verdicts.append(IMPROVEMENT)
        row["notes"].append(f"status {old['status']} -> {new['status']}")
    if arrays is not None:
        a, b, labels = arrays
        key = f"pred__{name}"
        if labels is not None and key in a and key in b:
            row["accuracy"] = paired_accuracy(a[key], b[key], labels, s.alpha)
            verdicts.append(row["accuracy"]["verdict"])
        for entry in new.get("latency") or []:
            key = f"latency_ms__{name}__{entry['threads']}"
            if key in a and key in b:
                row["latency"].append({"threads": entry["threads"], **median_ratio(a[key], b[key], s)})
        verdicts += [e["verdict"] for e in row["latency"]]
    if REGRESSION in verdicts:
        row["verdict"] = REGRESSION
    elif IMPROVEMENT in verdicts:
        row["verdict"] = IMPROVEMENT
    return row


def compare_reports(
    old: dict, new: dict, old_arrays: dict, new_arrays: dict, s: CompareSettings | None = None
):
    s = s or CompareSettings()
    result = Comparison()
    if _cpu(old) != _cpu(new):
        result.warnings.append(
            f"reports come from different CPUs ({old['environment']['cpu']} vs {new['environment']['cpu']}): "
            "latency changes compare machines, not models"
        )
    arrays = (old_arrays, new_arrays, old_arrays["labels"])
    if old["dataset"]["test_set_sha256"] != new["dataset"]["test_set_sha256"]:
        result.warnings.append(
            f"test sets differ ({old['dataset']['images']} images of {old['dataset']['source']} vs "
            f"{new['dataset']['images']} of {new['dataset']['source']}): latency compared, accuracy unpaired"
        )
        arrays = (old_arrays, new_arrays, None)
    old_rows = {r["format"]: r for r in all_rows(old)}
    new_rows = {r["format"]: r for r in all_rows(new)}
    # a device report holds the bundleable artifacts only: a row it lacks is not a regression
    missing_ok = bool(new["environment"].get("device"))
    for name in dict.fromkeys([*old_rows, *new_rows]):
        row = compare_rows(name, old_rows.get(name), new_rows.get(name), arrays, s, missing_ok=missing_ok)
        result.rows.append(row)
    return result


def compare_files(old_path, new_path, s: CompareSettings | None = None) -> Comparison:
    old = BenchReport.read(old_path, "old report").to_dict()
    new = BenchReport.read(new_path, "new report").to_dict()
    return compare_reports(
        old, new, read_predictions(Path(old_path), old), read_predictions(Path(new_path), new), s
    )


def markdown(result: Comparison) -> str:
    from edgebench.bench.markdown import md_table

    header = [
        "Format",
        "Status",
        "Top-1 old → new (pp)",
        "McNemar (only old / only new right, p)",
        "p50 new/old [95% CI] (threads)",
        "Verdict",
    ]
    rows = []
    for r in result.rows:
        acc = r["accuracy"]
        acc_txt = f"{acc['old'] * 100:.2f} → {acc['new'] * 100:.2f} ({acc['change_pp']:+.2f})" if acc else "–"
        mc = f"{acc['only_old_correct']} / {acc['only_new_correct']}, p={acc['pvalue']:.2g}" if acc else "–"
        lat = (
            "; ".join(
                f"{e['ratio']:.3f} [{e['ratio_ci95'][0]:.3f}–{e['ratio_ci95'][1]:.3f}] ({e['threads']}t)"
                for e in r["latency"]
            )
            or "–"
        )
        status = f"{r['old_status'] or '–'} → {r['new_status'] or '–'}"
        verdict = r["verdict"] + (f" ({'; '.join(r['notes'])})" if r["notes"] else "")
        rows.append([r["format"], status, acc_txt, mc, lat, verdict])
    return md_table(header, rows)
