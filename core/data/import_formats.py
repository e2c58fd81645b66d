"""Dataset import, step 2: detect a file's shape and parse its records into items to store (nothing is written).

Shapes (``Parsed.format``)
    ``preference``                 TRL standard: ``prompt``, ``chosen``, ``rejected`` strings
    ``preference_conversational``  TRL conversational: message lists (explicit or implicit prompt)
    ``kto`` / ``kto_conversational``  ``prompt``, ``completion``, ``label``
    ``hh``                         Anthropic HH: ``chosen``/``rejected`` "\\n\\nHuman: ... \\n\\nAssistant: ..."
                                   transcripts, split into the shared (multi-turn) prompt and the answers
    ``ultrafeedback``              message lists plus ``score_chosen``/``score_rejected``
    ``oasst_tree``                 OpenAssistant nested trees (``replies``); ranked siblings -> all pairs
    ``oasst_flat``                 oasst1 rows (``message_id``, ``parent_id``, ``role``, ``text``, ``rank``)
    ``prompts``                    a plain prompt list: stored as prompts rows, optionally into a queue

A bad row never aborts parsing: it is listed in ``Parsed.errors`` with its row number, and the import either
skips it (the user said so) or writes nothing (core.data.datasets_io).
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.data.import_files import ImportFileError, RowError, read_records
from core.errors import ValidationError
from core.labeling.feedback import clean_text
from core.labeling.queue import MAX_PROMPT_CHARS   # the same limit as prompt queues

FORMATS = ("preference", "preference_conversational", "kto", "kto_conversational", "hh", "ultrafeedback",
           "oasst_tree", "oasst_flat", "prompts")
PAIR_FORMATS = ("preference", "preference_conversational", "hh", "ultrafeedback", "oasst_tree", "oasst_flat")
DETECT_SAMPLE = 200            # records whose keys decide the shape
_HH_TURN = re.compile(r"\n\n(Human|Assistant):[ \t]?")
_ROLES = {"user": "user", "human": "user", "prompter": "user", "assistant": "assistant", "gpt": "assistant",
          "bot": "assistant", "system": "system"}
_LABELS = {"true": True, "1": True, "yes": True, "desirable": True, "good": True,
           "false": False, "0": False, "no": False, "undesirable": False, "bad": False}
Message = dict[str, str]


# ----------------------------------------------------------------------------------------- results

@dataclass
class Item:
    """One unit to store: a prompt (messages ending with a user turn) and its answers.

    ``pairs`` holds (better, worse) answer indexes for preference data; ``label`` is set instead for a
    KTO row (one answer, desirable or not).
    """

    row: int
    prompt: list[Message]
    answers: list[str]
    pairs: list[tuple[int, int]] = field(default_factory=list)
    label: bool | None = None


@dataclass
class Parsed:
    """What a file holds, before anything is written."""

    format: str
    rows: int
    items: list[Item] = field(default_factory=list)
    prompts: list[tuple[int, str]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def pairs(self) -> int:
        """Training examples the file yields: preference pairs, or prompt/completion pairs for KTO."""
        return sum(len(item.pairs) if item.label is None else 1 for item in self.items)

    def summary(self) -> dict[str, Any]:
        """The ``--dry-run --json`` report: exactly format, rows, pairs and errors."""
        return {"format": self.format, "rows": self.rows, "pairs": self.pairs, "errors": self.errors}

    def describe(self) -> str:
        return (f"detected: {self.format}, {self.rows} rows, {self.pairs} pairs, {len(self.errors)} errors"
                + (f", {len(self.prompts)} prompts" if self.format == "prompts" else ""))


# ----------------------------------------------------------------------------------------- detection

def detect_format(records: list[tuple[int, Any]]) -> str:
    """The shape of the file, from the keys of its first records."""
    sample = [r for _, r in records if not isinstance(r, RowError)][:DETECT_SAMPLE]
    if not sample:
        raise ImportFileError("The file has no readable records", hint="check that it is not empty")
    if all(isinstance(r, str) for r in sample):
        return "prompts"
    dicts = [r for r in sample if isinstance(r, dict)]
    keys = set().union(*(r.keys() for r in dicts)) if dicts else set()
    if {"message_id", "parent_id", "text", "role"} <= keys:
        return "oasst_flat"
    if "replies" in keys or any(isinstance(r.get("prompt"), dict) and "replies" in r["prompt"] for r in dicts):
        return "oasst_tree"
    if {"chosen", "rejected"} <= keys:
        if {"score_chosen", "score_rejected"} & keys:
            return "ultrafeedback"
        values: list[Any] = [r.get("chosen") for r in dicts if r.get("chosen") is not None]
        if "prompt" not in keys and values and all(isinstance(v, str) for v in values) \
                and any(_HH_TURN.search("\n\n" + v.lstrip()) for v in values):
            return "hh"
        conversational = any(isinstance(r.get(k), list) for r in dicts for k in ("prompt", "chosen", "rejected"))
        return "preference_conversational" if conversational else "preference"
    if {"completion", "label"} <= keys:
        conversational = any(isinstance(r.get(k), list) for r in dicts for k in ("prompt", "completion"))
        return "kto_conversational" if conversational else "kto"
    if keys & {"prompt", "text", "question", "instruction"} and not keys & {"chosen", "rejected", "completion"}:
        return "prompts"
    raise ImportFileError(
        f"Unknown dataset shape; columns found: {', '.join(sorted(map(str, keys))) or 'none'}",
        hint="expected prompt/chosen/rejected, prompt/completion/label, HH chosen/rejected transcripts, "
             "UltraFeedback (score_chosen), OpenAssistant trees or rows, or a prompt list")


# ----------------------------------------------------------------------------------------- rows

def _text(value: Any, what: str, max_chars: int = 100_000) -> str:
    if not isinstance(value, str):
        raise RowError(f"{what} is {'missing' if value is None else type(value).__name__ + ', not text'}")
    try:
        return clean_text(value, what, max_chars=max_chars).strip()
    except ValidationError as exc:
        raise RowError(exc.message) from None


def _messages(value: Any, what: str) -> list[Message]:
    """A message list ({role, content}; 'from'/'value' and 'human'/'gpt' spellings accepted)."""
    if value is None or value == "":
        raise RowError(f"{what} is missing")
    if not isinstance(value, list) or not value:
        raise RowError(f"{what} must be text or a non-empty list of messages")
    out = []
    for i, msg in enumerate(value):
        if not isinstance(msg, dict):
            raise RowError(f"{what}[{i}] is not a message object")
        role = _ROLES.get(str(msg.get("role", msg.get("from", ""))).strip().lower())
        if role is None:
            raise RowError(f"{what}[{i}] has unknown role {msg.get('role', msg.get('from'))!r}")
        out.append({"role": role, "content": _text(msg.get("content", msg.get("value")), f"{what}[{i}].content")})
    return out


def _prompt(value: Any, what: str = "prompt") -> list[Message]:
    messages = [{"role": "user", "content": _text(value, what)}] if isinstance(value, str) \
        else _messages(value, what)
    if messages[-1]["role"] != "user":
        raise RowError(f"{what} must end with a user message, it ends with {messages[-1]['role']}")
    return messages


def _answer(value: Any, prompt: list[Message] | None, what: str) -> tuple[list[Message] | None, str]:
    """(prompt, answer text) from an answer that is a string, one assistant message, or a whole
    conversation ending with the answer (implicit prompt, or a copy of the explicit one)."""
    if isinstance(value, str):
        return prompt, _text(value, what)
    messages = _messages(value, what)
    if messages[-1]["role"] != "assistant":
        raise RowError(f"{what} must end with an assistant message")
    head = messages[:-1]
    if head and prompt is not None and head != prompt:
        raise RowError(f"{what} repeats a conversation that differs from the prompt")
    return (head or prompt), messages[-1]["content"]


def _label(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _LABELS:
        return _LABELS[value.strip().lower()]
    raise RowError(f"label {value!r} is not true/false")


def _pair_row(row: int, rec: dict) -> Item:
    prompt = _prompt(rec["prompt"]) if rec.get("prompt") not in (None, "") else None
    p1, chosen = _answer(rec.get("chosen"), prompt, "chosen")
    p2, rejected = _answer(rec.get("rejected"), prompt, "rejected")
    if p1 is None or p2 is None:
        raise RowError("no prompt: give a prompt column or full conversations in chosen/rejected")
    if p1 != p2:
        raise RowError("chosen and rejected continue different conversations")
    if p1[-1]["role"] != "user":
        raise RowError("the conversation before the answers must end with a user message")
    if chosen == rejected:
        raise RowError("chosen and rejected are identical")
    return Item(row, p1, [chosen, rejected], [(0, 1)])


def _hh_turns(transcript: Any, what: str) -> list[Message]:
    text = _text(transcript, what)
    parts = _HH_TURN.split("\n\n" + text)
    if parts[0].strip():
        raise RowError(f"{what} does not start with 'Human:'")
    turns = [{"role": "user" if role == "Human" else "assistant", "content": content.strip()}
             for role, content in zip(parts[1::2], parts[2::2])]
    if len(turns) < 2 or turns[-1]["role"] != "assistant" or turns[-2]["role"] != "user":
        raise RowError(f"{what} must end with a Human turn followed by an Assistant answer")
    if not turns[-1]["content"]:
        raise RowError(f"{what} has an empty final answer")
    if any(not t["content"] for t in turns[:-1]):
        raise RowError(f"{what} has an empty turn")
    return turns


def _hh_row(row: int, rec: dict) -> Item:
    chosen, rejected = _hh_turns(rec.get("chosen"), "chosen"), _hh_turns(rec.get("rejected"), "rejected")
    if chosen[:-1] != rejected[:-1]:
        raise RowError("chosen and rejected transcripts differ before the final answer")
    if chosen[-1]["content"] == rejected[-1]["content"]:
        raise RowError("chosen and rejected are identical")
    return Item(row, chosen[:-1], [chosen[-1]["content"], rejected[-1]["content"]], [(0, 1)])


def _ultrafeedback_row(row: int, rec: dict) -> Item:
    scores = []
    for key in ("score_chosen", "score_rejected"):
        value: Any = rec.get(key)
        try:
            scores.append(float(value))
        except (TypeError, ValueError):
            raise RowError(f"{key} {value!r} is not a number") from None
    if scores[0] < scores[1]:
        raise RowError(f"score_chosen {scores[0]:g} is lower than score_rejected {scores[1]:g}")
    if scores[0] == scores[1]:
        raise RowError(f"a tie (both scored {scores[0]:g}) is not a preference")
    return _pair_row(row, rec)


def _kto_row(row: int, rec: dict) -> Item:
    prompt: list[Message] | None = _prompt(rec.get("prompt"))
    prompt, completion = _answer(rec.get("completion"), prompt, "completion")
    assert prompt is not None
    return Item(row, prompt, [completion], label=_label(rec.get("label")))


def _prompt_text(rec: Any) -> str:
    if isinstance(rec, dict):
        key = next((k for k in ("prompt", "text", "question", "instruction") if rec.get(k) not in (None, "")), None)
        if key is None:
            raise RowError("no prompt, text, question or instruction value")
        rec = rec[key]
        if isinstance(rec, list):
            rec = _prompt(rec)[-1]["content"]
    return _text(rec, "prompt", max_chars=MAX_PROMPT_CHARS)


def _oasst_role(msg: dict) -> str:
    role = _ROLES.get(str(msg.get("role", "")).lower())
    if role not in ("user", "assistant"):
        raise RowError(f"unknown role {msg.get('role')!r} (expected prompter or assistant)")
    return role


def _rank(value: Any) -> float | None:
    """An OpenAssistant rank (0 = best); None or NaN (pandas' missing value) means unranked."""
    if value is None or value == "":
        return None
    try:
        rank = float(value)
    except (TypeError, ValueError):
        raise RowError(f"rank {value!r} is not a number") from None
    return None if rank != rank else rank


def _ranked_items(row: int, prompt: list[Message], replies: list[dict]) -> Item | None:
    """All (better, worse) pairs among the ranked assistant replies to a user message (rank 0 = best)."""
    ranked = []
    for reply in replies:
        rank = _rank(reply.get("rank"))
        if rank is not None and not reply.get("deleted") and _oasst_role(reply) == "assistant":
            ranked.append((rank, _text(reply.get("text"), "reply text")))
    ranked.sort(key=lambda pair: pair[0])
    answers = list(dict.fromkeys(text for _, text in ranked))   # identical replies count once
    if len(answers) < 2:
        return None
    return Item(row, prompt, answers, [(i, j) for i in range(len(answers)) for j in range(i + 1, len(answers))])


def _oasst_tree_row(row: int, rec: dict) -> list[Item]:
    root = rec.get("prompt") if isinstance(rec.get("prompt"), dict) else rec
    if not isinstance(root, dict) or "text" not in root:
        raise RowError("no message tree (expected a 'prompt' message with 'replies')")
    items: list[Item] = []

    def walk(node: dict, path: list[Message]) -> None:
        if node.get("deleted"):
            return
        path = path + [{"role": _oasst_role(node), "content": _text(node.get("text"), "message text")}]
        replies = [r for r in node.get("replies") or [] if isinstance(r, dict)]
        if path[-1]["role"] == "user":
            item = _ranked_items(row, path, replies)
            if item:
                items.append(item)
        for reply in replies:
            walk(reply, path)

    walk(root, [])
    return items


def _oasst_flat(records: list[tuple[int, Any]], errors: list[dict]) -> list[Item]:
    """oasst1-style rows: rebuild each prompt's path from parent links, then rank its replies."""
    by_id: dict[str, tuple[int, dict]] = {}
    children: dict[str, list[dict]] = defaultdict(list)
    for number, rec in records:
        try:
            if isinstance(rec, RowError):
                raise rec
            if not isinstance(rec, dict):
                raise RowError("not a record")
            message_id = rec.get("message_id")
            if not message_id:
                raise RowError("message_id is missing")
            if message_id in by_id:
                raise RowError(f"message_id {message_id} appears twice (also row {by_id[message_id][0]})")
            _oasst_role(rec)
            _text(rec.get("text"), "text")
        except RowError as exc:
            errors.append({"row": number, "error": str(exc)})
            continue
        by_id[message_id] = (number, rec)
        if rec.get("parent_id"):
            children[rec["parent_id"]].append(rec)

    def path_to(message_id: str | None) -> list[Message]:
        path, seen = [], set()
        while message_id:
            if message_id in seen:
                raise RowError("parent links form a cycle")
            seen.add(message_id)
            if message_id not in by_id:
                raise RowError(f"its thread refers to message {message_id}, which is not in the file (or bad)")
            msg = by_id[message_id][1]
            if msg.get("deleted"):
                raise RowError("its thread contains a deleted message")
            path.append({"role": _oasst_role(msg), "content": _text(msg.get("text"), "text")})
            message_id = msg.get("parent_id")
        return path[::-1]

    items = []
    for message_id, (number, rec) in by_id.items():
        if rec.get("deleted") or _oasst_role(rec) != "user" or not children.get(message_id):
            continue
        try:
            ranked = [r for r in children[message_id] if _rank(r.get("rank")) is not None and not r.get("deleted")]
            if len(ranked) < 2:
                continue
            item = _ranked_items(number, path_to(message_id), ranked)
        except RowError as exc:
            errors.append({"row": number, "error": str(exc)})
            continue
        if item:
            items.append(item)
    items.sort(key=lambda item: item.row)
    return items


_ROW_PARSERS = {"preference": _pair_row, "preference_conversational": _pair_row, "hh": _hh_row,
                "ultrafeedback": _ultrafeedback_row, "kto": _kto_row, "kto_conversational": _kto_row}


def parse_records(records: list[tuple[int, Any]], fmt: str | None = None) -> Parsed:
    """Turn records into items (or prompts), collecting one error per bad row."""
    fmt = fmt or detect_format(records)
    if fmt not in FORMATS:
        raise ValidationError(f"Unknown format {fmt!r}", hint=f"use one of {', '.join(FORMATS)}")
    parsed = Parsed(fmt, len(records))
    if fmt == "oasst_flat":
        parsed.items = _oasst_flat(records, parsed.errors)
        parsed.errors.sort(key=lambda e: e["row"])
        return parsed
    for number, rec in records:
        try:
            if isinstance(rec, RowError):
                raise rec
            if fmt == "prompts":
                parsed.prompts.append((number, _prompt_text(rec)))
                continue
            if not isinstance(rec, dict):
                raise RowError(f"a {type(rec).__name__}, not a record")
            if fmt == "oasst_tree":
                parsed.items.extend(_oasst_tree_row(number, rec))
            else:
                parsed.items.append(_ROW_PARSERS[fmt](number, rec))
        except RowError as exc:
            parsed.errors.append({"row": number, "error": str(exc)})
    return parsed


def inspect_file(path: Path | str, filename: str | None = None, fmt: str | None = None) -> Parsed:
    """Read and parse a file without writing anything (the dry run)."""
    return parse_records(read_records(path, filename), fmt)
