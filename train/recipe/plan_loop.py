"""The body of one run of a long training plan (see ``plan_run``): train chunk by chunk until the run's
deadline, validate the weight average after each chunk, then pack the checkpoint and apply the decision rule.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
import time

import numpy as np

from edgebench.cpu import fingerprint
from edgebench.environment import code_commit
from edgebench.errors import EdgebenchError
from edgebench.train.data.dataset import load_dataset, split_validation, subset
from edgebench.train.data.features import ArrayBatches, augment_uint8, augmenter
from edgebench.train.recipe.averaging import WeightAverage
from edgebench.train.recipe.budget import Deadline
from edgebench.train.recipe.fitting import evaluate
from edgebench.train.recipe.long_plan import RunRecord, TrainingPlan
from edgebench.train.recipe.plan_run import (
    RESERVE_S,
    PlanRate,
    PlanRun,
    Resume,
    measured_plan,
    trained_twin,
)
from edgebench.train.recipe.plan_store import (
    PLAN_KEY,
    plan_model,
    read_checkpoint,
    release_provenance,
    shipped,
    write_pack,
)


@dataclasses.dataclass
class Position:
    """Where this run is: the global step, the weights, the average and the best averaged weights."""

    first_step: int
    step: int
    values: list[np.ndarray]
    average: list[np.ndarray] | None = None
    updates: int = 0
    best_val: float | None = None
    best: list[np.ndarray] | None = None
    best_size: int = 0
    history: list = dataclasses.field(default_factory=list)
    spent_s: float = 0.0


def _start(job: PlanRun, splits, stored) -> tuple[TrainingPlan, Position]:
    """The plan (``stored`` in the checkpoint, else made now) and this run's position in it."""
    if stored is None:
        plan, values = measured_plan(job, *splits)
    else:
        plan, values = stored
    pos = Position(plan.step, plan.step, values)
    resumed = Resume(job.run_dir).load(plan)
    if resumed:
        state, pos.values, pos.average, pos.best = resumed
        pos.step, pos.updates, pos.best_val = state["step"], state["updates"], state["best_val"]
        pos.best_size, pos.history, pos.spent_s = state["best_size"], state["history"], state["spent_s"]
        print(f"resuming this run at step {pos.step} ({job.run_dir / 'resume'})", flush=True)
    return plan, pos


def _train_chunks(job: PlanRun, plan: TrainingPlan, pos: Position, splits, deadline: float) -> None:
    """Chunks of ``job.check_steps`` until the deadline or the plan's end; each ends with a validation
    pass of the average and a resume point."""
    x_tr, y_tr, x_val, y_val = splits
    p, size, trained, average = job.preset, None, None, None
    while pos.step < plan.total_steps and time.time() < deadline:
        if plan.stage_at(pos.step).image_size != size:  # a run's start or a larger stage: a new model
            if trained is not None:
                pos.values, pos.average, pos.updates = trained.get_weights(), average.state(), average.updates
            size = plan.stage_at(pos.step).image_size
            trained = trained_twin(plan, size, pos.values, p)
            # a run continuing a packed checkpoint starts from its averaged weights: the average goes on
            average = WeightAverage(trained, plan.ema_decay, settled=pos.step > 0)
            if pos.average is not None:
                average.restore(pos.average, pos.updates)
            evaluator, optimizer_start = plan_model(p, size), pos.step
            aug = augmenter(dataclasses.replace(p, augment=plan.augment), plan.seed + pos.step)
        n = min(job.check_steps, plan.stage_end(pos.step) - pos.step, len(x_tr) // plan.batch_size)
        batches = ArrayBatches(
            x_tr,
            y_tr,
            plan.batch_size,
            seed=plan.seed * 1_000_003 + pos.step,  # the data order follows the plan's position
            transform=lambda x, a=aug: augment_uint8(a, x),
            limit=n * plan.batch_size,
        )
        cut, t0 = Deadline(deadline), time.time()
        trained.fit(
            batches, epochs=1, verbose=2, callbacks=[PlanRate(plan, optimizer_start, pos.step), average, cut]
        )
        seconds = time.time() - t0
        pos.step += cut.batches
        pos.spent_s += seconds
        evaluator.set_weights(average.averaged_weights(trained))
        val, _ = evaluate(evaluator, x_val, y_val, 128)
        pos.history.append(
            {
                "step": pos.step,
                "size": size,
                "val_accuracy": val,
                "images_per_s": cut.batches * plan.batch_size / seconds,
                "lr": plan.learning_rate(pos.step),
            }
        )
        print(
            f"step {pos.step}/{plan.total_steps} at {size} px: averaged weights {val:.2%} on validation "
            f"({pos.history[-1]['images_per_s']:.1f} images/s)",
            flush=True,
        )
        if pos.best_val is None or val > pos.best_val:
            pos.best_val, pos.best, pos.best_size = val, evaluator.get_weights(), size
        pos.values, pos.average, pos.updates = trained.get_weights(), average.state(), average.updates
        Resume(job.run_dir).save(_resume_state(plan, pos), pos.values, pos.average, pos.best)
    if trained is not None:  # the run ends on its averaged weights: the next run continues from them
        pos.values = average.averaged_weights(trained)


def _resume_state(plan: TrainingPlan, pos: Position) -> dict:
    return {
        "plan_step": pos.first_step,
        "total_steps": plan.total_steps,
        "step": pos.step,
        "updates": pos.updates,
        "best_val": pos.best_val,
        "best_size": pos.best_size,
        "history": pos.history,
        "spent_s": pos.spent_s,
    }


def _release(job: PlanRun, plan: TrainingPlan, pos: Position, ds, splits) -> tuple[float, float] | None:
    """The decision rule on the run's best average, measured as a rebuild restores it: (validation, test)
    where it beats the bar (test recorded, never deciding), None otherwise."""
    if pos.best is None or pos.best_val <= plan.bar:
        return None
    model = plan_model(job.preset, pos.best_size, pos.best)
    model.set_weights(shipped(pos.best, model))
    val, _ = evaluate(model, splits[2], splits[3], 128)
    if val <= plan.bar:
        print(f"best average {val:.2%} as packed does not beat the bar {plan.bar:.2%}", flush=True)
        return None
    test, _ = evaluate(model, ds.x_test, ds.y_test, 128)
    return val, test


def run_plan(job: PlanRun) -> dict:
    """One run: returns the plan as packed and what the run did."""
    t0, started = time.time(), dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    deadline = t0 + job.run_minutes * 60 - min(RESERVE_S, job.run_minutes * 15)  # short runs: a quarter
    stored = read_checkpoint(job.checkpoint)  # refused before the data loads: a bad pack, no plan to start
    if stored is None and job.init_from is None:
        raise EdgebenchError(f"no training plan in {job.checkpoint}: give --init-from MODEL to make one")
    p = job.preset
    ds = subset(load_dataset(job.data), p.train_per_class, p.test_per_class, p.seed)
    splits = split_validation(ds.x_train, ds.y_train, job.preset.val_fraction, job.preset.seed)
    plan, pos = _start(job, splits, stored)
    if plan.finished:
        return {"plan": plan.to_dict(), "trained_steps": 0, "released": None}
    _train_chunks(job, plan, pos, splits, deadline)
    released = _release(job, plan, pos, ds, splits)
    commit = code_commit() or "unknown"
    last = pos.history[-1] if pos.history else {}
    record = RunRecord(
        started=started,
        code_commit=commit,
        cpu=fingerprint().get("model") or "unknown",
        first_step=pos.first_step,
        last_step=pos.step,
        minutes=round((time.time() - t0) / 60, 1),
        images_per_s=round(float(np.median([h["images_per_s"] for h in pos.history] or [0.0])), 1),
        val_accuracy=last.get("val_accuracy", 0.0),
        best_val_accuracy=pos.best_val or 0.0,
        released=released is not None,
    )
    plan = dataclasses.replace(
        plan, step=pos.step, runs=(*plan.runs, record), bar=released[0] if released else plan.bar
    )
    end_size = plan.stage_at(max(pos.step - 1, 0)).image_size
    provenance = {PLAN_KEY: plan.to_dict(), "command": job.command, "history": pos.history}
    write_pack(job.checkpoint, plan_model(job.preset, end_size), pos.values, provenance)
    if released:
        model = plan_model(job.preset, pos.best_size)
        info = dataclasses.asdict(record) | {"best_val_accuracy": released[0]}
        write_pack(
            job.release,
            model,
            pos.best,
            release_provenance(
                plan, info, previous=job.release, command=job.command, test=(released[1], len(ds.y_test))
            ),
        )
    shutil.rmtree(Resume(job.run_dir).dir, ignore_errors=True)
    return {"plan": plan.to_dict(), "trained_steps": pos.step - pos.first_step, "released": released}
