"""One run of a long training plan (``edgebench train-plan``): continue the plan from its checkpoint pack (or
make the plan), train until this run's time is up under the plan's learning rate and stages with a weight
average beside the weights, validate the average every ``check_steps``, then pack the checkpoint and, by the
plan's decision rule, the released model.

A run interrupted before it packs resumes from ``<run dir>/resume`` (written after every check) when it is
rerun against the same checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from edgebench.fileio import atomic_path
from edgebench.train.model import build_model_in, load_model, set_phase, trained_size
from edgebench.train.recipe.budget import measure_candidate
from edgebench.train.recipe.fitting import evaluate, training_loss
from edgebench.train.recipe.long_plan import TrainingPlan
from edgebench.train.recipe.plan_store import (
    PlanOptions,
    new_plan,
)
from edgebench.train.recipe.presets import Preset

# Left at the end of a run: its last check's validation pass, packing the checkpoint and a release (lzma at
# its highest level, ~1-2 min each for a ResNet50) and a release's test pass.
RESERVE_S = 420


@dataclass(frozen=True)
class PlanRun:
    preset: Preset  # batch size, dropout, weight decay, label smoothing, augmentation, seed, peak rate
    options: PlanOptions
    checkpoint: Path  # the plan's pack (overwritten each run)
    release: Path  # the released pack, replaced by the decision rule
    run_dir: Path  # this machine's scratch: resume state
    data: str | None
    weights: str | None  # ImageNet weights (only the throughput measurement builds from them)
    init_from: Path | None  # the model a new plan starts from
    run_minutes: float
    check_steps: int
    command: str


class PlanRate(keras.callbacks.Callback):
    """Sets the plan's learning rate before every batch from the global step."""

    def __init__(self, plan: TrainingPlan, optimizer_start: int, step: int):
        super().__init__()
        self.plan, self.optimizer_start, self.step = plan, optimizer_start, step

    def on_train_batch_begin(self, batch, logs=None):
        rate = self.plan.run_learning_rate(self.step + batch, self.optimizer_start)
        self.model.optimizer.learning_rate.assign(rate)


def measured_plan(job: PlanRun, x_tr, y_tr, x_val, y_val) -> tuple[TrainingPlan, list[np.ndarray]]:
    """A new plan: training throughput at each size measured now, the bar the init model's validation."""
    p = dataclasses.replace(job.preset, xla="off")
    idx = np.random.default_rng(p.seed).permutation(len(x_tr))[: 3 * p.batch_size]
    rates, precision = {}, p.precision
    source = load_model(job.init_from)
    early = trained_size(source)
    sizes = sorted({early, job.options.late_size})
    for size in sizes:
        (t,) = measure_candidate(p, job.weights, size, ["conv2"], x=x_tr[idx], y=y_tr[idx])
        rates[size] = t.train
        precision = t.precision if size == sizes[0] else precision
        print(f"measured {size} px: {t.train} images/s training ({t.precision})", flush=True)
    weights = source.get_weights()
    bar, _ = evaluate(source, x_val, y_val, 128)
    del source
    print(f"the bar: {job.init_from} scores {bar:.2%} on {len(y_val)} validation images", flush=True)
    p = dataclasses.replace(p, precision=precision)
    plan = new_plan(p, job.options, job.init_from, weights=weights, size=early, rates=rates, bar=bar)
    return plan, weights


def trained_twin(plan: TrainingPlan, size: int, values, p: Preset) -> keras.Model:
    """The model that trains: in the plan's precision, its trainable part the plan's, compiled."""
    trained = build_model_in(plan.precision if plan.precision != "auto" else "float32", size, None, p.dropout)
    trained.set_weights(values)
    set_phase(trained, 2, plan.unfreeze)
    trained.compile(
        optimizer=keras.optimizers.AdamW(plan.peak_lr, weight_decay=p.weight_decay),
        loss=training_loss(plan.label_smoothing),
        metrics=["accuracy"],
        jit_compile=False,
    )
    return trained


class Resume:
    """``<run dir>/resume``: the run's position after its latest check, for a rerun of an interrupted run."""

    def __init__(self, run_dir: Path):
        self.dir = run_dir / "resume"

    def load(self, plan: TrainingPlan):
        """(state, raw weights, averaged weights, best averaged weights or None) where the saved state is
        this plan's at its current position; None otherwise."""
        path = self.dir / "state.npz"
        if not path.is_file():
            return None
        arrays = np.load(path)
        state = json.loads(str(arrays["state"]))
        if state.get("plan_step") != plan.step or state.get("total_steps") != plan.total_steps:
            return None  # a state of another position: that run packed, or another plan
        n, n_avg = state["n_weights"], state["n_average"]
        best = [arrays[f"b{i}"] for i in range(n)] if state["best_val"] is not None else None
        return state, [arrays[f"w{i}"] for i in range(n)], [arrays[f"a{i}"] for i in range(n_avg)], best

    def save(self, state: dict, raw, avg, best) -> None:
        """One file, written atomically: a state never points at another check's weights."""
        self.dir.mkdir(parents=True, exist_ok=True)
        state = {**state, "n_weights": len(raw), "n_average": len(avg)}
        arrays = {f"w{i}": a for i, a in enumerate(raw)} | {f"a{i}": a for i, a in enumerate(avg)}
        arrays |= {f"b{i}": a for i, a in enumerate(best or [])}
        with atomic_path(self.dir / "state.npz") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, state=np.array(json.dumps(state)), **arrays)
