"""The device-side README of a bundle, rendered from its model.json (so the two cannot disagree). Every
name from a file that lands in a shell line is quoted for the shell."""

from __future__ import annotations

import shlex

from edgebench.runtime import BundleSpec
from edgebench.runtime.native import preprocessing_args


def _pct(x) -> str:
    return "–" if x is None else f"{x * 100:.2f}%"


def _tensor(t: dict) -> str:
    q = t["quantization"]
    quant = f", scale {q['scale']:.6g}, zero point {q['zero_point']}" if q else ""
    return f"`{t['name']}` {t['dtype']} {t['shape']}{quant}"


def _measured(m: dict | None) -> list[str]:
    if m is None:
        return ["Not benchmarked: no `edgebench bench` report was found for this export."]
    lines = []
    if not m["matches_export"]:
        lines.append("Note: the report was made from an earlier manifest of this export (same source model).")
    if m["status"] in ("error", "skipped"):
        return [
            *lines,
            f"bench could not measure this artifact ({m['status']}: {m['reason']}: {m['message']}).",
        ]
    acc, lat, env = m["accuracy"], m["latency"], m["environment"]
    if acc:
        drop = (
            ""
            if acc["drop_pp"] is None
            else f"; fp32 Keras model {_pct(acc['reference_top1'])}, drop {acc['drop_pp']:+.2f} pp"
        )
        lines.append(
            f"- top-1 accuracy: **{_pct(acc['top1'])}** "
            f"(95% CI {_pct(acc['ci95'][0])}–{_pct(acc['ci95'][1])}) "
            f"on {acc['images']} {m['dataset']['split']} images of {m['dataset']['source']}{drop}; "
            f"bench gate: {m['status']}"
        )
    if lat:
        rate = (
            f"; best throughput {lat['images_per_s']:.1f} images/s (batch {lat['images_per_s_batch']}, "
            f"threads: {lat['images_per_s_threads']})"
            if lat["images_per_s"]
            else ""
        )
        p99 = (
            f"{lat['p99_ms']:.2f} ms" if lat["p99_ms"] is not None else f"n/a ({lat.get('samples')} samples)"
        )
        lines.append(
            f"- batch-1 latency: p50 **{lat['p50_ms']:.2f} ms**, p90 {lat['p90_ms']:.2f} ms, "
            f"p99 {p99} (threads: {lat['threads']}){rate}"
        )
    lines.append(
        f"- measured on: {env['cpu']} ({env['logical_cores']} logical cores), {env['os']}; "
        f"report {m['report']} of {m['report_created']}. Expect other figures on other hardware."
    )
    return lines


def _cpu(spec: BundleSpec) -> list[str]:
    """What the model needs of the CPU, which infer.py and the C runner check at start."""
    cpu = spec.cpu
    if not cpu:
        return []
    needs = "; ".join(" or ".join(r["any_of"]) + f" on {r['arch']}" for r in cpu["requires"])
    target = cpu["target"]["summary"] if cpu["target"] else "not recorded"
    return [
        f"CPU: built for {target}; exported on {cpu['exported_on'] or 'an unrecorded CPU'}. The model needs "
        f"{needs or 'no CPU flag beyond its architecture'} ({cpu['requires_basis']}); where one is missing, "
        "`infer.py` and the C runner refuse (exit 2) unless given `--allow-cpu-mismatch`.",
        "",
    ]


def _threads(spec: BundleSpec) -> str:
    n = spec.threads
    return (
        f"{n} (the thread count the latency below was measured with)"
        if n
        else "the runtime's default (not benchmarked)"
    )


def _native(spec: BundleSpec) -> list[str]:
    native = spec.native or {}
    if not native.get("library"):
        return ["## C runner", "", f"None in this bundle: {native.get('reason', 'not provided')}.", ""]
    # A float model's contract (model.json "contract") becomes the runner's --scale/--mean/--std.
    sample = shlex.join([spec.samples[0].ppm or "IMAGE.ppm", *preprocessing_args(spec.contract)])
    built = (
        f"`runner` is prebuilt for {native['built_for']} ({native['compiler']}); `make` rebuilds it."
        if native.get("binary")
        else "`runner` was not prebuilt (no C compiler where the bundle was made): run `make`."
    )
    return [
        "## C runner (no Python)",
        "",
        f"`runner.c` runs `{spec.model.file}` through the LiteRT C API of the bundled `libLiteRt.so`; "
        f"no Python. {built} It reads binary PPM (P6) or raw HxWxC uint8 files at the model's input size "
        "(nothing is resized: `samples/*.ppm` are the sample images in that form) and prints what "
        "`infer.py` prints.",
        "",
        "```sh",
        "make                                   # " + native["build"],
        f"./runner {sample} --top-k 3",
        f"./runner {sample} --json",
        f"./runner --bench 1000 {sample}     # p50/p90/p99 of LiteRtRunCompiledModel",
        "```",
        "",
        "Options: `--top-k K`, `--json`, `--threads N`, `--model PATH`, `--labels PATH`, `--bench N`, "
        "`--warmup W`, `--time-cap S`, and for float inputs `--scale S --mean a,b,c --std a,b,c` "
        "(`x = (pixel * scale - mean) / std`). Bad input (missing, corrupt or truncated model: checked "
        "before LiteRT reads it; wrong-size image, a PNG or JPEG instead of PPM/raw) is one `error:` line "
        "and exit code 2. `infer.py --selftest` runs the samples through it too.",
        "",
        "To call the model from your own program, build against the same declarations and library:",
        "`cc -std=c11 -c my_app.c && cc my_app.o -L. -lLiteRt -lm -Wl,-rpath,'$ORIGIN'` with "
        '`#include "litert_min.h"`. The call sequence is `open_model`, `set_input`, `run`, `get_output` in '
        "`runner.c`: LiteRtCreateEnvironment, LiteRtCreateModelFromBuffer (on the bytes `tflite_check.h` "
        "verified), LiteRtCreateOptions (+ the "
        '"xnnpack" opaque option `num_threads = N`), LiteRtCreateCompiledModel, '
        "LiteRtCreateManagedTensorBufferFromRequirements for input and output, then per image "
        "LiteRtLockTensorBuffer / write / LiteRtUnlockTensorBuffer, LiteRtRunCompiledModel, lock and read "
        "the output.",
        "",
    ]


def _title(spec: BundleSpec) -> str:
    classes = list(spec.class_names)
    cifar = classes == [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ]
    return "CIFAR-10 classifier" if cifar else f"{len(classes)}-class image classifier"


def render_readme(spec: BundleSpec) -> str:
    model = spec.model
    req = ", ".join(f"`{r}`" for r in spec.requirements)
    sample = shlex.quote(spec.samples[0].file)
    return "\n".join(
        [
            f"# {_title(spec)}, {spec.format} ({spec.precision})",
            "",
            f"`{model.file}` ({model.bytes / 1e6:.2f} MB, sha256 `{model.sha256}`), run by "
            f"`infer.py` with numpy, Pillow and {spec.runtime} only: no TensorFlow. Built by edgebench "
            f"{spec.edgebench_version} on {spec.created}.",
            "",
            "## Run it",
            "",
            "```sh",
            "python3 -m venv .venv && .venv/bin/pip install -r requirements.txt",
            ".venv/bin/python infer.py --selftest          # after flashing: model sha256 + sample images",
            f".venv/bin/python infer.py {sample} --top-k 3",
            ".venv/bin/python infer.py photo.jpg --json     # [{image, top_k: [{class, probability}]}]",
            "```",
            "",
            f"Requirements (pinned): {req}. Threads: {_threads(spec)}. "
            "Options: `--top-k K`, `--json`, `--threads N`, `--model PATH` "
            "(another model file, no sha256 check). Exit codes: 0 ok; 1 self-test mismatch; 2 bad input "
            "(missing or unreadable image, corrupt model, model whose sha256 differs from `model.json`), "
            "always with a one-line `error:` message.",
            "",
            *_cpu(spec),
            *_native(spec),
            "## Contract",
            "",
            f"- input: {', '.join(_tensor(t) for t in spec.inputs)}: {spec.preprocessing['input']}",
            f"- output: {', '.join(_tensor(t) for t in spec.outputs)}: probabilities of the classes in "
            "`labels.txt` (one per line, in output order)",
            f"- inside the graph: {spec.preprocessing['in_graph']}",
            f"- image files: {spec.preprocessing['image_files']}",
            "",
            "## Expected accuracy and latency",
            "",
            *_measured(spec.measured),
            "",
            "## Self-test",
            "",
            f"`samples/` holds {len(spec.samples)} real test images at the model's input size, saved as "
            "PNG (lossless). "
            "`model.json` stores the top-1 class this model gave each of them when the bundle was built; "
            "`infer.py --selftest` checks the model's sha256 and that every sample still gets that class.",
            "",
        ]
    )
