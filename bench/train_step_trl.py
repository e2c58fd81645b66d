"""The plain TRL DPO script bench/train_step.py measures our job against: DPOTrainer + DPOConfig + peft LoraConfig,
nothing from core. Run as a child process by train_step.py (one run per process):

    python bench/train_step_trl.py --baseline same|defaults --model DIR --data train.parquet --work DIR --out FILE
        --settings JSON

``same``: the settings our job used (precision, checkpointing, precompute, LoRA shape, lr, ...; see train_step.py);
``defaults``: TRL's DPOConfig defaults. It writes FILE: {"step_end": {step: wall time at on_step_end}, token counts,
parameter count, the resolved precision settings}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def baseline_main(args) -> None:
    """A plain TRL DPO script: DPOTrainer + DPOConfig + peft LoraConfig, nothing from core."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    s = json.loads(args.settings)
    work = Path(args.work)
    stamps: dict[int, float] = {}

    class StepClock(TrainerCallback):
        def on_step_end(self, targs, state, control, **kwargs):
            stamps[state.global_step] = time.time()

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model_kwargs = {"dtype": torch.float32} if args.baseline == "same" else {}
    model = AutoModelForCausalLM.from_pretrained(args.model, **model_kwargs)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    dataset = Dataset.from_parquet(args.data, cache_dir=str(work / "cache"))
    lora = LoraConfig(
        r=s["lora_r"],
        lora_alpha=s["lora_alpha"],
        lora_dropout=s["lora_dropout"],
        target_modules=s["lora_target_modules"],
        task_type="CAUSAL_LM",
        bias="none",
    )
    if args.baseline == "defaults":
        # use_cpu=True is the one addition: without it TrainingArguments refuses bf16 on a machine without a GPU
        # ("Your setup doesn't support bf16/gpu"); bf16 and gradient checkpointing stay TRL's defaults.
        config = DPOConfig(
            output_dir=str(work / "out"),
            per_device_train_batch_size=s["batch"],
            max_steps=s["max_steps"],
            report_to="none",
            use_cpu=True,
        )
    else:
        config = DPOConfig(
            output_dir=str(work / "out"),
            per_device_train_batch_size=s["batch"],
            gradient_accumulation_steps=1,
            num_train_epochs=s["epochs"],
            learning_rate=s["learning_rate"],
            lr_scheduler_type=s["lr_scheduler_type"],
            bf16=s["bf16"],
            fp16=False,
            gradient_checkpointing=s["gradient_checkpointing"],
            use_cpu=True,
            beta=s["beta"],
            loss_type=[s["loss_type"]],
            max_length=s["max_length"],
            precompute_ref_log_probs=s["precompute"],
            precompute_ref_batch_size=s["precompute_batch"],
            logging_steps=1,
            save_strategy="no",
            seed=s["seed"],
            data_seed=s["seed"],
            report_to="none",
            dataloader_pin_memory=False,
        )
    trainer = DPOTrainer(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=[StepClock()],
    )
    ds = trainer.train_dataset
    pair_tokens = [
        2 * len(p) + len(c) + len(r) for p, c, r in zip(ds["prompt_ids"], ds["chosen_ids"], ds["rejected_ids"])
    ]
    base = trainer.model.get_base_model() if hasattr(trainer.model, "get_base_model") else trainer.model
    trainer.train()
    Path(args.out).write_text(
        json.dumps(
            {
                "step_end": stamps,
                "pair_tokens": pair_tokens,
                "seq_tokens": [len(p) + len(c) for p, c in zip(ds["prompt_ids"], ds["chosen_ids"])]
                + [len(p) + len(r) for p, r in zip(ds["prompt_ids"], ds["rejected_ids"])],
                "n_params": sum(p.numel() for name, p in base.named_parameters() if "lora_" not in name),
                "weights_dtype": str(next(base.parameters()).dtype),
                "bf16": config.bf16,
                "gradient_checkpointing": config.gradient_checkpointing,
                "precompute": config.precompute_ref_log_probs,
                "learning_rate": config.learning_rate,
            }
        )
    )


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", choices=("same", "defaults"), required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--settings", required=True)
    return parser.parse_args()


if __name__ == "__main__":
    baseline_main(parse_args())
