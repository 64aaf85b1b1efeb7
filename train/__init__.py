"""The training stage, split by what changes together:

- ``recipe``: the CPU/GPU transfer-learning recipe on TensorFlow (the trainer, its phases, fitting, the time
  budget and its planner, the presets, the run's plots);
- ``data``: labelled image sources, the feature caches and the runtimes that fill them;
- ``portable``: the backend-neutral Keras/JAX path a device runs from a bare checkout (payload, training,
  the float32 twin's pack);
- ``reference``: the Keras reference runner and the test predictions bench compares against.

Left here, because several of them import it: ``model`` (the network, its custom layers and phases: the
recipe, the portable path, the reference runner, packing and export all build or load it, and saved
``.keras`` files name ``edgebench.train.model`` as the module of its layers, so it must not move),
``packing`` (the packed model format: the recipe's weight digests, the portable path's per-epoch packs,
``pack-model`` and ``fetch-model``), and the CLI layer over all of them (``commands``, ``summary``).
"""
