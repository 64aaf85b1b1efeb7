"""The long training plan (``edgebench train-plan``): its schedule across runs, its stored form, the weight
average, the resume state, crop + flip, and the command's refusals."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from edgebench.errors import EdgebenchError
from edgebench.train.recipe.long_plan import (
    REWARM_STEPS,
    RunRecord,
    Stage,
    TrainingPlan,
    planned_steps,
)
from tests.conftest import run_cli


def make_plan(**changes) -> TrainingPlan:
    base = TrainingPlan(
        plan_minutes=60,
        total_steps=1000,
        warmup_steps=100,
        peak_lr=1e-3,
        batch_size=64,
        stages=(Stage(0, 96), Stage(600, 128)),
        ema_decay=0.999,
        label_smoothing=0.1,
        augment="crop-flip",
        unfreeze="conv2",
        precision="float32",
        seed=0,
        init_weights_sha256="0" * 64,
        measured_images_per_s={"96": 64.0, "128": 32.0},
    )
    return dataclasses.replace(base, **changes)


def test_one_schedule_over_the_plan_no_restart_at_a_run():
    plan = make_plan()
    rates = [plan.learning_rate(s) for s in range(plan.total_steps + 1)]
    assert rates[99] == pytest.approx(1e-3) and rates[0] < rates[50] < rates[99]  # linear warm-up
    assert all(a >= b for a, b in zip(rates[100:], rates[101:], strict=False))  # then only down
    assert rates[-1] == pytest.approx(0.0, abs=1e-12)
    # A run that continues at step 400 re-warms its fresh optimizer, then follows the plan: never its peak.
    continued = [plan.run_learning_rate(s, optimizer_start=400) for s in range(400, 1000)]
    assert max(continued) <= plan.learning_rate(400)
    assert continued[0] == pytest.approx(plan.learning_rate(400) / REWARM_STEPS)
    assert continued[REWARM_STEPS:] == pytest.approx(rates[400 + REWARM_STEPS : 1000])
    assert plan.run_learning_rate(10, optimizer_start=0) == rates[10]  # the first run: the plan's warm-up


def test_stages_and_planned_steps():
    plan = make_plan()
    assert [plan.stage_at(s).image_size for s in (0, 599, 600, 999)] == [96, 96, 128, 128]
    assert (plan.stage_end(0), plan.stage_end(600)) == (600, 1000)
    total, stages = planned_steps(60, 64, {96: 64.0, 128: 32.0}, 0.4, 128)
    # 60 min: 0.6 of the steps at 1 s each, 0.4 at 2 s each -> 1.4 s a step on average
    assert total == int(3600 / 1.4)
    assert stages == (Stage(0, 96), Stage(int(total * 0.6), 128))
    assert make_plan(total_steps=total, stages=stages).remaining_minutes() == pytest.approx(60, rel=0.01)


def test_remaining_minutes_follow_the_latest_runs_rate():
    run = RunRecord("2026-12-07", "abc", "cpu", 0, 500, 10.0, 32.0, 0.5, 0.5, False)
    plan = make_plan(step=500, runs=(run,))  # the run measured half the planned 96-px rate
    expected = (100 * 64 / 32 + 400 * 64 / 16) / 60
    assert plan.remaining_minutes() == pytest.approx(expected)


def test_stored_plan_round_trip_and_refusals():
    run = RunRecord("2026-12-07", "abc", "cpu", 0, 500, 10.0, 60.0, 0.9, 0.91, True)
    plan = make_plan(step=500, runs=(run,), bar=0.91)
    assert TrainingPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    with pytest.raises(EdgebenchError, match="version 99"):
        TrainingPlan.from_dict({**plan.to_dict(), "version": 99})
    with pytest.raises(EdgebenchError, match="increasing"):
        make_plan(stages=(Stage(0, 96), Stage(0, 128)))
    with pytest.raises(EdgebenchError, match="outside"):
        make_plan(step=2000)
    with pytest.raises(EdgebenchError, match="cannot be read"):
        TrainingPlan.from_dict({"version": 1, "stages": []})


def tiny_dense():
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(2)(inputs))


def test_weight_average_is_the_ema_of_the_weights():
    from edgebench.train.recipe.averaging import WeightAverage

    model = tiny_dense()
    start = [w.copy() for w in model.get_weights()]
    average = WeightAverage(model, decay=0.5)
    expected = [w.copy() for w in start]
    for k in range(1, 4):
        model.set_weights([w + k for w in start])
        average.on_train_batch_end(k)
        d = min(0.5, (1 + k) / (10 + k))
        expected = [d * e + (1 - d) * (w + k) for e, w in zip(expected, start, strict=True)]
    got = average.averaged_weights(model)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-6)
    assert average._update.experimental_get_tracing_count() == 1  # one graph for the three decays
    again = WeightAverage(model, decay=0.5)
    again.restore(average.state(), average.updates)
    assert again.updates == 3
    for g, e in zip(again.averaged_weights(model), expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-6)
    # a run continuing a packed average: the full decay from the first update (no ramp back to the weights)
    model.set_weights(start)
    settled = WeightAverage(model, decay=0.5, settled=True)
    model.set_weights([w + 1 for w in start])
    settled.on_train_batch_end(0)
    for g, w in zip(settled.averaged_weights(model), start, strict=True):
        np.testing.assert_allclose(g, w + 0.5, rtol=1e-6)


def test_resume_state_belongs_to_its_position(tmp_path):
    from edgebench.train.recipe.plan_run import Resume

    plan = make_plan(step=200)
    raw, avg = [np.ones((2, 2), np.float32)], [np.zeros((2, 2), np.float32)]
    state = {"plan_step": 200, "total_steps": 1000, "step": 300, "updates": 100, "best_val": None}
    Resume(tmp_path).save(state, raw, avg, None)
    loaded, raw2, avg2, best = Resume(tmp_path).load(plan)
    assert loaded["step"] == 300 and best is None
    np.testing.assert_array_equal(raw2[0], raw[0])
    np.testing.assert_array_equal(avg2[0], avg[0])
    assert Resume(tmp_path).load(make_plan(step=300)) is None  # that run packed: its state is stale
    assert Resume(tmp_path / "nothing").load(plan) is None


def test_crop_flip_is_a_window_of_the_reflect_padded_image():
    from edgebench.train.data.features import augment_uint8, augmenter
    from edgebench.train.recipe.presets import get_preset

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    out = augment_uint8(augmenter(get_preset("release", augment="crop-flip"), 0), x)
    assert out.shape == x.shape and out.dtype == np.uint8
    padded = np.pad(x, [(0, 0), (4, 4), (4, 4), (0, 0)], mode="reflect")
    for i in range(len(x)):
        windows = [
            v[dy : dy + 32, dx : dx + 32]
            for v in (padded[i], padded[i, :, ::-1])
            for dy in range(9)
            for dx in range(9)
        ]
        assert any(np.array_equal(out[i], w) for w in windows)
    with pytest.raises(EdgebenchError, match="--augment"):
        augmenter(get_preset("release", augment="mixup"), 0)


def test_checkpoint_pack_round_trip(tmp_path):
    from edgebench.train.model import build_tiny_model
    from edgebench.train.recipe.plan_store import PLAN_KEY, read_checkpoint, write_pack

    model = build_tiny_model()
    plan = make_plan(step=10)
    write_pack(tmp_path / "ck", model, model.get_weights(), {PLAN_KEY: plan.to_dict()})
    got_plan, weights = read_checkpoint(tmp_path / "ck")
    assert got_plan == plan and len(weights) == len(model.weights)
    # the release of the same weights (a run whose best check is its last) holds the same part bytes, which
    # git stores once: the repository grows by one pack for that run
    write_pack(tmp_path / "release", build_tiny_model(), model.get_weights(), {"release": True})
    for part in sorted((tmp_path / "ck").glob("weights.xz.*")):
        assert (tmp_path / "release" / part.name).read_bytes() == part.read_bytes()
    assert read_checkpoint(tmp_path / "none") is None


def test_train_plan_refusals(tmp_path, cifar_folder):
    """No plan and nothing to start one from, a pack without a plan: one ``error:`` line, exit 2, before
    any data is read."""
    ck = tmp_path / "ck"
    res = run_cli("train-plan", "--run-minutes", "1", "--checkpoint", ck, "--data", cifar_folder)
    errors = [line for line in res.stdout.splitlines() if line.startswith("error:")]
    assert res.returncode == 2 and errors == [
        f"error: no training plan in {ck}: give --init-from MODEL to make one"
    ]
    assert "Traceback" not in res.stdout
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "MANIFEST.json").write_text('{"kind": "edgebench-packed-model/1", "provenance": {}}')
    res = run_cli("train-plan", "--run-minutes", "1", "--checkpoint", tmp_path / "bad")
    errors = [line for line in res.stdout.splitlines() if line.startswith("error:")]
    assert res.returncode == 2 and len(errors) == 1 and "without a training plan" in errors[0]


def test_a_later_release_of_the_plan_counts_each_minute_once(tmp_path):
    """Each release of a plan chains to the pack the plan started from, not to the plan's own earlier
    release (whose minutes are among the plan's runs): the lineage's total counts every run once."""
    from edgebench.train.packing import FORMAT, PACK_MANIFEST
    from edgebench.train.recipe.long_plan import RunRecord
    from edgebench.train.recipe.plan_store import release_provenance

    def run(minutes: float) -> RunRecord:
        return RunRecord("t", "c", "cpu", 0, 1, minutes, 50.0, 0.9, 0.9, True)

    start = {"preset": "release-continue", "minutes": 75.0, "total_minutes": 276.0}
    release = tmp_path / "release"
    release.mkdir()
    totals = []
    for runs in ((128.0,), (128.0, 131.0), (128.0, 131.0, 131.8)):
        plan = make_plan(runs=tuple(run(m) for m in runs))
        before = json.loads((release / PACK_MANIFEST).read_text())["provenance"] if totals else start
        manifest = {"kind": FORMAT, "weights_sha256": f"{len(totals)}" * 64, "provenance": before}
        (release / PACK_MANIFEST).write_text(json.dumps(manifest))
        info = {"code_commit": "c", "best_val_accuracy": 0.93}
        record = release_provenance(plan, info, previous=release, command="make", test=(0.93, 10000))
        assert record["continues"] == {"weights_sha256": "0" * 64, "provenance": start}
        assert record["replaces"]["weights_sha256"] == f"{len(totals)}" * 64
        (release / PACK_MANIFEST).write_text(json.dumps({**manifest, "provenance": record}))
        totals.append(record["total_minutes"])
    assert totals == [404.0, 535.0, 666.8]
