"""The portable/device path: ``payload`` packs images and weights for a device, ``device_run`` (also run as a
plain file from a bare checkout) trains there with ``training`` on Keras/JAX, and ``twin_pack`` packs the
float32 twin every epoch. Nothing here imports TensorFlow."""
