"""LoRA adapters on the shared model: which are loaded, and per-row adapters in one batched forward.

Several policy versions trained on one base are served from ONE model: their LoRA adapters are loaded side by
side and each row of a batch names the adapter it runs with (PEFT's mixed-adapter batches; ``BASE_ADAPTER`` =
no adapter). The generation scheduler and the log-probability scorer both batch rows of different versions this
way.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from core.errors import ValidationError

if TYPE_CHECKING:
    import torch

BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter" in a mixed-adapter batch


def lora_adapter_names(model: Any) -> set[str]:
    from peft.tuners.lora import LoraLayer

    names: set[str] = set()
    for module in model.modules():
        if isinstance(module, LoraLayer):
            names |= set(module.lora_A.keys()) | set(module.lora_embedding_A.keys())
    return names


def is_peft_model(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


def resolve_adapter_rows(model: Any, adapter_names: Sequence[str | None] | None, rows: int = 2) -> list[str] | None:
    """PEFT's per-row adapter list, or None when the model is to be used as it is."""
    if adapter_names is None:
        return None
    if not isinstance(adapter_names, (tuple, list)) or len(adapter_names) != rows:
        raise ValidationError(
            "adapter_names needs one entry per candidate: (adapter_a, adapter_b)"
            if rows == 2
            else f"adapter_names needs one entry per row ({rows})",
            hint="use None for the base model, e.g. ('v2', None)",
        )
    is_peft = is_peft_model(model) or getattr(model, "_hf_peft_config_loaded", False)
    if not is_peft:
        if any(adapter_names):
            raise ValidationError(
                f"the model has no adapters, cannot use {[a for a in adapter_names if a]}",
                hint="load the policy's adapter onto the base model first",
            )
        return None
    names = [name or BASE_ADAPTER for name in adapter_names]
    unknown = sorted({n for n in names if n != BASE_ADAPTER} - lora_adapter_names(model))
    if unknown:
        raise ValidationError(
            f"unknown adapter(s): {', '.join(unknown)}",
            hint="load the adapter onto the model, or pick one of its loaded adapters",
        )
    return names


class mixed_adapters:
    """Context for one forward pass in which row i runs with adapter ``rows[i]``; yields extra forward kwargs.

    PEFT's per-row hook (the one ``PeftModel.generate(adapter_names=...)`` uses) is registered on every LoRA
    layer for the duration of the pass, for a ``PeftModel`` and for adapters injected through transformers'
    integration (``model.add_adapter`` / ``load_adapter``) alike, and removed on the way out even when the
    pass raised: a leftover hook would apply an old row list to every later call on the shared model.
    ``rows=None``: the model is used as it is (its active adapter, if any).
    """

    def __init__(self, model: Any, rows: list[str] | None) -> None:
        self.model, self.rows = model, rows
        self.handles: list[Any] = []

    def __enter__(self) -> dict[str, Any]:
        if self.rows is None:
            return {}
        from peft.tuners.lora import LoraLayer
        from peft.tuners.lora.model import _adapter_names_pre_forward_hook

        hook = functools.partial(_adapter_names_pre_forward_hook, adapter_names=self.rows)
        module: torch.nn.Module  # a LoraLayer is a mixin of nn.Module layers
        for module in self.model.modules():
            if isinstance(module, LoraLayer):
                self.handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
        return {}

    def __exit__(self, *exc: Any) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
