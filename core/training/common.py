"""What every training algorithm shares: the curated config base, hardware-aware trainer arguments, the model
setup a trainer receives, datasets and the job log.

Reading order: ``param`` and ``TrainConfig`` (the fields every algorithm form shows), ``trainer_kwargs``
(TrainingArguments from the config + ``training_defaults``), ``ModelSetup`` (what
``core.training.weights.load_for_training`` hands a trainer), ``load_dataset_file`` / ``require_columns``, then ``log``.

Cheap to import (no torch, transformers or TRL at import): the server builds forms from these configs. The run-dir
files (``config.json`` = ``core.training.rundir.JobConfig``) are defined in core.training.rundir.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from core.errors import ValidationError
from core.training.rundir import checkpoints_dir

if TYPE_CHECKING:
    from core.serving.hardware import HardwareProfile

FINETUNE_CHOICES = ("lora", "qlora4", "qlora8", "full")
QLORA_ON_CPU = "QLoRA needs a CUDA GPU; use LoRA or full fine-tuning on this machine"
SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")
MIN_EVAL_FOR_EARLY_STOPPING = 40  # held-out rows: below, accuracy's noise (~0.08) hides the best checkpoint
SELECTION_METRIC = "selection_score"  # eval_selection_score: what early stopping and the best checkpoint follow


def param(
    default: Any,
    help: str,
    *,
    min: float | None = None,
    max: float | None = None,
    choices: tuple | list | None = None,
    group: str = "training",
) -> Any:
    """A config field whose metadata drives the UI form: ``help`` text, ``min``/``max`` or ``choices``, ``group``."""
    metadata: dict[str, Any] = {"help": help, "group": group}
    if min is not None:
        metadata["min"] = min
    if max is not None:
        metadata["max"] = max
    if choices is not None:
        metadata["choices"] = list(choices)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    """Fields every algorithm shares. Subclasses add their own and override defaults (e.g. learning_rate).

    Class constants: ``algorithm`` (registry name), ``dataset_kind``, ``min_examples`` (rows needed to start),
    ``needs_reference`` (the loss compares the policy against a frozen reference), ``task`` ("causal" for
    policies, "seq_cls" for reward models).
    """

    algorithm: ClassVar[str] = ""
    dataset_kind: ClassVar[str] = ""
    min_examples: ClassVar[int] = 1
    needs_reference: ClassVar[bool] = False
    task: ClassVar[str] = "causal"

    finetune: str = param(
        "lora",
        "How to train. lora: small adapter on frozen base weights (fast, little memory, the default). "
        "qlora4 / qlora8: LoRA on a 4-bit / 8-bit quantized base (CUDA GPUs only, least memory). "
        "full: update every weight (most memory; saves a full model instead of an adapter).",
        choices=FINETUNE_CHOICES,
        group="model",
    )
    learning_rate: float = param(
        1e-4,
        "Peak learning rate of AdamW. LoRA tolerates 1e-5 to 2e-4; full fine-tuning wants ~10x smaller.",
        min=1e-8,
        max=1.0,
    )
    num_train_epochs: float = param(
        1.0, "Passes over the training data. Ignored when max_steps is set.", min=0.01, max=100
    )
    max_steps: int = param(
        0, "Stop after this many optimizer steps; 0 = run num_train_epochs instead.", min=0, max=1_000_000
    )
    per_device_train_batch_size: int = param(
        2, "Examples per forward/backward pass. Higher is faster per example but needs more memory.", min=1, max=1024
    )
    gradient_accumulation_steps: int = param(
        4, "Passes accumulated per optimizer step; effective batch = batch size x this.", min=1, max=1024
    )
    max_length: int = param(
        512,
        "Longest tokenized sequence (prompt + completion) kept; longer ones are truncated or dropped.",
        min=16,
        max=131072,
    )
    lr_scheduler_type: str = param(
        "linear", "How the learning rate changes over training (after warm-up).", choices=SCHEDULERS
    )
    warmup_ratio: float = param(0.0, "Share of the steps spent ramping the learning rate up from 0.", min=0.0, max=0.5)
    lora_r: int = param(
        16,
        "LoRA rank: size of the adapter. 8-64 is typical; higher learns more and costs more.",
        min=1,
        max=512,
        group="lora",
    )
    lora_alpha: int = param(
        32, "LoRA scaling (the update is scaled by alpha / r). Usually 2 x lora_r.", min=1, max=2048, group="lora"
    )
    lora_dropout: float = param(
        0.05, "Dropout on the LoRA path during training (regularisation).", min=0.0, max=0.5, group="lora"
    )
    lora_target_modules: str = param(
        "all-linear",
        "Layers that get an adapter: 'all-linear', or comma-separated module names such as 'q_proj,v_proj'.",
        group="lora",
    )
    logging_steps: int = param(5, "Write a metrics row every N optimizer steps.", min=1, max=100_000, group="run")
    save_steps: int = param(
        50,
        "Save a resumable checkpoint every N optimizer steps (and at the end); with held-out data, also "
        "evaluate on it every N steps.",
        min=1,
        max=1_000_000,
        group="run",
    )
    early_stopping_patience: int = param(
        3,
        "Stop when held-out accuracy (ties broken by held-out loss) has not improved for this many evaluations, "
        "and keep the best checkpoint: small sets overfit fast. Needs at least 40 held-out examples to rank "
        "checkpoints (fewer: the last step is kept). 0 = off.",
        min=0,
        max=1000,
        group="run",
    )
    save_total_limit: int = param(
        2, "Checkpoints kept on disk (oldest deleted first); 0 keeps all.", min=0, max=1000, group="run"
    )
    seed: int = param(
        42,
        "Random seed for adapter init, data order and sampling: same seed, same run.",
        min=0,
        max=2**31 - 1,
        group="run",
    )

    # --- construction -------------------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> TrainConfig:
        """Build from config.json ``hyperparams``; unknown names and wrong types raise ValidationError."""
        values = dict(values or {})
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValidationError(
                f"unknown hyperparameter(s) for {cls.algorithm}: {', '.join(unknown)}",
                hint=f"allowed: {', '.join(known)}",
            )
        hints = typing.get_type_hints(cls)
        kwargs = {name: _coerce(name, value, hints[name]) for name, value in values.items()}
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # --- validation ---------------------------------------------------------------------------------------------

    def validate(self, hardware: HardwareProfile | None = None) -> None:
        """Raise ValidationError (message + hint) when a value is out of range or cannot run on this hardware."""
        problems: list[tuple[str, str]] = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            meta = f.metadata
            if "choices" in meta and value not in meta["choices"]:
                problems.append(
                    (
                        f"{f.name} must be one of {', '.join(map(str, meta['choices']))} (got {value!r})",
                        f"pick one of: {', '.join(map(str, meta['choices']))}",
                    )
                )
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if isinstance(value, float) and not math.isfinite(value):
                    problems.append((f"{f.name} must be a finite number (got {value})", "enter a number"))
                elif "min" in meta and value < meta["min"]:
                    problems.append((f"{f.name} must be >= {meta['min']:g} (got {value:g})", f"{meta['help']}"))
                elif "max" in meta and value > meta["max"]:
                    problems.append((f"{f.name} must be <= {meta['max']:g} (got {value:g})", f"{meta['help']}"))
        problems += self.extra_problems()
        if self.finetune.startswith("qlora"):
            from core.serving.hardware import detect_hardware

            hardware = hardware or detect_hardware()
            if not hardware.cuda_available:
                problems.insert(0, (QLORA_ON_CPU, "set finetune to 'lora' (or 'full')"))
        if problems:
            message = "; ".join(p[0] for p in problems)
            raise ValidationError(f"invalid {self.algorithm} settings: {message}", hint=problems[0][1])

    def extra_problems(self) -> list[tuple[str, str]]:
        """Algorithm-specific checks: (message, hint) pairs. Subclasses extend."""
        return []

    # --- derived values -----------------------------------------------------------------------------------------

    @property
    def is_lora(self) -> bool:
        return self.finetune != "full"

    @property
    def effective_batch_size(self) -> int:
        return self.per_device_train_batch_size * self.gradient_accumulation_steps

    def planned_steps(self, n_examples: int, num_processes: int = 1) -> int:
        """Optimizer steps this config will run on ``n_examples`` rows (what the Trainer computes)."""
        if self.max_steps > 0:
            return self.max_steps
        # As the Trainer counts: a last partial accumulation still makes an optimizer step.
        per_epoch = max(
            1,
            math.ceil(
                math.ceil(n_examples / (self.per_device_train_batch_size * num_processes))
                / self.gradient_accumulation_steps
            ),
        )
        return max(1, math.ceil(per_epoch * self.num_train_epochs))

    def reference_in_memory(self, n_examples: int) -> bool:
        """True when a reference must be evaluated during training (DPO/KTO override: precomputed log-probs)."""
        return self.needs_reference

    def trl_kwargs(self) -> dict[str, Any]:
        """Algorithm fields passed to the TRL config (subclasses)."""
        return {}


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    """JSON values into the field's type: int stays int (1.0 -> 1), numbers into float, strings stay strings."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None:
            return None
        annotation = args[0]
    bad = ValidationError(
        f"hyperparameter {name} must be of type {getattr(annotation, '__name__', annotation)} (got {value!r})",
        hint="fix the value in the form or config.json",
    )
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if annotation is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise bad
    if annotation is str:
        if isinstance(value, str):
            return value
        raise bad
    return value


class CachedReference:
    """For configs with a ``precompute_ref_log_probs`` field (DPO, KTO): whether caching the reference
    log-probs once pays off. "auto" caches when training sees the data at least once (or fine-tunes fully),
    because then every example's reference forward would otherwise be recomputed."""

    if TYPE_CHECKING:  # provided by the TrainConfig dataclass this is mixed into
        precompute_ref_log_probs: str
        finetune: str

        @property
        def effective_batch_size(self) -> int: ...

        def planned_steps(self, n_examples: int, num_processes: int = 1) -> int: ...

    def uses_precompute(self, n_examples: int) -> bool:
        if self.precompute_ref_log_probs != "auto":
            return self.precompute_ref_log_probs == "on"
        seen = self.planned_steps(n_examples) * self.effective_batch_size
        return self.finetune == "full" or seen >= n_examples

    def reference_in_memory(self, n_examples: int) -> bool:
        return not self.uses_precompute(n_examples)


# --- trainer arguments ------------------------------------------------------------------------------------------


def early_stopping(cfg: TrainConfig, eval_examples: int) -> bool:
    """Early stopping (and restoring the best checkpoint) needs a held-out set large enough to rank checkpoints.

    Measured with the default model and 80 pairs of one labeler's preference (bench/efficacy.py): 19 held-out
    pairs gave held-out accuracies 0.50-0.60 at every evaluation (standard error ~0.11) while training accuracy
    reached 1.0, so "the best" checkpoint was noise and early stopping kept step 6 or 12 of 48 -- a version that
    had barely trained. Below MIN_EVAL_FOR_EARLY_STOPPING rows the job evaluates for the curves only.
    """
    return cfg.early_stopping_patience > 0 and eval_examples >= MIN_EVAL_FOR_EARLY_STOPPING


def trainer_kwargs(
    cfg: TrainConfig, run_dir: Path, hardware: HardwareProfile, n_params: int, has_eval: bool, stop_early: bool = False
) -> dict[str, Any]:
    """TrainingArguments fields shared by every TRL config, with precision / checkpointing from the hardware.

    Never hardcodes bf16 or gradient checkpointing: TRL's defaults (bf16=True, checkpointing on) are ~12x slower on
    a CPU without native bf16 (see core/serving/hardware.py).
    """
    from core.serving.hardware import training_defaults

    defaults = training_defaults(hardware, n_params)
    kwargs: dict[str, Any] = dict(
        output_dir=str(checkpoints_dir(run_dir)),
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps if cfg.max_steps > 0 else -1,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_ratio,  # transformers 5: a float in [0, 1) is a ratio of the total steps
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit or None,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=cfg.save_steps if has_eval else None,
        eval_on_start=has_eval,  # the parent's held-out figures: the first point of every eval curve
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=bool(defaults["bf16"]),
        fp16=bool(defaults["fp16"]),
        gradient_checkpointing=bool(defaults["gradient_checkpointing"]),
        use_cpu=bool(defaults["use_cpu"]),
        report_to="none",
        disable_tqdm=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=hardware.cuda_available,
    )
    if cfg.finetune.startswith("qlora"):
        kwargs["gradient_checkpointing"] = True  # QLoRA's point is minimal memory
    if has_eval and stop_early:
        # The best checkpoint by the studio's selection score (callbacks.SelectionScoreCallback) is restored at the
        # end; the Trainer then keeps it on disk whatever save_total_limit says.
        kwargs.update(load_best_model_at_end=True, metric_for_best_model=SELECTION_METRIC, greater_is_better=True)
    return kwargs


def precision_reason(hardware: HardwareProfile, n_params: int) -> str:
    from core.serving.hardware import training_defaults

    return str(training_defaults(hardware, n_params)["reason"])


# --- the model setup ----------------------------------------------------------------------------------------------


@dataclass
class ModelSetup:
    """What a trainer needs about models. ``peft_config`` is set when TRL should wrap ``model`` itself."""

    model: Any
    tokenizer: Any
    base_model: str
    peft_config: Any = None
    ref_model: Any = None  # an explicit reference (full fine-tuning from a parent); None = TRL's default
    reference: str = "none (this algorithm has no reference model)"
    n_params: int = 0
    reward_model: Any = None  # online RL: the scoring model (merged, eval mode)
    reward_tokenizer: Any = None
    merged_parent: str | None = None  # a policy adapter folded into a reward model's backbone (needed to reload)
    notes: list[str] = field(default_factory=list)


# --- datasets ---------------------------------------------------------------------------------------------------


def load_dataset_file(path: Path, cache_dir: Path):
    """A parquet snapshot as a ``datasets.Dataset`` whose cache files (TRL's tokenized maps) stay in ``cache_dir``."""
    from datasets import Dataset

    if not path.is_file():
        raise ValidationError(
            f"training data {path} does not exist", hint="the supervisor must snapshot data/train.parquet"
        )
    try:
        return Dataset.from_parquet(str(path), cache_dir=str(cache_dir))
    except Exception as exc:
        raise ValidationError(
            f"could not read {path}: {exc}", hint="write the snapshot with pandas.to_parquet"
        ) from exc


def require_columns(
    dataset, required: tuple[str, ...], optional: tuple[str, ...], kind: str, min_examples: int, name: str = "train"
):
    """Keep only the columns the trainer reads; check the TRL format and the minimum row count."""
    columns = set(dataset.column_names)
    missing = [c for c in required if c not in columns]
    if missing:
        raise ValidationError(
            f"{name} data lacks column(s) {', '.join(missing)} for {kind} training (has: {', '.join(sorted(columns))})",
            hint=f"{kind} data needs columns {', '.join(required)}",
        )
    keep = [c for c in (*required, *optional) if c in columns]
    dataset = dataset.select_columns(keep)
    if name == "train" and len(dataset) < min_examples:
        raise ValidationError(
            f"{len(dataset)} {kind} example(s) is too few: this algorithm needs at least {min_examples}",
            hint="label more data, or pick an algorithm that needs fewer examples",
        )
    return dataset


def log(message: str) -> None:
    """One line into the job log (stdout is the run's log.txt)."""
    print(f"[studio] {message}", file=sys.stdout, flush=True)


def trainer_inputs(setup: ModelSetup, train_dataset: Any, eval_dataset: Any, callbacks: Any) -> dict[str, Any]:
    """The constructor arguments every TRL trainer shares (model, data, tokenizer, LoRA, callbacks)."""
    return {
        "model": setup.model,
        "train_dataset": train_dataset,
        "eval_dataset": eval_dataset,
        "processing_class": setup.tokenizer,
        "peft_config": setup.peft_config,
        "callbacks": list(callbacks),
    }
