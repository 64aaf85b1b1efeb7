"""A device's answer, checked before anything is believed: a result of this protocol, about the model file
and evaluation set that were shipped, whose predictions and latency entries have the shape bench writes;
and the device's fingerprint as a bench report's environment block."""

from __future__ import annotations

from edgebench.cpu import ARM_FLAGS, X86_FLAGS
from edgebench.devices import DeviceError
from edgebench.runtime.device_bench import PROTOCOL, RESULT_KIND, load_eval_set
from edgebench.runtime.native_bench import SUFFIX as C_RUNNER

_ENTRY_KEYS = ("threads", "rounds", "load_time_s", "cold_ms", "batch1", "throughput", "peak_memory_mb")
_BATCH1_KEYS = ("runs", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "median_ci95_ms", "stable")


def check_result(result, bundle, url: str) -> dict:
    """``result`` (a device's JSON) after checking it against the ``bundle`` shipped; with the labels and
    class names added. A result that does not fit is a ``DeviceError`` naming the device."""

    def refuse(why: str):
        raise DeviceError(f"{url}: {bundle.root.name}: the device's result {why}")

    if not isinstance(result, dict) or result.get("kind") != RESULT_KIND:
        refuse("is not an edgebench device result")
    if result.get("protocol") != PROTOCOL:
        refuse(f"speaks protocol {result.get('protocol')!r}, this edgebench {PROTOCOL}: rebuild the bundle")
    model, shipped = result.get("model") or {}, bundle.spec.model
    if model.get("sha256") != shipped.sha256:
        got = str(model.get("sha256"))[:16]
        refuse(f"is about another model file (sha256 {got}… != {shipped.sha256[:16]}…)")
    eval_set = load_eval_set(bundle, bundle.spec.eval)
    if (result.get("eval") or {}).get("sha256") != eval_set["sha256"]:
        refuse("is about another evaluation set (sha256 differs from the one shipped)")
    n, classes = len(eval_set["labels"]), eval_set["num_classes"]
    why = _measurement_problem(result, n, classes)
    if why:
        refuse(why)
    native = result.get("c_runner")
    if native is not None:
        if not isinstance(native, dict) or native.get("format") != bundle.spec.format + C_RUNNER:
            refuse(f"has a C runner entry that is not {bundle.spec.format}{C_RUNNER}'s")
        if not isinstance(native.get("error", ""), str):
            refuse("has a C runner error that is not one line")
        why = None if "error" in native else _measurement_problem(native, n, classes)
        if why:
            refuse(f"{why} (C runner)")
    if not isinstance(result.get("environment"), dict):
        refuse("lacks its environment")
    return {**result, "labels": eval_set["labels"], "class_names": list(bundle.contract.classes)}


def _measurement_problem(part: dict, n: int, classes: int) -> str | None:
    """What the predictions, latency entries and samples of a result (or of its C runner entry) lack."""
    predictions = (part.get("accuracy") or {}).get("predictions")
    if (
        not isinstance(predictions, list)
        or len(predictions) != n
        or not all(isinstance(p, int) and 0 <= p < classes for p in predictions)
    ):
        return f"does not hold {n} predicted classes in 0..{classes - 1}"
    for entry in part.get("latency") or [None]:
        if not isinstance(entry, dict) or any(k not in entry for k in _ENTRY_KEYS):
            return "has a latency entry without " + ", ".join(_ENTRY_KEYS)
        batch1 = entry["batch1"]
        if not isinstance(batch1, dict) or any(k not in batch1 for k in _BATCH1_KEYS):
            return "has batch-1 figures without " + ", ".join(_BATCH1_KEYS)
    samples = part.get("samples_ns")
    if not isinstance(samples, dict) or any(
        not isinstance(v, list) or not all(isinstance(x, int) and x >= 0 for x in v) for v in samples.values()
    ):
        return "has no batch-1 samples in ns per thread count"
    if not isinstance(part["accuracy"].get("runner"), dict):
        return "lacks its runner description"
    return None


def device_environment(fingerprints: list[dict], device, host_environment: dict, threads: list[int]) -> dict:
    """The report's ``environment`` for a device (``fingerprints``: one per result, the same machine): its
    CPU, the flags the int8 kernels dispatch on, cores, OS, Python and every runtime's version in the host
    report's shape, the edgebench that built the bundles, and where the device was reached."""
    fingerprint = fingerprints[0]
    have = set(fingerprint.get("flags") or [])
    listed = X86_FLAGS if fingerprint.get("arch") == "x86_64" else ARM_FLAGS
    versions = {k: v for f in fingerprints for k, v in (f.get("runtime_versions") or {}).items()}
    return {
        "cpu": str(fingerprint.get("cpu")),
        "machine": str(fingerprint.get("arch")),
        "logical_cores": fingerprint.get("cores"),
        "physical_cores": None,  # not read on a device
        "usable_cores": fingerprint.get("usable_cores"),
        "memory_gb": fingerprint.get("memory_gb"),
        "onnxruntime_providers": None,
        "threads": threads,
        "os": str(fingerprint.get("os")),
        "python": str(fingerprint.get("python")),
        "versions": versions,
        "edgebench": host_environment["edgebench"],
        "cpu_features": {
            "model": str(fingerprint.get("cpu")),
            "arch": str(fingerprint.get("arch")),
            "flags": {flag: flag in have for flag in listed},
            "source": str(fingerprint.get("flags_source")),
        },
        "device": {
            "url": device.url,
            "name": device.name,
            "emulated": bool(fingerprint.get("emulated")),
            "libc": fingerprint.get("libc"),
        },
        "built_on": host_environment.get("cpu"),
    }
