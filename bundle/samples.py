"""The bundle's sample images: real test images the artifact ranks clearly, saved as PNG and PPM with the
top-1 the artifact gives them, for ``infer.py --selftest`` and the C runner."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgebench import runtime
from edgebench.fileio import sha256_file
from edgebench.runtime import Sample
from edgebench.runtime.paths import safe_name

POOL_PER_SAMPLE = 5  # candidate test images looked at per bundled sample


def choose_samples(runner: runtime.Runner, labels: np.ndarray, images: np.ndarray, count: int, seed: int):
    """Indices of ``count`` test images spread over the classes, preferring those the artifact ranks most
    clearly (largest top-1 minus top-2 probability): a device whose kernels round differently should still
    agree on them, while a broken model will not. Returns (indices, probabilities of those images)."""
    from edgebench.export.context import stratified_sample

    pool = stratified_sample(labels, count * POOL_PER_SAMPLE, seed)
    probs = runner.infer(images[pool])
    ranked = np.sort(probs, axis=1)
    margin = ranked[:, -1] - ranked[:, -2]
    by_class = {
        c: sorted(np.flatnonzero(labels[pool] == c), key=lambda i: -margin[i]) for c in np.unique(labels)
    }
    chosen: list[int] = []
    for rank in range(max(len(v) for v in by_class.values())):
        for members in by_class.values():
            if rank < len(members) and len(chosen) < count:
                chosen.append(members[rank])
    chosen.sort(key=lambda i: (labels[pool][i], pool[i]))
    return pool[chosen], probs[chosen]


def write_samples(dest: Path, ds, indices, probs, class_names) -> list[Sample]:
    """The chosen test images at the model's input size, as PNG (lossless) and PPM/PGM (for the C runner),
    named by their class in safe characters (class names come from the user's labels or folders)."""
    from PIL import Image

    (dest / "samples").mkdir()
    samples = []
    for n, (index, p) in enumerate(zip(indices, probs, strict=True)):
        truth = class_names[int(ds.y_test[index])]
        rel = f"samples/{n:02d}_{safe_name(truth)}.png"
        pixels = ds.x_test[index]
        pixels = pixels[..., 0] if pixels.shape[-1] == 1 else pixels  # grayscale: PNG L, PGM for the runner
        Image.fromarray(pixels).save(dest / rel, format="PNG")  # lossless: same pixels on device
        ppm = rel[: -len(".png")] + ".ppm"  # the same pixels for the C runner, which decodes no PNG
        Image.fromarray(pixels).save(dest / ppm, format="PPM")
        top2 = np.sort(p)[-2:]
        samples.append(
            Sample(
                file=rel,
                sha256=sha256_file(dest / rel),
                ppm=ppm,
                ppm_sha256=sha256_file(dest / ppm),
                dataset_index=int(index),
                true_label=truth,
                expected=class_names[int(np.argmax(p))],
                probability=round(float(p.max()), 6),
                margin=round(float(top2[1] - top2[0]), 6),
            )
        )
    return samples
