"""Online RL: GRPO (TRL ``GRPOTrainer``) on prompts, scored by a reward model trained with ``reward``.

Each step samples ``num_generations`` answers per prompt from the current policy, scores them with the reward
model (``load_reward_model`` merges its LoRA into a plain ``AutoModelForSequenceClassification``, which TRL accepts
as a reward function: it renders prompt + answer with the chat template and reads the score), and reinforces answers
that beat their group's mean. ``beta`` > 0 adds a KL penalty to the reference, so TRL logs ``kl`` next to
``reward`` / ``reward_std`` at every logging step.

Reference model: the parent policy version. Fresh LoRA: base with the adapter disabled. LoRA from a parent adapter:
TRL's frozen ``ref`` copy of the parent adapter (base weights shared). Full fine-tuning from a parent adapter: TRL
1.16's GRPOTrainer takes no ``ref_model`` argument and loads the reference from the policy's config path (the base),
so we replace it after construction with base + parent merged (the base copy TRL loaded is dropped; a transient
extra load, documented limitation). GRPO is preferred over RLOO here: same reward-function API, group-relative
advantages without a value model, and TRL logs KL and reward the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from core.errors import ValidationError
from core.training.common import ModelSetup, TrainConfig, log, param, require_columns, trainer_inputs


@dataclass
class OnlineRLConfig(TrainConfig):
    """GRPO with the studio's reward model as the reward function."""

    algorithm: ClassVar[str] = "online_rl"
    dataset_kind: ClassVar[str] = "prompts"
    min_examples: ClassVar[int] = 4
    needs_reference: ClassVar[bool] = True

    learning_rate: float = param(
        1e-5, "Peak learning rate of AdamW. RL is fragile: 1e-6 to 2e-5 with LoRA.", min=1e-8, max=1.0
    )
    per_device_train_batch_size: int = param(
        4,
        "Completions per forward/backward pass (not prompts): prompts per step = this x accumulation / "
        "num_generations.",
        min=1,
        max=1024,
    )
    gradient_accumulation_steps: int = param(
        1, "Passes accumulated per optimizer step; batch x this must be a multiple of num_generations.", min=1, max=1024
    )
    max_length: int = param(
        512,
        "Longest prompt + answer in tokens; prompts longer than max_length - max_completion_length are skipped.",
        min=16,
        max=131072,
    )
    beta: float = param(
        0.04,
        "KL penalty to the reference (the parent version): higher keeps answers closer to the parent and "
        "guards against reward hacking. Must be > 0.",
        min=1e-4,
        max=10.0,
        group="algorithm",
    )
    num_generations: int = param(
        4,
        "Answers sampled per prompt; each is rewarded relative to its group's mean. More = steadier, slower.",
        min=2,
        max=64,
        group="algorithm",
    )
    max_completion_length: int = param(128, "Longest generated answer in tokens.", min=4, max=8192, group="algorithm")
    temperature: float = param(
        1.0, "Sampling temperature: higher explores more varied answers.", min=0.1, max=2.0, group="algorithm"
    )
    loss_type: str = param(
        "dapo",
        "dapo: token-level loss normalised over the batch (TRL default, no length bias). grpo: the original "
        "per-sequence normalisation. dr_grpo: constant normalisation. bnpo: local-batch token normalisation.",
        choices=("dapo", "grpo", "dr_grpo", "bnpo"),
        group="algorithm",
    )
    scale_rewards: str = param(
        "group",
        "Divide advantages by the reward std of the group, the whole batch, or not at all (none).",
        choices=("group", "batch", "none"),
        group="algorithm",
    )

    use_vllm: bool = param(
        False,
        "Generate the answers with vLLM (colocated on the training GPUs: much faster sampling) instead of "
        "the policy's own generate. Needs CUDA GPUs and the vllm package.",
        group="algorithm",
    )

    def extra_problems(self) -> list[tuple[str, str]]:
        problems = []
        if self.use_vllm:
            import importlib.util

            import torch

            if not torch.cuda.is_available() or importlib.util.find_spec("vllm") is None:
                problems.append(
                    (
                        "use_vllm needs CUDA GPUs and the vllm package",
                        "turn use_vllm off here, or pip install vllm on a GPU machine",
                    )
                )
        if self.effective_batch_size % self.num_generations:
            problems.append(
                (
                    f"per_device_train_batch_size x gradient_accumulation_steps ({self.effective_batch_size}) must"
                    f" be a "
                    f"multiple of num_generations ({self.num_generations})",
                    f"e.g. per_device_train_batch_size={self.num_generations}, gradient_accumulation_steps=1",
                )
            )
        if self.max_completion_length >= self.max_length:
            problems.append(
                (
                    f"max_completion_length ({self.max_completion_length}) must be < max_length ({self.max_length})",
                    "raise max_length or lower max_completion_length",
                )
            )
        return problems

    def planned_steps(self, n_examples: int, num_processes: int = 1) -> int:
        if self.max_steps > 0:
            return self.max_steps
        # Each prompt is repeated num_generations times in the sampler.
        return super().planned_steps(n_examples * self.num_generations, num_processes)


def prepare_dataset(dataset, cfg: OnlineRLConfig, name: str = "train"):
    return require_columns(dataset, ("prompt",), (), "prompts", cfg.min_examples, name)


def _fits(tokenizer, limit: int):
    def keep(row) -> bool:
        prompt = row["prompt"]
        if isinstance(prompt, list):
            ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False)
        else:
            ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        return len(ids) <= limit

    return keep


def build_trainer(cfg: OnlineRLConfig, setup: ModelSetup, train_dataset, eval_dataset, args_kwargs: dict, callbacks):
    from trl import GRPOConfig, GRPOTrainer
    from trl.trainer.utils import add_fused_lm_head, disable_dropout_in_model

    if setup.reward_model is None:
        raise ValidationError("online RL needs a reward model", hint="train one (algorithm 'reward') and pass its path")
    limit = cfg.max_length - cfg.max_completion_length
    before = len(train_dataset)
    train_dataset = train_dataset.filter(_fits(setup.tokenizer, limit))
    if len(train_dataset) < before:
        log(f"skipped {before - len(train_dataset)} prompt(s) longer than {limit} tokens")
    if len(train_dataset) == 0:
        raise ValidationError(
            f"every prompt is longer than {limit} tokens", hint="raise max_length or lower max_completion_length"
        )
    if eval_dataset is not None:
        eval_dataset = eval_dataset.filter(_fits(setup.tokenizer, limit))
    # TRL names the reward metrics after the model's config path: "rewards/reward_model/mean".
    setup.reward_model.config._name_or_path = "reward_model"
    # Evaluation samples num_generations answers per prompt too: its batch must hold whole groups.
    args_kwargs = {**args_kwargs, "per_device_eval_batch_size": cfg.num_generations}
    vllm: dict[str, Any] = {"vllm_mode": "colocate"} if cfg.use_vllm else {}
    args = GRPOConfig(
        **args_kwargs,
        beta=cfg.beta,
        num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature,
        loss_type=cfg.loss_type,
        scale_rewards=cfg.scale_rewards,
        use_vllm=cfg.use_vllm,
        **vllm,
    )
    trainer = GRPOTrainer(
        reward_funcs=setup.reward_model,
        reward_processing_classes=setup.reward_tokenizer,
        args=args,
        **trainer_inputs(setup, train_dataset, eval_dataset, callbacks),
    )
    if setup.ref_model is not None:  # full fine-tuning from a parent: the reference must be the parent, not the base
        disable_dropout_in_model(setup.ref_model)
        add_fused_lm_head(setup.ref_model, temperature=cfg.temperature)  # as TRL patches the reference it builds
        trainer.ref_model = trainer.accelerator.prepare_model(setup.ref_model, evaluation_mode=True)
    return trainer
