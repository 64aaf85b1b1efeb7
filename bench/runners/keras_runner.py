"""The fp32 reference: the trained ``.keras`` model, behind the same runner interface as every artifact."""

from __future__ import annotations

import numpy as np

from edgebench.errors import EdgebenchError
from edgebench.runtime import InferenceError, Runner


class KerasRunner(Runner):
    """A ``.keras`` model through Keras/TensorFlow (threads: TensorFlow's defaults, set per process)."""

    name = "keras"
    suffixes = (".keras",)

    def _load(self) -> None:
        import tensorflow as tf

        from edgebench.train.model import load_model

        try:
            self._model = load_model(self.path)
        except EdgebenchError as exc:
            raise InferenceError(str(exc)) from None
        # One traced graph for every batch size: eager calls and predict_on_batch add Python overhead per
        # call that would be timed as model latency.
        self._fn = tf.function(lambda x: self._model(x, training=False), reduce_retracing=True)
        self._tf = tf

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self._fn(self._tf.constant(batch, dtype=self._tf.uint8)), dtype=np.float32)

    def bind(self, batch: np.ndarray):
        self.infer(batch)  # traces for this batch size
        tensor = self._tf.constant(np.asarray(batch), dtype=self._tf.uint8)
        fn = self._fn
        return lambda: fn(tensor).numpy()  # .numpy() waits for the result, as the other runtimes do

    def describe(self) -> dict:
        import keras

        return {
            "runner": self.name,
            "runtime": f"keras {keras.__version__} (tensorflow {self._tf.__version__})",
            "threads": self.threads,
            "input_dtype": "uint8",
            "output_dtype": "float32",
        }

    def close(self) -> None:
        self._model = self._fn = None
        super().close()
