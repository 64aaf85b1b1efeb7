"""What runs after the screening of every candidate, on the tuner ``t`` (``tune.search._Tuner``).

``fallback``: when no ONNX Runtime int8 candidate keeps accuracy, the k = 1, 2, 4, ... most sensitive layers
(``tune.sensitivity``, ranked once on validation images) of the best failing QDQ one stay float, while that
is still faster than float ONNX. ``runoff``: the finalists re-timed side by side in rotated rounds, since one
screening sample each is noisy on a shared machine.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from edgebench.bench.measure import MeasureTask
from edgebench.fileio import read_json
from edgebench.tune.build import run_build
from edgebench.tune.space import Candidate, p50

RUNOFF_ROUNDS = 2


def fallback(t, float_ms: float) -> None:
    """Keep the k most sensitive layers of the best failing QDQ candidate in float until it passes."""
    ort = [r for r in t.records() if r["family"] == "onnx-int8" and r["status"] == "ok"]
    if not ort or any(r["drop_pp"] <= t.s.max_drop for r in ort):
        return
    bases = [r for r in ort if r["settings"]["quant_format"] == "qdq" and not r["settings"].get("exclude")]
    bases = [r for r in bases if p50(r) < float_ms]  # more float layers only make it slower
    if not bases:
        t.log("fallback: no QDQ int8 candidate is faster than float ONNX: nothing worth repairing")
        return
    base = min(bases, key=lambda r: r["drop_pp"])  # the fewest layers to give back
    ranking = sensitivity(t, base)
    k = 1
    while k <= min(t.s.max_exclude, len(ranking)):
        cand = Candidate("onnx-int8", "onnxruntime", True, {**base["settings"], "exclude": k})
        rec = t.evaluate(cand, [r["node"] for r in ranking[:k]])
        if rec["status"] == "ok" and rec["drop_pp"] <= t.s.max_drop:
            return
        if rec["status"] == "ok" and p50(rec) >= float_ms:
            t.log(f"fallback: with {k} float layers int8 is no faster than float ONNX: stopped")
            return
        k *= 2


def sensitivity(t, base: dict) -> list[dict]:
    if base["key"] in t.state["sensitivity"]:
        return t.state["sensitivity"][base["key"]]["ranking"]
    n = min(t.s.sensitivity_images, len(t.y_val))
    images, dest = t.work / "sensitivity_images.npy", t.work / "sensitivity.json"
    np.save(images, np.load(t.work / "val_images.npy")[:n])
    t.log(f"sensitivity: per-layer int8 error of {base['label']} on {n} validation images ...")
    task = {"kind": "sensitivity", "prepared": str(t.prepared()), "qdq": base["path"]}
    run_build({**task, "images": str(images), "dest": str(dest)}, t.work, t.s.memory_mb)
    ranking = read_json(dest, "sensitivity ranking")
    t.state["sensitivity"][base["key"]] = {"images": n, "metric": "SQNR lost (dB)", "ranking": ranking}
    t.save()
    t.log("sensitivity: " + ", ".join(f"{r['node']} {r['loss_db']:.1f} dB" for r in ranking[:4]))
    return ranking


def runoff(t) -> list[dict]:
    """Re-time the finalists (the 3 fastest passing quantized candidates and the fastest float one per
    runtime, by screening p50) in rotated rounds and return them: one screening sample each is noisy on
    a shared machine, and the decision compares figures taken side by side."""
    ok = [r for r in t.records() if r["status"] == "ok"]
    fast = lambda r: r["p50_ms"]  # noqa: E731
    passing = sorted((r for r in ok if r["quantized"] and r["drop_pp"] <= t.s.max_drop), key=fast)
    floats = {r["runtime"]: r for r in sorted((r for r in ok if not r["quantized"]), key=fast, reverse=True)}
    finalists = {r["slug"]: r for r in [*passing[:3], *floats.values()]}
    if not passing or all(r.get("runoff_p50_ms") for r in finalists.values()):
        return list(finalists.values())
    t.log(f"runoff: re-timing {len(finalists)} finalists in {RUNOFF_ROUNDS} rotated rounds ...")
    tasks = [MeasureTask(slug, r["runtime"], Path(r["path"])) for slug, r in finalists.items()]
    latency = replace(t.s.latency, rounds=RUNOFF_ROUNDS)
    _, pooled = t.measurer(latency, log=lambda _: None).timing(
        tasks, lambda name, exc: t.log(f"runoff: {name} failed: {exc}")
    )
    for slug, r in list(finalists.items()):
        if (slug, t.s.threads) not in pooled:
            del finalists[slug]
            continue
        r["runoff_p50_ms"] = float(np.median(pooled[(slug, t.s.threads)]))
        t.log(f"runoff: {r['family']} ({r['label']}) p50 {r['runoff_p50_ms']:.2f} ms")
    t.save()
    return list(finalists.values())
