"""Training defaults chosen from the data at hand: what makes a small labeled set actually move the policy.

Why: with fixed defaults (lr 5e-5, one epoch) 80 consistent preference pairs ran 10 optimizer steps and moved the
default model by nothing measurable; the same pairs with a LoRA-sized learning rate, several epochs and ~40 steps
learned the preference on every held-out prompt. So every value a user leaves alone is chosen here from the number
of training examples, the algorithm and the fine-tuning mode, and each comes with a reason the dry run shows
("64 pairs: 5 epochs -> 40 steps"). A value the user sets always wins (and is shown as set by them).

The rules, in the order they depend on each other:

1. ``gradient_accumulation_steps``: an effective batch of 8 examples from 64 examples up (the old figure), 4 for
   16-63, 2 below: tiny sets need small batches to get enough optimizer steps at all.
2. ``num_train_epochs``: enough passes to reach ``MIN_STEPS`` optimizer steps (40; 20 for online RL, whose steps
   generate answers and cost far more), at most ``MAX_EPOCHS``. Large sets keep 1 epoch.
3. ``learning_rate``: LoRA trains a low-rank update from a zero start and needs ~10x the full fine-tuning rate.
   Small runs (<= MIN_STEPS steps) get the high end of each algorithm's usual LoRA range; the rate then falls
   with the square root of the step count down to the algorithm's large-data figure (the old default), so the
   total size of the update stays about the same as datasets grow instead of jumping at a threshold.
4. ``warmup_ratio`` 0.1: the first steps at a high rate are the least stable.
5. ``logging_steps`` (~20 points per curve) and ``save_steps`` (held-out evaluation and checkpoint ~8 times per
   run, so early stopping can keep the best one).

``beta`` keeps its algorithm default (DPO/KTO/ORPO 0.1, online RL 0.04, the papers' figures); the dry run says what
raising it does. Every number here is a module constant; tests/compare/test_learning.py checks the plan it gives.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from core.data import kinds
from core.training.common import TrainConfig

MIN_STEPS = 40
MIN_STEPS_ONLINE = 20
MAX_EPOCHS = 8
EVALS_PER_RUN = 8
LOG_POINTS_PER_RUN = 20
WARMUP_RATIO = 0.1

# (small-run LoRA rate, large-data LoRA rate, small-run full rate, large-data full rate) per algorithm.
LEARNING_RATES: dict[str, tuple[float, float, float, float]] = {
    "sft": (3e-4, 1e-4, 3e-5, 1e-5),
    "reward": (3e-4, 1e-4, 3e-5, 1e-5),
    "dpo": (5e-4, 5e-5, 5e-6, 5e-7),
    "kto": (5e-4, 5e-5, 5e-6, 5e-7),
    "orpo": (5e-4, 5e-5, 5e-5, 5e-6),
    "online_rl": (5e-5, 1e-5, 5e-6, 1e-6),
}


@dataclass
class Setting:
    """One chosen value: where it came from (``auto`` | ``user`` | ``default``) and why, in words."""

    name: str
    value: Any
    source: str
    reason: str


@dataclass
class Plan:
    """The values a job will run with, every one explained. ``values`` feeds ``config_class.from_dict``."""

    algorithm: str
    examples: int
    unit: str
    values: dict[str, Any]
    settings: list[Setting] = field(default_factory=list)
    steps: int = 0

    @property
    def summary(self) -> str:
        """One line for the dry run: "64 pairs: 5 epochs -> 40 steps, lr 5e-4 for LoRA r=16"."""
        by_name = {s.name: s for s in self.settings}
        lr = by_name["learning_rate"].value
        mode = self.values.get("finetune", "lora")
        tuning = f"LoRA r={self.values.get('lora_r')}" if mode != "full" else "full fine-tuning"
        epochs = self.values.get("num_train_epochs")
        run = (
            f"{self.values['max_steps']} steps"
            if self.values.get("max_steps")
            else f"{epochs:g} epoch{'s' if epochs != 1 else ''} -> {self.steps} steps"
        )
        return f"{self.examples} {self.unit}: {run}, lr {lr:.0e} for {tuning}"

    def rows(self) -> list[dict[str, Any]]:
        return [dataclasses.asdict(s) for s in self.settings]


def _lr(algorithm: str, finetune: str, steps: int) -> tuple[float, str]:
    small_lora, large_lora, small_full, large_full = LEARNING_RATES.get(algorithm, LEARNING_RATES["sft"])
    small, large = (small_full, large_full) if finetune == "full" else (small_lora, large_lora)
    mode = "full fine-tuning" if finetune == "full" else "LoRA"
    if steps <= MIN_STEPS:
        return small, f"{mode}, short run ({steps} steps): the high end of the usual {algorithm} range"
    value = max(large, small * math.sqrt(MIN_STEPS / steps))
    value = float(f"{value:.1g}")
    if value <= large:
        return large, f"{mode}, long run ({steps} steps): the usual large-data rate"
    return value, f"{mode}, {steps} steps: scaled down with sqrt(steps) from {small:.0e} to keep the total update size"


def plan_defaults(
    config_class: type[TrainConfig], n_examples: int, overrides: dict[str, Any] | None = None, world_size: int = 1
) -> Plan:
    """The full hyperparameter set for ``n_examples`` training rows: the user's ``overrides`` plus chosen values.

    ``world_size`` processes (DDP) each take a micro-batch per pass: accumulation is divided among them, so the
    effective batch, the number of steps and the learning rate stay what one process would use.

    ``overrides`` are checked by ``config_class.from_dict`` (unknown names and wrong types raise ValidationError).
    """
    overrides = dict(overrides or {})
    config_class.from_dict(overrides)  # type and name check before anything is derived from them
    base = config_class()
    values = base.to_dict()
    values.update(overrides)
    settings: list[Setting] = []
    n = max(0, int(n_examples))
    unit = kinds.unit(config_class.dataset_kind)

    def choose(name: str, value: Any, reason: str) -> Any:
        if name in overrides:
            settings.append(Setting(name, overrides[name], "user", "set by you"))
            return overrides[name]
        values[name] = value
        source = "default" if value == getattr(base, name) else "auto"
        settings.append(Setting(name, value, source, reason))
        return value

    online = config_class.algorithm == "online_rl"
    batch = int(values["per_device_train_batch_size"])
    world = max(1, int(world_size))
    if online:
        choose(
            "gradient_accumulation_steps",
            base.gradient_accumulation_steps,
            f"one prompt's {values.get('num_generations')} answers per step (the group GRPO compares)",
        )
    else:
        target = 8 if n >= 64 else 4 if n >= 16 else 2
        choose(
            "gradient_accumulation_steps",
            max(1, target // (batch * world)),
            f"{n} {unit}: effective batch {max(batch * world, target)} "
            f"({'the usual size' if n >= 64 else 'small set, so there are enough optimizer steps'})"
            + (f", over {world} processes" if world > 1 else ""),
        )

    min_steps = MIN_STEPS_ONLINE if online else MIN_STEPS
    one_epoch = config_class.from_dict({**values, "num_train_epochs": 1.0, "max_steps": 0}).planned_steps(n, world)
    epochs = float(min(MAX_EPOCHS, max(1, math.ceil(min_steps / max(1, one_epoch)))))
    reason = f"{n} {unit} make {one_epoch} step(s) per epoch: {epochs:g} epoch(s) -> {one_epoch * int(epochs)} steps"
    if epochs == 1:
        reason += f" (one pass reaches the {min_steps}-step minimum)"
    elif epochs >= MAX_EPOCHS and one_epoch * MAX_EPOCHS < min_steps:
        reason += f" (capped at {MAX_EPOCHS} epochs: label more for more steps)"
    else:
        reason += f" (small set: repeated to reach at least {min_steps} optimizer steps)"
    choose("num_train_epochs", epochs, reason)
    steps = config_class.from_dict(values).planned_steps(n, world)

    lr, why = _lr(config_class.algorithm, str(values["finetune"]), steps)
    if values["finetune"] != "full":
        why += f" (LoRA r={values['lora_r']}, alpha={values['lora_alpha']})"
    choose("learning_rate", lr, why)
    choose("warmup_ratio", WARMUP_RATIO, "10% warm-up: the first steps at a high rate are the least stable")
    choose("logging_steps", max(1, steps // LOG_POINTS_PER_RUN), f"~{LOG_POINTS_PER_RUN} points on each training curve")
    choose(
        "save_steps",
        max(1, math.ceil(steps / EVALS_PER_RUN)),
        f"held-out evaluation and a checkpoint ~{EVALS_PER_RUN} times in {steps} steps (with 40+ held-out "
        "examples, early stopping keeps the best)",
    )
    if "beta" in values:
        choose(
            "beta",
            getattr(base, "beta"),  # noqa: B009 (a subclass's field: TrainConfig has no beta)
            "the algorithm's usual strength; raise it if the report warns that answers drifted too far, "
            "lower it if nothing changed",
        )
    return Plan(
        config_class.algorithm, n, unit, values, settings, config_class.from_dict(values).planned_steps(n, world)
    )
