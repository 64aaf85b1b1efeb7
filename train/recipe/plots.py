"""Training plots (matplotlib, Agg): sample grid, learning curves, confusion matrix, predictions."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from edgebench.fileio import atomic_path  # noqa: E402


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)


def samples(x: np.ndarray, y: np.ndarray, class_names, path: Path, per_class: int = 8) -> None:
    """A grid with ``per_class`` images of every class, one row per class."""
    fig, axes = plt.subplots(len(class_names), per_class, figsize=(per_class * 0.9, len(class_names) * 0.95))
    for c, name in enumerate(class_names):
        idx = np.flatnonzero(y == c)[:per_class]
        for j in range(per_class):
            ax = axes[c, j]
            ax.axis("off")
            if j < len(idx):
                ax.imshow(x[idx[j]])
        axes[c, 0].set_title(name, fontsize=7, loc="left")
    fig.suptitle("CIFAR-10 samples per class")
    _save(fig, path)


def curves(history: dict[str, dict[str, list[float]]], path: Path) -> None:
    """Train vs validation accuracy and loss, phases side by side on one epoch axis."""
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    offset = 0
    for phase in ("phase1", "phase2"):
        h = history.get(phase) or {}
        n = len(h.get("accuracy", []))
        if not n:
            continue
        epochs = np.arange(offset + 1, offset + n + 1)
        for ax, key in ((ax_acc, "accuracy"), (ax_loss, "loss")):
            ax.plot(epochs, h[key], "o-", label=f"{phase} train")
            ax.plot(epochs, h[f"val_{key}"], "s--", label=f"{phase} val")
        ax_acc.axvline(offset + n + 0.5, color="grey", lw=0.5)
        for ax in (ax_acc, ax_loss):  # name the phase above its epochs
            ax.text(offset + 0.6, 1.01, phase, transform=ax.get_xaxis_transform(), fontsize=8, color="grey")
        offset += n
    for ax, title in ((ax_acc, "accuracy"), (ax_loss, "loss")):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _save(fig, path)


def confusion(y_true: np.ndarray, y_pred: np.ndarray, class_names, path: Path) -> np.ndarray:
    """Row-normalised confusion matrix on the test set; returns the count matrix."""
    k = len(class_names)
    counts = np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7, 6))
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                f"{rates[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if rates[i, j] > 0.5 else "black",
            )
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"test confusion (accuracy {np.trace(counts) / counts.sum():.2%}, n={counts.sum()})")
    fig.colorbar(im, ax=ax)
    _save(fig, path)
    return counts


def predictions(
    x: np.ndarray,
    y: np.ndarray | None,
    probs: np.ndarray,
    class_names,
    *,
    path: Path,
    seed: int = 0,
    n: int = 24,
    titles=None,
) -> None:
    """Images with predicted (and true, when known) labels; wrong predictions in red."""
    idx = np.random.default_rng(seed).permutation(len(x))[:n] if y is not None else np.arange(min(n, len(x)))
    cols = 6
    rows = int(np.ceil(len(idx) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.8, rows * 2.0), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, idx, strict=False):
        ax.imshow(x[i])
        pred = int(probs[i].argmax())
        label = f"{class_names[pred]} {probs[i, pred]:.0%}"
        if y is not None:
            label += f"\ntrue: {class_names[int(y[i])]}"
        if titles is not None:
            label = f"{titles[i]}\n{label}"
        ax.set_title(label, fontsize=7, color="black" if y is None or pred == y[i] else "red")
    _save(fig, path)
