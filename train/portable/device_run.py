"""The prepared device call: unpack the payload, train the gpu recipe on Keras/JAX, evaluate, pack.

Runs where only Python, JAX, numpy, h5py, Pillow and ml_dtypes are installed, as a plain file from the
repository root (``KERAS_BACKEND=jax python train/portable/device_run.py --payload runs/gpu-payload --out
$OUT``; ``--wheels`` unpacks carried keras wheels first) or as ``python -m
edgebench.train.portable.device_run``. Writes to ``--out``: the packed model (``<name>/``: MANIFEST.json,
SHA256SUMS, parts of at most 15 MiB; rewritten after every epoch, so a cut-off run still brings a model home),
``metrics.json`` and ``test_scores.npy``. The test accuracy is that of the float32 model holding the
bfloat16-rounded weights: what ``fetch-model`` rebuilds. Defaults (224 px, conv2: every residual block, batch
128, 1 + up to 30 epochs in 8 minutes) are the gpu recipe of docs/design/gpu.md; ``--tiny`` and the size
options rehearse it on a CPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _bootstrap(wheels: str | None) -> None:
    """Make ``edgebench.train`` importable from a bare checkout (setuptools maps it to train/) and keras
    importable from carried wheels, when they are not installed."""
    import importlib.util

    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        sys.path.pop(
            0
        )  # run as a file: this folder's modules (training, payload, ...) must not shadow others
    if importlib.util.find_spec("keras") is None and wheels:
        sys.path.insert(0, str(unzip_wheels(Path(wheels), Path("/tmp/edgebench-pylib"))))
    if importlib.util.find_spec("edgebench") is None:
        sys.path.insert(0, str(REPO))
    import edgebench

    if importlib.util.find_spec("edgebench.train") is None:
        spec = importlib.util.spec_from_file_location(
            "edgebench.train",
            REPO / "train" / "__init__.py",
            submodule_search_locations=[str(REPO / "train")],
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules["edgebench.train"] = module
        spec.loader.exec_module(module)
        edgebench.train = module


def unzip_wheels(folder: Path, target: Path) -> Path:
    """Unpack the wheels in ``folder`` that fit this interpreter (pure ones, and binary ones tagged with
    its cpXY) into ``target``: a wheel is a zip of its installed files, so no pip or index is needed."""
    import zipfile

    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    chosen = [
        w for w in sorted(folder.glob("*.whl")) if w.name.endswith("-none-any.whl") or f"-{tag}-" in w.name
    ]
    for wheel in chosen:
        with zipfile.ZipFile(wheel) as z:
            z.extractall(target)
    print(f"unpacked {len(chosen)} wheels into {target}: {', '.join(w.name.split('-')[0] for w in chosen)}")
    return target


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--payload", required=True, help="folder of gpu-payload (payload.json, images.xz, weights.xz)"
    )
    p.add_argument("--out", default=os.environ.get("OUT", "runs/gpu-device"), help="output folder [$OUT]")
    p.add_argument("--name", default="gpu", help="the pack's folder under --out (models/<name> at home)")
    p.add_argument("--wheels", default=None, help="keras and its pure wheels, installed if keras is missing")
    p.add_argument("--minutes", type=float, default=8.0, help="wall-clock budget of the whole script")
    p.add_argument("--reserve", type=float, default=75.0, help="seconds kept for evaluation and packing")
    p.add_argument("--tiny", action="store_true", help="the tiny CNN instead of ResNet50 (rehearsals, tests)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--unfreeze", default="conv2", choices=("conv5", "conv4", "conv3", "conv2"))
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--phase1-epochs", type=int, default=1)
    p.add_argument("--phase2-epochs", type=int, default=30, help="at most; the deadline usually ends phase 2")
    p.add_argument("--phase1-lr", type=float, default=1e-3)
    p.add_argument("--phase2-lr", type=float, default=1e-4)
    p.add_argument("--dropout", type=float, default=0.3)
    # 0 on the device: a validation pass costs two more compilations (phases 1 and 2) of a 6-minute budget
    p.add_argument("--val-fraction", type=float, default=0.0, help="held out of train, monitoring only")
    p.add_argument("--train-per-class", type=int, default=None, help="the first N per class (rehearsals)")
    p.add_argument("--test-per-class", type=int, default=None)
    p.add_argument("--precision", default="auto", choices=("auto", "mixed_bfloat16", "float32"))
    p.add_argument(
        "--xz-preset", type=int, default=1, help="lzma level of the packs (1: seconds, not minutes)"
    )
    # 15, not 16: a returned file must stay within the device call's 16 MiB, with room to spare
    p.add_argument("--part-mib", type=float, default=15.0, help="largest part of the pack, MiB")
    p.add_argument("--code-commit", default=os.environ.get("EDGEBENCH_COMMIT"), help="recorded in provenance")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def first_per_class(labels, n):
    """Indices of the first ``n`` images of each class (all when ``n`` is None), in payload order."""
    import numpy as np

    if n is None:
        return np.arange(len(labels))
    return np.sort(np.concatenate([np.flatnonzero(labels == c)[:n] for c in np.unique(labels)]))


def load_data(payload: Path, args):
    """(classes, x_train, y_train, x_val, y_val, x_test, y_test) decoded from the checked payload."""
    import numpy as np

    from edgebench.train.portable.payload import IMAGES_FILE, check_payload, read_images

    check_payload(payload)
    classes, splits = read_images(payload / IMAGES_FILE)
    train, test = splits["train"], splits["test"]
    tr, te = (
        first_per_class(train.labels, args.train_per_class),
        first_per_class(test.labels, args.test_per_class),
    )
    x, y = train.decode(tr), train.labels[tr]
    order = np.random.default_rng(args.seed).permutation(len(x))
    n_val = int(round(len(x) * args.val_fraction))
    val, fit = order[:n_val], np.sort(order[n_val:])
    return classes, x[fit], y[fit], x[val], y[val], test.decode(te), test.labels[te]


def main(argv=None) -> dict:
    start = time.time()
    args = parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "jax")
    _bootstrap(args.wheels)
    import tempfile

    import keras
    import numpy as np

    from edgebench.fileio import atomic_path, write_json
    from edgebench.train.model import build_model, build_tiny_model
    from edgebench.train.portable import training, twin_pack
    from edgebench.train.portable.payload import WEIGHTS_FILE, unpack_weights_h5

    payload, out = Path(args.payload), Path(args.out)
    classes, x_tr, y_tr, x_val, y_val, x_te, y_te = load_data(payload, args)
    elapsed = lambda: f"[{time.time() - start:.0f} s]"  # noqa: E731  (where a device call's minutes went)
    print(f"{elapsed()} data: {len(x_tr)} train, {len(x_val)} val, {len(x_te)} test, {len(classes)} classes")
    info = training.setup_devices(args.precision)
    print(f"{elapsed()} devices: {info}; keras {keras.__version__} on {keras.backend.backend()}", flush=True)
    if args.tiny:
        build = twin_build = lambda: build_tiny_model(args.image_size, len(classes), args.seed)  # noqa: E731
    else:
        h5 = unpack_weights_h5(payload / WEIGHTS_FILE, Path(tempfile.mkdtemp()) / "base.weights.h5")
        build = lambda: build_model(args.image_size, str(h5), args.dropout, num_classes=len(classes))  # noqa: E731
        twin_build = lambda: build_model(args.image_size, None, args.dropout, num_classes=len(classes))  # noqa: E731
    r = training.Recipe(
        unfreeze=args.unfreeze,
        batch_size=args.batch_size,
        phase1_epochs=args.phase1_epochs,
        phase1_lr=args.phase1_lr,
        phase2_epochs=args.phase2_epochs,
        phase2_lr=args.phase2_lr,
        seed=args.seed,
    )
    record = provenance_record(argv, args, info, recipe=r, n_train=len(x_tr), n_val=len(x_val))
    epochs = [0]

    def provenance():
        epochs[0] += 1
        return {**record, "checkpoint": f"after epoch {epochs[0]} (no test accuracy yet)"}

    part_bytes = int(args.part_mib * 2**20)
    deadline = start + args.minutes * 60 - args.reserve
    done = training.train(
        build,
        twin_build,
        (x_tr, y_tr, x_val, y_val),
        r=r,
        deadline=deadline,
        dest=out / args.name,
        provenance=provenance,
        preset=args.xz_preset,
        classes=len(classes),
        part_bytes=part_bytes,
    )
    shipped, named = twin_pack.shipped_model(twin_build, done.model, done.order)
    scores = training.predict(shipped, x_te, args.batch_size)
    acc = float(np.mean(scores.argmax(1) == y_te))
    record.update(
        test_images=len(x_te),
        test_accuracy={
            "final": acc,
            "measured": "on the device: the float32 model holding the packed weights",
        },
        minutes=round((time.time() - start) / 60, 2),
        phase_seconds=done.seconds,
        stopped_by_deadline=done.stopped,
        epochs={phase: len(h.get("loss", [])) for phase, h in done.history.items()},
    )
    manifest = twin_pack.write_pack(
        named, done.config, out / args.name, provenance=record, preset=args.xz_preset, part_bytes=part_bytes
    )
    with atomic_path(out / "test_scores.npy") as tmp:
        np.save(tmp, scores.astype("float32"))  # the rebuilt model's scores at home are compared with these
    metrics = {**record, "history": done.history, "weights_sha256": manifest["weights_sha256"]}
    write_json(out / "metrics.json", metrics)
    print(f"{elapsed()} test accuracy {acc:.4f} on {len(x_te)} images; pack in {out / args.name}")
    return metrics


def provenance_record(argv, args, info: dict, *, recipe, n_train: int, n_val: int) -> dict:
    """What the pack's MANIFEST.json and metrics.json say of the run (the final one adds the test)."""
    from dataclasses import asdict
    from datetime import UTC, datetime

    import keras

    kinds = None
    if keras.backend.backend() == "jax":
        import jax

        kinds = [d.device_kind for d in jax.devices()]
    words = argv if argv is not None else sys.argv[1:]
    return {
        "trained": datetime.now(UTC).isoformat(timespec="seconds"),
        "preset": "gpu",
        "command": "KERAS_BACKEND=jax python train/portable/device_run.py " + " ".join(map(str, words)),
        "code_commit": args.code_commit,
        "trainer": "edgebench.train.portable (Keras on JAX)",
        "device": kinds,
        "distribution": {"devices": info["devices"], "data_parallel": info["data_parallel"]},
        "precision": info["precision"],
        "image_size": args.image_size,
        "model": "tiny" if args.tiny else "resnet50",
        "recipe": asdict(recipe),
        "train_images": n_train,
        "val_images": n_val,
        "test_images": None,
        "test_accuracy": {},
        "versions": {v: _version(v) for v in ("keras", "jax", "jaxlib", "numpy")},
        "rebuild": f"edgebench fetch-model --name {args.name}",
    }


def _version(dist: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    try:
        main()
    except Exception as exc:
        errors = sys.modules.get("edgebench.errors")  # loaded by main() once edgebench is importable
        if errors is None or not isinstance(exc, errors.EdgebenchError):
            raise
        print(f"error: {exc}", file=sys.stderr)  # bad input: one line, exit 2, like the CLI
        sys.exit(2)
