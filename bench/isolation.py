"""The parent side of bench's workers: one fresh process per measurement, results read back from files."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from edgebench.errors import ArtifactError
from edgebench.runtime import RunnerSpec

_counter = itertools.count()


def worker_command(
    kind: str, spec: RunnerSpec, images_path: Path, out: Path, **task
) -> tuple[list[str], dict[str, str]]:
    """Write ``<out>.task.json`` and return the command and environment that run it in a fresh worker;
    the worker writes ``<out>.json`` (and ``<out>.npy``)."""
    task_path = Path(out).with_suffix(".task.json")
    task_path.write_text(
        json.dumps(
            {"kind": kind, "spec": spec.to_dict(), "images": str(images_path), "out": str(out), **task}
        )
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    return [sys.executable, "-m", "edgebench.bench.worker", str(task_path)], env


def run_worker(
    kind: str, spec: RunnerSpec, images_path: Path, workdir: Path, timeout_s: float, **task
) -> tuple[dict, np.ndarray]:
    """Run ``edgebench.bench.worker`` on one task; (result, array) or ArtifactError with one line."""
    out = Path(workdir) / f"task{next(_counter):04d}-{kind}"
    cmd, env = worker_command(kind, spec, images_path, out, **task)
    task_path = out.with_suffix(".task.json")
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise ArtifactError("timeout", f"{kind} worker for {spec.path} ran over {timeout_s:g} s") from None
    result_path = out.with_suffix(".json")
    if not result_path.is_file():
        tail = (proc.stderr or "").strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        raise ArtifactError("worker-crashed", f"{kind} worker for {spec.path} died: {tail[0]}")
    result = json.loads(result_path.read_text())
    if "error" in result:
        raise ArtifactError(result["error"]["reason"], result["error"]["message"])
    array = np.load(out.with_suffix(".npy"))
    for path in (task_path, result_path, out.with_suffix(".npy")):
        path.unlink(missing_ok=True)
    return result, array
