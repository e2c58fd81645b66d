"""ORPO: SFT on the chosen answer plus an odds-ratio penalty on the rejected one, in one stage, no reference model.

TRL 1.16 ships it as ``trl.experimental.orpo.ORPOTrainer`` (experimental API: it may change between TRL releases).
Being reference-free, ORPO's ``rewards/*`` are beta * log-prob of the policy alone, so no KL is logged. With a
parent adapter the LoRA continues from the parent's weights (the child starts at the parent version).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar

from core.training.common import ModelSetup, TrainConfig, param, require_columns, trainer_inputs


@dataclass
class ORPOConfig(TrainConfig):
    """Odds Ratio Preference Optimization on chosen/rejected pairs."""

    algorithm: ClassVar[str] = "orpo"
    dataset_kind: ClassVar[str] = "preference"
    min_examples: ClassVar[int] = 10

    learning_rate: float = param(
        5e-5,
        "Peak learning rate of AdamW. ORPO also does SFT: 2e-5 to 1e-4 with LoRA, ~5e-6 for full fine-tuning.",
        min=1e-8,
        max=1.0,
    )
    beta: float = param(
        0.1,
        "Weight of the odds-ratio preference term against the SFT term (lambda in the paper). 0.05-0.5.",
        min=1e-4,
        max=10.0,
        group="algorithm",
    )


def prepare_dataset(dataset, cfg: ORPOConfig, name: str = "train"):
    return require_columns(dataset, ("prompt", "chosen", "rejected"), (), "preference", cfg.min_examples, name)


def build_trainer(cfg: ORPOConfig, setup: ModelSetup, train_dataset, eval_dataset, args_kwargs: dict, callbacks):
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl.experimental.orpo import ORPOConfig as TRLORPOConfig, ORPOTrainer

    args = TRLORPOConfig(
        **args_kwargs,
        beta=cfg.beta,
        max_length=cfg.max_length,
        remove_unused_columns=False,  # its collator reads the tokenized chosen_/rejected_ columns
    )
    return ORPOTrainer(
        args=args,
        **trainer_inputs(setup, train_dataset, eval_dataset, callbacks),
    )
