"""The export manifest: building entries, validating against the JSON Schema, the up-to-date check."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from edgebench import __version__, environment
from edgebench.errors import EdgebenchError
from edgebench.export.contract import manifest_preprocessing
from edgebench.export.coverage import warnings as coverage_warnings
from edgebench.fileio import sha256_file, write_json
from edgebench.runtime import sidecar_entries, sidecar_problem

MANIFEST_NAME = "manifest.json"
_ARTIFACT_FIELDS = (
    "file",
    "reason",
    "message",
    "sha256",
    "bytes",
    "inputs",
    "outputs",
    "dynamic_batch",
    "precision",
    "parity",
    "options",
    "wall_time_s",
    "coverage",
    "warnings",
)


def validate(manifest: dict) -> None:
    """Raise EdgebenchError naming the first schema violation."""
    environment.validate(manifest, "manifest", "manifest")


def tool_versions() -> dict:
    """The converters' and every runtime's installed versions."""
    return environment.versions(
        "tensorflow", "keras", "tf2onnx", "onnx", "nncf", *environment.RUNTIME_MODULES
    )


def new_manifest(source_model: dict, contract, calibration: dict | None, parity_set: dict) -> dict:
    """A manifest without artifacts; ``contract``: the model contract (``edgebench.runtime.Contract``)."""
    return {
        "schema_version": 1,
        "kind": "edgebench-export-manifest",
        "edgebench_version": __version__,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "source_model": source_model,
        "class_names": list(contract.classes),
        "contract": contract.to_dict(),
        "preprocessing": manifest_preprocessing(contract),
        "calibration": calibration,
        "parity_set": parity_set,
        "tool_versions": tool_versions(),
        "artifacts": [],
    }


def entry(
    name: str, runtime: str, status: str, reason: str | None = None, message: str | None = None, **fields
) -> dict:
    """The manifest entry of format ``name`` (opened by runner ``runtime``); fields not given are null (the
    schema's shape for failed/unavailable artifacts)."""
    out = {"format": name, "runtime": runtime, "status": status, **dict.fromkeys(_ARTIFACT_FIELDS)}
    if message:
        message = " ".join(message.split())  # one line in tables and logs
    out.update(reason=reason, message=message, **fields)
    return out


def ok_entry(
    name: str, runtime: str, path: Path, *, quantized: bool, coverage: dict | None, **fields
) -> dict:
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
        **({"sidecars": sidecars} if sidecars else {}),
        **fields,
    )


def read_previous(out_dir: Path) -> dict | None:
    """The manifest of an earlier export in ``out_dir``, or None when absent or unusable."""
    path = out_dir / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        validate(manifest)
        return manifest
    except (OSError, ValueError, EdgebenchError):
        return None


def file_matches(out_dir: Path, artifact: dict) -> bool:
    """An ``ok`` entry whose file (and sidecars) exist with the recorded hashes."""
    if artifact.get("status") != "ok" or not artifact.get("file"):
        return False
    path = out_dir / artifact["file"]
    return (
        path.is_file()
        and sha256_file(path) == artifact.get("sha256")
        and sidecar_problem(path, artifact.get("sidecars")) is None
    )


def up_to_date(previous: dict | None, out_dir: Path, source_sha256: str, fmt, options: dict) -> dict | None:
    """The previous entry for ``fmt`` when the source model, options and file are unchanged."""
    if not previous or previous["source_model"]["sha256"] != source_sha256:
        return None
    for artifact in previous["artifacts"]:
        if (
            artifact["format"] == fmt.name
            and artifact.get("options") == options
            and file_matches(out_dir, artifact)
        ):
            return artifact
    return None


def write(out_dir: Path, manifest: dict) -> Path:
    validate(manifest)
    return write_json(out_dir / MANIFEST_NAME, manifest)
