"""``edgebench train`` and ``edgebench predict``: thin click wrappers around the recipe and the runners."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgebench.options import data_option, out_option
from edgebench.train.recipe.presets import PRESETS, tunable_fields


def _preset_options(func):
    """One ``--<field>`` option per preset field; unset options keep the preset's value."""
    for field in reversed(tunable_fields()):
        flag = field.name.replace("_", "-")
        if field.type in ("bool", bool):
            func = click.option(
                f"--{flag}/--no-{flag}", field.name, default=None, help=field.metadata["help"]
            )(func)
        else:
            kind = {"int": int, "float": float, "int | None": int, "float | None": float}.get(
                str(field.type), str
            )
            func = click.option(
                f"--{flag}", field.name, type=kind, default=None, help=field.metadata["help"]
            )(func)
    return func


@click.command()
@click.option("--preset", default="cpu", show_default=True, help=f"one of: {', '.join(PRESETS)}")
@data_option("Training images", default="env EDGEBENCH_DATA, else keras")
@click.option(
    "--weights",
    default="imagenet",
    show_default=True,
    help="'imagenet', a ResNet50 notop .weights.h5 path, or 'none'",
)
@out_option("run directory [runs/<preset>]")
@click.option("--cache-dir", default=None, help="decoded-image and feature caches [env EDGEBENCH_CACHE]")
@click.option("--restart", is_flag=True, help="discard checkpoints in --out instead of resuming")
@_preset_options
def train(preset, data, weights, out_dir, cache_dir, restart, **overrides):
    """Fine-tune ImageNet ResNet50 on CIFAR-10 (resumes an interrupted run in --out)."""
    from edgebench.train.recipe.presets import get_preset
    from edgebench.train.recipe.trainer import Trainer
    from edgebench.train.summary import print_summary

    chosen = get_preset(preset, **overrides)
    trainer = Trainer(
        chosen, data, weights, out_dir or f"runs/{chosen.name}", cache_dir=cache_dir, restart=restart
    )
    print_summary(trainer.run(), trainer.run_dir)


@click.command()
@click.argument("images", nargs=-1, required=True)
@click.option("--model", "model_path", required=True, help="a .keras model or an exported artifact")
@click.option("--top-k", default=3, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--labels", default=None, help="class names, one per line [default: the export's contract]")
def predict(images, model_path, top_k, as_json, labels):
    """Classify image files of any size or mode (resized to the model's input, per its contract)."""
    from edgebench.runtime import format_results
    from edgebench.train.reference.predict import predict_files

    results = predict_files(model_path, images, top_k, labels)
    click.echo(json.dumps(results, indent=2) if as_json else format_results(results))


@click.command("pack-model")
@click.option("--run", "run_dir", required=True, help="training run directory (model.keras, metrics.json)")
@click.option("--out", required=True, help="pack directory, e.g. models/release")
@click.option(
    "--command", "train_command", default=None, help="the command that trained it [from metrics.json]"
)
@click.option(
    "--code-commit",
    default=None,
    help="the commit that trained it, for runs whose metrics.json predates recording it [metrics.json's]",
)
def pack_model(run_dir, out, train_command, code_commit):
    """Pack a trained model for the repository: bfloat16 + lzma weights, sha256s and provenance."""
    from edgebench.train.packing import PACK_MANIFEST, provenance
    from edgebench.train.packing import pack_model as pack
    from edgebench.train.unpacking import read_pack_manifest

    # The pack this one replaces, the model the run may have continued (its lineage): one that cannot be
    # read is refused rather than packed over, its lineage lost.
    earlier = read_pack_manifest(out) if Path(out, PACK_MANIFEST).is_file() else None
    manifest = pack(
        f"{run_dir}/model.keras",
        out,
        provenance(run_dir, command=train_command, commit=code_commit, previous=earlier, name=Path(out).name),
    )
    click.echo(
        f"packed {manifest['source']['file']} into {out}: {len(manifest['parts'])} part(s), "
        f"{manifest['packed_bytes'] / 2**20:.1f} MiB; weights sha256 {manifest['weights_sha256'][:16]}…"
    )


@click.command("fetch-model")
@click.option("--name", default="release", show_default=True, help="a packed model under models/")
@click.option("--models", "models_dir", default="models", show_default=True, help="where packed models live")
@click.option("--out", default=None, help="the rebuilt .keras file [runs/<name>/model.keras]")
def fetch_model(name, models_dir, out):
    """Rebuild a packed model (checks every part's sha256 and the restored weights' digest)."""
    from edgebench.train.unpacking import rebuild_model

    out = out or f"runs/{name}/model.keras"
    manifest = rebuild_model(f"{models_dir}/{name}", out)
    acc = manifest["provenance"].get("test_accuracy", {}).get("final")
    click.echo(
        f"rebuilt {out} from {models_dir}/{name} (weights sha256 {manifest['weights_sha256'][:16]}… verified"
        + (
            f"; trained to {acc:.2%} on {manifest['provenance'].get('test_images')} test images)"
            if acc
            else ")"
        )
    )


@click.command("gpu-payload")
@click.option("--data", "data_dir", required=True, help="image folder <root>/<split>/<class>/*.jpg")
@click.option("--weights", required=True, help="a Keras .weights.h5 file (the ResNet50 no-top weights)")
@click.option("--out", "out_dir", required=True, help="payload folder, e.g. runs/gpu-payload")
def gpu_payload(data_dir, weights, out_dir):
    """Pack the train and test JPEGs and the base weights for a remote trainer: one xz file each, and
    payload.json with their sizes and sha256s (train/portable/device_run.py reads them)."""
    from edgebench.train.portable.payload import build_payload

    summary = build_payload(data_dir, weights, out_dir)
    sizes = ", ".join(f"{name} {meta['bytes'] / 2**20:.1f} MiB" for name, meta in summary["files"].items())
    images = ", ".join(f"{n} {split}" for split, n in summary["images"].items())
    click.echo(f"wrote {out_dir}: {sizes} ({images} images, {len(summary['classes'])} classes)")
