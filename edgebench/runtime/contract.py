"""The model contract: what an artifact takes in and what its outputs mean, recorded beside it.

``{"input": {"height", "width", "channels", "dtype": "uint8"|"float32", "layout": "NHWC"},
"preprocessing": null | {"scale", "mean": [...], "std": [...]}, "classes": [...]}`` under the key
``"contract"`` of an export manifest and of a bundle's model.json. ``preprocessing`` is what the caller
applies outside the graph to 0..255 pixels: ``x = (pixel * scale - mean) / std`` (float32); null means the
graph takes the pixels as they are. A manifest or model.json without a contract (older exports) has the
CIFAR-10 one: 32x32x3 uint8 pixels, no preprocessing, the 10 CIFAR-10 classes.

Standalone like the rest of this package: stdlib and numpy only (it is copied into bundles).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .base import InferenceError
from .images import CIFAR10_CLASSES, INPUT_SIZE

KEY = "contract"
DTYPES = ("uint8", "float32")
CHANNELS = (1, 3)  # grayscale or RGB: what an image file is converted to


class ContractError(InferenceError, ValueError):
    """A contract that cannot describe an image classifier, explained in one line."""


@dataclass(frozen=True)
class Preprocessing:
    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_dict(self) -> dict:
        return {"scale": self.scale, "mean": list(self.mean), "std": list(self.std)}


@dataclass(frozen=True)
class Contract:
    height: int
    width: int
    channels: int
    dtype: str
    classes: tuple[str, ...]
    preprocessing: Preprocessing | None = None

    def __post_init__(self):
        if self.height < 1 or self.width < 1:
            raise ContractError(f"input size {self.height}x{self.width} is not a fixed image size")
        if self.channels not in CHANNELS:
            raise ContractError(f"input has {self.channels} channels; image classifiers take 1 or 3 (NHWC)")
        if self.dtype not in DTYPES:
            raise ContractError(f"input dtype {self.dtype} is not supported (known: {', '.join(DTYPES)})")
        if len(self.classes) < 2:
            raise ContractError(f"a classifier needs at least 2 classes (got {len(self.classes)})")
        if len(set(self.classes)) != len(self.classes):
            dup = sorted({c for c in self.classes if self.classes.count(c) > 1})
            raise ContractError(f"class names are not unique: {', '.join(dup)}")
        p = self.preprocessing
        if p is not None:
            if self.dtype != "float32":
                raise ContractError("scale/mean/std need a float32 input; this model takes uint8 pixels")
            if len(p.mean) != self.channels or len(p.std) != self.channels:
                raise ContractError(
                    f"mean and std need one value per channel ({self.channels}); "
                    f"got {len(p.mean)} and {len(p.std)}"
                )
            if not p.scale or any(s == 0 for s in p.std):
                raise ContractError("scale and std must be non-zero")

    @classmethod
    def cifar10(cls) -> Contract:
        return cls(INPUT_SIZE, INPUT_SIZE, 3, "uint8", CIFAR10_CLASSES)

    @property
    def size(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict:
        return {
            "input": {
                "height": self.height,
                "width": self.width,
                "channels": self.channels,
                "dtype": self.dtype,
                "layout": "NHWC",
            },
            "preprocessing": self.preprocessing.to_dict() if self.preprocessing else None,
            "classes": list(self.classes),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Contract:
        try:
            inp, pre = d["input"], d.get("preprocessing")
            if inp.get("layout", "NHWC") != "NHWC":
                raise ContractError(f"input layout {inp['layout']} is not supported (NHWC only)")
            return cls(
                int(inp["height"]),
                int(inp["width"]),
                int(inp["channels"]),
                str(inp["dtype"]),
                tuple(str(c) for c in d["classes"]),
                preprocessing(pre["scale"], pre["mean"], pre["std"]) if pre else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ContractError):
                raise
            raise ContractError(f"malformed model contract ({type(exc).__name__}: {exc})") from None

    @classmethod
    def read(cls, spec: dict) -> Contract:
        """The contract of a manifest or model.json; the CIFAR-10 one when it has none (older files)."""
        return cls.from_dict(spec[KEY]) if spec.get(KEY) else cls.cifar10()

    def with_classes(self, classes) -> Contract:
        return Contract(
            self.height, self.width, self.channels, self.dtype, tuple(classes), self.preprocessing
        )

    def describe(self) -> str:
        """One line: what the model's input tensor takes."""
        shape = f"(N, {self.height}, {self.width}, {self.channels})"
        kind = "RGB" if self.channels == 3 else "grayscale"
        p = self.preprocessing
        if p is None:
            return f"{kind} pixels 0..255 as {self.dtype}, shape {shape}, no scaling or normalisation"
        return (
            f"float32 {shape}: {kind} pixels 0..255 mapped to (pixel * {p.scale:g} - mean) / std, "
            f"mean {list(p.mean)}, std {list(p.std)}"
        )

    def check(self, batch) -> np.ndarray:
        """A (N, H, W, C) pixel batch (a single image gets N=1), or a one-line error."""
        batch = np.asarray(batch)
        if batch.ndim == 3:
            batch = batch[None]
        expected = (self.height, self.width, self.channels)
        if batch.ndim != 4 or batch.shape[1:] != expected:
            raise ContractError(
                f"input batch has shape {batch.shape}, expected (N, {', '.join(map(str, expected))}) pixels"
            )
        return batch

    def model_input(self, pixels: np.ndarray) -> np.ndarray:
        """0..255 pixels -> the model's input tensor: preprocessing applied, cast to the input dtype."""
        p = self.preprocessing
        if p is None:
            return pixels.astype(self.dtype, copy=False)
        x = pixels.astype(np.float32) * np.float32(p.scale)
        return ((x - np.asarray(p.mean, np.float32)) / np.asarray(p.std, np.float32)).astype(np.float32)

    def zeros(self, n: int = 1) -> np.ndarray:
        return np.zeros((n, self.height, self.width, self.channels), dtype=self.dtype)


def preprocessing(scale, mean, std) -> Preprocessing:
    return Preprocessing(float(scale), tuple(float(m) for m in mean), tuple(float(s) for s in std))


def read_labels(path: str | os.PathLike) -> list[str]:
    """Class names from a labels file: one per line, in output order (blank lines ignored)."""
    from .base import InferenceError
    from .files import MAX_LABELS_BYTES, read_regular

    path = Path(path)
    try:
        text = read_regular(path, "labels file", MAX_LABELS_BYTES).decode("utf-8")
        names = [line.strip() for line in text.splitlines()]
    except InferenceError as exc:
        raise ContractError(str(exc)) from None
    except UnicodeDecodeError as exc:
        raise ContractError(f"cannot read labels file {path} ({type(exc).__name__})") from None
    names = [n for n in names if n]
    if not names:
        raise ContractError(f"labels file {path} lists no class names")
    return names


def contract_beside(model_path: str | os.PathLike) -> Contract | None:
    """The contract recorded for a model file by the export manifest or bundle model.json in its folder."""
    model_path = Path(model_path)
    for name in ("manifest.json", "model.json"):
        spec_path = model_path.parent / name
        try:
            spec = json.loads(spec_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(spec, dict):
            continue
        files = [a.get("file") for a in spec.get("artifacts") or ()] + [(spec.get("model") or {}).get("file")]
        if model_path.name in files:
            return Contract.read(spec)
    return None
