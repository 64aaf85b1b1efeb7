"""edgebench test-size: BatchNorm recalibration's arithmetic, and the sweep on a few CIFAR-10 images."""

from __future__ import annotations

import json

import keras
import numpy as np
from click.testing import CliRunner

from edgebench.cli import cli
from edgebench.train.recipe.test_size import AS_TRAINED, RECALIBRATED, batchnorm_layers, recalibrate_batchnorm


def test_recalibration_is_the_mean_of_the_batch_statistics():
    """Input -> BatchNorm: after recalibrating on 3 batches its moving mean and variance are the means of
    the 3 batches' means and variances, whatever they were, and the layer stays frozen."""
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.BatchNormalization(momentum=0.99)(inputs))
    (bn,) = batchnorm_layers(model)
    bn.trainable = False
    bn.moving_mean.assign(np.full(4, 7.0, "float32"))
    x = np.random.default_rng(0).normal(3.0, 2.0, (30, 4)).astype("float32")
    x[20:] += 5.0  # the last batch differs: a moving average with the layer's momentum would not match
    assert recalibrate_batchnorm(model, x, batch_size=10) == 3
    batches = x.reshape(3, 10, 4)
    np.testing.assert_allclose(bn.moving_mean.numpy(), batches.mean(axis=1).mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), batches.var(axis=1).mean(axis=0), rtol=1e-4)
    assert bn.trainable is False and bn.momentum == 0.99


def test_sweep_chooses_on_validation_and_records_test(tmp_path, cifar_folder):
    from edgebench.train.recipe.plan_store import plan_model
    from edgebench.train.recipe.presets import get_preset

    model_path = tmp_path / "model.keras"
    plan_model(get_preset("release"), 32).save(model_path)  # the recipe's architecture, untrained
    out = tmp_path / "sweep"
    args = ["test-size", "--model", str(model_path), "--data", str(cifar_folder), "--sizes", "32,40"]
    args += ["--train-per-class", "6", "--test-per-class", "2", "--val-fraction", "0.34"]
    args += ["--calibration-images", "20", "--batch-size", "10", "--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    sweep = json.loads((out / "sweep.json").read_text())
    rows = sweep["rows"]
    assert [(r["size"], r["batchnorm"]) for r in rows] == [
        (32, AS_TRAINED), (32, RECALIBRATED), (40, AS_TRAINED), (40, RECALIBRATED)
    ]  # fmt: skip
    assert sweep["trained_size"] == 32 and sweep["val_images"] == 20 and sweep["test_images"] == 20
    chosen = sweep["chosen"]
    assert chosen["val_accuracy"] == max(r["val_accuracy"] for r in rows)
    assert chosen["test_accuracy"] is not None and rows[0]["test_accuracy"] is not None
    tested = [r for r in rows if r["test_accuracy"] is not None]
    assert len(tested) == (1 if chosen == rows[0] else 2)  # test figures never choose: only these two
    assert "**" in (out / "sweep.md").read_text() and "chosen on validation" in result.output


def test_refusals(tmp_path, tiny_model_path, cifar_folder):
    runner = CliRunner()
    result = runner.invoke(cli, ["test-size", "--model", str(tmp_path / "none.keras"), "--sizes", "32"])
    assert result.exit_code == 2 and "model file not found" in result.output
    result = runner.invoke(cli, ["test-size", "--model", str(tiny_model_path), "--sizes", "9000"])
    assert result.exit_code == 2 and "sizes are 32..512" in result.output
    args = ["test-size", "--model", str(tiny_model_path), "--data", str(cifar_folder), "--sizes", "32"]
    result = runner.invoke(cli, [*args, "--train-per-class", "4", "--test-per-class", "2"])
    assert result.exit_code == 2 and "is not the recipe's ResNet50" in result.output
