"""``model.json``, a bundle's description of its one model: ``BundleSpec``.

The build side (``edgebench.bundle``) writes it and the device (``infer.py``, this package alone: no
jsonschema there) reads it through the same type. ``BundleSpec.read`` checks the fields the device relies on
by hand (types and required fields), migrates older files in one function (``migrate``) and confines every
file the document names (the model, its sidecars, the C runner, the samples) to the bundle folder: a
model.json is someone else's file, and ``native.binary`` is executed by ``--selftest``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from . import fields
from .base import RUNTIMES, InferenceError
from .bundle_parts import FileRecord, ModelFile, Sample  # noqa: F401  (FileRecord: re-exported)
from .contract import Contract
from .fields import FieldError
from .paths import confined

MODEL_JSON = "model.json"
BUNDLE_KIND = "edgebench-bundle"
SCHEMA_VERSION = 1  # the version written; ``migrate`` reads every earlier file
DEFAULT_BINARY = "runner"  # what `make` builds where the bundle shipped the C runner as source only


class BundleSpecError(FieldError):
    """A model.json this runtime cannot read, said in one line (bad input: exit 2)."""


def _cpu(doc: dict) -> dict | None:
    """model.json's ``cpu``: the rules infer.py checks at start and the target it names."""
    cpu = fields.get(doc, "cpu", dict, type(None))
    if cpu is None:
        return None
    for n, rule in enumerate(fields.items(cpu, "requires", dict, where="cpu.")):
        where = f"cpu.requires[{n}]."
        fields.get(rule, "arch", str, where=where)
        fields.items(rule, "any_of", str, where=where, minimum=1)
    target = fields.get(cpu, "target", dict, type(None), where="cpu.")
    if target is not None:
        fields.get(target, "name", str, where="cpu.target.")
        fields.get(target, "summary", str, where="cpu.target.")
    return cpu


def _eval(doc: dict) -> dict | None:
    """model.json's ``eval``: the evaluation set's two .npy files, their sha256s and how many images."""
    block = fields.get(doc, "eval", dict, type(None), optional=True)
    if block is not None:
        for name in ("images", "labels"):
            fields.get(block, name, str, where="eval.")
            fields.sha256(block, f"{name}_sha256", "eval.")
        fields.get(block, "count", int, where="eval.")
    return block


def _native(doc: dict) -> dict | None:
    """model.json's ``native``: the C runner's files (the binary is executed by --selftest)."""
    native = fields.get(doc, "native", dict, type(None))
    if native is not None:
        fields.get(native, "binary", str, type(None), where="native.")
        fields.get(native, "library", str, where="native.", optional=True)
        if "sources" in native:
            fields.items(native, "sources", str, where="native.")
    return native


@dataclass(frozen=True)
class BundleSpec:
    """The model.json of a bundle (its folder is not part of it); fields in the file's order."""

    edgebench_version: str
    created: str
    format: str
    runtime: str
    description: str
    model: ModelFile
    inputs: list
    outputs: list
    dynamic_batch: bool
    precision: str
    preprocessing: dict  # input, image_files, in_graph: the three sentences the README shows
    class_names: tuple[str, ...]
    contract: dict
    source_model: dict
    export: dict
    measured: dict | None  # bench's figures for the artifact (None: not benchmarked)
    threads: int | None  # infer.py's and the C runner's default: those the latency was measured with
    cpu: dict | None  # None: a bundle from before targets (nothing to check)
    native: dict | None  # None: a bundle from before the C runner
    samples: tuple[Sample, ...]
    requirements: tuple[str, ...]
    eval: dict | None = None  # the evaluation set of the device bench (None: built with --eval 0 or before)
    extra: dict = field(default_factory=dict)  # fields a newer edgebench wrote: kept, not interpreted

    @property
    def model_contract(self) -> Contract:
        return Contract.from_dict(self.contract)

    @property
    def binary(self) -> str:
        """The C runner's file name (the one `make` builds where none was prebuilt)."""
        return (self.native or {}).get("binary") or DEFAULT_BINARY

    def named_files(self) -> list[tuple[str, str]]:
        """(what, name) of every file in the bundle folder this document names."""
        names = [("model file", self.model.file), *(("model sidecar", s.file) for s in self.model.sidecars)]
        for sample in self.samples:
            names += [("sample image", sample.file)] + ([("sample image", sample.ppm)] if sample.ppm else [])
        if self.eval:
            names += [
                ("evaluation set file", self.eval["images"]),
                ("evaluation set file", self.eval["labels"]),
            ]
        if self.native and self.native.get("library"):  # a bundle with a C runner (binary built or not)
            names += [("C runner", self.binary), ("C runner library", self.native["library"])]
            names += [("C runner source", name) for name in self.native.get("sources") or ()]
        return names

    def to_dict(self) -> dict:
        out = {"schema_version": SCHEMA_VERSION, "kind": BUNDLE_KIND}
        for f in dataclasses.fields(self):
            out[f.name] = getattr(self, f.name)
        out.update(model=self.model.to_dict(), samples=[s.to_dict() for s in self.samples])
        out.update(class_names=list(self.class_names), requirements=list(self.requirements))
        for key in ("cpu", "native", "eval"):  # absent, as in the bundles that predate them
            if out[key] is None:
                del out[key]
        extra = out.pop("extra")
        return {**out, **extra}

    @classmethod
    def from_dict(cls, doc) -> BundleSpec:
        """The validated spec of a model.json of any version (``migrate``); BundleSpecError names the
        first field that is missing or of the wrong type."""
        doc = migrate(doc)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(
            **{
                key: fields.get(doc, key, str)
                for key in ("edgebench_version", "created", "format", "description")
            },
            runtime=_runtime(doc),
            model=ModelFile.from_dict(fields.get(doc, "model", dict)),
            inputs=fields.items(doc, "inputs", dict, minimum=1),
            outputs=fields.items(doc, "outputs", dict, minimum=1),
            dynamic_batch=fields.get(doc, "dynamic_batch", bool),
            precision=fields.get(doc, "precision", str),
            preprocessing=_preprocessing(doc),
            class_names=tuple(fields.items(doc, "class_names", str, minimum=2)),
            contract=_contract(doc),
            source_model=fields.get(doc, "source_model", dict),
            export=fields.get(doc, "export", dict),
            measured=fields.get(doc, "measured", dict, type(None)),
            threads=_threads(doc),
            cpu=_cpu(doc),
            native=_native(doc),
            samples=tuple(
                Sample.from_dict(s, f"samples[{n}].")
                for n, s in enumerate(fields.items(doc, "samples", dict, minimum=1))
            ),
            requirements=tuple(fields.items(doc, "requirements", str)),
            eval=_eval(doc),
            extra={k: v for k, v in doc.items() if k not in names and k not in ("schema_version", "kind")},
        )

    @classmethod
    def read(cls, folder: str | os.PathLike) -> BundleSpec:
        """The spec in ``folder``'s model.json after checking that every file it names stays in ``folder``;
        one-line errors (InferenceError: exit 2) for anything else."""
        path = Path(folder) / MODEL_JSON
        if not path.is_file():
            raise InferenceError(f"no {MODEL_JSON} in {folder} (pass --model to run a bare model file)")
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise BundleSpecError(f"{path} is not valid JSON ({exc})") from None
        try:
            spec = cls.from_dict(doc)
            for what, name in spec.named_files():
                confined(folder, name, what)
        except InferenceError as exc:
            raise BundleSpecError(f"{path}: {exc}") from None
        return spec

    def write(self, folder: str | os.PathLike) -> Path:
        path = Path(folder) / MODEL_JSON
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path


def _runtime(doc: dict) -> str:
    name = fields.get(doc, "runtime", str)
    if name not in RUNTIMES:
        raise BundleSpecError(
            f"runtime '{name}' is not one this runtime package knows ({', '.join(RUNTIMES)})"
        )
    return name


def _preprocessing(doc: dict) -> dict:
    block = fields.get(doc, "preprocessing", dict)
    for key in ("input", "image_files", "in_graph"):
        fields.get(block, key, str, where="preprocessing.")
    return block


def _contract(doc: dict) -> dict:
    block = fields.get(doc, "contract", dict)
    Contract.from_dict(block)  # a ContractError says what cannot describe an image classifier
    return block


def _threads(doc: dict) -> int | None:
    threads = fields.get(doc, "threads", int, type(None))
    if threads is not None and threads < 1:
        raise BundleSpecError(f"threads must be at least 1 (got {threads})")
    return threads


def migrate(doc) -> dict:
    """A model.json of any version as the current version's dict: the one place older files are read.

    Every file so far is version 1; the oldest lack blocks added since, which read as: no ``contract``
    (before model contracts) the CIFAR-10 input with the file's own class names; no ``threads`` the
    runtime's default; no ``cpu`` (before targets) nothing to check; no ``native`` (before the C runner) no
    C runner; samples without ``ppm`` nothing for a C runner; a model without ``sidecars`` none."""
    if not isinstance(doc, dict) or doc.get("kind") != BUNDLE_KIND:
        raise BundleSpecError(f"not an edgebench bundle description (kind {BUNDLE_KIND})")
    version = doc.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleSpecError(f"schema_version {version!r} is not one this runtime reads ({SCHEMA_VERSION})")
    doc = dict(doc)
    classes = doc.get("class_names")
    if not doc.get("contract") and isinstance(classes, list) and all(isinstance(c, str) for c in classes):
        doc["contract"] = Contract.cifar10().with_classes(classes).to_dict()
    for key in ("threads", "cpu", "native"):
        doc.setdefault(key, None)
    return doc
