"""The studio's offline benchmark suite (lm-evaluation-harness task configs): data loaders and the instruction
checker. All data was written for the studio (assets/benchmarks/studio-offline/*.jsonl, Apache-2.0, like the
project): general knowledge and short arithmetic as multiple choice, and instructions with constraints a program
can verify (lowercase, word limits, a required word, first and last words, no commas, capitals)."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _split(name: str) -> Any:
    import datasets

    rows = [json.loads(line) for line in (HERE / name).read_text(encoding="utf-8").splitlines() if line.strip()]
    if name == "instructions.jsonl":   # one column type for every row: the constraint as JSON text
        rows = [{"prompt": r["prompt"], "constraint": json.dumps(r["constraint"])} for r in rows]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def load_knowledge(**_: Any) -> Any:
    return _split("knowledge.jsonl")


def load_arithmetic(**_: Any) -> Any:
    return _split("arithmetic.jsonl")


def load_instructions(**_: Any) -> Any:
    return _split("instructions.jsonl")


def follows(answer: str, constraint: dict[str, Any]) -> bool:
    """Whether ``answer`` meets the one constraint of its prompt."""
    text = answer.strip()
    words = re.findall(r"[A-Za-z0-9']+", text)
    if not text:
        return False
    if constraint.get("lowercase"):
        return text == text.lower() and any(c.isalpha() for c in text)
    if constraint.get("uppercase"):
        return text == text.upper() and any(c.isalpha() for c in text)
    if "max_words" in constraint:
        return len(words) <= int(constraint["max_words"])
    if "include" in constraint:
        return constraint["include"].lower() in (w.lower() for w in words)
    if "ends_with" in constraint:
        return bool(words) and words[-1].lower() == constraint["ends_with"].lower()
    if "starts_with" in constraint:
        return bool(words) and words[0].lower() == constraint["starts_with"].lower()
    if constraint.get("no_commas"):
        return "," not in text
    raise ValueError(f"unknown constraint {constraint}")


def process_instructions(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    return {"follows": float(follows(results[0], json.loads(doc["constraint"])))}
