"""Accuracy statistics of one artifact against the reference, on the same images (paired)."""

from __future__ import annotations

import numpy as np
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint


def wilson_interval(correct: int, total: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval for a proportion (95% by default)."""
    if total <= 0:
        raise ValueError("no images: an accuracy interval needs at least one")
    lo, hi = proportion_confint(int(correct), int(total), alpha=alpha, method="wilson")
    return float(lo), float(hi)


def mcnemar_exact(ref_correct: np.ndarray, art_correct: np.ndarray) -> dict:
    """McNemar's exact (binomial) test on paired correctness.

    ``b``: the reference is right and the artifact wrong; ``c``: the other way round. Only these discordant
    pairs carry information; the p-value is the two-sided binomial test of b against Binomial(b+c, 1/2).
    """
    ref_correct, art_correct = np.asarray(ref_correct, bool), np.asarray(art_correct, bool)
    if ref_correct.shape != art_correct.shape:
        raise ValueError(f"paired predictions differ in length: {ref_correct.shape} vs {art_correct.shape}")
    both = int(np.sum(ref_correct & art_correct))
    b = int(np.sum(ref_correct & ~art_correct))
    c = int(np.sum(~ref_correct & art_correct))
    neither = int(np.sum(~ref_correct & ~art_correct))
    # With no discordant pair the artifact and the reference are indistinguishable: p = 1.
    pvalue = 1.0 if b + c == 0 else float(mcnemar([[both, b], [c, neither]], exact=True).pvalue)
    return {"ref_only_correct": b, "artifact_only_correct": c, "pvalue": min(pvalue, 1.0)}


def per_class_accuracy(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Top-1 accuracy of each class (NaN for a class without images)."""
    pred, labels = np.asarray(pred), np.asarray(labels)
    counts = np.bincount(labels, minlength=num_classes).astype(float)
    hits = np.bincount(labels[pred == labels], minlength=num_classes).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)


def accuracy_summary(pred: np.ndarray, labels: np.ndarray, class_names, ref_pred: np.ndarray | None) -> dict:
    """Top-1 accuracy with its Wilson interval, per-class accuracy and, against ``ref_pred``: the drop in
    percentage points, top-1 agreement, McNemar's exact test and the largest per-class drop."""
    pred, labels = np.asarray(pred), np.asarray(labels)
    if pred.shape != labels.shape:
        raise ValueError(f"{len(pred)} predictions for {len(labels)} labels")
    correct = pred == labels
    n, k = int(len(labels)), int(correct.sum())
    per_class = per_class_accuracy(pred, labels, len(class_names))
    out = {
        "images": n,
        "correct": k,
        "top1": k / n,
        "ci95": list(wilson_interval(k, n)),
        "per_class": {name: _num(a) for name, a in zip(class_names, per_class, strict=True)},
        "drop_pp": None,
        "agreement": None,
        "mcnemar": None,
        "largest_class_drop": None,
    }
    if ref_pred is not None:
        ref_pred = np.asarray(ref_pred)
        ref_correct = ref_pred == labels
        drops = (per_class_accuracy(ref_pred, labels, len(class_names)) - per_class) * 100
        worst = int(np.nanargmax(drops))
        out.update(
            drop_pp=(float(ref_correct.mean()) - k / n) * 100,
            agreement=float((pred == ref_pred).mean()),
            mcnemar=mcnemar_exact(ref_correct, correct),
            per_class_drop_pp={name: _num(d) for name, d in zip(class_names, drops, strict=True)},
            largest_class_drop={"class": class_names[worst], "drop_pp": float(drops[worst])},
        )
    return out


def _num(x) -> float | None:
    return None if np.isnan(x) else float(x)
