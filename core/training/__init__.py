"""Training algorithms: one registry entry per TRL trainer family.

``ALGORITHMS[name]`` is an ``AlgorithmSpec``: its ``config_class`` (a dataclass whose fields, defaults and
metadata -- help, min/max or choices, group -- generate the UI form), the dataset kind it reads, the minimum
number of examples, and the module that builds the trainer. Importing this package does not import TRL: the
modules import it only inside ``build_trainer``, so the server can render forms cheaply (nor torch: the
hardware is only looked at when a config is validated or a trainer built).

A job runs in a child process: ``accelerate launch -m core.training.child runs/<id>/config.json`` (see child.py).
The package, server side first:

    request.py     what a job is asked to do (JobRequest) and what a dry run answers
    suggest.py     the guided loop: the next training the console suggests
    jobs.py        the supervisor: freeze the data, queue, start the child, watch it, register the result
    distributed.py how the child is started: launch modes (DDP, FSDP, ...), its command line, its CPU threads
    estimate.py    a dry-run guess of steps, seconds and peak memory
    rundir.py      the files in runs/<id>/, shared by the supervisor, the child and the benchmarks
    child.py       the child: read config.json, train, write result.json (never imports the supervisor)
    callbacks.py   the child's trainer callbacks: metrics, progress, pause / cancel, CPU sharing
    weights.py     the child: load the policy and its reference, save the trained adapter or model
    common.py      the config base every algorithm shares, trainer arguments, datasets
    defaults.py    hyperparameters chosen from the data size and the hardware
    sft.py, reward.py, dpo.py, kto.py, orpo.py, online_rl.py   one module per algorithm
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from core.errors import ValidationError
from core.training.common import TrainConfig
from core.training.dpo import DPOConfig
from core.training.kto import KTOConfig
from core.training.online_rl import OnlineRLConfig
from core.training.orpo import ORPOConfig
from core.training.reward import RewardConfig
from core.training.sft import SFTConfig


@dataclass(frozen=True)
class AlgorithmSpec:
    """What the UI and the supervisor need to know about one algorithm."""

    name: str
    label: str
    description: str
    config_class: type[TrainConfig]
    dataset_kind: str  # the kind of training set it reads: a name in core.data.kinds.KINDS
    min_examples: int
    module: str  # import path of the module with prepare_dataset / build_trainer
    needs_reward_model: bool = False

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)

    def default_config(self) -> TrainConfig:
        return self.config_class()

    def config_from_dict(self, hyperparams: dict[str, Any] | None) -> TrainConfig:
        return self.config_class.from_dict(hyperparams)


def _spec(
    name: str, label: str, description: str, config_class: type[TrainConfig], needs_reward_model: bool = False
) -> AlgorithmSpec:
    return AlgorithmSpec(
        name=name,
        label=label,
        description=description,
        config_class=config_class,
        dataset_kind=config_class.dataset_kind,
        min_examples=config_class.min_examples,
        module=config_class.__module__,
        needs_reward_model=needs_reward_model,
    )


ALGORITHMS: dict[str, AlgorithmSpec] = {
    spec.name: spec
    for spec in (
        _spec(
            "sft",
            "SFT (supervised fine-tuning)",
            "Imitate good answers: gold edits and accepted chats (messages).",
            SFTConfig,
        ),
        _spec(
            "reward",
            "Reward model",
            "Learn a scalar score from preference pairs (uses rating margins when present); needed by online RL.",
            RewardConfig,
        ),
        _spec(
            "dpo",
            "DPO (direct preference optimization)",
            "Prefer chosen over rejected answers, held close to the parent version.",
            DPOConfig,
        ),
        _spec(
            "kto",
            "KTO (thumbs up / down)",
            "Learn from unpaired good / bad answers, held close to the parent version.",
            KTOConfig,
        ),
        _spec(
            "orpo",
            "ORPO (reference-free preference)",
            "SFT on chosen answers plus an odds-ratio penalty on rejected ones; no reference model.",
            ORPOConfig,
        ),
        _spec(
            "online_rl",
            "Online RL (GRPO with the reward model)",
            "Generate answers to prompts, score them with a trained reward model, reinforce the better ones "
            "with a KL penalty to the parent version.",
            OnlineRLConfig,
            needs_reward_model=True,
        ),
    )
}


def get_algorithm(name: str) -> AlgorithmSpec:
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise ValidationError(
            f"unknown training algorithm {name!r}", hint=f"choose one of: {', '.join(ALGORITHMS)}"
        ) from None


def config_fields(config_class: type[TrainConfig]) -> list[dict[str, Any]]:
    """The form description of a config class: one dict per field (name, type, default, help, min/max/choices)."""
    rows = []
    for f in dataclasses.fields(config_class):
        # every config field has a default or a default_factory
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[operator]
        type_name = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        rows.append({"name": f.name, "type": type_name, "default": default, **dict(f.metadata)})
    return rows


__all__ = [
    "ALGORITHMS",
    "AlgorithmSpec",
    "TrainConfig",
    "config_fields",
    "get_algorithm",
    "DPOConfig",
    "KTOConfig",
    "ORPOConfig",
    "OnlineRLConfig",
    "RewardConfig",
    "SFTConfig",
]
