"""Building an export manifest: a new one, and its entries (``ok`` after the checks, ``failed`` or
``unavailable`` with the reason) as export, import and tune record them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from edgebench import environment
from edgebench.export.contract import manifest_preprocessing
from edgebench.export.coverage import warnings as coverage_warnings
from edgebench.export.manifest import ArtifactEntry, ExportManifest
from edgebench.fileio import sha256_file
from edgebench.runtime import sidecar_entries


def tool_versions() -> dict:
    """The converters' and every runtime's installed versions."""
    return environment.versions(
        "tensorflow", "keras", "tf2onnx", "onnx", "nncf", *environment.RUNTIME_MODULES
    )


def new_manifest(folder, source_model: dict, contract, calibration: dict | None, parity_set: dict, **fields):
    """A manifest without artifacts; ``contract``: the model contract (``edgebench.runtime.Contract``)."""
    return ExportManifest(
        folder=Path(folder),
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        source_model=source_model,
        class_names=list(contract.classes),
        contract=contract.to_dict(),
        preprocessing=manifest_preprocessing(contract),
        calibration=calibration,
        parity_set=parity_set,
        tool_versions=tool_versions(),
        **fields,
    )


def entry(name: str, runtime: str, status: str, reason=None, message=None, **fields) -> ArtifactEntry:
    """The entry of format ``name`` (opened by runner ``runtime``); fields not given are null (the schema's
    shape for failed/unavailable artifacts)."""
    if message:
        message = " ".join(message.split())  # one line in tables and logs
    fields.update(format=name, runtime=runtime, status=status, reason=reason, message=message)
    return ArtifactEntry.from_dict(fields)


def ok_entry(name: str, runtime: str, path, *, quantized: bool, coverage: dict | None, **fields):
    """The ``ok`` entry of a verified artifact, the one way export, import and tune record one: its sha256
    and size read from ``path``, the coverage warnings of a quantized artifact, and ``fields`` (``file``,
    ``options``, ``parity``, the inspected ``inputs`` / ``outputs`` / ``dynamic_batch`` / ``precision`` …)."""
    path = Path(path)
    sidecars = sidecar_entries(path, runtime, fields.get("file"))  # an OpenVINO IR's .bin
    return entry(
        name,
        runtime,
        "ok",
        sha256=sha256_file(path),
        bytes=path.stat().st_size,
        coverage=coverage,
        warnings=coverage_warnings(name, coverage) if quantized else [],
        sidecars=sidecars or None,
        **fields,
    )


def up_to_date(previous: ExportManifest | None, source_sha256: str, fmt, options: dict):
    """The previous entry for ``fmt`` when the source model, options and file are unchanged."""
    if not previous or previous.source_model["sha256"] != source_sha256:
        return None
    old = previous.entry(fmt.name)
    if old is not None and old.options == options and previous.matches_file(old):
        return old
    return None
