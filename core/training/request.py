"""What a user asks a training job to do (Train page, REST, ``launch.py train``), and what a dry run answers.

Apart from the supervisor (core.training.jobs) so the UIs and the guided loop can build requests without it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from core.data.filters import Filters, filters_from_dict
from core.data.split import HELD_OUT_PERCENT
from core.errors import ValidationError
from core.training import ALGORITHMS, AlgorithmSpec
from core.training.defaults import Plan, plan_defaults
from core.training.distributed import LaunchConfig


@dataclass
class JobRequest:
    """What a user asks for on the Train page or with ``launch.py train``.

    ``hyperparams`` holds only what the user set; every other value is chosen from the data at submit time
    (core.training.defaults). ``filters.hold_out_percent`` defaults to the evaluation split (20% of prompts):
    those labels are never trained on, the job evaluates on them while it trains, and the "what changed" report
    measures the new version on them.
    """

    algorithm: str
    parent: str = "base"  # policy version the job starts from (and the reference)
    hyperparams: dict[str, Any] = field(default_factory=dict)
    filters: Filters = field(default_factory=lambda: Filters(hold_out_percent=HELD_OUT_PERCENT))
    reward_model: str | None = None  # online RL: name of a trained reward model (rm1, ...)
    launch: LaunchConfig = field(default_factory=LaunchConfig)  # one process, DDP, FSDP, DeepSpeed, nodes

    def spec(self) -> AlgorithmSpec:
        if self.algorithm not in ALGORITHMS:
            raise ValidationError(
                f"Unknown algorithm {self.algorithm!r}", hint=f"choose one of {', '.join(ALGORITHMS)}"
            )
        return ALGORITHMS[self.algorithm]

    def plan(self, n_examples: int) -> Plan:
        """Every hyperparameter for ``n_examples`` training rows: the user's values plus chosen defaults."""
        return plan_defaults(self.spec().config_class, n_examples, self.hyperparams, world_size=self.launch.world_size)

    def config(self, n_examples: int) -> Any:
        """The algorithm's config dataclass for ``n_examples`` training rows, validated."""
        cfg = self.spec().config_from_dict(self.plan(n_examples).values)
        cfg.validate()
        return cfg


@dataclass
class DryRun:
    """What a job would do, before anything is written (seed N3's dry run)."""

    algorithm: str
    examples: int
    min_examples: int
    skipped: dict[str, int]
    data_stats: dict[str, Any]
    estimate: dict[str, Any]
    ok: bool
    reason: str
    summary: str = ""  # "64 pairs: 5 epochs -> 40 steps, lr 5e-4 ..."
    settings: list[dict[str, Any]] = field(default_factory=list)  # name, value, source (auto|user|default), reason
    eval_examples: int = 0  # held-out rows evaluated on while training
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def job_filters(values: dict[str, Any] | None) -> Filters:
    """The data filters of a training job (REST, CLI): the evaluation split is held out unless they say otherwise."""
    return filters_from_dict({"hold_out_percent": HELD_OUT_PERCENT, **(values or {})})
