"""Dataset import: read a file, detect its shape, and store it the way chat labels are stored.

Why store imports like chat labels: the training-set builders (core/data/trainsets.py) read conversations,
candidates, votes and thumbs. An imported pair becomes a conversation (its prompt turns as messages),
one candidate per answer and a vote for the better one (``outcome='a'``, ``source='import:<name>'``);
an imported KTO row becomes a candidate with a thumb up or down. So imports feed every builder, show
up in analytics, and can be redacted like any other item, with no second code path.

The three steps, one module each:
    reading the file into numbered records      core.data.import_files (formats, encodings, zips)
    detecting its shape and parsing the rows    core.data.import_formats (``inspect_file``: the dry run)
    writing the parsed items, one transaction   this module (``import_parsed``, ``import_file``)
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.data.import_formats import Item, Message, Parsed, inspect_file
from core.errors import PermissionDenied, ValidationError
from core.labeling.feedback import clean_text
from storage.db import Database, first_column, one_row, one_value

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class ImportResult:
    """What one import wrote (the CLI's ``--json`` report, the Data page's message, the audit log's details)."""

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
    return first_column(cur.execute(f"SELECT nextval('{sequence}') FROM range(?)", [n]))


def bulk_insert(cur, table: str, columns: dict[str, list]) -> None:
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
    existing = set(first_column(cur.execute("SELECT idempotency_key FROM preferences WHERE idempotency_key LIKE ?",
                                            [source + ":%"])))
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

    bulk_insert(cur, "conversations", conversations)
    bulk_insert(cur, "messages", messages)
    bulk_insert(cur, "candidates", candidates)
    bulk_insert(cur, "preferences", votes)
    bulk_insert(cur, "thumbs", thumbs)
    return len(votes["outcome"]), len(thumbs["up"]), duplicates


def _write_prompts(cur, prompts: list[str], source: str, queue_id: int | None) -> tuple[int, int]:
    """Prompts rows (into the queue when given); exact repeats in the same queue and source are skipped."""
    existing = set(first_column(cur.execute(
        "SELECT text FROM prompts WHERE source = ? AND queue_id IS NOT DISTINCT FROM ?", [source, queue_id])))
    new = [p for p in dict.fromkeys(prompts) if p not in existing]
    bulk_insert(cur, "prompts", {"text": new, "source": [source] * len(new), "queue_id": [queue_id] * len(new)})
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
            row = one_row(cur.execute("SELECT id FROM queues WHERE name = ?", [queue]))
            queue_id = row["id"] if row else one_value(cur.execute(
                "INSERT INTO queues (name, created_by) VALUES (?, ?) RETURNING id", [queue, user_id]))
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
