"""What the trainer and its phase paths share: one run's options, folder, state, clock and the settings of
phase 2's fit, in one explicit object instead of attributes of a common base class."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras

from edgebench.fileio import atomic_path, write_json
from edgebench.train.data.features import array_key
from edgebench.train.recipe.fitting import RunDir
from edgebench.train.recipe.presets import Preset


@dataclass
class RunContext:
    """One training run as its phases see it. ``jit`` and ``deadline`` are set once the plan is known (the
    deadline again when phase 1 measures a fresher inference rate); phase 2 reads both."""

    preset: Preset
    run_dir: RunDir
    weights: str | None  # the ImageNet weights file the base is built from
    cache_dir: Path  # decoded images and feature caches
    state: dict  # state.json: the run's config, finished phases, their history and the plan
    callbacks: list = field(default_factory=list)  # keras callbacks added to every phase's fit
    started: float = field(default_factory=time.time)  # this invocation's start
    spent_before: float = 0.0  # budget used by earlier invocations of a resumed run
    jit: bool | str = False  # phase 2's jit_compile (the heads always train on TensorFlow's kernels)
    deadline: float = math.inf  # phase 2's end with a time budget

    def feature_cache(self, tag: str, *parts) -> Path:
        """The cache file of ``tag`` features of the arrays ``parts`` (keyed by their content)."""
        return self.cache_dir / "features" / f"{tag}-{array_key(*parts)}.npy"

    def save_state(self) -> None:
        """Write state.json with the budget spent so far (earlier invocations' share included)."""
        self.state["budget_spent_s"] = round(self.spent_before + time.time() - self.started, 1)
        write_json(self.run_dir.state, self.state)

    def finish_phase(
        self,
        name: str,
        history: dict,
        *,
        description: str,
        test_accuracy: float,
        started: float,
        model: keras.Model | None,
        **extra,
    ) -> None:
        """Record a finished phase (metrics, history) and save the weights a resumed run starts from."""
        if model is not None:
            with atomic_path(self.run_dir.checkpoints / f"{name}.weights.h5") as tmp:
                model.save_weights(tmp)
        self.state["history"][name] = history
        self.state["phases"][name] = {
            "description": description,
            "test_accuracy": test_accuracy,
            **extra,
            "epochs": len(history.get("accuracy", [])),
            "wall_time_s": round(time.time() - started, 1),
        }
        self.save_state()
