"""A dry-run guess of a job's steps, seconds and peak memory, before anything is written or loaded.

The supervisor shows it on the Train page and in ``launch.py train --dry-run``; it reads only the model's
config.json (no weights), so it is cheap, and it lives apart from the training child (core.training.child) so the
server never imports the child's entry point.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Achieved training throughput in model FLOPs per second per CPU core, and fixed costs, calibrated with LoRA DPO
# (batch 2 pairs) on this project's 2-core machine (AMX bf16): SmolLM2-135M ~1.0 s/step at ~45 tokens per sequence
# (~160 GFLOP/s), the tiny test model ~0.2 s/step (overhead-bound). DESIGN.md's fp32 AVX2 figure (8.2 s per step
# of 4 pairs on SmolLM2-135M) is about half that rate per core.
CPU_FLOPS_PER_CORE = {"bf16": 80e9, "fp32": 40e9}
GPU_FLOPS = 25e12
MICRO_STEP_OVERHEAD_S = {"cpu": 0.15, "cuda": 0.03}
DECODE_STEP_S = {"cpu": 0.1, "cuda": 0.02}  # per generated token position (online RL), on top of its FLOPs
SEQUENCES = {"sft": 1, "reward": 2, "dpo": 2, "kto": 2, "orpo": 2, "online_rl": 1}  # sequences per example


def estimate(cfg, n_examples: int, model_dir: str | Path, avg_tokens: int | None = None) -> dict[str, Any]:
    """A rough dry-run estimate: {"steps", "seconds", "peak_memory_bytes", "assumptions"}. An estimate, not a promise.

    - steps: what the Trainer will run (max_steps, else epochs x examples / effective batch).
    - seconds: model FLOPs / measured throughput + a fixed cost per micro-batch. A forward pass costs
      2 x params FLOPs per token (the LM head included); training costs 3 forwards per token for full fine-tuning,
      ~2 with LoRA (no weight gradients for frozen layers); DPO / KTO add a reference forward per step, or one pass
      over the data when reference log-probs are precomputed; online RL adds decoding max_completion_length
      positions per micro-batch. ``avg_tokens`` is the mean tokens per sequence (prompt + answer, chat template
      included); by default 60% of max_length, which overestimates for short chats. Expect +-50%.
    - peak_memory_bytes: weights (2 copies for full fine-tuning with a live reference), gradients and AdamW moments
      of what is trained, activations ~ batch x length x hidden x layers x 34 bytes, logits ~ batch x length x
      vocab x 4 bytes x 3.
    """
    from transformers import AutoConfig

    from core.serving.hardware import detect_hardware

    config = AutoConfig.from_pretrained(str(model_dir)).get_text_config()
    hidden = int(getattr(config, "hidden_size", 768))
    layers = int(getattr(config, "num_hidden_layers", 12))
    vocab = int(getattr(config, "vocab_size", 32000))
    inter = int(getattr(config, "intermediate_size", 4 * hidden))
    heads = int(getattr(config, "num_attention_heads", 12))
    kv_heads = int(getattr(config, "num_key_value_heads", heads) or heads)
    attention = 2 * hidden * hidden + 2 * hidden * (hidden * kv_heads // heads)
    norms = 2 * hidden * layers + hidden
    # compute: the embedding matrix once (as the LM head; a lookup costs nothing). Shown: every weight, the way
    # base_parameter_count counts a loaded model, so the dry run and the Train page name the same size
    n_params = layers * (attention + 3 * hidden * inter) + vocab * hidden + norms
    shown_params = n_params + (0 if getattr(config, "tie_word_embeddings", True) else vocab * hidden)

    hardware = detect_hardware()
    device = "cuda" if hardware.cuda_available else "cpu"
    if device == "cuda":
        throughput = GPU_FLOPS
    else:
        throughput = CPU_FLOPS_PER_CORE["bf16" if hardware.cpu_native_bf16 else "fp32"] * hardware.cpu_cores

    steps = cfg.planned_steps(n_examples)
    tokens = int(avg_tokens or max(8, int(0.6 * cfg.max_length)))
    seqs = SEQUENCES.get(cfg.algorithm, 1)
    micro_steps = steps * cfg.gradient_accumulation_steps
    precompute = bool(getattr(cfg, "uses_precompute", None) and cfg.uses_precompute(n_examples))
    passes = 3.0 if cfg.finetune == "full" else 2.0
    if cfg.needs_reference and not precompute:
        passes += 1.0
    flops = 2 * n_params * cfg.effective_batch_size * seqs * tokens * passes * steps
    if precompute:
        flops += 2 * n_params * n_examples * seqs * tokens
    seconds = flops / throughput + MICRO_STEP_OVERHEAD_S[device] * micro_steps
    if cfg.algorithm == "online_rl":
        per_position = DECODE_STEP_S[device] + 2 * n_params * cfg.per_device_train_batch_size / throughput
        seconds += cfg.max_completion_length * per_position * micro_steps

    bytes_per_weight = {"qlora4": 0.55, "qlora8": 1.05}.get(
        cfg.finetune, 4 if (cfg.finetune == "full" or device == "cpu") else 2
    )
    weights = n_params * bytes_per_weight
    if cfg.finetune == "full":
        trained = n_params * 12  # fp32 gradients + two AdamW moments
        if cfg.needs_reference and not precompute:
            weights *= 2
    else:
        lora_params = layers * cfg.lora_r * (2 * (4 * hidden) + 3 * (hidden + inter))
        trained = lora_params * 16
    batch_tokens = cfg.per_device_train_batch_size * seqs * min(cfg.max_length, max(tokens, 1) * 2)
    activations = batch_tokens * hidden * layers * 34 + batch_tokens * vocab * 4 * 3
    return {
        "steps": steps,
        "seconds": round(seconds, 1),
        "peak_memory_bytes": int(weights + trained + activations),
        "assumptions": f"rough estimate (+-50%): ~{shown_params / 1e6:.0f}M params, {tokens} tokens per sequence, "
        f"{throughput / 1e9:.0f} GFLOP/s on {device}",
    }


def base_parameter_count(model: Any) -> int:
    """How many parameters the model has, one definition for every place that shows a model's size.

    Counted: every weight of the base model once (``named_parameters`` yields tied input/output embeddings once).
    Not counted: LoRA adapter weights (names with ``lora_``). The served model carries the adapters of the
    versions people chatted with or compared, so counting them made the Train page say "135M-param" for
    SmolLM2-135M before the first job and "139M-param" after it (v1's r=16 adapter on every projection is ~4.9M
    weights). The training child counts with this too (core.training.weights), so its log agrees with the page.
    """
    return sum(p.numel() for name, p in model.named_parameters() if "lora_" not in name)
