"""Carry a dataset and weights to a remote trainer in one file each (``edgebench gpu-payload``).

Images: an image folder ``<root>/<split>/<class>/*.jpg`` becomes one xz file holding every split's JPEG
files byte for byte (never re-encoded), an index (lengths and labels per split) and the class names;
unpacking gives the same bytes back and decodes them with Pillow. Weights: a Keras ``.weights.h5`` becomes
one xz file of its tensors (large float32 ones in bfloat16, the rule of ``packing.py``) with its group
tree and attributes, and unpacks to an ``.h5`` file that Keras loads. Each file is a header (magic, JSON
length, JSON) followed by binary data, all in one lzma stream. numpy, h5py, Pillow, lzma and ml_dtypes
only: this runs where TensorFlow is not installed.
"""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgebench.errors import EdgebenchError
from edgebench.fileio import atomic_path, ensure_dir, sha256_file, write_json
from edgebench.train.packing import LZMA_PRESET, MAX_UNPACKED_BYTES, restored_array, stored_array
from edgebench.train.unpacking import bounded_decompress

IMAGES_KIND = "edgebench-image-payload/1"
WEIGHTS_KIND = "edgebench-weights-payload/1"
IMAGES_FILE, WEIGHTS_FILE, PAYLOAD_JSON = "images.xz", "weights.xz", "payload.json"
JPEG_SUFFIXES = (".jpg", ".jpeg")
JPEG_MAGIC = b"\xff\xd8\xff"


def _write_stream(path: Path, header: dict, chunks: list[bytes], preset: int) -> None:
    """One lzma stream: 4-byte magic, JSON length, JSON header, then ``chunks``; written atomically."""
    head = json.dumps(header).encode()
    with atomic_path(path) as tmp, lzma.open(tmp, "wb", preset=preset) as f:
        f.write(b"EBP1" + struct.pack("<Q", len(head)) + head)
        for chunk in chunks:
            f.write(chunk)


def _read_stream(path: str | os.PathLike, kind: str) -> tuple[dict, memoryview]:
    path = Path(path)
    if not path.is_file():
        raise EdgebenchError(f"payload file not found: {path}")
    raw = bounded_decompress(path.read_bytes(), MAX_UNPACKED_BYTES, f"payload {path}")
    if raw[:4] != b"EBP1" or len(raw) < 12:
        raise EdgebenchError(f"{path} is not an edgebench payload")
    (n,) = struct.unpack("<Q", raw[4:12])
    header = json.loads(raw[12 : 12 + n])
    if header.get("kind") != kind:
        raise EdgebenchError(f"{path} holds {header.get('kind')!r}, not {kind!r}")
    return header, memoryview(raw)[12 + n :]


# --- images -------------------------------------------------------------------------------------------


def _split_files(root: Path, split: str, classes: list[str]) -> list[tuple[Path, int]]:
    files = []
    for label, name in enumerate(classes):
        folder = root / split / name
        if not folder.is_dir():
            raise EdgebenchError(f"{root / split} has no class folder {name!r} (the first split's classes)")
        files += [(f, label) for f in sorted(folder.iterdir()) if f.is_file()]
    if not files:
        raise EdgebenchError(f"no images in {root / split}")
    return files


def pack_images(
    root: str | os.PathLike, out: str | os.PathLike, splits=("train", "test"), preset: int = LZMA_PRESET
) -> dict:
    """Pack the JPEG files of ``splits`` of the image folder ``root`` into ``out``; returns the header."""
    root = Path(root)
    if not (root / splits[0]).is_dir():
        raise EdgebenchError(f"not an image folder <root>/<split>/<class>/*: {root / splits[0]} is missing")
    classes = sorted(p.name for p in (root / splits[0]).iterdir() if p.is_dir())
    if not classes:
        raise EdgebenchError(f"no class folders in {root / splits[0]}")
    header = {"kind": IMAGES_KIND, "classes": classes, "splits": {}}
    chunks = []
    for split in splits:
        files = _split_files(root, split, classes)
        data = []
        for f, _ in files:
            b = f.read_bytes()
            if f.suffix.lower() not in JPEG_SUFFIXES or not b.startswith(JPEG_MAGIC):
                raise EdgebenchError(f"not a JPEG file: {f} (the payload carries JPEG bytes as they are)")
            data.append(b)
        lengths = np.array([len(b) for b in data], dtype="<u4")
        labels = np.array([label for _, label in files], dtype="<u2")
        blob = b"".join(data)
        header["splits"][split] = {
            "count": len(files),
            "bytes": len(blob),
            "sha256": hashlib.sha256(blob).hexdigest(),
        }
        chunks += [lengths.tobytes(), labels.tobytes(), blob]
    _write_stream(Path(out), header, chunks, preset)
    return header


@dataclass
class ImageSplit:
    """One split of an image payload: every file's bytes, its label, and a decoder."""

    data: memoryview
    offsets: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def file_bytes(self, i: int) -> bytes:
        return bytes(self.data[self.offsets[i] : self.offsets[i] + self.lengths[i]])

    def decode(self, indices=None) -> np.ndarray:
        """uint8 RGB pixels (N, H, W, 3) of the files at ``indices`` (all by default); one size only."""
        from PIL import Image

        indices = range(len(self)) if indices is None else indices
        images = [np.asarray(Image.open(io.BytesIO(self.file_bytes(i))).convert("RGB")) for i in indices]
        if len({im.shape for im in images}) > 1:
            raise EdgebenchError("the payload's images differ in size; decode them one by one")
        return np.stack(images) if images else np.zeros((0, 0, 0, 3), np.uint8)


def read_images(path: str | os.PathLike) -> tuple[list[str], dict[str, ImageSplit]]:
    """(class names, split name -> ImageSplit) of an image payload; each split's bytes checked by sha256."""
    header, body = _read_stream(path, IMAGES_KIND)
    splits, pos = {}, 0
    for name, meta in header["splits"].items():
        n = meta["count"]
        lengths = np.frombuffer(body, "<u4", n, pos).astype(np.int64)
        labels = np.frombuffer(body, "<u2", n, pos + 4 * n).astype(np.int32)
        pos += 6 * n
        data = body[pos : pos + meta["bytes"]]
        pos += meta["bytes"]
        if int(lengths.sum()) != meta["bytes"] or hashlib.sha256(data).hexdigest() != meta["sha256"]:
            raise EdgebenchError(f"payload {path}: split {name!r} does not match its index")
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        splits[name] = ImageSplit(data, offsets, lengths, labels)
    return header["classes"], splits


# --- weights ------------------------------------------------------------------------------------------


def _attrs(obj, where: str) -> dict:
    out = {}
    for key, value in obj.attrs.items():
        if isinstance(value, bytes):
            value = value.decode()
        if isinstance(value, np.generic):
            value = value.item()
        if not isinstance(value, str | int | float | bool):
            raise EdgebenchError(f"cannot carry attribute {key!r} of {where}: {type(value).__name__}")
        out[key] = value
    return out


def pack_weights(h5_path: str | os.PathLike, out: str | os.PathLike, preset: int = LZMA_PRESET) -> dict:
    """Pack every group (with its attributes) and dataset of an ``.h5`` file into ``out``."""
    import h5py

    h5_path = Path(h5_path)
    if not h5_path.is_file():
        raise EdgebenchError(f"weights file not found: {h5_path}")
    groups, datasets, chunks = [], [], []
    try:
        with h5py.File(h5_path, "r") as f:
            groups.append({"path": "/", "attrs": _attrs(f, h5_path.name)})

            def visit(name, obj):
                if isinstance(obj, h5py.Group):
                    groups.append({"path": name, "attrs": _attrs(obj, name)})
                    return
                value = np.asarray(obj[()])
                stored = stored_array(value)
                datasets.append(
                    {
                        "path": name,
                        "shape": list(value.shape),
                        "dtype": value.dtype.str,
                        "stored": "bfloat16" if stored.dtype != value.dtype else value.dtype.str,
                        "attrs": _attrs(obj, name),
                    }
                )
                chunks.append(np.ascontiguousarray(stored).tobytes())

            f.visititems(visit)
    except OSError as exc:
        raise EdgebenchError(f"cannot read {h5_path} as HDF5: {exc}") from None
    header = {"kind": WEIGHTS_KIND, "source": h5_path.name, "groups": groups, "datasets": datasets}
    _write_stream(Path(out), header, chunks, preset)
    return header


def read_weights(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """(header, dataset path -> array restored to its original dtype) of a weights payload."""
    import ml_dtypes

    header, body = _read_stream(path, WEIGHTS_KIND)
    arrays, pos = {}, 0
    for d in header["datasets"]:
        stored = np.dtype(ml_dtypes.bfloat16) if d["stored"] == "bfloat16" else np.dtype(d["stored"])
        count = int(np.prod(d["shape"], dtype=np.int64))
        if pos + count * stored.itemsize > len(body):
            raise EdgebenchError(f"payload {path} is shorter than its header says")
        a = np.frombuffer(body, stored, count, pos).reshape(d["shape"])
        arrays[d["path"]] = restored_array(a, d["dtype"])
        pos += count * stored.itemsize
    return header, arrays


def unpack_weights_h5(path: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the ``.h5`` file a weights payload holds (bfloat16 tensors back in float32) to ``out``."""
    import h5py

    header, arrays = read_weights(path)
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as f:
        for g in header["groups"]:
            group = f if g["path"] == "/" else f.require_group(g["path"])
            group.attrs.update(g["attrs"])
        for d in header["datasets"]:
            f.create_dataset(d["path"], data=arrays[d["path"]]).attrs.update(d["attrs"])
    return Path(out)


def build_payload(data: str | os.PathLike, weights: str | os.PathLike, out: str | os.PathLike) -> dict:
    """``images.xz`` and ``weights.xz`` in ``out`` and ``payload.json`` with their sizes and sha256s."""
    import h5py

    # Both inputs checked before minutes of compression write anything.
    if not Path(weights).is_file() or not h5py.is_hdf5(weights):
        raise EdgebenchError(f"weights file not found or not HDF5 (.weights.h5): {weights}")
    missing = [s for s in ("train", "test") if not (Path(data) / s).is_dir()]
    if missing:
        raise EdgebenchError(
            f"not an image folder <root>/<split>/<class>/*: no {', '.join(missing)} in {data}"
        )
    out = ensure_dir(out)
    images = pack_images(data, out / IMAGES_FILE)
    pack_weights(weights, out / WEIGHTS_FILE)
    files = {
        name: {"bytes": (out / name).stat().st_size, "sha256": sha256_file(out / name)}
        for name in (IMAGES_FILE, WEIGHTS_FILE)
    }
    summary = {
        "kind": "edgebench-gpu-payload/1",
        "files": files,
        "classes": images["classes"],
        "images": {split: meta["count"] for split, meta in images["splits"].items()},
        "sources": {"data": os.fspath(data), "weights": os.fspath(weights)},
    }
    write_json(out / PAYLOAD_JSON, summary)
    return summary


def check_payload(folder: str | os.PathLike) -> dict:
    """``payload.json`` of ``folder``, every file checked against its size and sha256."""
    from edgebench.fileio import read_json

    folder = Path(folder)
    summary = read_json(folder / PAYLOAD_JSON, "payload summary")
    for name, meta in summary["files"].items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != meta["bytes"] or sha256_file(path) != meta["sha256"]:
            raise EdgebenchError(f"payload file {path} is missing or does not match {PAYLOAD_JSON}")
    return summary
