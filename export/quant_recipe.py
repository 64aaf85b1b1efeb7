"""Which int8 ONNX to build: ONNX Runtime's recipe from the CPU it runs on, TensorRT's fixed recipe.

ONNX Runtime's CPU kernels (MLAS) pay off for int8 only where the quantized graph matches them:

- x86: U8S8 (uint8 asymmetric activations, int8 symmetric per-channel weights). ORT on x86 rewrites int8
  Q/DQ pairs to uint8 only where a QuantizeLinear has a single consumer; ResNet's residual branches have
  two, so with int8 activations 20 of 53 convs stayed float (p50 4.59 ms, fp32 4.58). U8S8 fused all 53
  into QLinearConv (1.52 ms) at the same accuracy. Without VNNI (AVX2 only) u8*s8 pairs are summed into
  saturating int16, so weights must keep to 7 bits (``reduce_range``: on a ResNet50 full-range weights
  dropped top-1 agreement with Keras from 0.88, the same graph simulated in float, to 0.64; 7-bit: 0.885);
  with VNNI the sums are int32 and full-range weights are safe.
- ARM: S8S8 (int8 activations and weights, full range): ORT's ARM kernels (sdot/smmla) prefer it.
- anything else: U8S8 with 7-bit weights, which is correct on every ORT CPU kernel.

TensorRT's explicit quantization wants symmetric int8 activations and full-range int8 weights whatever
CPU builds the file (``TRT_RECIPE``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from edgebench.cpu import has_vnni, summary

QUANT_FORMATS = ("qdq", "qoperator")
ACTIVATION_TYPES = ("uint8", "int8")
_QUANT_FIELDS = (
    "quant_format",
    "activation_type",
    "weight_type",
    "reduce_range",
    "per_channel",
    "activation_symmetric",
)


@dataclass(frozen=True)
class OrtRecipe:
    """The arguments of ``onnxruntime.quantization.quantize_static`` that shape the int8 graph."""

    quant_format: str  # qdq | qoperator
    activation_type: str  # uint8 | int8
    weight_type: str  # int8 (symmetric)
    reduce_range: bool  # 7-bit weights
    per_channel: bool
    activation_symmetric: bool
    reason: str  # one line: why, naming the CPU flags used
    cpu: str | None = None  # the fingerprint summary it was derived from (None: CPU-independent)
    target: str | None = None  # the target profile of that fingerprint (``edgebench.targets``)

    def quant_options(self) -> dict:
        """What changes the artifact (the up-to-date key): every field but the prose."""
        return {k: getattr(self, k) for k in _QUANT_FIELDS}

    def describe(self) -> dict:
        return asdict(self)


TRT_RECIPE = OrtRecipe(
    "qdq",
    "int8",
    "int8",
    reduce_range=False,
    per_channel=True,
    activation_symmetric=True,
    reason="TensorRT explicit quantization: symmetric int8 activations, full-range per-channel int8 weights",
)


def ort_recipe(
    fp: dict,
    *,
    quant_format: str = "auto",
    activation_type: str = "auto",
    reduce_range: bool | None = None,
    target: str | None = None,
) -> OrtRecipe:
    """The ONNX Runtime int8 recipe for the CPU of fingerprint ``fp`` (``edgebench.cpu.fingerprint()`` or
    a target profile's, ``edgebench.targets.fingerprint``; ``target`` names it in the recipe).

    ``quant_format`` / ``activation_type`` ("auto" or a value) and ``reduce_range`` (None: auto) override
    the machine's choice; the reason then says so.
    """
    arch, flags = fp.get("arch"), fp.get("flags", {})
    if arch == "x86_64":
        vnni = [f for f in ("avx512_vnni", "avx_vnni") if flags.get(f)]
        act, rr = "uint8", not has_vnni(fp)
        why = (
            f"x86_64 with {'/'.join(vnni)}: U8S8 QDQ, full-range int8 weights (VNNI sums u8*s8 in int32)"
            if vnni
            else "x86_64 without avx512_vnni/avx_vnni"
            + (" (avx2 only)" if flags.get("avx2") else "")
            + ": U8S8 QDQ, 7-bit weights (u8*s8 pairs sum into saturating int16)"
        )
    elif arch == "arm64":
        dot = [f for f in ("asimddp", "i8mm") if flags.get(f)]
        act, rr = "int8", False
        why = (
            f"arm64 ({'/'.join(dot) or 'no asimddp/i8mm'}): S8S8 QDQ, full-range int8 weights "
            "(ONNX Runtime's ARM kernels prefer S8S8)"
        )
    else:
        act, rr = "uint8", True
        why = f"unknown architecture '{arch}': U8S8 QDQ with 7-bit weights (correct on every ORT kernel)"

    overrides = []
    fmt = "qdq"
    if quant_format != "auto":
        fmt = quant_format
        overrides.append(f"quant_format={quant_format}")
    if activation_type != "auto":
        act = activation_type
        overrides.append(f"activation_type={activation_type}")
    if reduce_range is not None:
        rr = reduce_range
        overrides.append(f"reduce_range={reduce_range}")
    if overrides:
        why += "; overridden: " + ", ".join(overrides)
    # Activations asymmetric (ORT's default, for uint8 and int8 alike): post-ReLU tensors then use all 256
    # levels; only TensorRT needs symmetric ones.
    return OrtRecipe(fmt, act, "int8", rr, True, False, why, summary(fp), target)


VNNI_RULE = {
    "arch": "x86_64",
    "any_of": ["avx512_vnni", "avx_vnni"],
    "why": "full-range int8 weights: without VNNI, ONNX Runtime's u8*s8 kernels sum pairs into saturating "
    "int16",
}


def cpu_requirements(recipe: dict | None) -> list[dict]:
    """The CPU rules (``edgebench.runtime.cpuflags.unmet``) an ONNX Runtime int8 artifact of ``recipe`` (its
    manifest ``recipe`` or quant options) needs: full-range int8 weights need VNNI on x86, whatever the
    activation type (ORT rewrites S8S8 Q/DQ pairs to U8S8 on x86); 7-bit weights need nothing the arch does
    not have, nor does ARM (int32 sums); a float artifact (no recipe) needs nothing special."""
    if not recipe or recipe.get("weight_type") != "int8" or recipe.get("reduce_range"):
        return []
    return [dict(VNNI_RULE)]


def check_choices(quant_format: str, activation_type: str) -> str | None:
    """A one-line message for an unknown choice, else None."""
    if quant_format not in ("auto", *QUANT_FORMATS):
        return f"unknown ONNX quantization format '{quant_format}' (known: auto, {', '.join(QUANT_FORMATS)})"
    if activation_type not in ("auto", *ACTIVATION_TYPES):
        known = ", ".join(ACTIVATION_TYPES)
        return f"unknown ONNX activation type '{activation_type}' (known: auto, {known})"
    return None
