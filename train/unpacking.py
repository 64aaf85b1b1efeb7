"""A pack read back (``models/<name>/``): every part checked against its sha256 before anything is
decompressed, decompression bounded by the size the manifest declares, the weights restored into the
config's model, their digest checked, and the ``.keras`` file saved atomically (``packing`` writes packs)."""

from __future__ import annotations

import hashlib
import lzma
import os
from pathlib import Path

import ml_dtypes
import numpy as np

from edgebench.errors import EdgebenchError
from edgebench.fileio import atomic_path, read_json
from edgebench.runtime.paths import confined
from edgebench.train.packing import FORMAT, MAX_UNPACKED_BYTES, PACK_MANIFEST, restored_array, weights_digest


def read_parts(src: Path, manifest: dict) -> bytes:
    """The packed stream, each part checked against its sha256 first."""
    chunks = []
    for part in manifest.get("parts", []):
        path = confined(src, part.get("file"), "packed model part")
        if not path.is_file():
            raise EdgebenchError(f"packed model part missing: {path}")
        if path.stat().st_size != part.get("bytes"):  # read no more than the manifest declares
            raise EdgebenchError(f"packed model part {path} is not the size {src / PACK_MANIFEST} declares")
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != part["sha256"]:
            raise EdgebenchError(
                f"packed model part {path} does not match its sha256 in {src / PACK_MANIFEST}"
            )
        chunks.append(data)
    return b"".join(chunks)


def read_pack_manifest(src: str | os.PathLike) -> dict:
    """The pack's MANIFEST.json in ``src`` (not an export folder's manifest), refused unless it is one."""
    src = Path(src)
    manifest = read_json(src / PACK_MANIFEST, "packed model manifest")
    if manifest.get("kind") != FORMAT:
        raise EdgebenchError(
            f"{src / PACK_MANIFEST} is not an edgebench packed model (kind {manifest.get('kind')!r})"
        )
    return manifest


def _stored_dtype(tensor: dict) -> np.dtype:
    return np.dtype(ml_dtypes.bfloat16) if tensor["stored"] == "bfloat16" else np.dtype(tensor["stored"])


def unpacked_bytes(manifest: dict) -> int:
    """The stream's size the manifest declares: what decompression may produce, and no more."""
    try:
        total = 0
        for t in manifest["tensors"]:
            shape = [int(d) for d in t["shape"]]
            if any(d < 0 for d in shape):
                raise ValueError(f"negative dimension in {t['path']}")
            total += int(np.prod(shape, dtype=object)) * _stored_dtype(t).itemsize
    except (KeyError, TypeError, ValueError) as exc:
        raise EdgebenchError(f"packed model manifest has a malformed tensor list ({exc})") from None
    if total > MAX_UNPACKED_BYTES:
        raise EdgebenchError(
            f"packed model manifest declares {total / 2**30:.1f} GiB of weights "
            f"(more than {MAX_UNPACKED_BYTES / 2**30:.0f} GiB: not a model this tool packs)"
        )
    return total


def bounded_decompress(data: bytes, limit: int, what: str) -> bytes:
    """``data`` (one lzma stream) decompressed, refused as soon as it inflates past ``limit`` bytes: a
    small part whose sha256 matches can still inflate to gigabytes."""
    inflater = lzma.LZMADecompressor()
    try:
        raw = inflater.decompress(data, max_length=limit + 1)
    except lzma.LZMAError as exc:
        raise EdgebenchError(f"{what} cannot be decompressed: {exc}") from None
    if len(raw) > limit:
        raise EdgebenchError(f"{what} inflates past the {limit} bytes its manifest declares")
    if not inflater.eof:
        raise EdgebenchError(f"{what} cannot be decompressed: the stream is cut short")
    return raw


def unpack_weights(src: str | os.PathLike, manifest: dict) -> list[np.ndarray]:
    """The weights in the manifest's order, restored to their original dtypes."""
    src = Path(src)
    declared = unpacked_bytes(manifest)
    raw = bounded_decompress(read_parts(src, manifest), declared, f"packed model in {src}")
    arrays, offset = [], 0
    for t in manifest["tensors"]:
        stored = _stored_dtype(t)
        n = int(np.prod(t["shape"], dtype=np.int64)) * stored.itemsize
        if offset + n > len(raw):
            raise EdgebenchError(f"packed model in {src} is shorter than its manifest says")
        a = np.frombuffer(raw, stored, count=n // stored.itemsize, offset=offset).reshape(t["shape"])
        arrays.append(restored_array(a, t["dtype"]))
        offset += n
    if offset != len(raw):
        raise EdgebenchError(f"packed model in {src} is longer than its manifest says")
    return arrays


def rebuild_model(src: str | os.PathLike, out: str | os.PathLike) -> dict:
    """Rebuild the ``.keras`` model packed in ``src`` at ``out``; returns the manifest."""
    import keras

    import edgebench.train.model  # noqa: F401  (registers edgebench's layers for deserialisation)

    src = Path(src)
    manifest = read_pack_manifest(src)
    arrays = unpack_weights(src, manifest)
    if weights_digest(arrays) != manifest["weights_sha256"]:
        raise EdgebenchError(f"weights rebuilt from {src} do not match the manifest's weights_sha256")
    try:
        # Without its compile config: compiling builds the optimizer's variables, and the saved file would
        # carry them (283 MB instead of 95 for the released model); nothing downstream trains it.
        config = {k: v for k, v in manifest["config"].items() if k != "compile_config"}
        model = keras.saving.deserialize_keras_object(config)
    except Exception as exc:
        raise EdgebenchError(f"cannot rebuild the model in {src}: {str(exc).splitlines()[0]}") from None
    variables = {v.path: v for v in model.weights}
    names = [t["path"] for t in manifest["tensors"]]
    if sorted(variables) != sorted(names):
        raise EdgebenchError(f"the packed weights in {src} do not match the model its config builds")
    for name, value in zip(names, arrays, strict=True):
        if tuple(variables[name].shape) != value.shape:
            raise EdgebenchError(
                f"packed weight {name} has shape {value.shape}, the model wants {variables[name].shape}"
            )
        variables[name].assign(value)
    with atomic_path(out) as tmp:
        model.save(tmp)
        # What export and bench will open is the saved file: check its weights, not the ones in memory.
        from edgebench.train.model import load_model

        saved = [np.asarray(v.numpy()) for v in load_model(tmp).weights]
        if weights_digest(saved) != manifest["weights_sha256"]:
            raise EdgebenchError(f"the model saved from {src} does not hold the packed weights")
    return manifest
