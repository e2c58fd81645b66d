"""SFT: imitate whole conversations (``messages`` rows: gold edits, accepted chats) with TRL ``SFTTrainer``.

No reference model. With a parent adapter the LoRA continues from the parent's weights (the child starts at the
parent version); without one a fresh adapter is trained on the base.

``assistant_only_loss``: the loss covers only assistant turns. TRL needs ``{% generation %}`` markers in the chat
template for that; SmolLM2's ChatML template has none, so for the standard ChatML line we add them (rendering is
unchanged). For other templates without markers the loss falls back to the whole conversation (logged).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

from core.training.common import ModelSetup, TrainConfig, log, param, require_columns

CHATML_TURN = "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
CHATML_TURN_MARKED = (
    "{% if message['role'] == 'assistant' %}{{'<|im_start|>assistant\n'}}{% generation %}"
    "{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}" + CHATML_TURN + "{% endif %}"
)


@dataclass
class SFTConfig(TrainConfig):
    """Supervised fine-tuning on conversations."""

    algorithm: ClassVar[str] = "sft"
    dataset_kind: ClassVar[str] = "sft"
    min_examples: ClassVar[int] = 5

    learning_rate: float = param(
        2e-4, "Peak learning rate of AdamW. 1e-4 to 3e-4 with LoRA; ~2e-5 for full fine-tuning.", min=1e-8, max=1.0
    )
    assistant_only_loss: bool = param(
        True, "Learn only from the assistant's turns, not from the user's prompts.", group="algorithm"
    )
    packing: bool = param(
        False,
        "Pack several short conversations into one max_length block: faster on many short examples.",
        group="algorithm",
    )


def prepare_dataset(dataset, cfg: SFTConfig, name: str = "train"):
    return require_columns(dataset, ("messages",), (), "sft", cfg.min_examples, name)


def _training_template(tokenizer) -> str | None:
    """The tokenizer's chat template with generation markers, or None when we cannot add them."""
    from trl.chat_template_utils import has_generation_markers

    template = tokenizer.chat_template
    if not isinstance(template, str):
        return None
    if has_generation_markers(template):
        return template
    if CHATML_TURN in template:
        return template.replace(CHATML_TURN, CHATML_TURN_MARKED)
    return None


def build_trainer(cfg: SFTConfig, setup: ModelSetup, train_dataset, eval_dataset, args_kwargs: dict, callbacks):
    from trl import SFTConfig as TRLSFTConfig, SFTTrainer

    assistant_only = cfg.assistant_only_loss
    tokenizer = setup.tokenizer
    if assistant_only:
        template = _training_template(tokenizer)
        if template is None:
            log("assistant_only_loss: the chat template has no generation markers; training on whole conversations")
            assistant_only = False
        elif template != tokenizer.chat_template:
            tokenizer = copy.deepcopy(tokenizer)  # the saved adapter keeps the original template
            tokenizer.chat_template = template
    args = TRLSFTConfig(
        **args_kwargs,
        max_length=cfg.max_length,
        packing=cfg.packing,
        assistant_only_loss=assistant_only,
    )
    return SFTTrainer(
        model=setup.model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=setup.peft_config,
        callbacks=list(callbacks),
    )
