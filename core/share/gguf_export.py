"""GGUF files for local runtimes (llama.cpp, Ollama, LM Studio) and the Ollama ``Modelfile`` that goes with one.

Why it looks like this:
- The studio's models are Llama-architecture (SmolLM2 and the tiny test model), so this writes what llama.cpp's
  own ``convert_hf_to_gguf.py`` writes for ``LlamaForCausalLM``, with the ``gguf`` package llama.cpp publishes:
  the same metadata keys, tensor names (``gguf.get_tensor_name_map``), the rotary permutation of q/k rows that
  llama.cpp expects, and the tokenizer (tokens, types, merges, special ids, chat template) in the file itself.
  Anything else (another architecture, a SentencePiece tokenizer, RoPE scaling) is refused with a clear error
  rather than written wrongly; llama.cpp's converter on a merged export handles those.
- Tensor types follow llama.cpp's choices: norms stay F32; ``q8_0`` / ``q4_0`` quantize every matrix whose rows
  split into 32-value blocks (others fall back to F16); with ``q4_0`` the token embedding, which is also the
  output layer when embeddings are tied, stays at Q8_0 (llama.cpp likewise keeps the output layer at higher
  precision: 4-bit there costs the most quality).
- The pre-tokenizer is named only when it is recognised (SmolLM2's family: ``smollm``); an unknown BPE
  pre-tokenizer would make llama.cpp split text differently from training, so it is refused.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core import ASSETS
from core.errors import ValidationError

GGUF_TYPES = ("f16", "bf16", "q8_0", "q4_0")
GGUF_HELP = {
    "f16": "16-bit floats: lossless for these models in practice, largest file",
    "bf16": "bfloat16: same size as f16, float32's range",
    "q8_0": "8-bit blocks: about half of f16, very close to it",
    "q4_0": "4-bit blocks: about a quarter of f16, fastest on CPU, some quality lost",
}
TOKENIZER_ASSETS = ASSETS / "tokenizer"
CHATML_STOPS = ("<|im_start|>", "<|im_end|>")

Progress = Callable[[int, int, str], None]


def write_gguf(
    model: Any, tokenizer: Any, path: Path, quant: str, name: str, progress: Progress | None = None
) -> dict[str, Any]:
    """Write ``model`` (a merged ``LlamaForCausalLM`` in float32) and its tokenizer to one GGUF file at ``path``.

    Returns what was written: the tensor types used and counts, for the export's record.
    """
    import gguf
    import numpy as np

    if quant not in GGUF_TYPES:
        raise ValidationError(f"Unknown GGUF type {quant!r}", hint=f"use one of {', '.join(GGUF_TYPES)}")
    config = model.config
    _check_supported(config)
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    layers = config.num_hidden_layers

    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(float(_rope_theta(config)))
    writer.add_rope_dimension_count(head_dim)
    if head_dim != config.hidden_size // heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(
        {
            "f16": gguf.LlamaFileType.MOSTLY_F16,
            "bf16": gguf.LlamaFileType.MOSTLY_BF16,
            "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
            "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
        }[quant]
    )
    if quant in ("q8_0", "q4_0"):
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _add_tokenizer(writer, tokenizer, config.vocab_size)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, layers)
    state = {k: v for k, v in model.state_dict().items() if not (k == "lm_head.weight" and config.tie_word_embeddings)}
    types: dict[str, int] = {}
    for done, (hf_name, tensor) in enumerate(state.items()):
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ValidationError(
                f"No GGUF name for tensor {hf_name}", hint="only plain Llama checkpoints can be written as GGUF here"
            )
        data = tensor.detach().to("cpu").float().numpy()
        if hf_name.endswith("self_attn.q_proj.weight"):
            data = _permute(data, heads)
        elif hf_name.endswith("self_attn.k_proj.weight"):
            data = _permute(data, kv_heads)
        qtype = _tensor_type(gguf_name, data, quant)
        if qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(gguf_name, data.astype(np.float32))
        elif qtype == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(gguf_name, data.astype(np.float16))
        else:
            writer.add_tensor(gguf_name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        types[qtype.name] = types.get(qtype.name, 0) + 1
        if progress:
            progress(done + 1, len(state), gguf_name)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"tensor_types": types, "tensors": len(state), "bytes": path.stat().st_size}


def modelfile(gguf_name: str, tokenizer: Any, temperature: float, top_p: float, max_new_tokens: int) -> str:
    """An Ollama ``Modelfile`` for the GGUF beside it: ``ollama create NAME -f Modelfile``.

    ChatML templates (SmolLM2's) are written out in Ollama's template language with their stop tokens and the
    system prompt the chat template adds by default; any other template is left to Ollama, which reads the
    GGUF's ``tokenizer.chat_template``. Sampling defaults are the studio's own.
    """
    template = tokenizer.chat_template or ""
    lines = ["# Ollama: ollama create my-model -f Modelfile && ollama run my-model", f"FROM ./{gguf_name}", ""]
    if all(stop in template for stop in CHATML_STOPS):
        lines += [
            'TEMPLATE """{{ if .System }}<|im_start|>system',
            "{{ .System }}<|im_end|>",
            "{{ end }}{{ if .Prompt }}<|im_start|>user",
            "{{ .Prompt }}<|im_end|>",
            "{{ end }}<|im_start|>assistant",
            "{{ .Response }}<|im_end|>",
            '"""',
        ]
        system = _default_system_prompt(tokenizer)
        if system:
            lines.append(f'SYSTEM """{system}"""')
        stops = list(CHATML_STOPS)
    else:
        lines.append("# The chat template is read from the GGUF file (tokenizer.chat_template).")
        stops = [tokenizer.eos_token] if tokenizer.eos_token else []
    lines.append("")
    lines += [f'PARAMETER stop "{stop}"' for stop in dict.fromkeys(stops)]
    lines += [
        f"PARAMETER temperature {temperature:g}",
        f"PARAMETER top_p {top_p:g}",
        f"PARAMETER num_predict {max_new_tokens}",
        "",
    ]
    return "\n".join(lines)


def ollama_model_name(version: str, quant: str) -> str:
    """A name ``ollama create`` accepts for a version's GGUF: lowercase letters, digits, ``.``, ``_`` and ``-``."""
    name = re.sub(r"[^a-z0-9._-]+", "-", f"{version}-{quant}".lower()).strip("-._")
    return name or "studio-model"


def ollama_create_command(modelfile_path: Path | str, name: str) -> str:
    """The shell command that registers an exported GGUF with Ollama. Ollama resolves the Modelfile's
    ``FROM ./<file>.gguf`` against the Modelfile's own folder, so an absolute ``-f`` works from any directory."""
    import shlex

    return f"ollama create {shlex.quote(name)} -f {shlex.quote(str(modelfile_path))}"


# --- internals -------------------------------------------------------------------------------------------------


def _check_supported(config: Any) -> None:
    hint = "export it as a merged model and convert that with llama.cpp's convert_hf_to_gguf.py"
    if getattr(config, "model_type", None) != "llama":
        raise ValidationError(f"GGUF export supports Llama-architecture models, not {config.model_type!r}", hint=hint)
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise ValidationError("GGUF export does not support Llama models with bias terms", hint=hint)
    scaling = getattr(config, "rope_scaling", None) or {}
    kind = scaling.get("rope_type", scaling.get("type", "default")) if isinstance(scaling, dict) else "default"
    if kind not in (None, "default"):
        raise ValidationError(f"GGUF export does not support RoPE scaling of type {kind!r}", hint=hint)


def _rope_theta(config: Any) -> float:
    """``rope_theta`` moved into ``rope_parameters`` in transformers 5; older configs keep it at the top."""
    params = getattr(config, "rope_parameters", None) or {}
    if isinstance(params, dict) and params.get("rope_theta") is not None:
        return params["rope_theta"]
    return getattr(config, "rope_theta", 10000.0)


def _permute(weights: Any, n_head: int) -> Any:
    """Interleave the two rotary halves of each head's rows: llama.cpp's layout for q/k (HF keeps them split)."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _tensor_type(gguf_name: str, data: Any, quant: str) -> Any:
    from gguf import GGMLQuantizationType as T

    if data.ndim == 1:
        return T.F32
    if quant == "f16":
        return T.F16
    if quant == "bf16":
        return T.BF16
    if data.shape[-1] % 32:  # Q8_0 and Q4_0 store blocks of 32 values along a row
        return T.F16
    if quant == "q4_0" and gguf_name in ("token_embd.weight", "output.weight"):
        return T.Q8_0
    return T.Q8_0 if quant == "q8_0" else T.Q4_0


def _add_tokenizer(writer: Any, tokenizer: Any, vocab_size: int) -> None:
    """Tokens, their types, merges, special ids and the chat template, as llama.cpp's converter writes them for
    a byte-level BPE ("gpt2") tokenizer."""
    import gguf

    backend = json.loads(tokenizer.backend_tokenizer.to_str()) if getattr(tokenizer, "is_fast", False) else None
    if not backend or backend.get("model", {}).get("type") != "BPE":
        raise ValidationError(
            "GGUF export supports byte-level BPE tokenizers (SmolLM2's kind)",
            hint="convert a merged export with llama.cpp's convert_hf_to_gguf.py",
        )
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer(backend))
    reverse = {i: token for token, i in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(reverse[i])
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(reverse[i])
            types.append(gguf.TokenType.NORMAL)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    with tempfile.TemporaryDirectory(prefix="studio-gguf-tok-") as folder:
        tokenizer.save_pretrained(folder)
        gguf.SpecialVocab(folder, load_merges=True, n_vocab=vocab_size).add_to_gguf(writer, quiet=True)
    writer.add_add_space_prefix(False)


def _pre_tokenizer(backend: dict[str, Any]) -> str:
    """llama.cpp's name for the tokenizer's pre-tokenization rules; only the SmolLM2 family is recognised."""
    reference = json.loads((TOKENIZER_ASSETS / "tokenizer.json").read_text(encoding="utf-8"))
    if backend.get("pre_tokenizer") == reference.get("pre_tokenizer"):
        return "smollm"
    raise ValidationError(
        "This tokenizer's pre-tokenizer is not one GGUF export recognises (SmolLM2's family)",
        hint="llama.cpp would split text differently from training; convert a merged export "
        "with llama.cpp's convert_hf_to_gguf.py, which knows many more",
    )


def _default_system_prompt(tokenizer: Any) -> str | None:
    """The system prompt a ChatML template inserts when a chat has none (SmolLM2's does), for Ollama's SYSTEM."""
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False)
    except Exception:  # noqa: BLE001 - a template that cannot render has no default to copy
        return None
    found = re.search(r"<\|im_start\|>system\n(.*?)<\|im_end\|>", text, re.S)
    return found.group(1).strip() if found else None
