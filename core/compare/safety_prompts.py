"""The red-team prompt set's file format: one definition of ``assets/safety/prompts.jsonl``, its checks, its hash.

Why it looks like this:
- The file holds requests only, never harmful content: harmful requests in six categories and benign look-alikes
  in the same categories (see :mod:`core.compare.safety`).
- A bad line is a ValidationError naming its line, with the line format as its hint.
- Every run records :func:`prompt_set_hash` of the prompts it used, canonical JSON in order, so blank lines or key
  order in the file do not change it and runs are compared like for like.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core import ASSETS
from core.errors import ValidationError

PROMPTS = ASSETS / "safety" / "prompts.jsonl"
CATEGORIES = ("dangerous_help", "privacy", "self_harm", "manipulation", "jailbreak", "hate_harassment")
KINDS = ("harmful", "benign")
FIELDS = {"id", "category", "kind", "prompt"}
MAX_PROMPT_CHARS = 500
LINE_HINT = (
    'each line is one JSON object: {"id": "dh-01", "category": "dangerous_help", "kind": "harmful" | '
    '"benign", "prompt": "..."}'
)


@dataclass(frozen=True)
class SafetyPrompt:
    id: str
    category: str
    kind: str  # harmful | benign
    prompt: str


@dataclass(frozen=True)
class SafetySet:
    prompts: tuple[SafetyPrompt, ...]
    sha256: str  # of the prompts' canonical JSON, see prompt_set_hash


def prompt_set_hash(prompts: Sequence[SafetyPrompt]) -> str:
    """sha256 of the prompts as canonical JSON, in order: blank lines or key order in the file do not change it."""
    return hashlib.sha256(json.dumps([asdict(p) for p in prompts], sort_keys=True).encode()).hexdigest()


def load_prompt_set(path: Path = PROMPTS) -> SafetySet:
    """The red-team prompt set, validated line by line (a bad line is a ValidationError naming it)."""
    if not path.is_file():
        raise ValidationError(f"The safety prompt set {path} is missing", hint="restore assets/safety/prompts.jsonl")
    prompts: list[SafetyPrompt] = []
    seen: set[str] = set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path.name} line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"{where} is not JSON ({exc.msg})", hint=LINE_HINT) from None
        problem = _line_problem(row, seen)
        if problem:
            raise ValidationError(f"{where}: {problem}", hint=LINE_HINT)
        text = row["prompt"].strip()
        seen.add(row["id"])
        prompts.append(SafetyPrompt(row["id"], row["category"], row["kind"], text))
    if not prompts:
        raise ValidationError(f"The safety prompt set {path} is empty", hint=LINE_HINT)
    return SafetySet(tuple(prompts), prompt_set_hash(prompts))


def _line_problem(row: Any, seen: set[str]) -> str | None:
    """What is wrong with one parsed line of the set, or None."""
    if not isinstance(row, dict) or set(row) != FIELDS or not all(isinstance(row[k], str) for k in FIELDS):
        return "must be an object with exactly the string fields id, category, kind, prompt"
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,31}", row["id"]):
        return f"bad id {row['id']!r} (ids are short and lower case, e.g. dh-01)"
    if row["id"] in seen:
        return f"id {row['id']!r} is used twice"
    if row["category"] not in CATEGORIES:
        return f"unknown category {row['category']!r} (use one of {', '.join(CATEGORIES)})"
    if row["kind"] not in KINDS:
        return f"kind must be harmful or benign, not {row['kind']!r}"
    if not row["prompt"].strip() or len(row["prompt"]) > MAX_PROMPT_CHARS:
        return f"the prompt is empty or longer than {MAX_PROMPT_CHARS} characters"
    return None


def spread(prompts: Sequence[SafetyPrompt], limit: int | None) -> list[SafetyPrompt]:
    """The first ``limit`` prompts taken round-robin over (category, kind) groups in file order, so even a small
    subset (tests, a quick look) has both kinds of every category it can; None = every prompt, in file order."""
    if limit is None or limit >= len(prompts):
        return list(prompts)
    groups: dict[tuple[str, str], list[SafetyPrompt]] = {}
    for p in prompts:
        groups.setdefault((p.category, p.kind), []).append(p)
    out: list[SafetyPrompt] = []
    for i in range(max(len(g) for g in groups.values())):
        out += [g[i] for g in groups.values() if i < len(g)]
    return out[:limit]
