"""Dataset import: read a file, detect its shape, and store it the way chat labels are stored.

Why store imports like chat labels: the training-set builders (core/data/trainsets.py) read conversations,
candidates, votes and thumbs. An imported pair becomes a conversation (its prompt turns as messages),
one candidate per answer and a vote for the better one (``outcome='a'``, ``source='import:<name>'``);
an imported KTO row becomes a candidate with a thumb up or down. So imports feed every builder, show
up in analytics, and can be redacted like any other item, with no second code path.

Reading
    JSONL, JSON (a list of records, or one record), CSV/TSV, parquet, a ``datasets`` folder saved with
    ``save_to_disk`` (or a .zip of one), and .txt (one prompt per line); text files may be gzipped. Text files must be UTF-8
    (a UTF-8 BOM is fine); any other encoding is refused with a clear error instead of guessed.

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

Rows are numbered from 1: the record number, which in JSONL and .txt files is the line number.
A bad row never aborts reading: it is listed in ``Parsed.errors`` and the import either skips it (the
user said so) or writes nothing.
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import re
import tempfile
import zipfile
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import NotFound, PermissionDenied, ValidationError
from core.labeling.feedback import clean_text
from storage.db import Database

FORMATS = ("preference", "preference_conversational", "kto", "kto_conversational", "hh", "ultrafeedback",
           "oasst_tree", "oasst_flat", "prompts")
PAIR_FORMATS = ("preference", "preference_conversational", "hh", "ultrafeedback", "oasst_tree", "oasst_flat")
DETECT_SAMPLE = 200            # records whose keys decide the shape
MAX_PROMPT_CHARS = 20_000      # same limit as prompt queues
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HH_TURN = re.compile(r"\n\n(Human|Assistant):[ \t]?")
_ROLES = {"user": "user", "human": "user", "prompter": "user", "assistant": "assistant", "gpt": "assistant",
          "bot": "assistant", "system": "system"}
_LABELS = {"true": True, "1": True, "yes": True, "desirable": True, "good": True,
           "false": False, "0": False, "no": False, "undesirable": False, "bad": False}
Message = dict[str, str]


class ImportFileError(ValidationError):
    """The file as a whole cannot be read: unknown type, wrong encoding, not a dataset, unknown shape."""

    code = "import_file_invalid"


class RowError(Exception):
    """One record is malformed; carries the message shown next to its row number."""


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


@dataclass(frozen=True)
class ImportResult:
    source: str
    format: str
    rows: int
    pairs: int          # preference pairs written (duplicates of earlier imports are not rewritten)
    labeled: int        # KTO answers written
    prompts: int        # prompts rows written
    duplicates: int     # pairs / prompts already present under this source, left alone
    skipped_rows: list[int]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# ----------------------------------------------------------------------------------------- reading

def _decode(data: bytes, filename: str) -> str:
    """UTF-8 text (BOM allowed); anything else is a clear error that says what to do."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ImportFileError(f"{filename} is UTF-16 encoded (it starts with a UTF-16 byte order mark)",
                              hint="save it as UTF-8, e.g. `iconv -f UTF-16 -t UTF-8 in > out`")
    if b"\x00" in data[:65536]:
        raise ImportFileError(f"{filename} is not a text file (it contains NUL bytes: binary data, or UTF-16 "
                              "without a byte order mark)",
                              hint="import UTF-8 JSONL, JSON, CSV or txt, parquet, or a save_to_disk folder")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ImportFileError(
            f"{filename} is not UTF-8: byte 0x{data[exc.start]:02x} on line {line} cannot be decoded "
            "(the file is probably Latin-1 / Windows-1252, or binary)",
            hint="re-save the file as UTF-8, e.g. `iconv -f latin1 -t UTF-8 in > out`") from None


def _jsonl(text: str) -> list[tuple[int, Any]]:
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                records.append((number, json.loads(line)))
            except json.JSONDecodeError as exc:
                records.append((number, RowError(f"not JSON: {exc.msg} (column {exc.colno})")))
    return records


def _json(text: str, filename: str) -> list[tuple[int, Any]]:
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":   # several JSON values: it is JSON Lines with a .json name
            return _jsonl(text)
        raise ImportFileError(f"{filename} is not valid JSON: {exc.msg} at line {exc.lineno}",
                              hint="fix the file, or save one record per line as .jsonl") from None
    if isinstance(loaded, dict):   # {"data": [...]} wrappers, else one record
        lists = [v for v in loaded.values() if isinstance(v, list) and v and isinstance(v[0], dict)]
        loaded = lists[0] if len(loaded) == 1 and lists else [loaded]
    if not isinstance(loaded, list):
        raise ImportFileError(f"{filename} holds a JSON {type(loaded).__name__}, not a list of records",
                              hint="use a JSON list of objects or JSONL")
    return list(enumerate(loaded, 1))


def _csv(text: str, delimiter: str | None) -> list[tuple[int, Any]]:
    if delimiter is None:
        try:
            delimiter = csv.Sniffer().sniff(text[:8192], delimiters=",;\t").delimiter
        except csv.Error:
            delimiter = ","
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    records: list[tuple[int, Any]] = []
    for number, row in enumerate(reader, 1):
        if None in row:
            records.append((number, RowError(f"{len(reader.fieldnames or []) + len(row[None])} fields, "
                                             f"the header has {len(reader.fieldnames or [])}")))
        else:
            records.append((number, {k.strip(): _cell(v) for k, v in row.items() if k is not None}))
    return records


def _cell(value: str | None) -> Any:
    """CSV cells are text; message lists written as JSON are read back as lists."""
    if value is not None and value.lstrip().startswith("[") and value.rstrip().endswith("]"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            pass
    return value


def _parquet(path: Path) -> list[tuple[int, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return list(enumerate(pq.read_table(path).to_pylist(), 1))
    except (pa.ArrowException, OSError) as exc:
        raise ImportFileError(f"{path.name} is not a readable parquet file: {exc}",
                              hint="re-export it, e.g. with Dataset.to_parquet") from None


def _saved_dataset(folder: Path, filename: str) -> list[tuple[int, Any]]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(folder))
    except Exception as exc:  # datasets raises FileNotFoundError, ValueError, ArrowInvalid, ...
        raise ImportFileError(f"{filename} is not a dataset saved with save_to_disk: {exc}",
                              hint="save it with Dataset.save_to_disk(folder), or export JSONL or parquet") from None
    if isinstance(loaded, datasets.DatasetDict):
        splits = list(loaded)
        split = "train" if "train" in loaded else splits[0] if len(splits) == 1 else None
        if split is None:
            raise ImportFileError(f"{filename} holds several splits ({', '.join(splits)}) and none is 'train'",
                                  hint="save the split you want on its own: dataset_dict[split].save_to_disk(...)")
        loaded = loaded[split]
    return list(enumerate(loaded.to_list(), 1))


def read_records(path: Path | str, filename: str | None = None) -> list[tuple[int, Any]]:
    """(row number, record) for every record in the file; unparseable records hold a RowError."""
    path = Path(path)
    filename = filename or path.name
    if not path.exists():
        raise NotFound(f"{path} does not exist", hint="check the path")
    if path.is_dir():
        return _saved_dataset(path, filename)
    with path.open("rb") as handle:
        magic = handle.read(4)
    suffix = Path(filename).suffix.lower()
    if magic == b"PAR1":
        return _parquet(path)
    if magic == b"PK\x03\x04" or suffix == ".zip":
        return _zipped_dataset(path, filename)
    if suffix == ".parquet":
        raise ImportFileError(f"{filename} is not a parquet file (no PAR1 header)",
                              hint="check the file; it may be truncated")
    if suffix == ".arrow":
        raise ImportFileError(f"{filename} is a bare Arrow shard", hint="import the whole save_to_disk folder")
    data = path.read_bytes()
    if magic[:2] == b"\x1f\x8b":   # gzip, as Anthropic HH ships (train.jsonl.gz)
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise ImportFileError(f"{filename} is a broken gzip file: {exc}", hint="download it again") from None
        filename = filename.removesuffix(".gz").removesuffix(".GZ")
        suffix = Path(filename).suffix.lower()
    text = _decode(data, filename)
    if suffix == ".txt":
        return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if suffix in (".csv", ".tsv"):
        return _csv(text, "\t" if suffix == ".tsv" else None)
    if suffix in (".jsonl", ".ndjson"):
        return _jsonl(text)
    if suffix == ".json" or text.lstrip().startswith("["):
        return _json(text, filename)
    if text.lstrip().startswith("{"):
        return _jsonl(text)
    raise ImportFileError(f"Cannot tell what kind of file {filename} is",
                          hint="use .jsonl, .json, .csv, .tsv, .parquet, .txt, or a save_to_disk folder (or .zip)")


def _zipped_dataset(path: Path, filename: str) -> list[tuple[int, Any]]:
    """A save_to_disk folder uploaded as a zip (browsers upload files, not folders)."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ImportFileError(f"{filename} is not a valid zip file", hint="zip the save_to_disk folder again") from None
    with archive, tempfile.TemporaryDirectory(prefix="studio-import-") as tmp:
        root = Path(tmp).resolve()
        for member in archive.namelist():
            if not (root / member).resolve().is_relative_to(root):
                raise ImportFileError(f"{filename} contains an unsafe path {member!r}", hint="zip the folder again")
        archive.extractall(root)
        return _saved_dataset(find_saved_dataset(root, filename), filename)


def find_saved_dataset(root: Path, filename: str) -> Path:
    """The save_to_disk folder inside an unpacked upload (the outermost one holding its metadata)."""
    infos = list(root.rglob("dataset_info.json")) + list(root.rglob("dataset_dict.json"))
    if not infos:
        raise ImportFileError(f"{filename} does not contain a dataset saved with save_to_disk",
                              hint="upload the folder written by Dataset.save_to_disk (or a zip of it)")
    return min((p.parent for p in infos), key=lambda p: len(p.parts))


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
        values = [r.get("chosen") for r in dicts if r.get("chosen") is not None]
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
        value = rec.get(key)
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
    prompt = _prompt(rec.get("prompt"))
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

    def path_to(message_id: str) -> list[Message]:
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


# ----------------------------------------------------------------------------------------- writing

def source_name(name: str | None, filename: str) -> str:
    """``import:<name>``; the name defaults to the file name without its extension."""
    stem = Path(Path(filename).name.removesuffix(".gz")).stem
    raw = name if name is not None else re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.")
    if not _NAME.match(raw or ""):
        raise ValidationError(f"Import name {raw!r} is not usable",
                              hint="use 1-64 letters, digits, '.', '_' or '-', e.g. --name hh-helpful")
    return f"import:{raw}"


def _pair_key(source: str, prompt: list[Message], chosen: str, rejected: str) -> str:
    digest = hashlib.sha256(json.dumps([prompt, chosen, rejected], ensure_ascii=False).encode()).hexdigest()
    return f"{source}:{digest[:32]}"


def _ids(cur, sequence: str, n: int) -> list[int]:
    if n == 0:
        return []
    return [r[0] for r in cur.execute(f"SELECT nextval('{sequence}') FROM range(?)", [n]).fetchall()]


def _insert(cur, table: str, columns: dict[str, list]) -> None:
    """Bulk insert through an Arrow table: a statement per row would take minutes on large files."""
    import pyarrow as pa

    if not next(iter(columns.values())):
        return
    view = f"_import_{table}"
    cur.register(view, pa.table(columns))
    try:
        cur.execute(f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(columns)} FROM {view}")
    finally:
        cur.unregister(view)


def _write_items(cur, items: list[Item], source: str) -> tuple[int, int, int]:
    """Conversations, messages, candidates, votes and thumbs for the items; (pairs, labeled, duplicates)."""
    existing = {r[0] for r in cur.execute("SELECT idempotency_key FROM preferences WHERE idempotency_key LIKE ?",
                                          [source + ":%"]).fetchall()}
    plans = []   # (item, [(better, worse, key)]) with duplicate pairs removed
    duplicates = 0
    for item in items:
        pairs = []
        for better, worse in item.pairs:
            key = _pair_key(source, item.prompt, item.answers[better], item.answers[worse])
            if key in existing:
                duplicates += 1
            else:
                existing.add(key)
                pairs.append((better, worse, key))
        if pairs or item.label is not None:
            plans.append((item, pairs))

    conv_ids = _ids(cur, "conversations_seq", len(plans))
    cand_ids = iter(_ids(cur, "candidates_seq", sum(len(item.answers) for item, _ in plans)))
    conversations: dict[str, list] = {"id": conv_ids, "source": [source] * len(plans)}
    messages: dict[str, list] = {"conversation_id": [], "turn": [], "role": [], "content": [], "candidate_id": []}
    candidates: dict[str, list] = {"id": [], "conversation_id": [], "turn": [], "text": []}
    votes: dict[str, list] = {"conversation_id": [], "turn": [], "candidate_a": [], "candidate_b": [],
                              "outcome": [], "source": [], "note": [], "idempotency_key": []}
    thumbs: dict[str, list] = {"candidate_id": [], "up": []}

    def message(conv: int, turn: int, role: str, content: str, candidate: int | None = None) -> None:
        for column, value in zip(messages, (conv, turn, role, content, candidate)):
            messages[column].append(value)

    for conv, (item, pairs) in zip(conv_ids, plans):
        turn = len(item.prompt)
        for position, msg in enumerate(item.prompt):
            message(conv, position, msg["role"], msg["content"])
        ids = [next(cand_ids) for _ in item.answers]
        for cid, text in zip(ids, item.answers):
            for column, value in zip(candidates, (cid, conv, turn, text)):
                candidates[column].append(value)
        if item.label is not None:
            thumbs["candidate_id"].append(ids[0])
            thumbs["up"].append(item.label)
            continue
        best = min(better for better, _, _ in pairs)
        message(conv, turn, "assistant", item.answers[best], ids[best])   # the chat continues with the pick
        for better, worse, key in pairs:
            for column, value in zip(votes, (conv, turn, ids[better], ids[worse], "a", source,
                                             f"imported row {item.row}", key)):
                votes[column].append(value)

    _insert(cur, "conversations", conversations)
    _insert(cur, "messages", messages)
    _insert(cur, "candidates", candidates)
    _insert(cur, "preferences", votes)
    _insert(cur, "thumbs", thumbs)
    return len(votes["outcome"]), len(thumbs["up"]), duplicates


def _write_prompts(cur, prompts: list[str], source: str, queue_id: int | None) -> tuple[int, int]:
    """Prompts rows (into the queue when given); exact repeats in the same queue and source are skipped."""
    existing = {r[0] for r in cur.execute(
        "SELECT text FROM prompts WHERE source = ? AND queue_id IS NOT DISTINCT FROM ?", [source, queue_id]).fetchall()}
    new = [p for p in dict.fromkeys(prompts) if p not in existing]
    _insert(cur, "prompts", {"text": new, "source": [source] * len(new), "queue_id": [queue_id] * len(new)})
    return len(new), len(prompts) - len(new)


def import_parsed(db: Database, parsed: Parsed, *, source: str, skip_bad: bool = False,
                  user_id: int | None = None, queue: str | None = None,
                  details: dict[str, Any] | None = None) -> ImportResult:
    """Write a parsed file in ONE transaction. Bad rows: refused unless ``skip_bad``; then skipped.
    ``queue`` (prompt lists only) names the labeling queue to fill; it is created if missing."""
    if parsed.errors and not skip_bad:
        first = parsed.errors[0]
        raise ValidationError(
            f"{len(parsed.errors)} bad row(s), nothing imported; first: row {first['row']}: {first['error']}",
            hint="fix those rows (a dry run lists them all), or skip them: --skip-bad on the command line, "
                 "the 'Skip the bad rows' box on the Data page")
    if not parsed.items and not parsed.prompts:
        raise ValidationError("The file yields nothing to import (no pairs, labeled answers or prompts)",
                              hint="check the file's shape with a dry run")
    if queue and parsed.format != "prompts":
        raise ValidationError("Only prompt lists go into a labeling queue", hint="import without a queue")
    queue = clean_text(queue, "queue name", max_chars=100).strip() if queue else None
    with db.transaction() as cur:
        queue_id = None
        if queue:
            row = cur.execute("SELECT id FROM queues WHERE name = ?", [queue]).fetchone()
            queue_id = row[0] if row else cur.execute(
                "INSERT INTO queues (name, created_by) VALUES (?, ?) RETURNING id", [queue, user_id]).fetchone()[0]
        pairs = labeled = prompts = 0
        if parsed.format == "prompts":
            prompts, duplicates = _write_prompts(cur, [text for _, text in parsed.prompts], source, queue_id)
        else:
            pairs, labeled, duplicates = _write_items(cur, parsed.items, source)
        skipped = sorted({e["row"] for e in parsed.errors})
        result = ImportResult(source, parsed.format, parsed.rows, pairs, labeled, prompts, duplicates, skipped)
        cur.execute("INSERT INTO audit_log (user_id, action, target_table, target_id, details)"
                    " VALUES (?, 'import', ?, ?, ?)",
                    [user_id, "prompts" if parsed.format == "prompts" else "preferences", queue_id,
                     json.dumps({**(details or {}), **result.to_dict(), "skipped_rows": len(skipped)})])
    return result


def import_file(db: Database, path: Path | str, *, name: str | None = None, filename: str | None = None,
                skip_bad: bool = False, user: Any = None, queue: str | None = None,
                fmt: str | None = None) -> ImportResult:
    """Read, detect, parse and import a file in one transaction. ``user`` must be an admin when given
    (the CLI passes its operator; whoever can run it owns the data dir)."""
    if user is not None and not getattr(user, "is_admin", False):
        raise PermissionDenied("Only admins can import datasets", hint="ask an admin")
    path = Path(path)
    filename = filename or path.name
    source = source_name(name, filename)
    parsed = inspect_file(path, filename, fmt)
    details = {"file": filename, "sha256": file_hash(path)}
    return import_parsed(db, parsed, source=source, skip_bad=skip_bad, user_id=getattr(user, "id", None),
                         queue=queue, details=details)


def file_hash(path: Path) -> str | None:
    """sha256 of the file, recorded in the audit log so an import can be traced to its exact bytes."""
    if path.is_dir():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def imported_sources(db: Database) -> list[dict[str, Any]]:
    """Every import source with what it holds (for the Data page)."""
    return db.query(
        "SELECT source, count(*) FILTER (WHERE kind = 'pair') AS pairs,"
        " count(*) FILTER (WHERE kind = 'labeled') AS labeled, count(*) FILTER (WHERE kind = 'prompt') AS prompts"
        " FROM (SELECT source, 'pair' AS kind FROM preferences WHERE source LIKE 'import:%'"
        "       UNION ALL SELECT c.source, 'labeled' FROM thumbs t JOIN candidates ca ON ca.id = t.candidate_id"
        "       JOIN conversations c ON c.id = ca.conversation_id WHERE c.source LIKE 'import:%'"
        "       UNION ALL SELECT source, 'prompt' FROM prompts WHERE source LIKE 'import:%')"
        " GROUP BY source ORDER BY source")
