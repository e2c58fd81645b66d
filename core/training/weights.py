"""The weights a job trains: load the policy and its reference from the base model and the parent adapter, and
save the trained adapter (or full model) into the run dir.

Used only by the training child (core.training.child); heavy libraries (torch, transformers, peft) are imported
inside the functions.

The reference model is the PARENT policy version, never silently the base:

- LoRA / QLoRA, no parent adapter: a fresh adapter on the base; the reference is the base model, obtained by
  disabling the adapter (TRL's default for PEFT models with ``ref_model=None``). No second copy of the weights.
- LoRA / QLoRA, with a parent adapter: the parent is loaded as the trainable ``default`` adapter, so the child
  starts exactly at the parent. TRL 1.16 (DPO, KTO, GRPO with beta > 0) then adds a frozen copy named ``ref`` and
  computes reference log-probs with ``use_adapter(model, "ref")``. Base weights are shared: one full copy only.
  The child keeps the parent's LoRA shape (r, alpha, target modules); ``lora_*`` fields are ignored (logged).
  (TRL 1.16's DPOConfig has no ``model_adapter_name``/``ref_adapter_name``; this is its replacement.)
- Full fine-tuning with a parent adapter: the parent is merged into the base in memory; when the algorithm
  needs a reference held in memory, a second merged copy is loaded as ``ref_model`` (full fine-tuning always
  needs two copies unless reference log-probs are precomputed, in which case the policy at step 0 is used).
- A "parent adapter" directory holding full weights (config.json, no adapter_config.json) is treated as the
  base model itself: the parent of a full fine-tune is a full model.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import ModelError, ValidationError
from core.training.common import QLORA_ON_CPU, ModelSetup, TrainConfig
from core.training.estimate import base_parameter_count
from core.training.rundir import JobConfig

if TYPE_CHECKING:
    from core.serving.hardware import HardwareProfile


# --- LoRA -------------------------------------------------------------------------------------------------------


def lora_config(cfg: TrainConfig):
    """A fresh LoRA adapter for the config; reward models also train (and save) the score head."""
    from peft import LoraConfig, TaskType

    modules = cfg.lora_target_modules.strip()
    targets: str | list[str] = modules
    if modules.lower() != "all-linear":
        targets = [t.strip() for t in modules.split(",") if t.strip()]
    seq_cls = cfg.task == "seq_cls"
    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
        task_type=TaskType.SEQ_CLS if seq_cls else TaskType.CAUSAL_LM,
        modules_to_save=["score"] if seq_cls else None,
        bias="none",
    )


# --- loading ------------------------------------------------------------------------------------------------------


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def _adapter_task(path: str | Path) -> str:
    try:
        return str(json.loads((Path(path) / "adapter_config.json").read_text()).get("task_type") or "")
    except (OSError, json.JSONDecodeError):
        return ""


def model_dtype(cfg: TrainConfig, hardware: HardwareProfile):
    """Frozen base weights in bf16 under LoRA wherever training runs in bf16 (a bf16 GPU, or a CPU with native
    bf16); fp32 everywhere else.

    Under LoRA the base is never updated, so fp32 copies only cost memory and a bf16 cast of every weight in
    every forward and backward (autocast); the adapters stay fp32 (PEFT keeps them so). Measured on a 2-core AMX
    CPU: a DPO-sized forward + backward of the 135M default model 3-7% faster. Full fine-tuning keeps
    fp32 master weights. fp16 weights are avoided: a trainable fp16 tensor (e.g. a reward model's score head)
    breaks the fp16 gradient scaler.
    """
    import torch

    from core.serving.hardware import training_defaults

    if cfg.is_lora and cfg.task != "seq_cls" and training_defaults(hardware, 0)["bf16"]:
        return torch.bfloat16  # (a reward model trains its score head in full: that one stays fp32)
    return torch.float32


def _quantization_config(cfg: TrainConfig, hardware: HardwareProfile):
    if not cfg.finetune.startswith("qlora"):
        return None
    if not hardware.cuda_available:
        raise ValidationError(QLORA_ON_CPU, hint="set finetune to 'lora' (or 'full')")
    import torch
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if hardware.cuda_bf16 else torch.float16
    if cfg.finetune == "qlora4":
        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute
        )
    return BitsAndBytesConfig(load_in_8bit=True)


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as exc:
        raise ModelError(
            f"could not load the tokenizer of {path}: {exc}",
            hint="base_model must be a model directory with tokenizer files",
        ) from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base(path: str, cfg: TrainConfig, hardware: HardwareProfile, *, quantize: bool = True):
    """The base weights as a causal LM (policies) or a 1-label sequence classifier (reward models)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    kwargs: dict[str, Any] = {"dtype": model_dtype(cfg, hardware)}
    if not hardware.cuda_available:
        # On CPU, PyTorch's SDPA (flash kernel) backward costs more than plain eager attention at the sequence
        # lengths CPU training uses: a DPO-sized step of the 135M default model took ~10% less with eager
        # (measured on 2 cores, bf16 and fp32 alike).
        kwargs["attn_implementation"] = "eager"
    quantization = _quantization_config(cfg, hardware) if quantize else None
    if quantization is not None:
        kwargs["quantization_config"] = quantization
        kwargs["device_map"] = {"": 0}
    try:
        if cfg.task == "seq_cls":
            return AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, **kwargs)
        return AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except Exception as exc:
        raise ModelError(
            f"could not load model {path}: {exc}",
            hint="base_model must be a model directory (config.json + weights + tokenizer)",
        ) from exc


def _merged_parent(base: str, parent: str, cfg: TrainConfig, hardware: HardwareProfile):
    """Base + parent adapter merged into plain weights, in memory."""
    from peft import PeftModel

    model = load_base(base, cfg, hardware, quantize=False)
    return PeftModel.from_pretrained(model, parent).merge_and_unload()


def load_for_training(cfg: TrainConfig, job: JobConfig, hardware: HardwareProfile, n_examples: int) -> ModelSetup:
    """Load the model to train and decide its reference; see the module docstring for the rules."""
    base, parent = job.base_model, job.parent_adapter
    if not Path(base).exists():
        raise ModelError(f"base model {base} does not exist", hint="the job must name a local model directory")
    notes: list[str] = []
    if parent:
        if not Path(parent).exists():
            raise ModelError(
                f"parent adapter {parent} does not exist",
                hint="the parent version's adapter directory was moved or deleted",
            )
        if not is_adapter_dir(parent):
            if (Path(parent) / "config.json").is_file():
                notes.append(f"parent {parent} holds full weights: it is used as the base model")
                base, parent = parent, None
            else:
                raise ModelError(
                    f"{parent} is neither a LoRA adapter nor a model directory",
                    hint="pass the parent's adapter directory (adapter_config.json + weights)",
                )
    tokenizer = load_tokenizer(base)
    seq_cls = cfg.task == "seq_cls"
    reference_needed = cfg.reference_in_memory(n_examples)
    setup = ModelSetup(model=None, tokenizer=tokenizer, base_model=base, notes=notes)

    if cfg.is_lora:
        from peft import PeftModel, prepare_model_for_kbit_training

        model = load_base(base, cfg, hardware)
        if cfg.finetune.startswith("qlora"):
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
        if parent and seq_cls and _adapter_task(parent) != "SEQ_CLS":
            # A policy adapter under a reward model: fold it into the backbone, then train a fresh reward adapter.
            # Loaded without its task type: a causal-LM PeftModel wrapper would expect generation methods.
            from peft import PeftConfig

            parent_config = PeftConfig.from_pretrained(parent)
            parent_config.task_type = None
            model = PeftModel.from_pretrained(model, parent, config=parent_config).merge_and_unload()
            setup.peft_config = lora_config(cfg)
            setup.merged_parent = str(Path(parent).resolve())
            notes.append("policy parent adapter merged into the reward model's backbone; new reward adapter on top")
        elif parent:
            model = PeftModel.from_pretrained(model, parent, is_trainable=True)
            notes.append("LoRA continues from the parent adapter (its r/alpha/targets are kept; lora_* ignored)")
            if cfg.needs_reference:
                setup.reference = (
                    "parent policy: frozen copy of the parent adapter ('ref' adapter), base weights "
                    "shared; the new adapter starts from the parent's weights"
                )
        else:
            setup.peft_config = lora_config(cfg)
            if cfg.needs_reference:
                setup.reference = "base model = parent policy (new LoRA adapter disabled for reference passes)"
        setup.model = model
    else:
        if parent:
            setup.model = _merged_parent(base, parent, cfg, hardware).requires_grad_(True)  # PEFT froze them
            notes.append("full fine-tuning from the parent adapter merged into the base weights")
            if cfg.needs_reference:
                if reference_needed:
                    setup.ref_model = _merged_parent(base, parent, cfg, hardware).eval()
                    setup.reference = "parent policy: a second in-memory copy of base + parent adapter (merged)"
                else:
                    setup.reference = "parent policy: log-probs precomputed from the policy before the first update"
        else:
            setup.model = load_base(base, cfg, hardware)
            if cfg.needs_reference:
                setup.reference = "base model = parent policy: " + (
                    "a second copy loaded by TRL"
                    if reference_needed
                    else "log-probs precomputed before the first update"
                )
    for module in (setup.model, setup.ref_model):
        if module is not None and getattr(module.config, "pad_token_id", None) is None:
            module.config.pad_token_id = tokenizer.pad_token_id
    setup.n_params = base_parameter_count(setup.model)
    return setup


def count_trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --- saving -----------------------------------------------------------------------------------------------------


def save_trained(trainer, setup: ModelSetup, cfg: TrainConfig, run_dir: Path) -> dict[str, str]:
    """Write the trained adapter (``adapter/``) or full model (``model/``) atomically; return the result keys.

    With several processes only the main one writes (the others would race on the same files); with a sharded
    model (FSDP, DeepSpeed ZeRO) every process first takes part in gathering the full state dict.
    """
    from accelerate.utils import DistributedType
    from peft import PeftModel

    accelerator = trainer.accelerator
    model = accelerator.unwrap_model(trainer.model)
    is_peft = isinstance(model, PeftModel)
    name = "adapter" if is_peft else "model"
    target = run_dir / name
    sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    state_dict = accelerator.get_state_dict(trainer.model) if sharded else None
    if accelerator.is_main_process:
        partial = run_dir / f".{name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        extra = {"state_dict": state_dict} if state_dict is not None else {}
        if is_peft:
            # Only the trained adapter: TRL's frozen 'ref' copy of the parent is not part of the result.
            model.save_pretrained(str(partial), selected_adapters=["default"], **extra)
        else:
            model.save_pretrained(str(partial), safe_serialization=True, **extra)
        setup.tokenizer.save_pretrained(str(partial))
        (partial / "studio_training.json").write_text(
            json.dumps(
                {
                    "algorithm": cfg.algorithm,
                    "task": cfg.task,
                    "finetune": cfg.finetune,
                    "base_model": setup.base_model,
                    "kind": "reward_model" if cfg.task == "seq_cls" else "policy",
                    "merged_parent": setup.merged_parent,
                },
                indent=2,
            )
            + "\n"
        )
        fsync_tree(partial)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(partial, target)
    accelerator.wait_for_everyone()
    return {f"{name}_path": str(target.resolve())}


def fsync_tree(root: Path) -> None:
    """Flush every file under ``root`` to disk before the directory is renamed into place, so a crash right after
    the rename never leaves a result whose files are empty."""
    for path in Path(root).rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
