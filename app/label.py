"""The Gradio app mounted at ``/label``: chat with the policy (labeling arrives with issue 3)."""
from __future__ import annotations

from typing import Any, Callable, Iterator

import gradio as gr

from app.forms import build_config, components_for
from core.errors import StudioError
from core.generate import SamplingParams, stream_chat
from core.studio import Studio

CSS = ".studio-header {margin-bottom: 0.5rem}"


def _text(content: Any) -> str:
    """Gradio 6 message content is a string or a list of parts; the model needs plain text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    if isinstance(content, dict):
        return str(content.get("text", ""))
    return str(content)


def to_messages(message: str, history: list[dict[str, Any]]) -> list[dict[str, str]]:
    turns = [{"role": m["role"], "content": _text(m["content"])} for m in history
             if m.get("role") in ("user", "assistant")]
    return turns + [{"role": "user", "content": message}]


def create_chat_tab(get_studio: Callable[[], Studio]) -> None:
    """Chat with the base policy; answers stream token by token."""

    def respond(message: str, history: list[dict[str, Any]], *sampling_values: Any) -> Iterator[str]:
        if not message or not message.strip():
            raise gr.Error("Type a message first: empty messages are not sent.")
        try:
            sampling = build_config(SamplingParams, sampling_values)
            model, tokenizer = get_studio().model()
            yield from stream_chat(model, tokenizer, to_messages(message, history), sampling)
        except StudioError as exc:
            raise gr.Error(str(exc)) from exc

    gr.ChatInterface(
        respond,
        chatbot=gr.Chatbot(height=480, label="Chat"),
        textbox=gr.Textbox(placeholder="Ask the policy something…", submit_btn=True, scale=7),
        additional_inputs=components_for(SamplingParams),
        additional_inputs_accordion=gr.Accordion("Sampling settings", open=False, render=False),
        fill_height=False,
        api_name="chat",
    )


def create_label_app(get_studio: Callable[[], Studio]) -> gr.Blocks:
    with gr.Blocks(title="RLHF Studio · Label") as blocks:
        gr.Markdown("## RLHF Studio — chat\nChat with the current policy. "
                    "[Open the console](/) for data, training and settings.", elem_classes="studio-header")
        with gr.Tab("Chat"):
            create_chat_tab(get_studio)
    return blocks
