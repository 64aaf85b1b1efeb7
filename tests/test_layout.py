"""Rules of the code's layout that no behaviour test would catch: which stage may import which, and where a
runtime's module may be imported."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from edgebench.runtime import RUNTIMES

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("edgebench", "train", "export", "bench", "tune", "bundle")
RUNTIME_PACKAGE = REPO / "edgebench" / "runtime"  # the table (base.py), one module per runtime, bare loops
# Outside it a runtime's package is imported only as a build tool, never to load or run a model:
BUILD_TOOLS = {
    "onnxruntime.quantization": ("export/onnx_formats.py", "tune/sensitivity.py"),  # ORT's quantizer
    "openvino": ("export/openvino_formats.py",),  # convert_model / save_model: ONNX -> IR
    "tensorrt": ("export/tensorrt_formats.py",),  # Builder + ONNX parser: the engine build
}


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def _allowed(module: str, where: str) -> bool:
    return any(
        (module == tool or module.startswith(tool + ".")) and where in files
        for tool, files in BUILD_TOOLS.items()
    )


def test_runtime_modules_are_imported_only_by_the_runtime_package():
    """A runtime's Python module (the ``modules`` of the one runtime table) is imported inside
    ``edgebench/runtime`` only, where the runners and the loaders other stages call live; elsewhere only as
    a build tool (``BUILD_TOOLS``). A second place that opens a model would be a second implementation to
    keep in step (two once disagreed on LiteRT's module name)."""
    # Keras' row is the training framework's own reference runner (train/reference/keras_runner.py), not
    # a runtime
    runtime_modules = {m for row in RUNTIMES.values() if row.entry.startswith(".") for m in row.modules}
    offenders = [
        f"{path.relative_to(REPO)}: {name}"
        for package in PACKAGES
        for path in sorted((REPO / package).rglob("*.py"))
        if RUNTIME_PACKAGE not in path.parents
        for name in _imports(path)
        if name.split(".")[0] in runtime_modules and not _allowed(name, str(path.relative_to(REPO)))
    ]
    assert offenders == []
    assert runtime_modules >= {"ai_edge_litert", "onnxruntime", "openvino", "tensorrt"}


def test_stages_import_downward_only():
    """core -> train -> export -> bench -> tune -> bundle: no stage imports a later one (a cycle would make
    every stage depend on every other; tune reads bench's measurements, bundle reads tune's output files
    only), and the core package (``edgebench/``: runtime, environment, CLI) imports no stage (the CLI and
    the runner registry name stage modules as strings, loaded on use)."""
    order = ["edgebench", "train", "export", "bench", "tune", "bundle"]
    offenders = [
        f"{path.relative_to(REPO)}: edgebench.{later}"
        for i, stage in enumerate(order)
        for path in (REPO / stage).rglob("*.py")
        for later in order[i + 1 :]
        if re.search(rf"^\s*(from|import) edgebench\.{later}\b", path.read_text(), re.M)
    ]
    assert offenders == []


def test_no_function_in_the_pipeline_stages_is_over_80_lines():
    """export, bench, tune and bundle are where the documents between stages are built and read: a function
    past 80 lines there is a hub that does several steps at once (the hubs this replaced: 105-141 lines)."""
    too_long = [
        f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for stage in ("export", "bench", "tune", "bundle")
        for path in sorted((REPO / stage).rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > 80
    ]
    assert too_long == []
