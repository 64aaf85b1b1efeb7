"""A training plan that spans several runs: one warm-up + cosine learning rate over the plan's total steps,
continued from run to run (no restart to the peak), 96 px for most steps and a larger input late, weight
averaging, and the rule that decides when the released model changes, written before any run.

The plan and its position (step, runs so far, the averaged model's best validation accuracy) travel in the
plan checkpoint's pack manifest (``provenance.training_plan``), so a later run on a fresh machine, where
``runs/`` is gone, continues from the repository alone. Steps are planned from throughputs measured when the
plan is made: a slower or faster machine later shifts the end in time, not the schedule's shape.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from edgebench.errors import EdgebenchError

PLAN_VERSION = 1
# Optimizer moments are not committed (they would double the pack): a continuing run re-warms its rate
# linearly over these steps up to the plan's rate at its position.
REWARM_STEPS = 200
DECISION_RULE = (
    "the released pack is replaced only by a model whose averaged weights score a higher validation "
    "accuracy (the train split's stratified 10% hold-out, seed 0) than the bar; the bar starts as the "
    "released model's own validation accuracy, measured when the plan is made, and rises with each "
    "release; test accuracy chooses nothing"
)


@dataclass(frozen=True)
class Stage:
    """From ``start_step`` on, the model resizes its 32x32 pixels to ``image_size``."""

    start_step: int
    image_size: int


@dataclass(frozen=True)
class RunRecord:
    """One run of the plan: what it trained, where and how fast, and what its averaged model scored."""

    started: str
    code_commit: str
    cpu: str
    first_step: int
    last_step: int
    minutes: float
    images_per_s: float
    val_accuracy: float  # the averaged weights at the run's end
    best_val_accuracy: float  # the run's best averaged weights
    released: bool


@dataclass(frozen=True)
class TrainingPlan:
    """What a plan fixes when it is made; ``step``, ``runs`` and ``bar`` move as its runs train."""

    plan_minutes: float
    total_steps: int
    warmup_steps: int
    peak_lr: float
    batch_size: int
    stages: tuple[Stage, ...]
    ema_decay: float
    label_smoothing: float
    augment: str
    unfreeze: str
    precision: str
    seed: int
    init_weights_sha256: str  # the model the plan started from
    measured_images_per_s: dict  # training throughput per image size when the plan was made
    decision_rule: str = DECISION_RULE
    bar: float = 0.0  # validation accuracy a release must beat (the rule above)
    step: int = 0
    runs: tuple[RunRecord, ...] = field(default_factory=tuple)
    version: int = PLAN_VERSION

    def __post_init__(self):
        if self.total_steps <= self.warmup_steps or self.warmup_steps < 0:
            raise EdgebenchError(
                f"training plan: {self.total_steps} total steps must exceed {self.warmup_steps} warm-up steps"
            )
        if not self.stages or self.stages[0].start_step != 0:
            raise EdgebenchError("training plan: the first stage must start at step 0")
        if any(b.start_step <= a.start_step for a, b in zip(self.stages, self.stages[1:], strict=False)):
            raise EdgebenchError("training plan: stages must start at increasing steps")
        if not 0 <= self.step <= self.total_steps:
            raise EdgebenchError(f"training plan: step {self.step} is outside 0..{self.total_steps}")

    @property
    def finished(self) -> bool:
        return self.step >= self.total_steps

    def learning_rate(self, step: int) -> float:
        """The plan's rate at global ``step``: linear warm-up to ``peak_lr``, then cosine to zero."""
        if step < self.warmup_steps:
            return self.peak_lr * (step + 1) / self.warmup_steps
        frac = min((step - self.warmup_steps) / (self.total_steps - self.warmup_steps), 1.0)
        return 0.5 * self.peak_lr * (1 + math.cos(math.pi * frac))

    def run_learning_rate(self, step: int, optimizer_start: int) -> float:
        """The rate at global ``step`` for an optimizer created at ``optimizer_start`` (a run's start, a
        resume, a stage's larger model): the plan's, re-warmed over ``REWARM_STEPS`` since its moments
        start empty (not committed between runs)."""
        rate = self.learning_rate(step)
        if optimizer_start == 0:
            return rate  # the plan's own warm-up covers its first steps
        return rate * min(1.0, (step - optimizer_start + 1) / REWARM_STEPS)

    def stage_at(self, step: int) -> Stage:
        return [s for s in self.stages if s.start_step <= step][-1]

    def stage_end(self, step: int) -> int:
        """The first step of the stage after ``step``'s (``total_steps`` in the last stage)."""
        later = [s.start_step for s in self.stages if s.start_step > step]
        return later[0] if later else self.total_steps

    def remaining_minutes(self) -> float:
        """Minutes left at the measured throughputs of the latest run (the plan's own where none ran)."""
        rates = dict(self.measured_images_per_s)
        if self.runs:  # the latest run's machine: scale every size by its measured/planned ratio
            last = self.runs[-1]
            size = self.stage_at(max(last.last_step - 1, 0)).image_size
            scale = last.images_per_s / rates[str(size)] if rates.get(str(size)) else 1.0
            rates = {k: v * scale for k, v in rates.items()}
        seconds, step = 0.0, self.step
        while step < self.total_steps:
            end = self.stage_end(step)
            seconds += (end - step) * self.batch_size / rates[str(self.stage_at(step).image_size)]
            step = end
        return seconds / 60

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainingPlan:
        data = migrate(data)
        try:
            fields = {f.name for f in dataclasses.fields(cls)}
            values = {k: v for k, v in data.items() if k in fields}
            values["stages"] = tuple(Stage(**s) for s in data["stages"])
            values["runs"] = tuple(RunRecord(**r) for r in data.get("runs", ()))
            return cls(**values)
        except (KeyError, TypeError, ValueError) as exc:
            raise EdgebenchError(f"training plan cannot be read: {exc}") from None


def migrate(data: dict) -> dict:
    """A stored plan brought to ``PLAN_VERSION`` (the one place older layouts are handled)."""
    if not isinstance(data, dict):
        raise EdgebenchError("training plan is not a JSON object")
    version = data.get("version")
    if version != PLAN_VERSION:
        raise EdgebenchError(f"training plan version {version!r} is not one this edgebench reads")
    return data


def planned_steps(
    plan_minutes: float, batch_size: int, rates: dict[int, float], late_fraction: float, late_size: int
) -> tuple[int, tuple[Stage, ...]]:
    """Total steps and stages that fill ``plan_minutes`` at the measured training ``rates`` (images/s per
    size): the first size for ``1 - late_fraction`` of the steps, ``late_size`` for the rest."""
    sizes = sorted(rates)
    early = sizes[0]
    seconds_per_step = (1 - late_fraction) * batch_size / rates[early]
    if late_fraction:
        seconds_per_step += late_fraction * batch_size / rates[late_size]
    total = max(2, int(plan_minutes * 60 / seconds_per_step))
    stages = [Stage(0, early)]
    if late_fraction and late_size != early:
        stages.append(Stage(max(1, int(total * (1 - late_fraction))), late_size))
    return total, tuple(stages)
