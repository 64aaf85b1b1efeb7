"""The model's input contract and the phase/trainability rules."""

from __future__ import annotations

import zipfile

import keras
import numpy as np
import pytest

from edgebench.errors import EdgebenchError
from edgebench.train import model as M
from tests.conftest import WEIGHTS


@pytest.fixture(scope="module")
def resnet():
    return M.build_model(image_size=64, weights=None, dropout=0.3)


def test_input_contract_uint8_in_probabilities_out(resnet, test_batch):
    x, _ = test_batch
    assert resnet.input.dtype == "uint8" and tuple(resnet.input.shape) == (None, 32, 32, 3)
    probs = resnet.predict(x[:8], verbose=0)
    assert probs.shape == (8, 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_preprocessing_is_inside_the_model(resnet, test_batch):
    """The in-graph preprocessing equals keras.applications' resnet50.preprocess_input, then resize."""
    x, _ = test_batch
    inner = keras.Model(resnet.input, resnet.get_layer("resize").output)
    expected = keras.applications.resnet50.preprocess_input(x[:4].astype("float32"))
    expected = keras.ops.convert_to_numpy(
        keras.ops.image.resize(expected, (64, 64), interpolation="bilinear")
    )
    np.testing.assert_allclose(inner.predict(x[:4], verbose=0), expected, atol=1e-3)


def test_unit_preprocessing_scales_to_0_1(test_batch):
    layer = M.ImagePreprocess("unit")
    out = keras.ops.convert_to_numpy(layer(test_batch[0][:2]))
    np.testing.assert_allclose(out, test_batch[0][:2] / 255.0, rtol=1e-6)
    with pytest.raises(ValueError):
        M.ImagePreprocess("zscore")


def test_phases_set_what_trains(resnet):
    M.set_phase(resnet, 1)
    assert {w.path.split("/")[0] for w in resnet.trainable_weights} == {"predictions"}
    M.set_phase(resnet, 2)
    trainable = [layer for layer in resnet.layers if layer.trainable and layer.weights]
    assert {layer.name for layer in trainable if not layer.name.startswith("conv5_")} == {"predictions"}
    assert any(layer.name.startswith("conv5_") for layer in trainable)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in trainable)


@pytest.mark.parametrize(
    "unfreeze, blocks", [("conv4", {"conv4", "conv5"}), ("conv2", {"conv2", "conv3", "conv4", "conv5"})]
)
def test_deeper_unfreezing_trains_every_block_from_its_choice_up_and_the_stem_never(resnet, unfreeze, blocks):
    M.set_phase(resnet, 2, unfreeze)
    trained = {layer.name.split("_")[0] for layer in resnet.layers if layer.trainable and layer.weights}
    assert trained == blocks | {"predictions"}  # conv1 (the stem) and every BatchNorm stay frozen
    assert not any(
        isinstance(layer, keras.layers.BatchNormalization) and layer.trainable for layer in resnet.layers
    )
    trunk, top = M.split_model(resnet, M.UNFREEZE[unfreeze][1])
    assert not any(layer.trainable and layer.weights for layer in trunk.layers)  # all below the choice
    M.set_phase(resnet, 2)


def test_model_built_in_bfloat16_computes_in_it_and_keeps_float32_weights():
    model = M.build_model_in("bfloat16", 32, None)
    conv = model.get_layer("conv1_conv")
    assert conv.compute_dtype == "bfloat16" and conv.variable_dtype == "float32"
    assert model.get_layer("predictions").compute_dtype == "float32"  # softmax stays float32
    assert keras.config.dtype_policy().name == "float32"  # the policy is restored after the build
    twin = M.build_model(32, None)
    twin.set_weights(model.get_weights())  # the same weights in the same order


def test_split_model_is_exact(resnet, test_batch):
    trunk, top = M.split_model(resnet)
    x = test_batch[0][:4]
    np.testing.assert_allclose(
        top.predict(trunk.predict(x, verbose=0), verbose=0), resnet.predict(x, verbose=0), atol=1e-6
    )


def test_imagenet_weights_file_loads():
    """The base holds the file's values exactly (a fresh initialisation, or weights loaded into the wrong
    layers, would not): the first and the last convolution of the base against the h5 file itself."""
    import h5py

    model = M.build_model(image_size=32, weights=str(WEIGHTS))
    with h5py.File(WEIGHTS) as f:
        first = f["layers/conv2d/vars/0"][()]  # (7, 7, 3, 64): conv1
        bn_last = f["layers/batch_normalization_52/vars/3"][()]  # conv5_block3_3_bn moving variance
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.get_layer("conv1_conv").kernel), first)
    bn = model.get_layer("conv5_block3_3_bn")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(bn.moving_variance), bn_last)


def test_missing_weights_file(tmp_path):
    with pytest.raises(EdgebenchError, match="weights file not found"):
        M.build_model(32, weights=str(tmp_path / "missing.weights.h5"))


def test_corrupt_model_file(tmp_path):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"garbage")
    with pytest.raises(EdgebenchError, match="cannot load Keras model .*: not a Keras archive"):
        M.load_model(bad)  # Keras itself would say "File not found"
    zipped = tmp_path / "zipped.keras"
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("notes.txt", "hello")
    with pytest.raises(EdgebenchError, match="no Keras archive"):
        M.load_model(zipped)
    with pytest.raises(EdgebenchError, match="model file not found"):
        M.load_model(tmp_path / "none.keras")
