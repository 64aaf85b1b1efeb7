"""The fp32 reference: the trained ``.keras`` model, behind the same runner interface as every artifact."""

from __future__ import annotations

import numpy as np

from edgebench.errors import EdgebenchError
from edgebench.runtime import InferenceError, Runner


class KerasRunner(Runner):
    """A ``.keras`` model through Keras/TensorFlow.

    TensorFlow fixes its thread pools when it starts: ``threads`` takes effect only in a process where TF
    has run nothing yet (bench's timing workers are such processes; elsewhere TF's defaults stay).
    """

    name = "keras"

    @classmethod
    def import_runtime(cls, threads: int | None = None) -> None:
        import tensorflow as tf

        if threads:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                tf.config.threading.set_inter_op_parallelism_threads(1)
            except RuntimeError:  # TF already initialised in this process: its thread counts are fixed
                pass
        import keras  # noqa: F401

    def _load(self) -> None:
        self.import_runtime(self.threads)
        import tensorflow as tf

        from edgebench.train.model import load_model

        try:
            self._model = load_model(self.path)
        except EdgebenchError as exc:
            raise InferenceError(str(exc)) from None
        if not self.contract_given:  # a bare .keras file: its contract is read from the model itself
            from edgebench.train.model import model_contract

            try:
                self.contract = model_contract(self._model)
            except EdgebenchError as exc:
                raise InferenceError(str(exc)) from None
        # One traced graph for every batch size: eager calls and predict_on_batch add Python overhead per
        # call that would be timed as model latency.
        self._fn = tf.function(lambda x: self._model(x, training=False), reduce_retracing=True)
        self._tf = tf

    def prepare(self, batch: np.ndarray) -> None:
        self._tensor = self._tf.constant(batch, dtype=self.contract.dtype)

    def run(self) -> None:
        # Eager execution on the CPU is synchronous: the call returns once the result is computed.
        self._result = self._fn(self._tensor)

    def fetch(self) -> np.ndarray:
        return np.asarray(self._result, dtype=np.float32)

    def describe(self) -> dict:
        import keras

        intra = self._tf.config.threading.get_intra_op_parallelism_threads()
        return {
            "runner": self.name,
            "runtime": f"keras {keras.__version__} (tensorflow {self._tf.__version__})",
            "threads": self.threads,
            "tf_intra_op_threads": intra or None,
            "input_dtype": self.contract.dtype,
            "output_dtype": "float32",
        }

    def close(self) -> None:
        self._model = self._fn = self._tensor = self._result = None
        super().close()
