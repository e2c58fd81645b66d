"""Answers cut at the length limit are trained as the start of an answer: the end-of-turn the chat template would
add is left out of the cut side only (core.training.cut), on the tokenization TRL's DPOTrainer gives them."""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset
from transformers import AutoTokenizer

from core.training.cut import end_of_turn_ids, trim_cut_endings

PROMPT = [{"role": "user", "content": "Tell me about owls."}]


def tokenized(tokenizer, chosen: str, rejected: str, **flags: bool | None) -> dict:
    """One row as TRL's DPOTrainer tokenizes a conversational pair (prompt, then each completion after it)."""

    def ids(messages: list[dict], **kw) -> list[int]:
        return tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kw)["input_ids"]

    prompt = ids(PROMPT, add_generation_prompt=True)
    row = {"prompt_ids": prompt}
    for side, text in (("chosen", chosen), ("rejected", rejected)):
        row[f"{side}_ids"] = ids([*PROMPT, {"role": "assistant", "content": text}])[len(prompt) :]
    return row | {"chosen_cut": flags.get("chosen_cut"), "rejected_cut": flags.get("rejected_cut")}


def test_only_the_cut_side_loses_its_end_of_turn(tiny_model_dir: Path):
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    suffix = end_of_turn_ids(tokenizer)
    assert tokenizer.decode(suffix).startswith("<|im_end|>")  # read from the model's own chat template

    rows = [
        tokenized(tokenizer, "Owls are birds that hunt at", "Owls hoot.", chosen_cut=True),
        tokenized(tokenizer, "Owls are birds.", "Owls are fish that swim", rejected_cut=True),
        tokenized(tokenizer, "Owls are birds.", "Owls hoot."),
    ]
    trimmed, counts = trim_cut_endings(Dataset.from_list(rows), tokenizer, ("chosen", "rejected"))

    assert dict(counts) == {"trimmed": 2}
    assert "chosen_cut" not in trimmed.column_names and "rejected_cut" not in trimmed.column_names
    assert trimmed[0]["chosen_ids"] == rows[0]["chosen_ids"][: -len(suffix)]
    assert tokenizer.decode(trimmed[0]["chosen_ids"]).strip() == "Owls are birds that hunt at"
    assert trimmed[0]["rejected_ids"] == rows[0]["rejected_ids"]  # ended by itself: trained as a finished answer
    assert tokenizer.decode(trimmed[1]["rejected_ids"]).strip() == "Owls are fish that swim"
    assert trimmed[1]["chosen_ids"] == rows[1]["chosen_ids"]
    assert trimmed[2]["chosen_ids"] == rows[2]["chosen_ids"] and trimmed[2]["rejected_ids"] == rows[2]["rejected_ids"]


def test_data_without_cut_answers_is_left_as_it_is(tiny_model_dir: Path):
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    row = tokenized(tokenizer, "Owls are birds.", "Owls hoot.")
    del row["chosen_cut"], row["rejected_cut"]
    dataset = Dataset.from_list([row])
    same, counts = trim_cut_endings(dataset, tokenizer, ("chosen", "rejected"))
    assert same is dataset and not counts
