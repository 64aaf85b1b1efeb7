"""A trained model packed for the repository, and rebuilt from the pack (``models/<name>/``).

A ResNet50 ``.keras`` file is ~95 MB of float32. The pack keeps the model's Keras config as it is and its
weights as one lzma stream: large tensors (kernels) in bfloat16, small ones (BatchNorm statistics, biases)
in float32 since they cost nothing and BatchNorm is where rounding would show. The stream is split into
parts of at most ``PART_BYTES`` so that no file in git is large. ``MANIFEST.json`` holds each part's
sha256, a digest of the restored weights, and the provenance the trainer recorded; ``SHA256SUMS`` lets
``sha256sum -c`` check the parts without edgebench.

Rebuilding (``unpacking``) checks every part's sha256 before it decompresses anything, restores the weights
into the config's model, checks the weights digest and saves the ``.keras`` file atomically.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import zipfile
from pathlib import Path

import ml_dtypes
import numpy as np

from edgebench.errors import EdgebenchError
from edgebench.fileio import ensure_dir, read_json, sha256_file, write_bytes, write_json

FORMAT = "edgebench-packed-model/1"
PACK_MANIFEST = "MANIFEST.json"  # the pack's, beside its parts
PART_BYTES = 16 * 2**20
SMALL = 4096  # tensors with fewer elements stay float32
LZMA_PRESET = 9 | lzma.PRESET_EXTREME
# The largest stream a pack may declare: a ResNet50 is 0.1 GiB; 4 GiB is past any model this tool trains
# and still within a 24-GiB machine.
MAX_UNPACKED_BYTES = 4 << 30


def weights_digest(arrays: list[np.ndarray]) -> str:
    """sha256 over the dtype, shape and bytes of each array in order: the same weights, the same digest,
    whatever file format holds them."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def stored_array(a: np.ndarray) -> np.ndarray:
    """bfloat16 for large float32 tensors, unless rounding would turn a finite value infinite (bfloat16's
    largest value is just below float32's); small ones and every other dtype as they are."""
    if a.dtype == np.float32 and a.size >= SMALL:
        b = a.astype(ml_dtypes.bfloat16)
        if np.isinf(b).sum() == np.isinf(a).sum():
            return b
    return a


def restored_array(a: np.ndarray, dtype: str) -> np.ndarray:
    """``a`` (as ``stored_array`` left it) back in its original ``dtype``."""
    return a.astype(np.dtype(dtype)) if a.dtype != np.dtype(dtype) else a


def _archive_config(model_path: Path) -> dict:
    with zipfile.ZipFile(model_path) as archive:
        return json.loads(archive.read("config.json"))


def provenance(
    run_dir: str | os.PathLike,
    *,
    command: str | None = None,
    commit: str | None = None,
    previous: dict | None = None,
    name: str | None = None,
) -> dict:
    """What a released model's reader needs to trust and repeat it, from the run's metrics.json: the code
    commit, the command, the CPU, minutes and every phase's accuracy. A run that continued a trained model
    (``init_from``) names its weights digest; when that is ``previous``'s (the manifest it replaces), the
    earlier provenance is kept under ``continues`` and ``total_minutes`` adds up the lineage. ``name``: the
    pack's name under models/ (default: the run directory's)."""
    from edgebench.cpu import fingerprint
    from edgebench.environment import code_commit

    run_dir = Path(run_dir)
    m = read_json(run_dir / "metrics.json", "training metrics")
    budget = m.get("budget") or {}
    plan = budget.get("plan") or {}
    record = {
        "trained": m.get("created"),
        "preset": m.get("preset"),
        "command": command or f"make train PRESET={m.get('preset')} NAME={run_dir.name}",
        # Runs from before metrics.json recorded them: the commit given, else the packing checkout's, and
        # the packing machine's CPU (pack where you trained).
        "code_commit": m.get("code_commit") or commit or code_commit(),
        "cpu": m.get("cpu") or {**fingerprint(), "read": "when packed"},
        "test_images": m.get("test_images"),
        "test_accuracy": m.get("test_accuracy"),
        "minutes": round(m.get("wall_time_s", 0) / 60, 1),
        "phase_minutes": budget.get("phase_minutes"),
        "plan": {k: plan.get(k) for k in ("mode", "image_size", "unfreeze", "copies", "epochs", "reasons")},
        "peak_rss_mb": m.get("peak_rss_mb"),
        "versions": m.get("versions"),
        "rebuild": f"edgebench fetch-model --name {name or run_dir.name}",
    }
    init = (m.get("phases") or {}).get("phase1", {})
    if init.get("init_weights_sha256"):
        chained = (previous or {}).get("weights_sha256") == init["init_weights_sha256"]
        before = previous["provenance"] if chained else {}
        record["continues"] = {
            "init_from": init.get("init_from"),
            "weights_sha256": init["init_weights_sha256"],
            "test_accuracy": init.get("test_accuracy"),
            "provenance": before or "not the model this pack replaces: lineage unknown",
        }
        if chained:
            record["total_minutes"] = round(
                record["minutes"] + before.get("total_minutes", before["minutes"]), 1
            )
    return record


def pack_model(
    model_path: str | os.PathLike,
    dest: str | os.PathLike,
    provenance: dict | None = None,
    part_bytes: int = PART_BYTES,
) -> dict:
    """Pack a ``.keras`` model into ``dest`` (parts, MANIFEST.json, SHA256SUMS); returns the manifest."""
    from edgebench.train.model import load_model

    model_path = Path(model_path)
    model = load_model(model_path)
    named = [(v.path, np.asarray(v.numpy())) for v in model.weights]
    source = {"file": model_path.name, "sha256": sha256_file(model_path)}
    return pack_arrays(
        named, _archive_config(model_path), dest, source=source, provenance=provenance, part_bytes=part_bytes
    )


def pack_arrays(
    named: list[tuple[str, np.ndarray]],
    config: dict,
    dest: str | os.PathLike,
    *,
    source: dict | None = None,
    provenance: dict | None = None,
    part_bytes: int = PART_BYTES,
    preset: int = LZMA_PRESET,
) -> dict:
    """Pack a model's weights (``(variable path, value)`` in ``model.weights`` order) with its Keras config
    (``config.json`` of its ``.keras`` archive) into ``dest``; returns the manifest. No model is built, so a
    trainer on any Keras backend can checkpoint with it (``preset``: a faster lzma level for checkpoints).

    The weights digest is that of the weights a rebuild restores (bfloat16 rounded back to float32), so a
    rebuild can prove it restored exactly what was packed.
    """
    dest = ensure_dir(dest)
    paths = [path for path, _ in named]
    if len(set(paths)) != len(paths):
        raise EdgebenchError(f"cannot pack into {dest}: the weights' paths are not unique")
    tensors, blobs, restored = [], [], []
    for path, value in named:
        stored = stored_array(value)
        tensors.append(
            {"path": path, "shape": list(value.shape), "dtype": str(value.dtype), "stored": str(stored.dtype)}
        )
        blobs.append(np.ascontiguousarray(stored).tobytes())
        restored.append(restored_array(stored, str(value.dtype)))
    stream = lzma.compress(b"".join(blobs), preset=preset)
    for old in dest.glob("weights.xz.*"):
        old.unlink()
    parts = []
    for i, start in enumerate(range(0, len(stream), part_bytes)):
        name = f"weights.xz.{i:03d}"
        chunk = stream[start : start + part_bytes]
        write_bytes(dest / name, chunk)
        parts.append({"file": name, "bytes": len(chunk), "sha256": hashlib.sha256(chunk).hexdigest()})
    manifest = {
        "kind": FORMAT,
        "source": source or {},
        "config": config,
        "tensors": tensors,
        "parts": parts,
        "packed_bytes": len(stream),
        "weights_sha256": weights_digest(restored),
        "provenance": provenance or {},
    }
    write_json(dest / PACK_MANIFEST, manifest)
    write_bytes(dest / "SHA256SUMS", "".join(f"{p['sha256']}  {p['file']}\n" for p in parts).encode())
    return manifest


def restored_values(named: list[tuple[str, np.ndarray]]) -> list[np.ndarray]:
    """What a rebuild restores of each value: bfloat16-rounded where the pack stores bfloat16."""
    return [restored_array(stored_array(value), str(value.dtype)) for _, value in named]
