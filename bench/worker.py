"""A measurement in a fresh process: ``python -m edgebench.bench.worker TASK.json``.

The worker imports numpy, the runtime package and the one runtime the task's ``RunnerSpec`` names, nothing
else (no TensorFlow unless it measures the Keras reference), so no other runtime's threads or memory share
the measurement. Tasks:

- ``predict``: probabilities for the test images (saved as ``<out>.npy``);
- ``time``: load time, cold first call, warm-up, batch-1 samples (``<out>.npy``, ns), harness overhead,
  throughput per batch size, and peak memory: the process's peak RSS (VmHWM) minus the RSS it had with
  only the runtime imported, like benchmark_model's memory footprint;
- ``describe``: the loaded runner's ``describe()`` only (what a plugin chose: OpenVINO's precision);
- ``serve``: the same batch-1 timed call, kept warm for a coordinator (``crosscheck``) that interleaves
  short blocks of it with other timers: it prints ``READY {json}``, then answers each stdin line ``k``
  with ``BLOCK [k samples in ns]``.

The result (or a one-line error) goes to ``<out>.json``; the parent reads nothing else.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import numpy as np

from edgebench.runtime import RUNTIMES, InferenceError, RunnerSpec, open_runner
from edgebench.runtime.timing import (
    LatencySettings,
    loaded_runtimes,
    predict,
    tile,
    time_fresh,
    timed_samples,
    warm_up,
)


def time_task(task: dict, spec: RunnerSpec, images: np.ndarray) -> tuple[dict, np.ndarray]:
    s = LatencySettings(**task["settings"])
    fixed, overhead = task.get("fixed_batch"), task.get("overhead", True)
    return time_fresh(spec, images, s, fixed=fixed, batches=task["batch_sizes"], overhead=overhead)


def predict_task(task: dict, spec: RunnerSpec, images: np.ndarray) -> tuple[dict, np.ndarray]:
    with open_runner(spec) as runner:
        probs = predict(
            runner, images, task["eval_batch"], task.get("fixed_batch"), num_classes=task["num_classes"]
        )
        describe = runner.describe()
    return {"runner": describe, "worker_modules": loaded_runtimes()}, probs.astype(np.float32)


def serve_task(task: dict, spec: RunnerSpec, images: np.ndarray) -> tuple[dict, np.ndarray]:
    s = LatencySettings(**task["settings"])
    RUNTIMES[spec.runtime].runner_class().import_runtime(spec.threads)
    with open_runner(spec) as runner:
        run = runner.bind(tile(images, 1))
        warm_up(run, s.warmup_runs, s.warmup_cap_s)
        print("READY", json.dumps({"worker_modules": loaded_runtimes()}), flush=True)
        blocks = 0
        for line in sys.stdin:
            samples = timed_samples(run, int(line), cap_s=3600.0)
            print("BLOCK", json.dumps(samples.tolist()), flush=True)
            blocks += 1
        describe = runner.describe()
    return {"runner": describe, "blocks": blocks}, np.empty(0)


def describe_task(task: dict, spec: RunnerSpec, images: np.ndarray) -> tuple[dict, np.ndarray]:
    """What the runner runs once loaded (e.g. the precision a plugin picks), without inference."""
    with open_runner(spec) as runner:
        describe = runner.describe()
    return {"runner": describe, "worker_modules": loaded_runtimes()}, np.empty(0)


TASKS = {"time": time_task, "predict": predict_task, "serve": serve_task, "describe": describe_task}


def main(task_path: str) -> int:
    task = json.loads(Path(task_path).read_text())
    out = Path(task["out"])
    try:
        spec = RunnerSpec.from_dict(task["spec"])
        images = np.load(task["images"], mmap_mode="r")
        result, array = TASKS[task["kind"]](task, spec, images)
        np.save(out.with_suffix(".npy"), array)
        code = 0
    except InferenceError as exc:
        result, code = {"error": {"reason": "load-error", "message": str(exc)}}, 0
    except Exception as exc:  # runtimes raise their own types; the parent reports it as one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        result = {
            "error": {"reason": "inference-error", "message": f"{type(exc).__name__}: {first}".rstrip(": ")},
            "traceback": traceback.format_exc(limit=5),
        }
        code = 0
    out.with_suffix(".json").write_text(json.dumps(result))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
