"""The bench a bundle runs on its device (``python infer.py --bench``): top-1 on the evaluation set shipped
in the bundle, batch-1 latency over rounds, throughput, load time, first inference and peak RSS, with the
device's fingerprint, by the same code as the host's bench worker (``timing``).

Each round runs in a fresh process of this Python (as each host round is a fresh worker): the load time and
first call are the round medians; the peak RSS is the child's peak minus its RSS with only the runtime
imported, like the host's. The result is one JSON document (``RESULT_KIND``, ``PROTOCOL``) whose ``latency``
holds entries in the bench report's format and ``samples_ns`` the pooled batch-1 samples, and ``c_runner``
the same of the bundle's C runner where one is built for this machine (``native_bench``); the host checks
the sha256s it names against what it shipped and judges accuracy itself from the ``predictions``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from . import device_info, native_bench
from .base import RUNTIMES, InferenceError, RunnerSpec, fixed_batch, open_runner
from .bundle import sha256_file
from .latency_stats import LatencySettings, aggregate
from .timing import EVAL_BATCH, clamp_batches, predict, time_fresh

RESULT_KIND = "edgebench-device-result"
PROTOCOL = 2  # the host refuses a result of another protocol version (2: the C runner's entry)
THROUGHPUT_BATCHES = (1, 8, 32)


def time_in_child(spec: RunnerSpec, images: Path, s: LatencySettings, *, fixed, batches, overhead: bool):
    """``timing.time_fresh`` in a fresh process of this Python, as bench's host workers do, so that a round's
    peak RSS is its own load's and not what earlier rounds left behind; (result, samples in ns)."""
    workdir = images.parent
    task = {"spec": spec.to_dict(), "images": str(images), "settings": s.to_dict(), "fixed": fixed}
    (workdir / "task.json").write_text(json.dumps({**task, "batches": batches, "overhead": overhead}))
    # python -m this package: edgebench_runtime in a bundle (run from its folder), or edgebench.runtime
    root = Path(__file__).resolve().parents[1] if __package__ == "edgebench_runtime" else None
    argv = [sys.executable, "-m", f"{__package__}.device_bench", str(workdir / "task.json")]
    try:
        done = subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=s.worker_timeout_s)
    except subprocess.TimeoutExpired:
        raise InferenceError(f"a timing round took over {s.worker_timeout_s:g} s") from None
    if done.returncode != 0 or not (workdir / "result.json").is_file():
        lines = done.stderr.strip().splitlines()
        raise InferenceError(f"a timing round failed: {lines[-1] if lines else f'exit {done.returncode}'}")
    return json.loads((workdir / "result.json").read_text()), np.load(workdir / "samples.npy")


def _time_round(task_path: str) -> int:
    """The child of ``time_in_child``."""
    task = json.loads(Path(task_path).read_text())
    images = np.load(task["images"], mmap_mode="r")
    spec, settings = RunnerSpec.from_dict(task["spec"]), LatencySettings(**task["settings"])
    result, samples = time_fresh(
        spec, images, settings, fixed=task["fixed"], batches=task["batches"], overhead=task["overhead"]
    )
    out = Path(task_path).parent
    np.save(out / "samples.npy", samples)
    (out / "result.json").write_text(json.dumps(result))
    return 0


def latency_entries(spec: RunnerSpec, images: Path, threads: list[int], s: LatencySettings, *, fixed, log):
    """(one latency entry per thread count, each over ``s.rounds`` rounds (bench's ``aggregate``); the
    pooled batch-1 samples in ns per thread count, for the host's paired comparisons)."""
    batches = [fixed] if fixed else clamp_batches(THROUGHPUT_BATCHES, spec.options.get("max_batch"))
    runs: dict[int, list] = {t: [] for t in threads}
    for r in range(s.rounds):
        for t in threads:
            one = RunnerSpec(spec.runtime, spec.path, t, spec.options)
            result, samples = time_in_child(one, images, s, fixed=fixed, batches=batches, overhead=r == 0)
            runs[t].append((result, samples))
            p50 = np.median(samples) / 1e6
            log(f"round {r + 1}/{s.rounds} {t}t: p50 {p50:.3f} ms ({len(samples)} samples)")
    entries, pooled = [], {}
    for t in threads:
        rounds, samples = zip(*runs[t], strict=True)
        entries.append(aggregate(t, list(rounds), list(samples), s))
        pooled[str(t)] = np.concatenate(samples).astype(int).tolist()
    return entries, pooled


def evaluate(spec: RunnerSpec, images: np.ndarray, labels: np.ndarray, num_classes: int, fixed) -> dict:
    """Top-1 and each image's predicted class on the evaluation set, at the largest thread count."""
    with open_runner(spec) as runner:
        probs = predict(runner, images, EVAL_BATCH, fixed, num_classes=num_classes)
        described = runner.describe()
    predictions = probs.argmax(axis=1)
    return {
        "images": int(len(labels)),
        "top1": float((predictions == labels).mean()) if len(labels) else None,
        "predictions": predictions.astype(int).tolist(),
        "runner": described,
    }


def run(
    spec: RunnerSpec, eval_set: dict, threads: list[int], s: LatencySettings, *, shipped: dict, log=print
):
    """The device result: ``eval_set`` holds ``images``, ``labels``, ``num_classes``, ``sha256`` and the
    model's ``fixed_batch``; ``shipped`` names the model file and sha256 the bundle says it runs (the host
    checks both against what it shipped)."""
    fixed = eval_set.get("fixed_batch")
    top = RunnerSpec(spec.runtime, spec.path, max(threads), spec.options)
    accuracy = evaluate(top, eval_set["images"], eval_set["labels"], eval_set["num_classes"], fixed)
    log(f"top-1 {accuracy['top1']:.2%} on {accuracy['images']} images")
    with tempfile.TemporaryDirectory(prefix="edgebench-device-") as tmp:
        images = Path(tmp) / "images.npy"
        np.save(images, np.ascontiguousarray(eval_set["images"]))
        entries, samples_ns = latency_entries(spec, images, threads, s, fixed=fixed, log=log)
    versions = {m: _version(m) for m in RUNTIMES[spec.runtime].modules}
    return {
        "kind": RESULT_KIND,
        "protocol": PROTOCOL,
        "model": shipped,
        "eval": {"sha256": eval_set["sha256"], "images": int(len(eval_set["labels"]))},
        "environment": device_info.fingerprint(versions),
        "settings": {"threads": threads, "latency": s.to_dict()},
        "accuracy": accuracy,
        "latency": entries,
        "samples_ns": samples_ns,
    }


def _version(module: str) -> str | None:
    from importlib import metadata

    row = next((r for r in RUNTIMES.values() if module in r.modules), None)
    for dist in row.distributions if row else (module,):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def load_eval_set(bundle, block: dict | None) -> dict:
    """The bundle's evaluation set (model.json's ``eval`` block), each file checked against its sha256
    and its shape against the model contract; one-line errors otherwise."""
    if not block:
        raise InferenceError("this bundle carries no evaluation set: build it with edgebench bundle --eval N")
    arrays = {}
    for name in ("images", "labels"):
        path = bundle.path_of(block[name], "evaluation set file")
        if not path.is_file():
            raise InferenceError(f"evaluation set file not found: {path}")
        if sha256_file(path) != block[f"{name}_sha256"]:
            raise InferenceError(f"{path} is not the one in model.json (sha256 differs): tampered")
        try:
            arrays[name] = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise InferenceError(f"{path} is not a plain .npy array ({exc})") from None
    images, labels, contract = arrays["images"], arrays["labels"], bundle.contract
    expected = (len(labels), contract.height, contract.width, contract.channels)
    if images.dtype != np.uint8 or images.shape != expected or labels.ndim != 1:
        raise InferenceError(f"evaluation set holds {images.dtype} {images.shape}, expected uint8 {expected}")
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < contract.num_classes:
        raise InferenceError(f"evaluation set labels lie outside 0..{contract.num_classes - 1}")
    return {
        "images": images,
        "labels": labels.astype(np.int64),
        "num_classes": contract.num_classes,
        "sha256": block["images_sha256"],
        "labels_sha256": block["labels_sha256"],
    }


def bench_main(bundle, args) -> int:
    """``infer.py --bench``: measure the bundle's model here and print (or ``--out``) the result."""
    import json
    import sys

    if args.rounds < 1 or args.min_samples < 10 or not args.time_cap > 0:
        raise InferenceError("--rounds must be at least 1, --min-samples at least 10, --time-cap above 0")
    eval_set = load_eval_set(bundle, bundle.spec.eval)
    bundle.verify_model()
    threads = list(args.threads or (bundle.threads or 1,))
    spec = RunnerSpec(
        bundle.spec.runtime, str(bundle.model_path), None, {"contract": bundle.contract.to_dict()}
    )
    settings = LatencySettings(rounds=args.rounds, min_samples=args.min_samples, time_cap_s=args.time_cap)
    fixed = fixed_batch(bundle.spec.inputs, bundle.spec.dynamic_batch)
    shipped = {
        "file": bundle.spec.model.file,
        "sha256": bundle.spec.model.sha256,
        "format": bundle.spec.format,
    }
    result = run(
        spec,
        {**eval_set, "fixed_batch": fixed},
        threads,
        settings,
        shipped=shipped,
        log=lambda line: print(line, file=sys.stderr),
    )
    # the bundle's C runner, where one is built for this machine: its own entry (an embedding's cost)
    log = lambda line: print(line, file=sys.stderr)  # noqa: E731
    native = native_bench.bench(bundle, eval_set, threads, settings, args.allow_cpu_mismatch, log)
    if native is not None:
        result["c_runner"] = native
    text = json.dumps(result, indent=1)
    if args.out:
        _write_atomic(args.out, text)
    print(text if args.json else summary_lines(result))
    return 0


def _write_atomic(path, text: str) -> None:
    import os
    import tempfile
    from pathlib import Path

    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=".partial-", dir=target.parent or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def summary_lines(result: dict) -> str:
    """What a person reads on the device: top-1, then per thread count p50/p90/p99, load, first call, RSS."""
    env, acc = result["environment"], result["accuracy"]
    lines = [
        f"device: {env['arch']} {env['cpu']} ({env['usable_cores']} cores), {env['os']}",
        f"model: {result['model']['format']} {result['model']['file']}",
        f"top-1 {acc['top1']:.2%} on {acc['images']} images",
    ]
    for e in result["latency"]:
        b = e["batch1"]
        p99 = f"{b['p99_ms']:.2f}" if b["p99_ms"] is not None else f"n/a (n={b['runs']})"
        flag = "" if b["stable"] else "  UNSTABLE"
        lines.append(
            f"{e['threads']} threads: p50 {b['p50_ms']:.2f} ms  p90 {b['p90_ms']:.2f}  p99 {p99}  "
            f"load {e['load_time_s']:.3f} s  first {e['cold_ms']:.1f} ms  "
            f"peak RSS {e['peak_memory_mb'] or 0:.0f} MB{flag}"
        )
    native = result.get("c_runner")
    if native and "error" in native:
        lines.append(f"{native['format']}: {native['error']}")
    for e in (native or {}).get("latency", []):
        lines.append(
            f"{native['format']} {e['threads']} threads: p50 {e['batch1']['p50_ms']:.2f} ms  "
            f"load {e['load_time_s']:.3f} s  first {e['cold_ms']:.1f} ms  "
            f"peak RSS {e['peak_memory_mb']:.0f} MB (the whole process)"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(_time_round(sys.argv[1]))
