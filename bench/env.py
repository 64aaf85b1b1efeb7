"""Environment fingerprint of every report: hardware, OS, Python, runtime versions, edgebench commit.

The CPU and the git commit are read by the core (``edgebench.cpu``, ``edgebench.environment``), the one
reader of each, so a report and a model's provenance cannot disagree on them."""

from __future__ import annotations

import os
import platform

import psutil

from edgebench import __version__, cpu
from edgebench.environment import git_state, versions
from edgebench.runtime import onnxrt


def fingerprint(threads: list[int]) -> dict:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu": cpu.model_name(),
        "cpu_features": cpu.fingerprint(),
        "machine": platform.machine(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cores": usable,
        "threads": list(threads),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": versions(),
        "onnxruntime_providers": onnxrt.available_providers(),
        "edgebench": {"version": __version__, **git_state()},
    }
