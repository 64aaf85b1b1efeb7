"""What every format of one export is built and checked from: the model, its contract, the calibration and
parity images, and the settings each artifact's options record."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgebench import targets
from edgebench.errors import EdgebenchError
from edgebench.export.context import Calibration, indices_sha256, stratified_sample
from edgebench.export.quant_recipe import TRT_RECIPE
from edgebench.export.registry import ExportFormat
from edgebench.fileio import sha256_file


@dataclass
class ExportInputs:
    """What every format of one export is built and checked from."""

    model_path: Path
    keras_model: object
    contract: object
    calibration: Calibration
    parity_images: np.ndarray
    source: dict  # the manifest's source_model
    parity_set: dict
    option_values: dict  # every setting an artifact's options may record

    @classmethod
    def load(cls, model_path: Path, data_source, cache_dir, settings) -> ExportInputs:
        """``settings``: the export's ``ExportSettings``."""
        from edgebench.export.contract import model_and_data

        # A missing or corrupt model, or data that is not the model's, is found before anything is written.
        keras_model, contract, ds = model_and_data(model_path, data_source, cache_dir, settings)
        calib_idx = stratified_sample(ds.y_train, settings.calib_size, settings.calib_seed)
        if len(calib_idx) == 0:
            raise EdgebenchError(f"calibration set is empty: no training images in {ds.source}")
        parity_idx = stratified_sample(ds.y_test, settings.parity_images, settings.parity_seed)
        if len(parity_idx) == 0:
            raise EdgebenchError(f"no test images for the parity check in {ds.source}")
        calib_images = contract.model_input(ds.x_train[calib_idx])  # model inputs: preprocessing applied
        method = settings.calib_method
        option_values = {
            **asdict(settings),
            "data_source": ds.source,
            "calib_size": int(len(calib_idx)),
            "calib_indices_sha256": indices_sha256(calib_idx),
            # the resolved int8 recipes: a new CPU or override that changes them rebuilds their artifacts
            "onnx_recipe": settings.ort_recipe().quant_options(),
            "trt_recipe": TRT_RECIPE.quant_options(),
        }
        return cls(
            model_path=model_path,
            keras_model=keras_model,
            contract=contract,
            calibration=Calibration(calib_images, calib_idx, ds.source, settings.calib_seed, method),
            parity_images=ds.x_test[parity_idx],
            source={
                "path": os.fspath(model_path),
                "sha256": sha256_file(model_path),
                "bytes": model_path.stat().st_size,
            },
            parity_set={
                "source": ds.source,
                "split": ds.split,
                "size": int(len(parity_idx)),
                "seed": settings.parity_seed,
                "indices_sha256": indices_sha256(parity_idx),
            },
            option_values=option_values,
        )

    def options_for(self, fmt: ExportFormat, target: str) -> dict:
        """The options an artifact of ``fmt`` records: what rebuilds it when changed."""
        values = self.option_values
        keys = (*fmt.option_keys, "data_source", "parity_images", "parity_seed")
        # recorded only when set: an unset contract part changes no artifact, so it must not rebuild one
        extra = {k: values[k] for k in ("preprocessing", "split") if values[k] not in (None, "test")}
        # a CPU-dependent artifact is another artifact for another target, even where the recipe agrees
        if "onnx_recipe" in fmt.option_keys and target != targets.HOST:
            extra["target"] = target
        return {"description": fmt.description, **{k: values[k] for k in keys}, **extra}
