"""Reward model: a scalar scorer trained on preference pairs with TRL ``RewardTrainer`` (Bradley-Terry loss).

The model is the base loaded as a 1-label ``AutoModelForSequenceClassification``; with LoRA, the new ``score``
head is trained in full (``modules_to_save``) and saved inside the adapter. ``load_reward_model(path)`` rebuilds
it from ``runs/<id>/adapter`` (or loads ``runs/<id>/model`` after full fine-tuning).

Margins: when the data has a ``margin`` column the loss is ``-log sigmoid(r_chosen - r_rejected - margin)``, so a
pair labelled "much better" must be separated by more. Multi-objective note: the studio computes margins upstream
(core.data.trainsets) from weighted per-aspect ratings (e.g. helpfulness, harmlessness), so one scalar reward model
learns the weighted combination; train several reward models on single-aspect margins to keep objectives apart.

No reference model. A parent adapter that is itself a reward adapter is trained further; a policy (causal LM)
parent is merged into the backbone first and a fresh reward adapter is trained on top.

``RewardScorer`` serves a trained rmN in the studio process: comparing versions and judging pairs score with it.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from core.errors import ModelError, NotFound, ValidationError
from core.serving.models import LOAD_LOCK
from core.training.common import ModelSetup, TrainConfig, param, require_columns, trainer_inputs

if TYPE_CHECKING:  # only for type hints: the training child never loads the database
    from storage.db import Database


@dataclass
class RewardConfig(TrainConfig):
    """Bradley-Terry reward model on chosen/rejected pairs."""

    algorithm: ClassVar[str] = "reward"
    dataset_kind: ClassVar[str] = "reward"
    min_examples: ClassVar[int] = 10
    task: ClassVar[str] = "seq_cls"

    learning_rate: float = param(
        1e-4, "Peak learning rate of AdamW. 5e-5 to 2e-4 with LoRA; ~1e-5 for full fine-tuning.", min=1e-8, max=1.0
    )
    use_margin: bool = param(
        True,
        "Use the data's margin column (how much better chosen is, from ratings) when present: pairs with a "
        "larger margin must get a larger score gap.",
        group="algorithm",
    )
    center_rewards_coefficient: float = param(
        0.01,
        "Pulls scores toward mean 0 so they stay comparable across runs (0 = off; 0.01 recommended).",
        min=0.0,
        max=1.0,
        group="algorithm",
    )


def prepare_dataset(dataset, cfg: RewardConfig, name: str = "train"):
    optional = ("margin",) if cfg.use_margin else ()
    dataset = require_columns(dataset, ("prompt", "chosen", "rejected"), optional, "preference", cfg.min_examples, name)
    if "margin" in dataset.column_names:
        dataset = dataset.map(lambda row: {"margin": _margin(row["margin"])})
    return dataset


def _margin(value) -> float:
    """Missing or NaN margins count as 0 (a plain preference)."""
    return 0.0 if value is None or value != value else float(value)


def build_trainer(cfg: RewardConfig, setup: ModelSetup, train_dataset, eval_dataset, args_kwargs: dict, callbacks):
    from trl import RewardConfig as TRLRewardConfig, RewardTrainer

    args = TRLRewardConfig(
        **args_kwargs,
        max_length=cfg.max_length,
        center_rewards_coefficient=cfg.center_rewards_coefficient or None,
    )
    return RewardTrainer(
        args=args,
        **trainer_inputs(setup, train_dataset, eval_dataset, callbacks),
    )


def load_reward_model(path: str | Path, merge: bool = True, dtype=None):
    """(model, tokenizer) of a trained reward model: an ``adapter/`` (LoRA + score head) or a full ``model/``.

    The adapter is loaded onto ``AutoModelForSequenceClassification(base, num_labels=1)``, where ``base`` is the
    model it was trained on (from studio_training.json, else adapter_config.json). ``merge=True`` folds the LoRA
    weights in, giving a plain ``PreTrainedModel`` (what TRL's GRPO accepts as a reward function). Eval mode.
    """
    import torch

    path = Path(path)
    dtype = dtype or torch.float32
    if not path.is_dir():
        raise ModelError(f"reward model {path} does not exist", hint="train a reward model first (algorithm 'reward')")
    with _quiet_transformers():
        model, tokenizer = _load_reward_model(path, merge, dtype)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    return model.eval(), tokenizer


@contextlib.contextmanager
def _quiet_transformers():
    """The base has no score head, so transformers reports it 'MISSING'; the adapter supplies it. Hide that."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _load_reward_model(path: Path, merge: bool, dtype):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        with LOAD_LOCK:  # see core.serving.models.LOAD_LOCK: one model load at a time in a process
            tokenizer = AutoTokenizer.from_pretrained(str(path))
            if (path / "adapter_config.json").is_file():
                from peft import PeftModel

                base, merged_parent = _reward_base(path)
                model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1, dtype=dtype)
                if merged_parent:  # trained on base + a policy adapter folded into the backbone
                    from peft import PeftConfig

                    parent_config = PeftConfig.from_pretrained(merged_parent)
                    parent_config.task_type = None
                    model = PeftModel.from_pretrained(model, merged_parent, config=parent_config).merge_and_unload()
                model = PeftModel.from_pretrained(model, str(path))
                if merge:
                    model = model.merge_and_unload()
            else:
                model = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=1, dtype=dtype)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(
            f"could not load reward model {path}: {exc}",
            hint="pass the adapter/ or model/ directory of a finished reward job",
        ) from exc
    return model, tokenizer


def _reward_base(path: Path) -> tuple[str, str | None]:
    """(base model dir, policy adapter merged into the backbone or None), from what the training job recorded."""
    info_path = path / "studio_training.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    merged_parent = info.get("merged_parent")
    if merged_parent and not Path(merged_parent).is_dir():
        raise ModelError(
            f"reward model {path} was trained on top of adapter {merged_parent}, which is gone",
            hint="restore that adapter or retrain the reward model",
        )
    base = info.get("base_model")
    if base and Path(base).exists():
        return base, merged_parent
    base = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base:
        raise ModelError(f"{path} does not name its base model", hint="retrain the reward model")
    return base, merged_parent


def score(model, tokenizer, conversations: list[list[dict]]) -> list[float]:
    """Reward of each full conversation (prompt + assistant answer), rendered with the chat template."""
    import torch

    texts = [tokenizer.apply_chat_template(c, tokenize=False) for c in conversations]
    batch = tokenizer(texts, return_tensors="pt", padding=True, padding_side="right", add_special_tokens=False)
    with torch.inference_mode():
        return model(**batch.to(model.device)).logits[:, 0].float().tolist()


# --- scoring answers in the server ------------------------------------------------------------------------


SCORE_BATCH = 8  # conversations per forward pass of a reward scorer


class RewardScorer:
    """A trained reward model (rmN), loaded once per process, scoring (prompt, answer) pairs.

    Here, beside the model it loads, because comparing (core.compare) and judging (core.judging) both score
    with it. The imports are inside the methods: the training child imports this module through the algorithm
    registry and must not pull in the database or the serving layer.
    """

    _cache: dict[str, RewardScorer] = {}
    _lock = threading.Lock()

    def __init__(self, name: str, policy_id: int, path: str) -> None:
        from core.serving.generate import in_short_thread

        self.name, self.policy_id, self.path = name, policy_id, path
        self.model, self.tokenizer = in_short_thread(lambda: load_reward_model(path))

    @classmethod
    def load(cls, db: Database, name: str) -> RewardScorer:
        """The scorer of reward model ``name``, loaded on first use (then shared by every caller)."""
        from core.serving.policies import live_policy

        policy = live_policy(db, name)
        if policy["algorithm"] != "reward":
            raise ValidationError(f"{name} is not a reward model", hint="pick one of the rmN versions")
        path = policy["config"].get("reward_model_path")
        if not path or not Path(path).exists():
            raise NotFound(f"The files of reward model {name} are missing ({path})", hint="retrain the reward model")
        with cls._lock:
            if path not in cls._cache:
                cls._cache[path] = cls(name, policy["id"], path)
            scorer = cls._cache[path]
        scorer.name, scorer.policy_id = name, policy["id"]  # renamed versions keep their loaded model
        return scorer

    def score(self, prompts: Sequence[list[dict[str, str]]], answers: Sequence[str]) -> list[float]:
        """The reward of each answer to its prompt, in order."""
        from core.serving.generate import in_short_thread

        conversations = [list(p) + [{"role": "assistant", "content": a}] for p, a in zip(prompts, answers)]

        def run() -> list[float]:
            out: list[float] = []
            for i in range(0, len(conversations), SCORE_BATCH):
                out += score(self.model, self.tokenizer, conversations[i : i + SCORE_BATCH])
            return out

        with self._lock:  # one scorer model, many page sessions
            return in_short_thread(run)
