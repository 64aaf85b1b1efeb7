"""The Keras reference that bench measures against: ``keras_runner`` (the runtime table's Keras row),
``evaluation`` (the training run's saved test predictions) and ``predict`` (the ``predict`` command)."""
