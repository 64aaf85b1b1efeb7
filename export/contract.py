"""The model contract of an export, read from what the user brings: a Keras model, or exported files.

Input size, channels and dtype come from the model (its input spec, or the input tensor of the float
artifact), the class count from its output, the class names from a labels file or the dataset's class
folders, and the preprocessing (scale/mean/std) from the user, who knows what the model was trained on.
"""

from __future__ import annotations

from edgebench.errors import EdgebenchError
from edgebench.runtime import Contract, ContractError, read_labels
from edgebench.runtime.contract import Preprocessing, preprocessing


def parse_preprocessing(scale: float | None, mean, std) -> dict | None:
    """``{"scale", "mean", "std"}`` from the command line (None when none is given); unset parts are the
    identity (scale 1, mean 0, std 1); ``mean``/``std`` are number sequences (``--mean`` / ``--std``, parsed
    by edgebench.options), one value per channel or one."""
    if scale is None and mean is None and std is None:
        return None
    return {
        "scale": 1.0 if scale is None else float(scale),
        "mean": [0.0] if mean is None else [float(v) for v in mean],
        "std": [1.0] if std is None else [float(v) for v in std],
    }


def _per_channel(pre: dict | None, channels: int) -> Preprocessing | None:
    if pre is None:
        return None
    mean, std = pre["mean"], pre["std"]
    return preprocessing(
        pre["scale"], mean * channels if len(mean) == 1 else mean, std * channels if len(std) == 1 else std
    )


def keras_contract(model, labels=None, pre: dict | None = None) -> Contract:
    """The contract read from a Keras model; classes from ``labels`` (a file) or placeholders until the
    dataset names them (``with_classes``)."""
    from edgebench.train.model import model_contract

    names = read_labels(labels) if labels else None
    if names is not None and len(names) != int(model.outputs[0].shape[-1]):
        raise EdgebenchError(
            f"labels file {labels} has {len(names)} class names, but the model outputs "
            f"{int(model.outputs[0].shape[-1])} classes"
        )
    base = model_contract(model, names)
    return _checked(base, pre)


def artifact_contract(info: dict, labels=None, pre: dict | None = None) -> Contract:
    """The contract of an exported file from its inspected I/O tensors (``artifact_info.describe``)."""
    shape, out = info["inputs"][0]["shape"], info["outputs"][0]["shape"]
    if len(shape) != 4 or min(shape[1:]) < 1:
        raise EdgebenchError(f"input tensor shape {shape} is not a fixed-size NHWC image batch (N, H, W, C)")
    if len(out) != 2 or out[1] < 1:
        raise EdgebenchError(f"output tensor shape {out} is not (N, classes) probabilities")
    dtype = info["inputs"][0]["dtype"]
    dtype = "float32" if dtype.startswith("float") else dtype
    names = read_labels(labels) if labels else [f"class_{i}" for i in range(out[1])]
    if len(names) != out[1]:
        raise EdgebenchError(
            f"labels file {labels} has {len(names)} class names, but the model outputs {out[1]} classes"
        )
    try:
        base = Contract(shape[1], shape[2], shape[3], dtype, tuple(names))
    except ContractError as exc:
        raise EdgebenchError(str(exc)) from None
    return _checked(base, pre)


def _checked(base: Contract, pre: dict | None) -> Contract:
    try:
        return Contract(
            base.height, base.width, base.channels, base.dtype, base.classes, _per_channel(pre, base.channels)
        )
    except ContractError as exc:
        raise EdgebenchError(str(exc)) from None


def name_classes(contract: Contract, ds, labels_given: bool) -> Contract:
    """The contract with the dataset's class names (sorted class folders) unless a labels file named
    them; the class counts must agree."""
    if labels_given:
        return contract
    if len(ds.class_names) != contract.num_classes:
        raise EdgebenchError(
            f"{ds.source} has {len(ds.class_names)} classes ({', '.join(ds.class_names)}), but the model "
            f"outputs {contract.num_classes}; pass --labels or a folder with one sub-folder per class"
        )
    return contract.with_classes(ds.class_names)


def model_and_data(model_path, data_source, cache_dir, settings):
    """(Keras model, contract, dataset at the model's input size with labels in its class order) for an
    export; ``settings``: ``ExportSettings`` (labels, preprocessing, split)."""
    from edgebench.train.data.dataset import align_classes, load_dataset
    from edgebench.train.model import load_model

    model = load_model(model_path)
    contract = keras_contract(model, settings.labels, settings.preprocessing)
    ds = load_dataset(
        data_source, cache_dir, size=contract.size, channels=contract.channels, split=settings.split
    )
    contract = name_classes(contract, ds, settings.labels is not None)
    return model, contract, align_classes(ds, contract.classes)


def manifest_preprocessing(contract: Contract) -> str:
    """The manifest's one-line ``preprocessing`` text."""
    return (
        f"input: {contract.describe()}; whatever else the model does (casts, resizing, its own normalisation "
        "layers) is inside the graph"
    )
