"""KTO: learn from unpaired thumbs up / down (``prompt``, ``completion``, ``label``) with TRL ``KTOTrainer``.

Reference model: the parent policy version, handled exactly like DPO (see ``core.training.common``): a fresh LoRA
uses the base with the adapter disabled; a parent adapter is trained further while TRL keeps a frozen ``ref`` copy
of it on the same base weights. TRL logs ``kl`` (its batch estimate of KL(policy || reference), from completions
mismatched against other prompts in the batch), so no implicit KL is added here.

KTO estimates that KL term from neighbours in a fixed-order batch, so TRL requires sequential sampling and a real
batch size >= 2. The rows are shuffled once with the seed before training so batches mix labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from core.errors import ValidationError
from core.training.common import CachedReference, ModelSetup, TrainConfig, log, param, require_columns, trainer_inputs
from core.training.dpo import PRECOMPUTE_CHOICES


@dataclass
class KTOConfig(CachedReference, TrainConfig):
    """Kahneman-Tversky Optimization on unpaired good / bad answers."""

    algorithm: ClassVar[str] = "kto"
    dataset_kind: ClassVar[str] = "unpaired"
    min_examples: ClassVar[int] = 10
    needs_reference: ClassVar[bool] = True

    learning_rate: float = param(
        5e-5, "Peak learning rate of AdamW. 5e-6 to 5e-5 with LoRA; ~1e-6 for full fine-tuning.", min=1e-8, max=1.0
    )
    beta: float = param(
        0.1,
        "How strongly the policy is held to the reference (the parent version). Higher = smaller changes.",
        min=1e-4,
        max=10.0,
        group="algorithm",
    )
    loss_type: str = param(
        "kto",
        "kto: the KTO loss. apo_zero_unpaired: anchored variant for when good answers beat the model's own.",
        choices=("kto", "apo_zero_unpaired"),
        group="algorithm",
    )
    desirable_weight: float = param(
        0.0,
        "Weight of thumbs-up examples. 0 = balance automatically against the thumbs-down count.",
        min=0.0,
        max=100.0,
        group="algorithm",
    )
    undesirable_weight: float = param(1.0, "Weight of thumbs-down examples.", min=0.01, max=100.0, group="algorithm")
    precompute_ref_log_probs: str = param(
        "auto",
        "Compute the reference log-probs once before training and reuse them (faster from the second "
        "epoch on). auto: on when training covers the data at least once or fine-tunes fully.",
        choices=PRECOMPUTE_CHOICES,
        group="algorithm",
    )

    def extra_problems(self) -> list[tuple[str, str]]:
        if self.loss_type == "kto" and self.per_device_train_batch_size < 2:
            return [
                (
                    "KTO needs per_device_train_batch_size >= 2 (its KL estimate pairs examples within a batch)",
                    "set per_device_train_batch_size to 2 or more",
                )
            ]
        return []


def prepare_dataset(dataset, cfg: KTOConfig, name: str = "train"):
    dataset = require_columns(dataset, ("prompt", "completion", "label"), (), "unpaired", cfg.min_examples, name)
    labels = [bool(x) for x in dataset["label"]]
    if name == "train" and (all(labels) or not any(labels)):
        kind = "thumbs-up" if all(labels) else "thumbs-down"
        raise ValidationError(
            f"KTO data has only {kind} examples",
            hint="KTO needs both desirable and undesirable answers; label some of each",
        )
    return dataset.shuffle(seed=cfg.seed).flatten_indices()


def build_trainer(cfg: KTOConfig, setup: ModelSetup, train_dataset, eval_dataset, args_kwargs: dict, callbacks):
    from trl import KTOConfig as TRLKTOConfig, KTOTrainer

    desirable_weight = cfg.desirable_weight
    if desirable_weight == 0:
        labels = train_dataset["label"]
        n_good = max(1, sum(bool(x) for x in labels))
        n_bad = max(1, len(labels) - n_good)
        # TRL's guidance: desirable_weight * n_good / (undesirable_weight * n_bad) in [1, 4/3].
        desirable_weight = round(1.15 * cfg.undesirable_weight * n_bad / n_good, 4)
        log(f"KTO desirable_weight balanced to {desirable_weight} ({n_good} up, {n_bad} down)")
    args = TRLKTOConfig(
        **args_kwargs,
        beta=cfg.beta,
        loss_type=cfg.loss_type,
        desirable_weight=desirable_weight,
        undesirable_weight=cfg.undesirable_weight,
        max_length=cfg.max_length,
        precompute_ref_log_probs=cfg.uses_precompute(len(train_dataset)),
        precompute_ref_batch_size=cfg.per_device_train_batch_size * 4,
    )
    return KTOTrainer(
        ref_model=setup.ref_model,
        args=args,
        **trainer_inputs(setup, train_dataset, eval_dataset, callbacks),
    )
