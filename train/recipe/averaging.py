"""Weight averaging for a training run: an exponential moving average of the trained weights, kept beside
them and swapped in for validation and saving.

BatchNorm stays frozen in this recipe (inference mode, ImageNet statistics), so the averaged weights need no
BatchNorm recalibration: the statistics they are normalised with are the ones every trained step used.
"""

from __future__ import annotations

import keras
import numpy as np


class WeightAverage(keras.callbacks.Callback):
    """EMA of ``trained``'s trainable weights, updated after every batch:
    ``avg = decay * avg + (1 - decay) * w``, with the decay ramped as ``min(decay, (1 + n) / (10 + n))``
    over the first updates (so a fresh average is not dominated by its starting point). ``settled``: the
    starting weights already are a long average (a run continuing a packed checkpoint), so the decay is not
    ramped and the average moves off them no faster than it did before the pack."""

    def __init__(self, trained: keras.Model, decay: float, settled: bool = False):
        super().__init__()
        self.decay = decay
        self.settled = settled
        self.updates = 0
        self._sources = list(trained.trainable_weights)
        self._average = [keras.Variable(np.asarray(w.numpy()), trainable=False) for w in self._sources]
        self._update = _one_graph(self._assign_all)

    def _assign_all(self, d):
        for avg, w in zip(self._average, self._sources, strict=True):
            avg.assign(d * avg + (1 - d) * keras.ops.cast(w, avg.dtype))

    def on_train_batch_end(self, batch, logs=None):
        self.updates += 1
        d = self.decay if self.settled else min(self.decay, (1 + self.updates) / (10 + self.updates))
        self._update(keras.ops.convert_to_tensor(d, "float32"))  # a tensor: one trace for every decay

    def averaged_weights(self, trained: keras.Model) -> list[np.ndarray]:
        """``trained.weights``' values with the trainable ones replaced by their averages (in
        ``trained.weights`` order, which a model built by the same builder shares)."""
        averages = {id(w): avg for w, avg in zip(self._sources, self._average, strict=True)}
        return [np.asarray((averages[id(w)] if id(w) in averages else w).numpy()) for w in trained.weights]

    def state(self) -> list[np.ndarray]:
        return [np.asarray(a.numpy()) for a in self._average]

    def restore(self, values: list[np.ndarray], updates: int) -> None:
        for avg, value in zip(self._average, values, strict=True):
            avg.assign(value)
        self.updates = updates


def _one_graph(update):
    """``update`` as one TensorFlow graph call: run eagerly, a ResNet50's ~100 assigns per batch took 5.7% of
    the plan's training time (py-spy, run 2). Other backends run it as it is."""
    if keras.backend.backend() != "tensorflow":
        return update
    import tensorflow as tf

    return tf.function(update)
