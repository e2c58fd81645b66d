"""A studio with a history of trained versions, without the training: random LoRA adapters registered as a
training job registers them (bench/benchmarks.py, bench/durability.py and tests/e2e/test_page_speed.py)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from storage.db import Database


def random_versions(db: Database, runs_dir: Path, model_spec: str, base_path: Path, count: int) -> list[str]:
    """Versions v1..vN on the base ``model_spec`` (loaded from ``base_path``): real LoRA adapters (r=16 on q/v,
    random weights, seed n) saved where a training job saves them and registered as a job registers them: a
    studio with a history of trained versions, without the training (~1 s per version on the default model)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from core.serving.policies import ensure_base_policy, register_policy

    parent = ensure_base_policy(db, model_spec)
    names = []
    for n in range(1, count + 1):
        torch.manual_seed(n)
        lora = get_peft_model(
            AutoModelForCausalLM.from_pretrained(base_path),
            LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
        )
        out = Path(runs_dir) / f"v{n}" / "adapter"
        lora.save_pretrained(str(out))
        parent = register_policy(
            db,
            f"v{n}",
            parent,
            model_spec,
            "dpo",
            str(out),
            data_hash=f"seed{n}",
            config={"beta": 0.1, "model_path": str(out)},
            metrics={"loss": round(0.69 - 0.05 * n, 3)},
        )
        names.append(f"v{n}")
    return names
