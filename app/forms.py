"""Gradio form controls generated from config dataclasses (one source of truth for fields)."""
from __future__ import annotations

import dataclasses
from typing import Any

import gradio as gr


def components_for(config_cls: type) -> list[gr.components.Component]:
    """One slider / number / checkbox / textbox per dataclass field, with help text from metadata."""
    components = []
    defaults = config_cls()
    for f in dataclasses.fields(config_cls):
        meta, value = f.metadata, getattr(defaults, f.name)
        label = f.name.replace("_", " ").capitalize()
        info = meta.get("help")
        if isinstance(value, bool):
            comp = gr.Checkbox(value=value, label=label, info=info)
        elif isinstance(value, (int, float)) and "min" in meta and "max" in meta:
            step = 1 if isinstance(value, int) else 0.05
            comp = gr.Slider(meta["min"], meta["max"], value=value, step=step, label=label, info=info)
        elif isinstance(value, (int, float)):
            comp = gr.Number(value=value, label=label, info=info, precision=0 if isinstance(value, int) else None)
        else:
            comp = gr.Textbox(value=str(value), label=label, info=info)
        components.append(comp)
    return components


def build_config(config_cls: type, values: tuple[Any, ...]) -> Any:
    """Inverse of :func:`components_for`: the dataclass from the components' values, types restored."""
    kwargs = {}
    for f, value in zip(dataclasses.fields(config_cls), values):
        default = getattr(config_cls(), f.name)
        kwargs[f.name] = type(default)(value) if value is not None else default
    return config_cls(**kwargs)
