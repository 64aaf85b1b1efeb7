"""The export manifest (``manifest.json``): what each artifact of one export folder really is.

``ExportManifest`` and ``ArtifactEntry`` own the file's life: ``ExportManifest.read`` validates it against
the JSON Schema and migrates older files in one function (``migrate``); ``path_of`` confines every file a
manifest names to its folder (a manifest is someone else's file: ``../x`` or ``/x`` would reach anywhere);
``verify`` checks an artifact's sha256 and sidecars; ``write`` writes atomically after validating. Export,
import and tune build manifests with ``export.entries`` (``new_manifest``, ``entry``, ``ok_entry``); bench,
tune and bundle read them with ``ExportManifest.read``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from edgebench import __version__, environment
from edgebench.errors import ArtifactError, EdgebenchError
from edgebench.fileio import read_json, sha256_file, write_json
from edgebench.runtime import Contract, sidecar_problem
from edgebench.runtime.base import fixed_batch
from edgebench.runtime.fields import with_extra
from edgebench.runtime.paths import UnsafePath, confined

MANIFEST_FILE = "manifest.json"
KIND = "edgebench-export-manifest"
SCHEMA_VERSION = 1  # the version written; ``migrate`` reads every earlier one


@dataclass(frozen=True)
class ArtifactEntry:
    """One artifact: ``status`` ok (``file``, ``sha256``, I/O, precision and parity set), or failed /
    unavailable (``reason`` and ``message`` set, ``file`` null)."""

    format: str
    runtime: str
    status: str
    file: str | None = None
    reason: str | None = None
    message: str | None = None
    sha256: str | None = None
    bytes: int | None = None
    inputs: list | None = None
    outputs: list | None = None
    dynamic_batch: bool | None = None
    precision: dict | None = None
    parity: dict | None = None
    options: dict | None = None
    wall_time_s: float | None = None
    coverage: dict | None = None
    warnings: list | None = None
    # written only when set
    recipe: dict | None = None
    sidecars: list | None = None
    timings: dict | None = None
    extra: dict = field(default_factory=dict)  # fields a newer edgebench wrote: kept, not interpreted

    _OPTIONAL = ("recipe", "sidecars", "timings")

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def label(self) -> str | None:
        """The precision label (fp32, fp16, int8, …) of an ok artifact."""
        return (self.precision or {}).get("label")

    @property
    def fixed_batch(self) -> int | None:
        """The batch size a fixed-batch artifact requires; None when the batch dimension is dynamic."""
        return fixed_batch(self.inputs, self.dynamic_batch)

    @property
    def total_bytes(self) -> int | None:
        """What the artifact weighs on disk: an OpenVINO IR is its .xml and the .bin with the weights."""
        if not self.bytes:
            return self.bytes
        return self.bytes + sum(s["bytes"] for s in self.sidecars or ())

    def replace(self, **changes) -> ArtifactEntry:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        for key in self._OPTIONAL:
            if out[key] is None:
                del out[key]
        return {**out, **self.extra}

    @classmethod
    def from_dict(cls, d: dict) -> ArtifactEntry:
        return with_extra(cls, d)


@dataclass(frozen=True)
class ExportManifest:
    """The manifest of the export folder ``folder`` (where its files are; not written)."""

    folder: Path
    source_model: dict
    class_names: list
    preprocessing: str
    calibration: dict | None
    tool_versions: dict
    artifacts: tuple = ()
    edgebench_version: str = __version__
    created: str = ""
    contract: dict | None = None
    parity_set: dict | None = None
    target: dict | None = None  # the CPU the CPU-dependent artifacts were built for
    host: dict | None = None  # the CPU that ran the export
    imported: bool = False  # made by ``edgebench import`` from existing files

    @property
    def path(self) -> Path:
        return Path(self.folder) / MANIFEST_FILE

    def model_contract(self) -> Contract:
        """The model contract; the CIFAR-10 one for manifests from before contracts."""
        return Contract.from_dict(self.contract) if self.contract else Contract.cifar10()

    @classmethod
    def read(cls, folder) -> ExportManifest:
        """The validated, migrated manifest of ``folder``; one-line errors for a missing folder or file, a
        file that is not an export manifest, and a file name that leaves the folder."""
        folder = Path(folder)
        if not folder.is_dir():
            raise EdgebenchError(f"export folder not found: {folder}")
        path = folder / MANIFEST_FILE
        if not path.is_file():
            raise EdgebenchError(f"no {MANIFEST_FILE} in {folder} (run edgebench export first)")
        try:
            manifest = cls.from_dict(folder, migrate(read_json(path, "export manifest")))
            for entry in manifest.artifacts:
                manifest.path_of(entry)
        except (EdgebenchError, UnsafePath) as exc:
            raise EdgebenchError(f"{path}: {exc}") from None
        return manifest

    @classmethod
    def read_if_valid(cls, folder) -> ExportManifest | None:
        """The manifest of an earlier export in ``folder``, or None when absent or unusable."""
        try:
            return cls.read(folder) if (Path(folder) / MANIFEST_FILE).is_file() else None
        except (OSError, EdgebenchError):
            return None

    @classmethod
    def from_dict(cls, folder, doc: dict) -> ExportManifest:
        validate(doc)
        names = {f.name for f in dataclasses.fields(cls)} - {"folder", "artifacts"}
        return cls(
            folder=Path(folder),
            artifacts=tuple(ArtifactEntry.from_dict(a) for a in doc["artifacts"]),
            **{k: v for k, v in doc.items() if k in names},
        )

    def to_dict(self) -> dict:
        out = {"schema_version": SCHEMA_VERSION, "kind": KIND}
        for f in dataclasses.fields(self):
            if f.name not in ("folder", "artifacts", "imported"):
                out[f.name] = getattr(self, f.name)
        for key in ("contract", "parity_set", "target", "host"):
            if out[key] is None:
                del out[key]
        if self.imported:
            out["imported"] = True
        out["artifacts"] = [a.to_dict() for a in self.artifacts]
        return out

    def write(self) -> Path:
        """Validate and write atomically (temp file + rename)."""
        doc = self.to_dict()
        validate(doc)
        return write_json(self.path, doc)

    def replace(self, **changes) -> ExportManifest:
        return dataclasses.replace(self, **changes)

    def entry(self, fmt: str) -> ArtifactEntry | None:
        return next((a for a in self.artifacts if a.format == fmt), None)

    @property
    def formats(self) -> list[str]:
        return [a.format for a in self.artifacts]

    def select(self, formats) -> list[ArtifactEntry]:
        """The artifacts, or those named in ``formats`` (comma lists allowed), in the order asked for."""
        if not formats:
            return list(self.artifacts)
        if isinstance(formats, str):
            formats = [formats]
        wanted = [n.strip() for item in formats for n in item.split(",") if n.strip()]
        unknown = [n for n in wanted if self.entry(n) is None]
        if unknown:
            raise EdgebenchError(
                f"format(s) not in the manifest: {', '.join(unknown)} (listed: {', '.join(self.formats)})"
            )
        return [self.entry(n) for n in dict.fromkeys(wanted)]  # the order asked for is the timing order

    def path_of(self, entry: ArtifactEntry) -> Path | None:
        """The artifact's file inside the folder (None for an entry without one); a file or sidecar name
        that resolves outside the folder is refused (``UnsafePath``, one line)."""
        for side in entry.sidecars or ():
            confined(self.folder, side.get("file"), f"{entry.format}'s sidecar")
        return None if entry.file is None else confined(self.folder, entry.file, f"{entry.format}'s file")

    def verify(self, entry: ArtifactEntry) -> Path:
        """The artifact's file, after checking it and its sidecars exist with the manifest's sha256."""
        path = self.path_of(entry)
        if path is None or not path.is_file():
            raise ArtifactError("missing-file", f"manifest lists {entry.file} but {path} does not exist")
        if sha256_file(path) != entry.sha256:
            raise ArtifactError(
                "sha256-mismatch", f"{path} changed since export (sha256 differs from the manifest)"
            )
        problem = sidecar_problem(path, entry.sidecars)
        if problem:
            raise ArtifactError(problem[0], f"{problem[1]}: changed since export")
        return path

    def matches_file(self, entry: ArtifactEntry) -> bool:
        """An ``ok`` entry whose file (and sidecars) exist with the recorded hashes."""
        if not entry.ok or not entry.file:
            return False
        try:
            self.verify(entry)
        except (ArtifactError, UnsafePath):
            return False
        return True


def migrate(doc) -> dict:
    """A manifest of any schema version as the current version's dict: the one place older files are
    read. Version 1 files from before model contracts, targets and host fingerprints lack those blocks;
    readers treat the absent blocks as the CIFAR-10 contract and a host build."""
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise EdgebenchError("not an edgebench export manifest")
    version = doc.get("schema_version")
    if version != SCHEMA_VERSION:
        raise EdgebenchError(f"schema_version {version!r} is not one this edgebench reads (1)")
    return doc


def validate(doc: dict) -> None:
    """Raise EdgebenchError naming the first schema violation."""
    environment.validate(doc, "manifest", "manifest")
