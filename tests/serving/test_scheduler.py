"""The batched generation scheduler on the real tiny model: shared decoding steps give every request the answer it
would get alone, rows of different adapters share a step, the line is fair and bounded, leaving cancels."""

from __future__ import annotations

import threading

import pytest
import torch
from peft import LoraConfig
from transformers import AutoModelForCausalLM

from core.errors import Busy
from core.serving.generate import SamplingParams, generate_batch, generate_pair, stream_chat, stream_pair
from core.serving.models import load_model
from core.serving.scheduler import scheduler_for

SAMPLED = SamplingParams(temperature=0.9, top_p=0.95, max_new_tokens=24)
GREEDY = SamplingParams(temperature=0, max_new_tokens=24)
PROMPTS = [
    "Name three colours.",
    "Why is the sky blue? Answer in one long sentence, please, with detail.",
    "Hi",
    "Write a haiku about autumn leaves falling on a quiet pond at dusk.",
    "2+2?",
    "Tell me a joke.",
]


def conversation(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture()
def model_and_tokenizer(tiny_model_dir):
    """A private model object (its own scheduler, limits changed freely) with one random LoRA adapter."""
    _, tokenizer = load_model(tiny_model_dir, dtype="float32")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    torch.manual_seed(7)
    model.add_adapter(
        LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
        adapter_name="lora1",
    )
    return model, tokenizer


def run_concurrently(calls) -> list:
    """Start every call at the same moment in its own thread; their results in order."""
    results: list = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def run(i, call):
        start.wait()
        try:
            results[i] = call()
        except BaseException as exc:  # noqa: BLE001 - compared by the test
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def test_concurrent_pairs_share_steps_and_each_gets_its_solo_answer(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    rows = [("lora1", None), (None, "lora1"), ("lora1", "lora1"), (None, None), ("lora1", None), (None, None)]
    calls = [
        lambda p=p, r=r, s=s, i=i: generate_pair(model, tokenizer, conversation(p), s, adapter_names=r, seed=i)
        for i, (p, r, s) in enumerate(zip(PROMPTS, rows, [SAMPLED, GREEDY] * 3))
    ]
    solo = [call() for call in calls]
    scheduler = scheduler_for(model)
    steps_before = scheduler.stats.steps

    together = run_concurrently(calls)

    assert [(r.text_a, r.text_b) for r in together] == [(r.text_a, r.text_b) for r in solo]
    assert [(r.new_tokens_a, r.new_tokens_b) for r in together] == [(r.new_tokens_a, r.new_tokens_b) for r in solo]
    assert scheduler.stats.max_rows >= 6, "concurrent requests were not decoded in one batch"
    solo_steps = sum(max(r.new_tokens_a, r.new_tokens_b) for r in solo)
    assert scheduler.stats.steps - steps_before < solo_steps / 2, "the requests did not share decoding steps"
    assert scheduler.idle(5)


def test_a_request_joining_a_running_batch_gets_its_solo_answer(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    long_sampling = SamplingParams(temperature=0, max_new_tokens=60)
    alone_long = generate_pair(model, tokenizer, conversation(PROMPTS[1]), long_sampling, min_new_tokens=60)
    alone_short = list(stream_chat(model, tokenizer, conversation(PROMPTS[2]), GREEDY))[-1]

    running = stream_pair(model, tokenizer, conversation(PROMPTS[1]), long_sampling, min_new_tokens=60)
    first = next(running)
    assert first.new_tokens_a >= 1 and not first.finished
    joined = list(stream_chat(model, tokenizer, conversation(PROMPTS[2]), GREEDY))[-1]  # shorter prompt, mid-flight
    *_, final = running

    assert joined == alone_short
    assert (final.text_a, final.text_b) == (alone_long.text_a, alone_long.text_b)


def test_batch_of_many_rows_equals_each_row_alone(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    adapters = ["lora1" if i % 2 else None for i in range(len(PROMPTS))]
    batch = generate_batch(model, tokenizer, [conversation(p) for p in PROMPTS], GREEDY, adapter_names=adapters)
    for (text, tokens, cut), prompt, adapter in zip(batch, PROMPTS, adapters):
        alone = generate_pair(model, tokenizer, conversation(prompt), GREEDY, adapter_names=(adapter, adapter))
        assert (text, tokens, cut) == (alone.text_a, alone.new_tokens_a, not alone.eos_a)


def test_the_line_is_first_come_first_served_bounded_and_says_how_many_are_ahead(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    scheduler = scheduler_for(model)
    scheduler.max_rows, scheduler.max_waiting = 2, 2
    endless = SamplingParams(temperature=0, max_new_tokens=2000)

    running = stream_pair(model, tokenizer, conversation("first"), endless, min_new_tokens=2000)
    next(running)
    second = stream_pair(model, tokenizer, conversation("second"), GREEDY)
    third = stream_pair(model, tokenizer, conversation("third"), GREEDY)
    waiting_second, waiting_third = next(second), next(third)
    assert (waiting_second.ahead, waiting_third.ahead) == (0, 1), "waiting requests are told their place"
    assert waiting_second.text_a == waiting_third.text_a == ""

    with pytest.raises(Busy, match="busy"):
        next(stream_pair(model, tokenizer, conversation("fourth"), GREEDY))
    assert scheduler.stats.refused == 1

    finished_order = []

    def drain(name, stream):
        *_, last = stream
        finished_order.append(name)
        return last

    running.close()  # the first labeler leaves: the line moves on, in order
    results = run_concurrently([lambda: drain("second", second), lambda: drain("third", third)])
    assert all(r.finished and r.text_a for r in results)
    assert finished_order == ["second", "third"], "the head of the line is served first"
    assert scheduler.idle(5)


def test_a_waiting_request_that_leaves_is_dropped_from_the_line(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    scheduler = scheduler_for(model)
    scheduler.max_rows = 2
    endless = SamplingParams(temperature=0, max_new_tokens=2000)
    running = stream_pair(model, tokenizer, conversation("first"), endless, min_new_tokens=2000)
    next(running)
    leaving = stream_pair(model, tokenizer, conversation("second"), GREEDY)
    assert next(leaving).ahead == 0
    leaving.close()
    after = stream_pair(model, tokenizer, conversation("third"), GREEDY)
    assert next(after).ahead == 0, "the request that left no longer counts"
    running.close()
    *_, last = after
    assert last.finished
    assert scheduler.idle(5)


def test_a_chat_runs_at_once_while_the_evaluation_it_interrupts_pauses(model_and_tokenizer):
    """A report asks for 96 rows at once, more than the batch's cap: a labeler's request arriving meanwhile starts
    at the next step (it used to wait until the whole evaluation ended) and decodes apart from the evaluation's
    rows, which pause (one step per EVALUATION_TURN_S) instead of slowing every token of it; both still get
    their solo answers."""
    import time

    from core.serving.scheduler import EVALUATION_TURN_S

    model, tokenizer = model_and_tokenizer
    scheduler = scheduler_for(model)
    scheduler.max_rows = 4
    long = SamplingParams(temperature=0, max_new_tokens=400)
    prompts = [conversation(p) for p in PROMPTS]  # 6 rows: more than the cap
    alone_chat = list(stream_chat(model, tokenizer, conversation("Hi there"), GREEDY))[-1]
    alone_batch = generate_batch(model, tokenizer, prompts, long)

    running, rows_done_when_chat_ended, evaluation_steps = threading.Event(), [], []

    def step(snapshot) -> None:
        evaluation_steps.append(time.monotonic())
        running.set()

    evaluation: list = []
    thread = threading.Thread(
        target=lambda: evaluation.append(generate_batch(model, tokenizer, prompts, long, on_step=step))
    )
    thread.start()
    assert running.wait(60)
    chat_started = time.monotonic()
    chat = list(stream_chat(model, tokenizer, conversation("Hi there"), GREEDY))[-1]
    chat_ended = time.monotonic()
    rows_done_when_chat_ended.append(thread.is_alive())
    thread.join(120)

    assert chat == alone_chat and evaluation == [alone_batch]
    assert rows_done_when_chat_ended == [True], "the chat waited for the evaluation to end"
    during = sum(chat_started < t < chat_ended for t in evaluation_steps)
    assert during <= 1 + (chat_ended - chat_started) / EVALUATION_TURN_S, (during, chat_ended - chat_started)
    assert scheduler.stats.max_rows == len(PROMPTS), "the chat decoded in the evaluation's batch"
    assert scheduler.idle(5)
