"""Gradio form controls generated from config dataclasses (one source of truth for fields), and the one adapter
from the studio's errors to Gradio's."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import gradio as gr

from core.config import form_fields, form_value
from core.errors import StudioError
from core.serving.scheduler import MAX_BATCH_ROWS


@contextmanager
def gradio_errors() -> Iterator[None]:
    """A StudioError raised in the block becomes the labeling app's error notice (its message and hint): the one
    adapter from the studio's errors to Gradio's, so every handler shows them the same way."""
    try:
        yield
    except StudioError as exc:
        raise gr.Error(str(exc)) from exc


def components_for(config_cls: type) -> list[gr.components.Component]:
    """One control per field of a config dataclass (core.config.form_fields, as the console's forms): a dropdown
    for ``choices``, a slider when bounded, a number, a checkbox, or a text box (comma-separated for a sequence,
    empty for None), with the field's help."""
    components: list[gr.components.Component] = []
    for f in form_fields(config_cls):
        comp: gr.components.Component
        if f.kind == "choice":
            comp = gr.Dropdown(list(f.options), value=f.default, label=f.label, info=f.help)
        elif f.kind == "bool":
            comp = gr.Checkbox(value=f.default, label=f.label, info=f.help)
        elif f.kind in ("int", "float") and f.min is not None and f.max is not None:
            comp = gr.Slider(
                f.min, f.max, value=f.default, step=1 if f.kind == "int" else 0.05, label=f.label, info=f.help
            )
        elif f.kind in ("int", "float", "optional_float"):
            comp = gr.Number(
                value=f.default,
                label=f.label,
                info=f.help,
                precision=0 if f.kind == "int" else None,
                minimum=f.min,
                maximum=f.max,
            )
        elif f.kind == "sequence":
            comp = gr.Textbox(value=", ".join(map(str, f.default)), label=f.label, info=f.help)
        else:
            comp = gr.Textbox(value="" if f.default is None else str(f.default), label=f.label, info=f.help)
        components.append(comp)
    return components


def build_config(config_cls: type, values: tuple[Any, ...]) -> Any:
    """Inverse of :func:`components_for`: the dataclass from the components' values, types restored
    (core.config.form_value)."""
    return config_cls(**{f.name: form_value(f, value) for f, value in zip(form_fields(config_cls), values)})


# --- API names -------------------------------------------------------------------------------------------


def name_inputs(fn: Callable, names: Sequence[tuple[str, Any]]) -> Callable:
    """Give a handler's ``*values`` names and defaults, as API clients see them (gradio_client, "Use via API").

    Gradio reads parameter names and defaults from the handler's signature (``param_4`` for ``*values``) and
    passes the inputs positionally in that order, so the handler keeps its ``*values`` and only its
    ``__signature__`` is written: ``temperature=0.7`` instead of ``param_4``, optional instead of required.

    Why a written signature rather than plain named parameters: the names are known only when the app is built
    (one rating input per active aspect, one per ``SamplingParams`` field), so no ``def`` can spell them out
    without repeating the config dataclass and freezing the aspects. Gradio's own ``inputs_kwargs`` names the
    inputs too, but hands them over as ``**kwargs`` without defaults: every vote input would become required
    for API clients (``client.predict(helpfulness_a="5", api_name="/vote_a")`` would fail). Gradio reads the
    signature through ``inspect.signature``, which honours ``__signature__``, so this stays a supported path.
    """
    signature = inspect.signature(fn)
    fixed = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    extra = [
        inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default) for name, default in names
    ]
    fn.__signature__ = signature.replace(parameters=fixed + extra)  # type: ignore[attr-defined]
    return fn


def config_names(config_cls: type) -> list[tuple[str, Any]]:
    """(field, default) of a config dataclass whose form is the handler's trailing inputs."""
    return [(f.name, f.default) for f in dataclasses.fields(config_cls)]


# --- generation events ------------------------------------------------------------------------------------

# Every event that generates (chat pairs, regenerate, arena) shares one Gradio concurrency group as large as the
# scheduler's batch: concurrent labelers reach the scheduler together and share decoding steps, the scheduler's
# own line (with "N ahead of you") holds the rest, and Gradio queues beyond that.
GENERATION_CONCURRENCY: dict[str, Any] = {"concurrency_id": "generate", "concurrency_limit": MAX_BATCH_ROWS}


# Screen updates of streaming answers: ~5 per second for a lone labeler, and about 10 per second for the whole
# server when many stream at once. Readers see no difference, and the server's Python work per update (Gradio
# post-processing, diffing, sending) stays small next to generation, which it would otherwise slow down
# (measured with bench/concurrency.py).
UI_UPDATE_S = 0.2
UI_UPDATES_PER_S = 10


def screen_pace(studio: Any) -> Callable[[], float]:
    """Seconds between two screen updates of one stream, from how many requests the model is serving now."""
    return lambda: max(UI_UPDATE_S, studio.generation_load() / UI_UPDATES_PER_S)


def waiting_notice(ahead: int) -> str:
    """What a labeler sees while the request waits for a place in the running batch."""
    return (
        "Every generation slot is busy: you are next."
        if ahead == 0
        else f"Every generation slot is busy: {ahead} ahead of you."
    )
