"""Run an exported edgebench artifact with numpy, Pillow and one runtime only: no TensorFlow, no edgebench.

The one implementation of opening and running an artifact: ``edgebench predict``, export parity, bench and
its timing workers use it, and a bundle ships this package verbatim (as ``edgebench_runtime``, driven by
``infer.py``). Modules: ``base`` (runner interface, registry, ``open_runner``), one module per runtime,
``contract`` (the model contract: input size, dtype, preprocessing, classes), ``images`` (image files at
the model's size, result formatting), ``bundle_spec`` (model.json: ``BundleSpec``), ``bundle`` (a bundle
folder, self-test), ``native`` (the bundle's C runner driven from Python), ``paths`` (file names a document
gives: confined to its folder, safe characters) and ``cli`` (infer.py).
"""

from .base import (
    RUNTIMES,
    InferenceError,
    Runner,
    RunnerSpec,
    Runtime,
    artifact_files,
    copy_artifact,
    dequantize,
    missing_modules,
    open_runner,
    portable_runtimes,
    quantize,
    runtime_for_path,
)
from .bundle import (
    Bundle,
    check_classes,
    selftest,
    sha256_file,
    sidecar_entries,
    sidecar_problem,
)
from .bundle_spec import BUNDLE_KIND, MODEL_JSON, BundleSpec, BundleSpecError, FileRecord, ModelFile, Sample
from .contract import Contract, ContractError, contract_beside, read_labels
from .images import (
    CIFAR10_CLASSES,
    INPUT_SIZE,
    classify,
    fit_image,
    format_results,
    load_image,
    load_images,
    resize_pixels,
    top_k,
)
from .probe import probe_model
from .tflite_check import TFLiteError, verify_model

__all__ = [
    "BUNDLE_KIND",
    "CIFAR10_CLASSES",
    "INPUT_SIZE",
    "MODEL_JSON",
    "RUNTIMES",
    "Bundle",
    "BundleSpec",
    "BundleSpecError",
    "FileRecord",
    "ModelFile",
    "Sample",
    "Contract",
    "ContractError",
    "InferenceError",
    "Runner",
    "RunnerSpec",
    "Runtime",
    "artifact_files",
    "check_classes",
    "copy_artifact",
    "classify",
    "contract_beside",
    "dequantize",
    "fit_image",
    "format_results",
    "load_image",
    "load_images",
    "missing_modules",
    "open_runner",
    "portable_runtimes",
    "probe_model",
    "quantize",
    "read_labels",
    "resize_pixels",
    "runtime_for_path",
    "selftest",
    "sha256_file",
    "sidecar_entries",
    "sidecar_problem",
    "top_k",
    "TFLiteError",
    "verify_model",
]
