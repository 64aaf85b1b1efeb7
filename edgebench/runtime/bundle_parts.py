"""The parts of a bundle's model.json (``BundleSpec``): the model file with its sidecars, and the sample
images with the top-1 the model gave them when bundled."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from . import fields


@dataclass(frozen=True)
class FileRecord:
    """A file with its hash and size: a model's sidecar (an OpenVINO IR's weights .bin)."""

    file: str
    sha256: str
    bytes: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str) -> FileRecord:
        return cls(
            fields.get(d, "file", str, where=where),
            fields.sha256(d, "sha256", where),
            fields.get(d, "bytes", int, where=where),
        )


@dataclass(frozen=True)
class ModelFile:
    file: str
    sha256: str
    bytes: int
    sidecars: tuple[FileRecord, ...] = ()

    def to_dict(self) -> dict:
        out = {"file": self.file, "sha256": self.sha256, "bytes": self.bytes}
        return {**out, "sidecars": [s.to_dict() for s in self.sidecars]} if self.sidecars else out

    @classmethod
    def from_dict(cls, d: dict) -> ModelFile:
        base = FileRecord.from_dict(d, "model.")
        sides = fields.items(d, "sidecars", dict, where="model.") if "sidecars" in d else []
        sidecars = tuple(FileRecord.from_dict(s, f"model.sidecars[{n}].") for n, s in enumerate(sides))
        return cls(base.file, base.sha256, base.bytes, sidecars)


@dataclass(frozen=True)
class Sample:
    """A bundled test image (PNG, and PPM for the C runner) with the top-1 the model gave it when bundled."""

    file: str
    sha256: str
    dataset_index: int
    true_label: str
    expected: str
    probability: float
    margin: float
    ppm: str | None = None  # absent in bundles from before the C runner
    ppm_sha256: str | None = None

    def to_dict(self) -> dict:
        out = {"file": self.file, "sha256": self.sha256}
        if self.ppm is not None:
            out.update(ppm=self.ppm, ppm_sha256=self.ppm_sha256)
        names = ("dataset_index", "true_label", "expected", "probability", "margin")
        return {**out, **{name: getattr(self, name) for name in names}}

    @classmethod
    def from_dict(cls, d: dict, where: str) -> Sample:
        ppm = fields.get(d, "ppm", str, where=where, optional=True)
        return cls(
            file=fields.get(d, "file", str, where=where),
            sha256=fields.sha256(d, "sha256", where),
            dataset_index=fields.get(d, "dataset_index", int, where=where),
            true_label=fields.get(d, "true_label", str, where=where),
            expected=fields.get(d, "expected", str, where=where),
            probability=fields.get(d, "probability", float, where=where),
            margin=fields.get(d, "margin", float, where=where),
            ppm=ppm,
            ppm_sha256=fields.sha256(d, "ppm_sha256", where) if ppm is not None else None,
        )
