"""``edgebench train-plan``: one run of the released model's long training plan (recipe/long_plan.py)."""

from __future__ import annotations

from pathlib import Path

import click

from edgebench.options import data_option, out_option, shown


@click.command("train-plan")
@click.option("--run-minutes", type=click.FloatRange(min=0.1), required=True, help="this run's wall time")
@click.option("--checkpoint", default="models/release-plan", show_default=True, help="the plan's pack")
@click.option(
    "--release", default="models/release", show_default=True, help="the released pack it may replace"
)
@click.option("--init-from", default=None, help="the .keras model a new plan starts from (no checkpoint yet)")
@data_option("Training images", default="env EDGEBENCH_DATA, else keras")
@click.option("--weights", default="imagenet", show_default=True, help="ImageNet ResNet50 notop weights")
@out_option("this machine's scratch for resuming an interrupted run [runs/release-plan]")
@click.option("--command", "train_command", default="make release-plan", show_default=True)
@click.option(
    "--check-steps",
    type=click.IntRange(min=1),
    default=500,
    show_default=True,
    help="training steps between validation passes of the averaged weights (resume points)",
)
@click.option("--train-per-class", type=click.IntRange(min=1), default=None, help="subsample (tests)")
@click.option("--test-per-class", type=click.IntRange(min=1), default=None, help="subsample (tests)")
@shown("--plan-minutes", default=480.0, type=click.FloatRange(min=0.1), help="a new plan's total time")
@shown(
    "--late-size", default=128, type=click.IntRange(min=32), help="a new plan's input size for its last steps"
)
@shown(
    "--late-fraction", default=0.4, type=click.FloatRange(0, 0.9), help="a new plan's share at --late-size"
)
@shown("--warmup-steps", default=300, type=click.IntRange(min=0), help="a new plan's linear warm-up")
@shown(
    "--ema-decay", default=0.999, type=click.FloatRange(0, 1, max_open=True), help="a new plan's averaging"
)
@shown("--peak-lr", default=1e-4, type=float, help="a new plan's peak learning rate (AdamW)")
@shown("--label-smoothing", default=0.1, type=click.FloatRange(0, 1, max_open=True), help="a new plan's")
@shown("--augment", default="crop-flip", type=click.Choice(["crop-flip", "affine"]), help="a new plan's")
@shown("--batch-size", default=64, type=click.IntRange(min=1), help="a new plan's")
def train_plan(run_minutes, checkpoint, release, init_from, data, weights, out_dir, train_command, **plan):
    """Continue the plan in --checkpoint for --run-minutes (or make it from --init-from), pack its position
    and averaged weights there, and replace --release where the plan's decision rule says so."""
    from edgebench.train.recipe.plan_loop import run_plan
    from edgebench.train.recipe.plan_run import PlanRun
    from edgebench.train.recipe.plan_store import PlanOptions
    from edgebench.train.recipe.presets import get_preset

    names = ("plan_minutes", "late_size", "late_fraction", "warmup_steps", "ema_decay")
    options = PlanOptions(*(plan.pop(k) for k in names))
    check_steps = plan.pop("check_steps")
    preset = get_preset("release", phase2_lr=plan.pop("peak_lr"), **plan)  # the rest are preset fields
    job = PlanRun(
        preset=preset,
        options=options,
        checkpoint=Path(checkpoint),
        release=Path(release),
        run_dir=Path(out_dir or "runs/release-plan"),
        data=data,
        weights=weights,
        init_from=Path(init_from) if init_from else None,
        run_minutes=run_minutes,
        check_steps=check_steps,
        command=train_command,
    )
    result = run_plan(job)
    plan = result["plan"]
    click.echo(
        f"plan at step {plan['step']}/{plan['total_steps']} ({result['trained_steps']} trained now); "
        f"bar {plan['bar']:.2%}"
    )
    if result["released"]:
        val, test = result["released"]
        click.echo(f"released into {release}: validation {val:.2%}, test {test:.2%}")
