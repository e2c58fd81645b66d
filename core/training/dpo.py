"""DPO: learn from preference pairs (prompt, chosen, rejected) against a frozen reference (TRL ``DPOTrainer``).

Reference model: the parent policy version (see ``core.training.common``). With LoRA and a parent adapter TRL 1.16
keeps a frozen ``ref`` copy of the parent adapter next to the trainable one, on the same base weights, so at step 0
policy == reference and ``rewards/*`` start at exactly 0.

``precompute_ref_log_probs``: TRL can compute the reference log-probs of every training pair once, before training,
and cache them in the dataset (under ``runs/<id>/cache``). Every later step then skips the reference forward pass.
"auto" turns it on when that pays off: when training sees each pair at least once (>= 1 epoch; past that, every
extra pass is free) or with full fine-tuning (no second full model in memory).

Metric added by the studio: ``labeled_logratio`` = (rewards/chosen + rewards/rejected) / (2 * beta), i.e. the mean
sequence log-ratio log(pi/pi_ref) over the batch's chosen and rejected completions: how much probability the
policy moved onto (positive) or off (negative) the labeled answers. It is NOT a KL, which is never negative and needs
samples from the policy: it was once named ``implicit_kl`` and went to -50 on a run that pushed both answers down.
The real KL (on the version's own samples) is in the "what changed" report.

Answers cut at the length limit are trained without the chat template's end-of-turn (core.training.cut).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from core.training.common import CachedReference, ModelSetup, TrainConfig, param, require_columns, trainer_inputs

LOSS_TYPES = (
    "sigmoid",
    "ipo",
    "hinge",
    "robust",
    "bco_pair",
    "apo_zero",
    "apo_down",
    "sppo_hard",
    "nca_pair",
    "exo_pair",
    "sigmoid_norm",
)
PRECOMPUTE_CHOICES = ("auto", "on", "off")


@dataclass
class DPOConfig(CachedReference, TrainConfig):
    """Direct Preference Optimization on chosen/rejected pairs."""

    algorithm: ClassVar[str] = "dpo"
    dataset_kind: ClassVar[str] = "preference"
    min_examples: ClassVar[int] = 10
    needs_reference: ClassVar[bool] = True

    learning_rate: float = param(
        5e-5,
        "Peak learning rate of AdamW. DPO is sensitive: 5e-6 to 5e-5 with LoRA, ~1e-6 for full fine-tuning.",
        min=1e-8,
        max=1.0,
    )
    beta: float = param(
        0.1,
        "How strongly the policy is held to the reference (the parent version). Higher = smaller, safer "
        "changes. Typical 0.05-0.5. For ipo this is the regularisation strength tau.",
        min=1e-4,
        max=10.0,
        group="algorithm",
    )
    loss_type: str = param(
        "sigmoid",
        "sigmoid: the original DPO loss. ipo: squared loss, resists overfitting on small data. "
        "hinge: SLiC margin loss. robust: tolerates a share of flipped labels (set label_smoothing). "
        "bco_pair, apo_zero, apo_down, sppo_hard, nca_pair, exo_pair, sigmoid_norm: other TRL variants.",
        choices=LOSS_TYPES,
        group="algorithm",
    )
    label_smoothing: float = param(
        0.0,
        "robust: assumed share of pairs whose label is wrong (e.g. 0.1). exo_pair: its epsilon (e.g. 1e-3). "
        "Ignored by the other losses.",
        min=0.0,
        max=0.49,
        group="algorithm",
    )
    sft_weight: float = param(
        0.0,
        "Adds the chosen answers' negative log-likelihood per token, times this weight, to the loss (RPO, Pang et "
        "al. 2024): the chosen answers stay likely while the margin over the rejected ones grows, instead of both "
        "falling. 0 = plain DPO; the paper uses 1.",
        min=0.0,
        max=10.0,
        group="algorithm",
    )
    precompute_ref_log_probs: str = param(
        "auto",
        "Compute the reference model's log-probs once before training and reuse them every epoch (faster "
        "from the second epoch on, less memory for full fine-tuning). auto: on when training covers the data at "
        "least once or fine-tunes fully.",
        choices=PRECOMPUTE_CHOICES,
        group="algorithm",
    )

    def extra_problems(self) -> list[tuple[str, str]]:
        problems = []
        if self.loss_type == "exo_pair" and self.label_smoothing <= 0:
            problems.append(("exo_pair needs label_smoothing > 0", "set label_smoothing to 1e-3"))
        return problems


def prepare_dataset(dataset, cfg: DPOConfig, name: str = "train"):
    cut_flags = ("chosen_cut", "rejected_cut")  # answers cut at the length limit (core.training.cut)
    return require_columns(dataset, ("prompt", "chosen", "rejected"), cut_flags, "preference", cfg.min_examples, name)


def derived_metrics(cfg: DPOConfig):
    def derive(row: dict[str, Any]) -> dict[str, Any]:
        for prefix in ("", "eval_"):
            chosen, rejected = row.get(f"{prefix}rewards/chosen"), row.get(f"{prefix}rewards/rejected")
            if chosen is not None and rejected is not None:
                return {f"{prefix}labeled_logratio": (chosen + rejected) / (2 * cfg.beta)}
        return {}

    return derive


def build_trainer(cfg: DPOConfig, setup: ModelSetup, train_dataset, eval_dataset, args_kwargs: dict, callbacks):
    from trl import DPOConfig as TRLDPOConfig

    from core.training.cut import cut_aware_dpo_trainer

    precompute = cfg.uses_precompute(len(train_dataset))
    args = TRLDPOConfig(
        **args_kwargs,
        beta=cfg.beta,
        loss_type=[cfg.loss_type, "sft"] if cfg.sft_weight > 0 else [cfg.loss_type],
        loss_weights=[1.0, cfg.sft_weight] if cfg.sft_weight > 0 else None,
        label_smoothing=cfg.label_smoothing,
        max_length=cfg.max_length,
        precompute_ref_log_probs=precompute,
        # A no-grad forward fits a larger batch than a training step.
        precompute_ref_batch_size=cfg.per_device_train_batch_size * 4,
    )
    return cut_aware_dpo_trainer()(
        ref_model=setup.ref_model,
        args=args,
        **trainer_inputs(setup, train_dataset, eval_dataset, callbacks),
    )
