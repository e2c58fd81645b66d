"""Chat streaming and paired candidates, on the real tiny model (real tokenizer, real generate, real PEFT)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from core.errors import ValidationError
from core.serving.generate import PairStreamer, SamplingParams, generate_pair, prepare_chat, stream_chat, stream_pair
from core.serving.models import load_model
from core.serving.scheduler import scheduler_for

MESSAGES = [{"role": "user", "content": "Name three colours of the rainbow."}]
SEED = 1234


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    return load_model(tiny_model_dir, dtype="float32")  # compared with fp32 copies below


def local_model(tiny_model_dir: Path):
    """A private copy of the tiny model (the load_model cache is shared: tests must not mutate it)."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    return model.eval()


def raw_generate(model, tokenizer, input_ids: torch.Tensor, seed: int | None = None, **kwargs) -> list[list[int]]:
    """Plain batched model.generate, no streamer; the generated ids of each row, cut after its eos."""
    if seed is not None:
        torch.manual_seed(seed)
    with torch.inference_mode():
        out = model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            pad_token_id=tokenizer.pad_token_id,
            **kwargs,
        )
    rows = []
    for row in out[:, input_ids.shape[1] :].tolist():
        if tokenizer.eos_token_id in row:
            row = row[: row.index(tokenizer.eos_token_id) + 1]
        rows.append(row)
    return rows


def lora_config() -> LoraConfig:
    # init_lora_weights=False: random A and B, so the adapter really changes what the model says
    return LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "up_proj"], init_lora_weights=False)


# --- streaming --------------------------------------------------------------------------------------------


def test_pair_streams_growing_snapshots_that_end_as_one_batched_generate(tiny):
    model, tokenizer = tiny
    sampling = SamplingParams(temperature=0.9, top_p=0.95, max_new_tokens=32)
    updates = list(stream_pair(model, tokenizer, MESSAGES, sampling, seed=SEED))

    *streaming, final = updates
    assert final.finished and final.latency_ms > 0 and final.done_a and final.done_b
    assert not any(u.finished for u in streaming) and all(u.latency_ms is None for u in streaming)
    for side in ("a", "b"):
        texts = [getattr(u, f"text_{side}") for u in updates]
        assert len(set(texts)) > 5, f"side {side} did not stream: {texts}"
        for before, after in zip(texts, texts[1:]):
            assert after.startswith(before), (before, after)
        assert all("\ufffd" not in t for t in texts[:-1]), "half a multi-byte character was shown"

    ids = prepare_chat(tokenizer, model, MESSAGES, sampling.max_new_tokens).input_ids
    row_a, row_b = raw_generate(model, tokenizer, ids.repeat(2, 1), seed=SEED, **sampling.generate_kwargs())
    assert final.text_a == tokenizer.decode(row_a, skip_special_tokens=True)
    assert final.text_b == tokenizer.decode(row_b, skip_special_tokens=True)
    assert (final.new_tokens_a, final.new_tokens_b) == (len(row_a), len(row_b))
    assert final.text_a != final.text_b, "two samples of a random model should differ"

    again = generate_pair(model, tokenizer, MESSAGES, sampling, seed=SEED)
    assert (again.text_a, again.text_b) == (final.text_a, final.text_b), "a seed makes the pair reproducible"


def test_greedy_pair_equals_single_greedy_answer_token_for_token(tiny):
    model, tokenizer = tiny
    sampling = SamplingParams(temperature=0, max_new_tokens=40)
    chat_snapshots = list(stream_chat(model, tokenizer, MESSAGES, sampling))
    ids = prepare_chat(tokenizer, model, MESSAGES, sampling.max_new_tokens).input_ids
    (single,) = raw_generate(model, tokenizer, ids, do_sample=False, max_new_tokens=40)

    pair = generate_pair(model, tokenizer, MESSAGES, sampling)

    assert len(chat_snapshots) > 5
    assert chat_snapshots[-1] == tokenizer.decode(single, skip_special_tokens=True)
    assert pair.text_a == pair.text_b == chat_snapshots[-1]
    assert pair.new_tokens_a == pair.new_tokens_b == len(single)
    assert pair.eos_a == pair.eos_b == (single[-1] == tokenizer.eos_token_id)


def test_stream_chat_passes_generate_overrides_and_refuses_reserved_ones(tiny):
    model, tokenizer = tiny
    sampling = SamplingParams(temperature=0, max_new_tokens=12)
    forced = generate_pair(model, tokenizer, MESSAGES, sampling, min_new_tokens=12)
    assert forced.new_tokens_a == forced.new_tokens_b == 12 and not forced.eos_a
    with pytest.raises(ValidationError, match="streamer"):
        next(stream_chat(model, tokenizer, MESSAGES, sampling, streamer=None))
    with pytest.raises(ValidationError, match="input_ids"):
        next(stream_pair(model, tokenizer, MESSAGES, sampling, input_ids=None))


# --- the streamer itself ----------------------------------------------------------------------------------


def test_pair_streamer_never_shows_half_a_character_and_stops_a_row_at_eos(tiny):
    _, tokenizer = tiny
    eos = tokenizer.eos_token_id
    text_a, text_b = "🤗 café 日本語 naïve", "ok 👍 done"
    ids_a, ids_b = tokenizer(text_a)["input_ids"], tokenizer(text_b)["input_ids"]
    ids_b = ids_b + [eos] + [eos] * (len(ids_a) - len(ids_b) - 1) + [123]  # eos, padding, a stray token
    assert len(ids_b) == len(ids_a) + 1
    ids_a = ids_a + [eos]

    streamer = PairStreamer(tokenizer, [eos], rows=2)
    streamer.put(torch.tensor([[5, 6, 7], [5, 6, 7]]))  # the prompt: skipped
    seen = []
    for a, b in zip(ids_a, ids_b):
        streamer.put(torch.tensor([a, b]))
        seen.append(streamer.snapshot())
    streamer.end()

    assert all("\ufffd" not in t for snap in seen for t in snap.texts)
    assert [s.texts[0] for s in seen][-1] == text_a
    assert streamer.snapshot().texts == (text_a, text_b)
    assert streamer.snapshot().new_tokens == (len(ids_a), tokenizer(text_b)["input_ids"].__len__() + 1)
    assert streamer.snapshot().eos == (True, True)
    first_done_b = next(i for i, s in enumerate(seen) if s.done[1])
    assert not seen[first_done_b].done[0] and seen[-1].texts[0] == text_a, "A goes on after B ended"
    assert list(streamer) == [(text_a, text_b)], "a consumer that lags gets the latest snapshot, then the end"


# --- adapters ---------------------------------------------------------------------------------------------


def decoder(model):
    """The transformer stack inside a (PEFT-wrapped) causal LM: every forward pass goes through it."""
    return next(m for m in model.modules() if type(m).__name__ == "LlamaModel")


def greedy_single(model, tokenizer, sampling) -> str:
    *_, text = stream_chat(model, tokenizer, MESSAGES, sampling)
    return text


@pytest.mark.parametrize("attach", ["peft_model", "transformers_add_adapter"])
def test_pair_with_two_adapters_uses_each_rows_adapter_in_one_call(tiny_model_dir, tiny, attach):
    _, tokenizer = tiny
    sampling = SamplingParams(temperature=0, max_new_tokens=24)
    torch.manual_seed(7)
    if attach == "peft_model":
        model = get_peft_model(local_model(tiny_model_dir), lora_config(), adapter_name="lora1").eval()
        with_adapter = greedy_single(model, tokenizer, sampling)
        with model.disable_adapter():
            without = greedy_single(model, tokenizer, sampling)
    else:
        model = local_model(tiny_model_dir)
        model.add_adapter(lora_config(), adapter_name="lora1")
        model.eval()
        with_adapter = greedy_single(model, tokenizer, sampling)
        model.disable_adapters()
        without = greedy_single(model, tokenizer, sampling)
        model.enable_adapters()
    base_text = greedy_single(local_model(tiny_model_dir), tokenizer, sampling)
    assert without == base_text and with_adapter != without, "the random adapter must change the answer"

    batch_sizes = []
    handle = decoder(model).register_forward_pre_hook(
        lambda module, args, kwargs: batch_sizes.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    pair = generate_pair(model, tokenizer, MESSAGES, sampling, adapter_names=("lora1", None))
    swapped = generate_pair(model, tokenizer, MESSAGES, sampling, adapter_names=(None, "lora1"))
    handle.remove()

    assert (pair.text_a, pair.text_b) == (with_adapter, without)
    assert (swapped.text_a, swapped.text_b) == (without, with_adapter)
    assert batch_sizes and set(batch_sizes) == {2}, "both rows of a pair go through every forward pass together"
    assert greedy_single(model, tokenizer, sampling) == with_adapter, "the model is left as it was"

    with pytest.raises(ValidationError, match="unknown adapter"):
        generate_pair(model, tokenizer, MESSAGES, sampling, adapter_names=("lora2", None))


def test_adapter_names_on_a_model_without_adapters_is_refused(tiny):
    model, tokenizer = tiny
    with pytest.raises(ValidationError, match="no adapters"):
        generate_pair(model, tokenizer, MESSAGES, SamplingParams(max_new_tokens=4), adapter_names=("v2", None))
    both_base = generate_pair(
        model, tokenizer, MESSAGES, SamplingParams(temperature=0, max_new_tokens=4), adapter_names=(None, None)
    )
    assert both_base.text_a == both_base.text_b


# --- limits and failures ----------------------------------------------------------------------------------


def test_huge_message_is_truncated_to_the_context_and_still_answered(tiny):
    model, tokenizer = tiny
    messages = [{"role": "user", "content": "word " * 20_000}]  # 100k characters, ~20k tokens
    pair = generate_pair(model, tokenizer, messages, SamplingParams(temperature=0, max_new_tokens=8))
    context = model.config.max_position_embeddings
    assert pair.truncated_tokens > 0
    assert prepare_chat(tokenizer, model, messages, 8).input_ids.shape[1] == context - 8
    assert pair.new_tokens_a > 0 and pair.text_a


def consume_with_deadline(iterator, seconds: float = 60):
    """Run the whole iterator in a thread: a hang fails the test instead of freezing the suite."""
    outcome = {}

    def run():
        try:
            outcome["items"] = list(iterator)
        except BaseException as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), "the iterator hung"
    return outcome


@pytest.mark.parametrize("streaming", ["pair", "chat"])
def test_error_in_generation_surfaces_to_the_caller(tiny_model_dir, tiny, streaming):
    _, tokenizer = tiny
    model = local_model(tiny_model_dir)
    sampling = SamplingParams(temperature=0, max_new_tokens=16)
    calls = 0

    def explode_on_third_step(module, args):
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("boom in the forward pass")

    handle = model.model.register_forward_pre_hook(explode_on_third_step)
    run = stream_pair if streaming == "pair" else stream_chat
    outcome = consume_with_deadline(run(model, tokenizer, MESSAGES, sampling))
    handle.remove()

    assert isinstance(outcome.get("error"), RuntimeError) and "boom" in str(outcome["error"])
    assert scheduler_for(model).idle(timeout=5), "the scheduler did not recover from the error"
    assert greedy_single(model, tokenizer, sampling), "the model still generates afterwards"


def test_failed_mixed_adapter_call_leaves_no_adapter_hooks_behind(tiny_model_dir, tiny):
    _, tokenizer = tiny
    sampling = SamplingParams(temperature=0, max_new_tokens=16)
    model = get_peft_model(local_model(tiny_model_dir), lora_config(), adapter_name="lora1").eval()
    with_adapter = greedy_single(model, tokenizer, sampling)

    calls = 0

    def explode_on_second_step(module, args):  # after the per-row hooks are on the LoRA layers
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("boom with adapter hooks on")

    handle = decoder(model).register_forward_pre_hook(explode_on_second_step)
    outcome = consume_with_deadline(stream_pair(model, tokenizer, MESSAGES, sampling, adapter_names=("lora1", None)))
    handle.remove()
    assert isinstance(outcome.get("error"), RuntimeError)
    # a leftover hook would force the 2-row adapter list onto this 1-row call (and fail or change it)
    assert greedy_single(model, tokenizer, sampling) == with_adapter


def test_leaving_a_stream_early_cancels_the_generation(tiny):
    model, tokenizer = tiny
    sampling = SamplingParams(temperature=0, max_new_tokens=2000)
    stream = stream_pair(model, tokenizer, MESSAGES, sampling, min_new_tokens=2000)
    first = next(stream)
    assert not first.finished
    stream.close()  # what Gradio does when the browser tab goes away
    started = time.monotonic()
    assert scheduler_for(model).idle(timeout=10), "the generation went on after the caller left"
    assert time.monotonic() - started < 2
