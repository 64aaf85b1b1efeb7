"""The artifacts bench runs, read from the export manifest only (never guessed from file names)."""

from __future__ import annotations

from pathlib import Path

from edgebench.errors import ArtifactError, EdgebenchError
from edgebench.fileio import read_json, sha256_file
from edgebench.runtime import sidecar_problem

MANIFEST_NAME = "manifest.json"


def read_manifest(export_dir) -> dict:
    """The validated manifest of ``export_dir``; one-line errors for a missing folder/file or a bad one."""
    from edgebench.export import manifest as export_manifest

    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        raise EdgebenchError(f"export folder not found: {export_dir}")
    path = export_dir / MANIFEST_NAME
    if not path.is_file():
        raise EdgebenchError(f"no {MANIFEST_NAME} in {export_dir} (run edgebench export first)")
    manifest = read_json(path, "export manifest")
    if not isinstance(manifest, dict) or manifest.get("kind") != "edgebench-export-manifest":
        raise EdgebenchError(f"{path} is not an edgebench export manifest")
    if manifest.get("schema_version") != 1:
        raise EdgebenchError(f"{path} has schema_version {manifest.get('schema_version')!r}; bench reads 1")
    try:
        export_manifest.validate(manifest)
    except EdgebenchError as exc:
        raise EdgebenchError(f"{path}: {exc}") from None
    return manifest


def select(manifest: dict, formats) -> list[dict]:
    """The manifest's artifacts, or those named in ``formats`` (comma lists allowed), in that order."""
    artifacts = manifest["artifacts"]
    if not formats:
        return list(artifacts)
    if isinstance(formats, str):
        formats = [formats]
    wanted = [n.strip() for item in formats for n in item.split(",") if n.strip()]
    known = [a["format"] for a in artifacts]
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise EdgebenchError(
            f"format(s) not in the manifest: {', '.join(unknown)} (listed: {', '.join(known)})"
        )
    by_name = {a["format"]: a for a in artifacts}
    return [by_name[n] for n in dict.fromkeys(wanted)]  # in the order asked for: it is the timing order


def verified_path(export_dir, artifact: dict) -> Path:
    """The artifact's file, after checking it and its sidecars exist with the manifest's sha256."""
    path = Path(export_dir) / artifact["file"]
    if not path.is_file():
        raise ArtifactError("missing-file", f"manifest lists {artifact['file']} but {path} does not exist")
    if sha256_file(path) != artifact["sha256"]:
        raise ArtifactError(
            "sha256-mismatch", f"{path} changed since export (sha256 differs from the manifest)"
        )
    problem = sidecar_problem(path, artifact.get("sidecars"))
    if problem:
        raise ArtifactError(problem[0], f"{problem[1]}: changed since export")
    return path


def fixed_batch(artifact: dict) -> int | None:
    """The batch size a fixed-batch artifact requires; None when the batch dimension is dynamic."""
    if artifact.get("dynamic_batch"):
        return None
    shape = (artifact.get("inputs") or [{}])[0].get("shape") or [-1]
    return int(shape[0]) if shape[0] and shape[0] > 0 else None
