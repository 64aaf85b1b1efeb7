"""What ``edgebench tune`` tries and how it decides: settings, the search space, the selection rule and the
validation / calibration split. Pure functions (no runtime imports), unit-tested on their own.

Decisions use a stratified sample of the hold-out ``edgebench train`` kept out of training (carved from the
*train* split by train's own ``split_validation``); calibration images come from the rest of the train
split, so the two never overlap, and the test split is never read.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgebench import targets
from edgebench.bench.gate import GateSettings
from edgebench.environment import runtime_available
from edgebench.errors import EdgebenchError, check_settings
from edgebench.export.context import stratified_sample
from edgebench.export.pipeline import ExportSettings
from edgebench.export.quant_recipe import cpu_requirements, ort_recipe
from edgebench.runtime import RUNTIMES
from edgebench.runtime.cpuflags import unmet
from edgebench.runtime.latency_stats import LatencySettings
from edgebench.train.data.dataset import split_validation, stratified_indices

TUNABLE_RUNTIMES = ("litert", "onnxruntime", "openvino")  # the runtimes search_space has candidates for
DEFAULT_RUNTIMES = ("litert", "onnxruntime")  # what tune tries unless --runtimes names more
TUNE_JSON = "tune.json"
SUFFIX = {rt: RUNTIMES[rt].suffixes[0] for rt in TUNABLE_RUNTIMES}  # a candidate's file suffix
FLOAT_FAMILY = {
    "onnxruntime": "onnx",
    "litert": "tflite-fp32",
    "openvino": "openvino",
}  # also their export format names
# edgebench train's default hold-out when the model has no training record beside it
DEFAULT_HOLD_OUT = {"val_fraction": 0.1, "seed": 0, "train_per_class": None}


def default_threads() -> int:
    """Timing threads: 2 (bench's largest default), fewer on a 1-core machine."""
    return min(2, os.cpu_count() or 1)


def _latency() -> LatencySettings:  # fewer samples than bench: screening, with a runoff at the end
    return LatencySettings(rounds=1, min_samples=300, time_cap_s=3.0, warmup_cap_s=1.0, overhead_block_s=0.1)


@dataclass
class TuneSettings:
    model: Path
    export_dir: Path | None = None  # default: <model dir>/export
    data: str | None = None
    out_dir: Path | None = None  # default: <model dir>/tune
    cache_dir: Path | None = None
    max_drop: float = GateSettings.max_drop_pp  # the gate the winner is confirmed at
    runtimes: tuple[str, ...] = DEFAULT_RUNTIMES
    val_images: int = 1000
    calib_size: int = ExportSettings.calib_size
    threads: int = field(default_factory=default_threads)
    seed: int = 0
    max_exclude: int = 8  # the fallback's cap on float layers (k = 1, 2, 4, 8)
    sensitivity_images: int = 32
    memory_mb: int = 4096  # per build worker (RSS)
    latency: LatencySettings = field(default_factory=_latency)
    target: str = targets.HOST  # the CPU the int8 candidates are for (measured here, unless ``device``)
    device: str | None = None  # time the candidates there (edgebench.devices URL); accuracy stays here
    device_python: str = "python3"
    device_timeout: float = 1800.0
    ssh_config: str | None = None

    def check(self) -> None:
        targets.check(self.target)
        unknown = [r for r in self.runtimes if r not in TUNABLE_RUNTIMES]
        problems = [
            (not self.runtimes, "--runtimes is empty"),
            (
                bool(unknown),
                f"unknown runtime(s): {', '.join(unknown)} (known: {', '.join(TUNABLE_RUNTIMES)})",
            ),
            (self.max_drop < 0, f"--max-drop must be >= 0 pp (got {self.max_drop})"),
            (self.val_images < 10, f"--val-images must be at least 10 (got {self.val_images})"),
            (self.calib_size < 1, f"--calib-size must be at least 1 (got {self.calib_size})"),
            (self.threads < 1, f"--threads must be at least 1 (got {self.threads})"),
            (self.memory_mb < 256, f"--memory-mb must be at least 256 (got {self.memory_mb})"),
        ]
        check_settings(problems)
        if not Path(self.model).is_file():
            raise EdgebenchError(f"model file not found: {self.model}")
        for rt in self.runtimes:
            ok, _, message = runtime_available(rt)
            if not ok:
                raise EdgebenchError(f"runtime {rt} is not usable here: {message}")


@dataclass(frozen=True)
class Candidate:
    family: str  # onnx | tflite-fp32 | openvino (float) | onnx-int8 | tflite-int8 | tflite-dynamic |
    # openvino-int8
    runtime: str
    quantized: bool
    settings: dict = field(default_factory=dict, hash=False)

    @property
    def key(self) -> str:
        return self.family + "|" + ",".join(f"{k}={v}" for k, v in sorted(self.settings.items()))

    @property
    def slug(self) -> str:
        return f"{self.family}-{hashlib.sha1(self.key.encode()).hexdigest()[:10]}"


def search_space(runtimes, recipe_options: dict, calib_size: int) -> list[Candidate]:
    """Float baselines first, then int8 variants around the machine's ONNX Runtime recipe, the TFLite
    converter's int8 (two calibration sizes) and dynamic range, and NNCF's two presets for OpenVINO."""
    out = []
    for rt in runtimes:
        out.append(Candidate(FLOAT_FAMILY[rt], rt, False, {"precision": "fp32"}))
    if "onnxruntime" in runtimes:
        base = {**recipe_options, "calib_method": "minmax", "calib_size": calib_size}
        other = "qoperator" if base["quant_format"] == "qdq" else "qdq"
        for change in (
            {},
            {"quant_format": other},
            {"calib_method": "entropy"},
            {"calib_method": "percentile"},
            {"reduce_range": not base["reduce_range"]},  # measured, not assumed: saturation on non-VNNI x86
            {"per_channel": not base["per_channel"]},
        ):
            out.append(Candidate("onnx-int8", "onnxruntime", True, {**base, **change}))
    if "litert" in runtimes:
        for size in sorted({calib_size, max(1, calib_size // 3)}, reverse=True):
            out.append(Candidate("tflite-int8", "litert", True, {"calib_size": size}))
        out.append(Candidate("tflite-dynamic", "litert", True, {}))
    if "openvino" in runtimes:  # NNCF PTQ: symmetric (its CNN default) and asymmetric activations
        for preset in ("performance", "mixed"):
            out.append(
                Candidate("openvino-int8", "openvino", True, {"preset": preset, "calib_size": calib_size})
            )
    return out


def target_space(settings: TuneSettings) -> tuple[list[Candidate], list[tuple[Candidate, str]]]:
    """(candidates, [(left out, the flags it needs)]): the search space around the target's recipe. On the
    host a candidate's validation run shows what this CPU does with it; for another target it does not,
    so the candidates that target cannot run correctly (``cpu_requirements``) are left out, not measured."""
    fp = targets.fingerprint(settings.target)
    space = search_space(settings.runtimes, ort_recipe(fp).quant_options(), settings.calib_size)
    if settings.target == targets.HOST:
        return space, []
    have = [f for f, present in fp["flags"].items() if present]
    kept, left_out = [], []
    for cand in space:
        missing = unmet(cpu_requirements(cand.settings), fp["arch"], have) if cand.quantized else []
        if missing:
            left_out.append((cand, " or ".join(missing[0]["any_of"])))
        else:
            kept.append(cand)
    return kept, left_out


def label(family: str, s: dict) -> str:
    """A short human name for a candidate's settings."""
    if family == "onnx-int8":
        text = (
            f"{s['quant_format']} {'u8' if s['activation_type'] == 'uint8' else 's8'}s8 "
            f"{'7-bit' if s['reduce_range'] else '8-bit'} {'per-ch' if s['per_channel'] else 'per-tensor'} "
            f"{s['calib_method']} c{s['calib_size']}"
        )
        return text + (f" +{s['exclude']} float" if s.get("exclude") else "")
    if family == "openvino-int8":
        return f"nncf {s['preset']} c{s['calib_size']}"
    if family == "tflite-int8":
        return f"converter int8 c{s['calib_size']}"
    return {"tflite-dynamic": "dynamic range"}.get(family, "float32")


def p50(record: dict) -> float:
    return record.get("runoff_p50_ms") or record["p50_ms"]


def select(records, max_drop: float) -> tuple[dict | None, str]:
    """The winner and why: the fastest quantized candidate within ``max_drop`` if it beats the fastest
    float one, else that float one (never a slower int8). Only measured validation figures count."""
    ok = [r for r in records if r["status"] == "ok"]
    floats = sorted((r for r in ok if not r["quantized"]), key=p50)
    floats = [r for r in floats if r["drop_pp"] <= max_drop] or floats
    quantized = sorted((r for r in ok if r["quantized"] and r["drop_pp"] <= max_drop), key=p50)
    best_f, best_q = (floats or [None])[0], (quantized or [None])[0]
    if best_q and (best_f is None or p50(best_q) < p50(best_f)):
        versus = f", fastest float {best_f['family']} {p50(best_f):.2f} ms" if best_f else ""
        why = (
            f"{best_q['family']} ({best_q['label']}): fastest quantized candidate within {max_drop:g} pp "
            f"(drop {best_q['drop_pp']:+.2f} pp, p50 {p50(best_q):.2f} ms{versus})"
        )
        return best_q, why
    if best_f is None:
        return None, "no candidate could be measured"
    if best_q:
        return best_f, (
            f"float picked: the fastest quantized candidate within {max_drop:g} pp, {best_q['family']} "
            f"({best_q['label']}, {p50(best_q):.2f} ms), is not faster than {best_f['family']} "
            f"({p50(best_f):.2f} ms)"
        )
    return best_f, f"float picked: no quantized candidate kept top-1 within {max_drop:g} pp of the reference"


def training_hold_out(model: Path) -> tuple[dict, str]:
    """The validation hold-out ``edgebench train`` used for this model (its metrics.json or state.json)."""
    for name, keys in (("metrics.json", ("options",)), ("state.json", ("config", "preset"))):
        path = Path(model).parent / name
        try:
            found = json.loads(path.read_text())
            for k in keys:
                found = found[k]
            return {k: found.get(k, v) for k, v in DEFAULT_HOLD_OUT.items()}, str(path)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    return dict(DEFAULT_HOLD_OUT), "edgebench train defaults (no training record beside the model)"


def split_indices(y_train, val_images: int, calib_size: int, seed: int, hold_out: dict):
    """(validation, calibration) indices into the train split: validation from the training hold-out
    (carved by train's own ``split_validation``), calibration from the rest: never overlapping."""
    idx = np.arange(len(y_train))
    if hold_out.get("train_per_class"):  # train subsampled the split first (``data.subset``)
        idx = stratified_indices(y_train, hold_out["train_per_class"], hold_out["seed"])
    _, _, held, held_y = split_validation(idx, y_train[idx], hold_out["val_fraction"], hold_out["seed"])
    val = np.sort(held[stratified_sample(held_y, val_images, seed)])
    pool = np.setdiff1d(np.arange(len(y_train)), held)
    calib = np.sort(pool[stratified_sample(y_train[pool], calib_size, seed)])
    return val, calib
