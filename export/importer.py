"""``import_artifacts``: an export folder made from existing .tflite/.onnx files or OpenVINO IRs (.xml with
its .bin), for users who arrive with exported models and no Keras model.

Each file gets the same inspection as an exported one (I/O tensors, precision, kernel coverage), a format
name (given as ``NAME=PATH``, else from its runtime and precision: ``onnx``, ``tflite-int8`` …) and a parity
check against the imported fp32 artifact (the reference: the first fp32 file) on stratified images of the
evaluation split. The model contract comes from the reference's input tensor, the class count from its
output, names from ``--labels`` or the class folders, preprocessing from the user. The manifest says
``"imported": true`` and has no calibration; bench takes the reference with ``--reference-format``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from edgebench.errors import ArtifactError, EdgebenchError
from edgebench.export import artifact_info, coverage
from edgebench.export import entries as manifest_entries
from edgebench.export.context import indices_sha256, stratified_sample
from edgebench.export.contract import artifact_contract, name_classes
from edgebench.export.messages import first_line
from edgebench.export.parity import compare, run_artifact
from edgebench.export.pipeline import ExportResult
from edgebench.export.registry import FORMATS, FP32_TOLERANCE
from edgebench.fileio import atomic_path, ensure_dir, sha256_file
from edgebench.runtime import (
    RUNTIMES,
    InferenceError,
    artifact_files,
    copy_artifact,
    portable_runtimes,
    probe_model,
    runtime_for_path,
)
from edgebench.runtime.paths import check_name, confined, safe_name

# runtime -> the name stem of a file of it (``tflite``, ``onnx``): the runtimes whose files travel
IMPORTABLE = {rt.name: rt.suffixes[0].lstrip(".") for rt in portable_runtimes()}
# (runtime, precision label) -> the registry's name for such a file
_NAMES = {
    ("litert", "fp32"): "tflite-fp32",
    ("litert", "fp16 weights, fp32 activations"): "tflite-fp16",
    ("litert", "int8 weights, fp32 activations"): "tflite-dynamic",
    ("litert", "int8"): "tflite-int8",
    ("onnxruntime", "fp32"): "onnx",
    ("onnxruntime", "int8"): "onnx-int8",
    ("openvino", "fp32"): "openvino",
    ("openvino", "int8"): "openvino-int8",
}


def _parse(item: str) -> tuple[str | None, Path]:
    name, sep, path = item.partition("=")
    if not sep or Path(item).is_file():
        return None, Path(item)
    name = name.strip()
    try:  # the format name becomes part of file and folder names (a bundle's dist/<run>-<format>)
        check_name(name, "format name")
    except InferenceError as exc:
        raise EdgebenchError(f"{exc} (in {item!r})") from None
    return name, Path(path)


def inspect_file(item: str) -> dict:
    """Runtime, inspected I/O and precision, kernel coverage and format name of one file to import."""
    name, path = _parse(item)
    if not path.is_file():
        raise EdgebenchError(f"file to import not found: {path}")
    try:
        runtime = runtime_for_path(path)
    except InferenceError as exc:
        raise EdgebenchError(str(exc)) from None
    if runtime not in IMPORTABLE:
        suffixes = " and ".join(f".{stem}" for stem in IMPORTABLE.values())
        raise EdgebenchError(f"cannot import {path}: only {suffixes} files are imported")
    missing = [p for p in artifact_files(path, runtime)[1:] if not p.is_file()]
    if missing:
        raise EdgebenchError(f"cannot import {path}: {missing[0].name} is not beside it (its weights)")
    # confined to the file's folder before any parser follows it; inlined when it is copied in
    external = _onnx_external_data(path) if runtime == "onnxruntime" else []
    try:
        probe_model(path, runtime)  # a file LiteRT would crash on: one line, before it is inspected here
    except InferenceError as exc:
        raise EdgebenchError(str(exc)) from None
    try:
        info = artifact_info.describe(runtime, path)
        cov = coverage.describe(runtime, path)
    except Exception as exc:  # parsers raise anything on a damaged file
        raise EdgebenchError(f"cannot inspect {path}: {first_line(exc)}") from None
    label = info["precision"]["label"]
    quantized = "int8" in label
    if quantized:  # what runs, not what is stored, names a quantized artifact
        info["precision"]["label"] = coverage.precision_label(label, cov)
    final = info["precision"]["label"]
    name = (
        name
        or _NAMES.get((runtime, final))
        or _NAMES.get((runtime, label))
        or f"{IMPORTABLE[runtime]}-{safe_name(path.stem)}"
    )
    known = FORMATS.get(name)
    # the user's file name, in safe characters: it lands in shell lines and C defines of a bundle
    filename = known.filename if known else safe_name(path.name)
    return dict(
        name=name, path=path, filename=filename, runtime=runtime, info=info, coverage=cov, label=label,
        external_data=bool(external),
    )  # fmt: skip


def _check_distinct(items: list[dict]) -> None:
    """Each file gets its own format name and its own file name in the export folder."""
    names = [i["name"] for i in items]
    if len(set(names)) != len(names):
        raise EdgebenchError(f"two files get the same format name ({', '.join(names)}); name them NAME=PATH")
    filenames = [i["filename"] for i in items]
    if len(set(filenames)) != len(filenames):
        raise EdgebenchError(f"two files get the same file name in the export ({', '.join(filenames)})")


def import_artifacts(
    files,
    out_dir,
    data_source,
    labels=None,
    preprocessing: dict | None = None,
    parity_images: int = 100,
    parity_seed: int = 0,
    split: str = "test",
    cache_dir=None,
    on_format: Callable[[str, dict], None] | None = None,
) -> ExportResult:
    """Copy ``files`` (paths or ``NAME=PATH``) into the export folder ``out_dir`` with a manifest."""
    from edgebench.train.data.dataset import align_classes, load_dataset

    if not files:
        raise EdgebenchError("no files to import")
    if parity_images < 1:
        raise EdgebenchError(f"--parity-images must be at least 1 (got {parity_images})")
    items = [inspect_file(str(f)) for f in files]
    _check_distinct(items)
    fp32 = [i for i in items if i["label"] == "fp32"]
    if not fp32:
        raise EdgebenchError("import needs one fp32 file: the reference for parity and for bench")
    ref = fp32[0]
    contract = artifact_contract(ref["info"], labels, preprocessing)
    for item in items:
        shape = item["info"]["inputs"][0]["shape"][1:]
        classes = item["info"]["outputs"][0]["shape"][-1]
        if (
            list(shape) != [contract.height, contract.width, contract.channels]
            or classes != contract.num_classes
        ):
            raise EdgebenchError(
                f"{item['path']} takes {shape} and outputs {classes} classes; {ref['path']} takes "
                f"{[contract.height, contract.width, contract.channels]} and outputs {contract.num_classes}"
            )
    ds = load_dataset(data_source, cache_dir, size=contract.size, channels=contract.channels, split=split)
    contract = name_classes(contract, ds, labels is not None)
    ds = align_classes(ds, contract.classes)
    idx = stratified_sample(ds.y_test, parity_images, parity_seed)
    images = ds.x_test[idx]
    reference = run_artifact(ref["runtime"], ref["path"], images, contract)

    out_dir = ensure_dir(out_dir)
    source = {
        "path": os.fspath(ref["path"]),
        "sha256": sha256_file(ref["path"]),
        "bytes": ref["path"].stat().st_size,
    }
    parity_set = {
        "source": ds.source,
        "split": ds.split,
        "size": int(len(idx)),
        "seed": parity_seed,
        "indices_sha256": indices_sha256(idx),
    }
    manifest = manifest_entries.new_manifest(out_dir, source, contract, None, parity_set, imported=True)
    entries = []
    result = ExportResult(manifest)
    try:
        for item in items:
            entry = _import_one(item, out_dir, images, reference, contract, ref["name"], ds.source)
            entries.append(entry)
            (result.built if entry.ok else result.failed).append(item["name"])
            if on_format:
                on_format(item["name"], entry)
        result.manifest = manifest.replace(artifacts=tuple(entries))
        result.manifest.write()
    except BaseException:  # e.g. a full disk: no imported file is left without the manifest naming it
        for entry in entries:
            for path in artifact_files(out_dir / entry.file, entry.runtime) if entry.file else ():
                path.unlink(missing_ok=True)
        raise
    return result


def _import_one(item, out_dir: Path, images, reference, contract, ref_name: str, data_source: str):
    name, runtime, info = item["name"], item["runtime"], item["info"]
    known = FORMATS.get(name)
    quantized = "int8" in item["label"]
    tolerance = known.tolerance if known else (None if quantized else FP32_TOLERANCE)
    filename = item["filename"]
    options = {
        "description": f"imported from {item['path']}",
        "imported_from": os.fspath(item["path"]),
        "parity_reference": ref_name,
        "data_source": data_source,
    }
    start = time.perf_counter()
    try:
        sidecars = RUNTIMES[runtime].sidecars
        with atomic_path(out_dir / filename, sidecars) as tmp:
            _copy_in(item, tmp)
            try:
                probs = run_artifact(runtime, tmp, images, contract)
            except EdgebenchError as exc:
                raise ArtifactError("load-error", str(exc)) from None
            parity = compare(probs, reference, tolerance)
            if not parity["passed"]:
                raise ArtifactError(
                    "parity-error", f"{name} differs from {ref_name}: {parity['criterion']} not met"
                )
            entry = manifest_entries.ok_entry(
                name,
                runtime,
                tmp,
                quantized=quantized,
                coverage=item["coverage"],
                file=filename,
                options=options,
                **info,
                parity=parity,
            )
    except ArtifactError as exc:
        for stale in artifact_files(out_dir / filename, runtime):  # an earlier import's files must not
            stale.unlink(missing_ok=True)  # outlive this failure
        return manifest_entries.entry(
            name, runtime, "failed", exc.reason, str(exc), options=options, wall_time_s=_since(start)
        )
    return entry.replace(wall_time_s=_since(start))


def _onnx_external_data(path: Path) -> list[str]:
    """The tensors of an ONNX file stored in external data files, each file confined to its folder."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    try:
        proto = onnx.load(path, load_external_data=False)
    except Exception as exc:  # protobuf raises its own types on a damaged file
        raise EdgebenchError(f"cannot inspect {path}: {first_line(exc)}") from None
    external = [t for t in proto.graph.initializer if uses_external_data(t)]
    for tensor in external:
        location = {e.key: e.value for e in tensor.external_data}.get("location")
        confined(path.parent, location, f"external data of {tensor.name}")
    return [t.name for t in external]


def _copy_in(item: dict, dest: Path) -> None:
    """Copy the inspected file ``item`` (and its sidecars) to ``dest``; an ONNX file whose tensors live in
    external data files is stored as one file, its tensors inlined: the export folder then holds every
    byte it runs, under the manifest's sha256 (protobuf's 2-GB limit applies)."""
    src = item["path"]
    if not item["external_data"]:
        return copy_artifact(src, dest, item["runtime"])
    import onnx

    _onnx_external_data(src)  # checked again right where the locations are followed

    try:
        onnx.save(onnx.load(src), dest)
    except ValueError as exc:  # over 2 GB: protobuf cannot hold it in one file
        raise ArtifactError("load-error", f"cannot inline the external data of {src}: {exc}") from None


def _since(start: float) -> float:
    return round(time.perf_counter() - start, 3)
