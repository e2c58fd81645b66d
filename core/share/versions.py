"""What an export reads of a policy version: its row, files, base model and tokenizer.

Shared by every model export (core.share.exports) and by the Export page (``base_hub_id`` warns about a base
model without a Hub id). Loading stays here so the exports read one way; nothing here writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.errors import NotFound, ValidationError
from core.serving.models import LOAD_LOCK
from core.serving.policies import Version, version_row
from storage.db import Database

# What a model spec means on the Hub, for the card's base_model (local dirs and "tiny" have no Hub id).
KNOWN_BASES = {
    "default": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "SmolLM2-135M-Instruct": "HuggingFaceTB/SmolLM2-135M-Instruct",
}


def base_hub_id(spec: str | None) -> str | None:
    """The Hub id a base-model spec stands for, or None (local directory, tiny test model)."""
    from core.serving.models import HUB_ID

    if not spec or spec == "tiny":
        return None
    if spec in KNOWN_BASES:
        return KNOWN_BASES[spec]
    if "/" in spec and HUB_ID.match(spec) and not Path(spec).expanduser().exists():
        return spec
    return None


def trained_version(db: Database, version: str) -> Version:
    """A live trained version; the base policy and reward models are refused (they have nothing of their own to
    export as a chat model)."""
    policy = version_row(db, version)
    if policy is None or policy["deleted_at"] is not None:
        raise NotFound(f"Version {version!r} does not exist (or was deleted)", hint="pick another version")
    if policy["algorithm"] is None:
        raise ValidationError("The base policy has nothing to export", hint="pick a trained version (v1, v2, ...)")
    if policy["algorithm"] == "reward":
        raise ValidationError(f"{version} is a reward model, not a chat version", hint="pick another version")
    return policy


def existing_dir(path: str, version: str) -> Path:
    """A folder a version's row points to, or NotFound: run directories can be moved or deleted by hand."""
    folder = Path(path)
    if not folder.is_dir():
        raise NotFound(
            f"The files of {version} are gone ({folder})",
            hint="the run directory was moved or deleted; the version cannot be exported",
        )
    return folder


def base_model_dir(policy: Version, data_dir: Path | str) -> Path | str:
    """Where the version's base model loads from on this machine (core.serving.models resolves the spec)."""
    from core.serving.models import resolve_model

    return resolve_model(policy["base_model"], Path(data_dir))


def merged_model(policy: Version, version: str, data_dir: Path | str) -> tuple[Any, Any]:
    """(model, tokenizer) of a version in float32 with its adapter folded in; full fine-tunes load as they are."""
    import torch
    from transformers import AutoModelForCausalLM

    model_path = (policy["config"] or {}).get("model_path")
    if policy["adapter_path"]:
        from peft import PeftModel

        adapter_dir = existing_dir(policy["adapter_path"], version)
        with LOAD_LOCK:  # exports run beside the chat model's loads: one model load at a time
            base = AutoModelForCausalLM.from_pretrained(str(base_model_dir(policy, data_dir)), dtype=torch.float32)
            merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
        return merged, load_tokenizer(adapter_dir, policy, data_dir)
    if not model_path:
        raise ValidationError(f"{version} has neither an adapter nor its own weights", hint="pick another version")
    source = existing_dir(model_path, version)
    with LOAD_LOCK:
        model = AutoModelForCausalLM.from_pretrained(str(source), dtype=torch.float32)
    return model, load_tokenizer(source, policy, data_dir)


def load_tokenizer(folder: Path, policy: Version, data_dir: Path | str) -> Any:
    """The version's tokenizer (saved with the adapter by training), else the base model's."""
    from transformers import AutoTokenizer

    source = folder if (folder / "tokenizer_config.json").is_file() else base_model_dir(policy, data_dir)
    return AutoTokenizer.from_pretrained(str(source))
