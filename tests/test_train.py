"""End-to-end training on a tiny real sample: outputs, resume, and bad input through the CLI."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from edgebench.cli import cli
from edgebench.errors import EdgebenchError
from edgebench.fileio import sha256_file
from edgebench.train.data.dataset import load_dataset, subset
from edgebench.train.data.features import ArrayBatches
from edgebench.train.model import build_tiny_model, load_model
from edgebench.train.recipe.fitting import RunDir, fit_phase
from edgebench.train.recipe.presets import get_preset
from edgebench.train.recipe.trainer import Trainer, inference_copy
from edgebench.train.reference.evaluation import sha256_of_test_set
from tests.conftest import WEIGHTS, run_cli

TINY = dict(train_per_class=8, test_per_class=4, val_fraction=0.25, ablation_train_per_class=4)


def _args(out, folder, *extra):
    return [
        "train",
        "--preset",
        "smoke",
        "--data",
        str(folder),
        "--weights",
        str(WEIGHTS),
        "--out",
        str(out),
        "--train-per-class",
        "8",
        "--test-per-class",
        "4",
        "--val-fraction",
        "0.25",
        *extra,
    ]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, cifar_folder):
    out = tmp_path_factory.mktemp("run")
    result = run_cli(*_args(out, cifar_folder))
    assert result.returncode == 0, result.stdout
    return out


def test_smoke_run_writes_every_output(smoke_run, cifar_folder):
    for name in (
        "model.keras",
        "history.json",
        "metrics.json",
        "plots/curves.png",
        "plots/samples.png",
        "plots/confusion.png",
        "plots/predictions.png",
    ):
        assert (smoke_run / name).is_file(), name
    metrics = json.loads((smoke_run / "metrics.json").read_text())
    assert metrics["test_images"] == 40 and metrics["preset"] == "smoke"
    assert set(metrics["test_accuracy"]) == {"ablation", "phase1", "phase2", "final"}
    assert all(0.0 <= v <= 1.0 for v in metrics["test_accuracy"].values())
    assert metrics["versions"]["keras"] == keras.__version__
    history = json.loads((smoke_run / "history.json").read_text())
    assert len(history["phase2"]["val_accuracy"]) == 1 and len(history["phase1"]["accuracy"]) >= 1
    # The final test pass, kept for bench's Keras reference: this model file's, this accuracy's.
    with np.load(smoke_run / "test_predictions.npz") as stored:
        assert str(stored["model_sha256"]) == sha256_file(smoke_run / "model.keras")
        probs = stored["probs"]
        stored_set = str(stored["test_set_sha256"])
    ds = subset(load_dataset(str(cifar_folder)), 8, 4, get_preset("smoke").seed)
    assert stored_set == sha256_of_test_set(ds.x_test, ds.y_test) and probs.shape == (40, 10)
    assert metrics["final"]["test_accuracy"] == pytest.approx(float(np.mean(probs.argmax(1) == ds.y_test)))


def test_saved_model_matches_the_phase2_evaluation(smoke_run, small_dataset):
    """model.keras, run on raw test pixels, reproduces the accuracy measured on cached features."""
    metrics = json.loads((smoke_run / "metrics.json").read_text())
    model = load_model(smoke_run / "model.keras")
    assert model.input.dtype == "uint8"
    # float16 feature caches may flip a borderline prediction; allow one image of the 40
    assert abs(metrics["phases"]["phase2"]["test_accuracy"] - metrics["final"]["test_accuracy"]) <= 1 / 40


def test_xla_trains_but_validation_and_prediction_keep_tensorflow_kernels(tmp_path):
    """XLA's CPU bilinear resize differs from TensorFlow's, and every exported artifact has TensorFlow's:
    with ``jit_compile=True`` only the training step may be XLA-compiled."""
    import tensorflow as tf

    model = build_tiny_model(image_size=96)
    x = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    y = np.arange(16) % 10
    train = ArrayBatches(x, y, 8)
    fit_phase(
        "xla",
        model,
        train,
        (x, y),
        epochs=1,
        lr=1e-3,
        preset=get_preset("smoke"),
        run=RunDir(tmp_path),
        jit_compile=True,
    )
    tf_kernels = tf.function(lambda a: model(a, training=False), jit_compile=False)(x).numpy()
    xla = tf.function(lambda a: model(a, training=False), jit_compile=True)(x).numpy()
    assert np.abs(xla - tf_kernels).max() > 1e-4  # the two really differ on this model
    np.testing.assert_allclose(model.predict(x, verbose=0), tf_kernels, atol=1e-6)


def test_saved_model_carries_no_optimizer_state(tmp_path):
    model = build_tiny_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(np.zeros((4, 32, 32, 3), np.uint8), np.zeros(4), verbose=0)
    inference_copy(model).save(tmp_path / "m.keras")
    loaded = load_model(tmp_path / "m.keras")
    assert getattr(loaded, "optimizer", None) is None
    np.testing.assert_array_equal(loaded.get_weights()[0], model.get_weights()[0])


class Interrupt(keras.callbacks.Callback):
    """Stops the process the way Ctrl-C does, after the first epoch of phase 2."""

    def on_epoch_end(self, epoch, logs=None):
        if self.model.name == "top":
            raise KeyboardInterrupt


def test_interrupted_run_resumes_with_its_plan_and_the_budget_cut_saves_a_valid_model(
    tmp_path, cifar_folder, cache_dir
):
    """The planner's cached mode under a 3-second budget (conv4 features cached, phase 2 on them cut after
    one batch), interrupted after phase 2's first epoch: running it again keeps the plan and phase 1,
    continues phase 2 from its backup, and saves a complete whole model (trunk + trained top)."""
    preset = get_preset(
        "smoke",
        **TINY,
        ablation=False,
        time_budget=0.05,
        xla="off",
        plan_modes="cached",
        cache_runtime="onnxruntime",
    )  # cached only: the whole model's training step is neither measured nor run; ONNX Runtime fills caches
    out = tmp_path / "resume"
    with pytest.raises(KeyboardInterrupt):
        Trainer(
            preset, str(cifar_folder), str(WEIGHTS), out, cache_dir=cache_dir, callbacks=[Interrupt()]
        ).run()
    state = json.loads((out / "state.json").read_text())
    assert list(state["phases"]) == ["phase1"]
    assert (out / "checkpoints" / "phase2.backup").is_dir()
    plan, phase1_time = state["plan"], state["phases"]["phase1"]["wall_time_s"]
    assert (plan["mode"], plan["copies"]) == ("cached", 1)  # smoke keeps the original: 1 copy, unaugmented
    assert plan["throughput"]["top_train"] > 0 and plan["throughput"]["train"] is None
    assert plan["throughput"]["cache_runtime"] == "onnxruntime" and plan["throughput"]["cache"] > 0
    assert len(list((cache_dir / "features").glob("conv4-32px-*-onnxruntime-*.npy"))) == 3  # val, test, train

    metrics = Trainer(preset, str(cifar_folder), str(WEIGHTS), out, cache_dir=cache_dir).run()
    assert metrics["resumed"] is True and metrics["budget"]["plan"] == plan
    assert metrics["phases"]["phase1"]["wall_time_s"] == phase1_time  # not retrained
    history = json.loads((out / "history.json").read_text())
    assert len(history["phase2"]["accuracy"]) == 2  # epoch 1 from before the interruption, epoch 2 now
    assert not (out / "checkpoints" / "phase2.backup").exists()
    phase2 = metrics["phases"]["phase2"]
    assert phase2["budget_cut"] is True and phase2["images_trained"] == 32  # this invocation: one batch
    probs = load_model(out / "model.keras").predict(np.zeros((2, 32, 32, 3), np.uint8), verbose=0)
    assert probs.shape == (2, 10) and np.allclose(probs.sum(axis=1), 1, atol=1e-4)

    with pytest.raises(EdgebenchError, match="other options"):
        Trainer(
            get_preset("smoke", **TINY, ablation=False),
            str(cifar_folder),
            str(WEIGHTS),
            out,
            cache_dir=cache_dir,
        )
    restarted = Trainer(
        get_preset("smoke", **TINY, ablation=False),
        str(cifar_folder),
        str(WEIGHTS),
        out,
        cache_dir=cache_dir,
        restart=True,
    )
    assert restarted.context.state["phases"] == {}


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--preset", "huge"], "unknown preset 'huge'"),
        (["--data", "/nonexistent/cifar"], "data source not found"),
        (["--weights", "/nonexistent/w.weights.h5"], "weights file not found"),
        (["--time-budget", "-5"], "--time-budget takes minutes >= 0"),
        (["--time-budget", "5", "--plan-unfreeze", "conv1"], "unknown choice conv1"),
        (["--time-budget", "5", "--plan-sizes", "96,x"], "comma-separated integers"),
        (["--xla", "fast"], "--xla takes auto, on or off, got 'fast'"),
        (["--cache-runtime", "tvm"], "--cache-runtime takes auto, keras or onnxruntime, got 'tvm'"),
        (["--label-smoothing", "1.5"], "--label-smoothing takes 0 <= value < 1, got 1.5"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, cifar_folder, extra, message):
    args = _args(tmp_path / "bad", cifar_folder, "--no-ablation") + extra
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "bad" / "model.keras").exists()


def test_every_preset_field_is_an_option_with_its_own_help():
    import dataclasses

    from edgebench.train.recipe.presets import PRESETS, tunable_fields

    result = CliRunner().invoke(cli, ["train", "--help"], terminal_width=1000, max_content_width=1000)
    text = " ".join(result.output.split())
    helps = [f.metadata["help"] for f in tunable_fields()]
    assert len(set(helps)) == len(helps) and all(len(h) > 10 for h in helps)
    for field in tunable_fields():
        flag = field.name.replace("_", "-")
        assert (f"--{flag} / --no-{flag}" if field.type in ("bool", bool) else f"--{flag} ") in text
        assert " ".join(field.metadata["help"].split()) in text, field.name
    changed = get_preset("cpu", phase2_epochs=4, seed=None)  # None: keep the preset's value
    assert changed.phase2_epochs == 4
    assert dataclasses.replace(changed, phase2_epochs=PRESETS["cpu"].phase2_epochs) == PRESETS["cpu"]


def test_early_stopping_can_be_turned_off_for_a_phase(tmp_path):
    """At a learning rate of 0 validation accuracy never improves: patience 1 ends the fit after 2 of 4
    epochs, ``early_stopping=False`` (the 0-1 ablation's head, whose validation sits near chance for epochs)
    runs all 4."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 8)).astype("float32"), rng.integers(0, 10, 64)
    preset = get_preset("smoke", patience=1)
    for early_stopping, epochs in ((True, 2), (False, 4)):
        inputs = keras.Input((8,))
        model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(inputs))
        run = RunDir(tmp_path / str(early_stopping))
        history = fit_phase(
            "head",
            model,
            ArrayBatches(x, y, 16),
            ArrayBatches(x, y, 64, shuffle=False),
            epochs=4,
            lr=0.0,
            preset=preset,
            run=run,
            early_stopping=early_stopping,
        )
        assert len(history["val_accuracy"]) == epochs
