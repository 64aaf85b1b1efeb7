"""The bundle's C runner benched on the device beside infer.py's runtime: what an embedded integration costs
without Python. Top-1 on the same evaluation images (written as PPM/PGM, the files runner.c reads) and, per
thread count and round, one fresh ``./runner --bench N --json`` process: its load (model file to compiled
model), first call, batch-1 samples (bench's count and time cap) and the process's whole peak RSS.

The device bench runs a runner that is there (built with the bundle, or by ``make`` on the device); it
never compiles one. No runnable runner is no entry; a runner that fails is an entry holding its one line.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from .base import InferenceError
from .cpuflags import ALLOW_FLAG
from .latency_stats import pooled_batch1
from .native import native_command, preprocessing_args, run_native

SUFFIX = "@c-runner"  # the row's format: <bundle format>@c-runner
CHUNK = 256  # images per runner call: its command line stays far below the kernel's argument limit
CALL = "LiteRtRunCompiledModel"


def write_pnm(folder: Path, images: np.ndarray) -> list[str]:
    """Each HxWxC uint8 image as a binary PPM (3 channels) or PGM (1), the only image files runner.c reads
    besides raw bytes (whose size alone says nothing about the image)."""
    paths = []
    height, width, channels = images.shape[1:]
    magic = {3: b"P6", 1: b"P5"}.get(channels)
    if magic is None:
        raise InferenceError(f"the C runner reads 1- or 3-channel images, this model takes {channels}")
    header = magic + f"\n{width} {height}\n255\n".encode()
    for i, image in enumerate(images):
        path = folder / f"{i:06d}.ppm"
        path.write_bytes(header + np.ascontiguousarray(image).tobytes())
        paths.append(str(path))
    return paths


def predictions(root: Path, spec, files: list[str], threads: int, allow: bool, names, timeout: float):
    """The runner's top-1 class index per file (None: no runner this machine can run)."""
    index = {name: i for i, name in reversed(list(enumerate(names)))}  # a repeated name: its first index
    out = []
    for start in range(0, len(files), CHUNK):
        chunk = files[start : start + CHUNK]
        results, _ = run_native(root, spec, chunk, threads, timeout, allow_cpu_mismatch=allow)
        if results is None:
            return None
        for result in results:
            name = result["top_k"][0]["class"]
            if name not in index:
                raise InferenceError(f"the C runner named class {name!r}, which model.json does not list")
            out.append(index[name])
    return out


def bench_once(root: Path, spec, image: str, threads: int, s, allow: bool) -> dict:
    """One fresh runner process: ``--bench`` with bench's sample count, warm-up and time cap."""
    command, why = native_command(root, spec)
    if command is None:
        raise InferenceError(why)
    args = [*command, "--bench", str(s.min_samples), "--warmup", str(s.warmup_runs)]
    args += ["--time-cap", repr(float(s.time_cap_s)), "--threads", str(threads), "--json"]
    args += [*preprocessing_args(spec.contract), *([ALLOW_FLAG] if allow else []), image]
    try:
        done = subprocess.run(args, cwd=root, capture_output=True, text=True, timeout=s.worker_timeout_s)
    except subprocess.TimeoutExpired:
        raise InferenceError(f"a C runner round took over {s.worker_timeout_s:g} s") from None
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise InferenceError(f"the C runner failed: {lines[-1] if lines else f'exit {done.returncode}'}")
    try:
        return json.loads(done.stdout)
    except ValueError:
        raise InferenceError("the C runner's --bench printed no valid JSON") from None


def entry(threads: int, rounds: list[dict], s) -> tuple[dict, list[int]]:
    """(the latency entry of one thread count in the bench report's format, pooled samples in ns)."""
    samples_ns = [np.round(np.asarray(r["samples_ms"], dtype=float) * 1e6).astype(np.int64) for r in rounds]
    pooled = np.concatenate(samples_ns)
    return {
        "threads": threads,
        "rounds": len(rounds),
        "load_time_s": float(np.median([r["load_ms"] for r in rounds])) / 1e3,
        "cold_ms": float(np.median([r["first_ms"] for r in rounds])),
        "warmup_runs": int(rounds[0]["warmup"]),
        "batch1": pooled_batch1(samples_ns, 1, s),
        # runner.c reads the clock around each call in C; no block-timed loop measures what that costs
        "overhead": None,
        "throughput": [],  # runner.c times batch 1 only
        "best_images_per_s": None,
        # the whole process's peak (VmHWM): what embedding the model costs, nothing subtracted
        "peak_memory_mb": max(r["peak_rss_kb"] for r in rounds) / 1024,
        "baseline_rss_mb": None,
        "worker_modules": [],
        "runner": {"call": CALL, "process": "runner --bench, one per round"},
    }, pooled.tolist()


def latency(root: Path, spec, image: str, threads: list[int], s, allow: bool, log) -> tuple[list, dict]:
    """(one latency entry per thread count, each over ``s.rounds`` fresh runner processes timing ``image``;
    the pooled samples in ns per thread count)."""
    entries, samples = [], {}
    for t in threads:
        rounds = [bench_once(root, spec, image, t, s, allow) for _ in range(s.rounds)]
        one, samples[str(t)] = entry(t, rounds, s)
        entries.append(one)
        log(f"C runner {t}t: p50 {one['batch1']['p50_ms']:.3f} ms, load {one['load_time_s']:.3f} s")
    return entries, samples


def bench(bundle, eval_set: dict, threads: list[int], s, allow: bool = False, log=print) -> dict | None:
    """The C runner's entry of the device result: ``format``, ``accuracy`` (top-1, predictions), ``latency``
    and ``samples_ns`` as the Python path's; ``{"format", "error"}`` when it fails; None without a runner."""
    root, spec, labels = bundle.root, bundle.spec, eval_set["labels"]
    if native_command(root, spec)[0] is None or not len(labels):
        return None
    fmt = spec.format + SUFFIX
    try:
        with tempfile.TemporaryDirectory(prefix="edgebench-c-runner-") as tmp:
            files = write_pnm(Path(tmp), eval_set["images"])
            names, timeout = bundle.class_names, s.worker_timeout_s
            pred = predictions(root, spec, files, max(threads), allow, names, timeout)
            if pred is None:  # the runner cannot start here (another architecture): no row
                return None
            top1 = float((np.asarray(pred) == labels).mean())
            log(f"C runner: top-1 {top1:.2%} on {len(pred)} images")
            entries, samples = latency(root, spec, files[0], threads, s, allow, log)
    except (InferenceError, OSError, LookupError, TypeError, ValueError) as exc:  # bad output: one line too
        return {"format": fmt, "error": " ".join(str(exc).split()) or type(exc).__name__}
    runner = {"runtime": "LiteRT C API (CompiledModel)", "binary": spec.binary, "call": CALL}
    accuracy = {"images": len(pred), "top1": top1, "predictions": pred, "runner": runner}
    return {"format": fmt, "accuracy": accuracy, "latency": entries, "samples_ns": samples}
