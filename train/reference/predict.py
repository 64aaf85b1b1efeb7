"""Classify image files with a .keras model or any exported artifact, under the model's contract."""

from __future__ import annotations

import json
from pathlib import Path

from edgebench.errors import EdgebenchError
from edgebench.fileio import sha256_file
from edgebench.runtime import (
    Contract,
    InferenceError,
    classify,
    contract_beside,
    load_images,
    open_runner,
    read_labels,
)


def recorded_contract(model_path: Path) -> Contract | None:
    """The contract an export recorded for this file: the manifest or model.json beside an artifact, or
    for a .keras model the manifest of ``<its folder>/export`` whose source it is."""
    if model_path.suffix != ".keras":
        return contract_beside(model_path)
    manifest = model_path.parent / "export" / "manifest.json"
    try:
        spec = json.loads(manifest.read_text(encoding="utf-8"))
        if spec["source_model"]["sha256"] == sha256_file(model_path):
            return Contract.read(spec)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def predict_files(model_path: str, images, k: int = 3, labels=None) -> list[dict]:
    """Top-k classes per image file, as ``[{"image", "top_k": [{"class", "probability"}]}]``.

    The contract (input size, preprocessing, class names) is the one the export recorded; a bare .keras
    model's is read from the model; ``labels``: a labels file naming the classes instead.
    """
    model_path = Path(model_path)
    try:
        contract = recorded_contract(model_path) if model_path.is_file() else None
        with open_runner(model_path, contract=contract, untrusted=True) as runner:
            contract = runner.contract  # a bare .keras model: read from the model when it loaded
            if labels:
                names = read_labels(labels)
                if len(names) != contract.num_classes:
                    raise InferenceError(
                        f"labels file {labels} has {len(names)} class names, but the model outputs "
                        f"{contract.num_classes} classes"
                    )
                contract = runner.contract = contract.with_classes(names)
            probs = runner.infer(load_images(images, contract.size, contract.channels))
    except InferenceError as exc:
        raise EdgebenchError(str(exc)) from None
    if probs.ndim != 2 or probs.shape[1] != contract.num_classes:
        raise EdgebenchError(f"model outputs shape {probs.shape}, expected (N, {contract.num_classes})")
    return classify(images, probs, min(k, contract.num_classes), contract.classes)
