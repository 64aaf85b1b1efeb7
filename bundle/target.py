"""The CPU side of a bundle: the flags its artifact needs, the CPU it is for, and where it was exported and
measured (model.json's ``cpu``), which infer.py and the C runner check against the CPU they land on.

What an artifact needs comes from its recipe (``export.quant_recipe.cpu_requirements``): an ONNX Runtime
int8 file with full-range weights needs VNNI on x86; 7-bit weights, float and TFLite files need nothing
beyond their architecture.
"""

from __future__ import annotations

from edgebench import cpu, targets
from edgebench.errors import EdgebenchError
from edgebench.export.manifest import ArtifactEntry, ExportManifest
from edgebench.export.quant_recipe import cpu_requirements
from edgebench.runtime.cpuflags import unmet


def requirements(artifact: ArtifactEntry) -> tuple[list[dict], str]:
    """(rules, why): the CPU rules of ``artifact`` (a manifest entry) and the one line they come from."""
    recipe = artifact.recipe if artifact.runtime == "onnxruntime" else None
    if not recipe:
        return (
            [],
            f"{artifact.runtime} artifact without an int8 recipe: no CPU flag beyond its architecture",
        )
    rules = cpu_requirements(recipe)
    weights = "7-bit" if recipe.get("reduce_range") else "full-range"
    return rules, f"{artifact.format} recipe: {weights} int8 weights ({recipe['reason']})"


def exported_for(manifest: ExportManifest, artifact: ArtifactEntry) -> dict | None:
    """The target the export recorded (None: an export from before targets, or an import)."""
    recorded = manifest.target
    named = (artifact.recipe or {}).get("target")
    if named and (not recorded or recorded["name"] != named):
        return targets.describe(named)  # a tuned winner built for another target than the export's
    return recorded


def cpu_spec(
    manifest: ExportManifest, artifact: ArtifactEntry, figures: dict | None, target: str | None, warnings
) -> dict:
    """model.json's ``cpu``; ``target`` (a profile, None: the export's) must meet the artifact's rules."""
    rules, why = requirements(artifact)
    exported = exported_for(manifest, artifact)
    # no target given nor recorded (an older export, an import): nothing to check the rules against here
    aimed = targets.describe(target) if target else exported
    missing = unmet(rules, aimed["arch"], aimed["flags"]) if aimed else []
    if missing:
        needs = " or ".join(missing[0]["any_of"])
        raise EdgebenchError(
            f"format '{artifact.format}' needs {needs} ({missing[0]['why']}), which target "
            f"{aimed['name']} lacks: export it with --target {aimed['name']}"
        )
    if exported and aimed and aimed["name"] != exported["name"]:
        warnings.append(f"{artifact.format} was exported for target {exported['name']}, not {aimed['name']}")
    host = manifest.host
    env = (figures or {}).get("environment") or {}
    return {
        "requires": rules,
        "requires_basis": why,
        "target": aimed,
        "exported_on": cpu.summary(host) if host else (artifact.recipe or {}).get("cpu"),
        "measured_on": env.get("cpu_features") or env.get("cpu"),
    }


def native_define(rules: list[dict]) -> str | None:
    """The C runner's compiled-in rules, ``arch:flag|flag;...`` (None: it needs nothing)."""
    return ";".join(f"{r['arch']}:{'|'.join(r['any_of'])}" for r in rules) or None
