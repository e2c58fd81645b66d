"""Redaction on a real DuckDB: the text is really gone, one audit row, admins only, all or nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.errors import NotFound, PermissionDenied, ValidationError
from core.labeling import analytics, moderation
from core.labeling.moderation import REDACTED, redact_item
from storage.db import Database

ADMIN, LABELER = 1, 2
SECRET = "555-1234"
TEXT_COLUMNS = {
    "prompts": "text",
    "candidates": "text",
    "messages": "content",
    "gold_answers": "text",
    "preferences": "note",
}


def seed(db: Database) -> None:
    """Prompt 1 holds a phone number; it was served to bo in conversation 1, who voted (pref 1), rated and
    edited a gold answer. Prompt 2 / pref 2 is an unrelated vote that must survive every redaction."""
    with db.transaction() as cur:
        cur.execute("INSERT INTO users (id, name, role) VALUES (1, 'ada', 'admin'), (2, 'bo', 'labeler')")
        cur.execute(
            f"INSERT INTO prompts (id, text, queue_id) VALUES (1, 'My number is {SECRET}, call me?', 1),"
            " (2, 'Say hi.', 1)"
        )
        cur.execute("INSERT INTO conversations (id, user_id, prompt_id) VALUES (1, 2, 1), (2, 2, 2)")
        cur.execute(
            "INSERT INTO candidates (id, conversation_id, turn, prompt_id, text) VALUES"
            f" (1, 1, 1, 1, 'I will call {SECRET}.'), (2, 1, 1, 1, 'I cannot call anyone.'),"
            " (3, 2, 1, 2, 'Hi!'), (4, 2, 1, 2, 'Hello.')"
        )
        cur.execute(
            "INSERT INTO messages (conversation_id, turn, role, content, candidate_id) VALUES"
            f" (1, 0, 'user', 'My number is {SECRET}, call me?', NULL),"
            f" (1, 1, 'assistant', 'I will call {SECRET}.', 1),"
            " (2, 0, 'user', 'Say hi.', NULL), (2, 1, 'assistant', 'Hi!', 3)"
        )
        cur.execute(
            "INSERT INTO preferences (id, conversation_id, turn, prompt_id, candidate_a, candidate_b,"
            " outcome, labeler_id, note) VALUES"
            f" (1, 1, 1, 1, 1, 2, 'b', 2, 'repeats {SECRET}'), (2, 2, 1, 2, 3, 4, 'a', 2, NULL)"
        )
        cur.execute(
            "INSERT INTO ratings (candidate_id, user_id, aspect, score, preference_id) VALUES"
            " (1, 2, 'helpfulness', 2, 1), (3, 2, 'helpfulness', 5, 2)"
        )
        cur.execute(
            "INSERT INTO gold_answers (preference_id, candidate_id, user_id, text) VALUES"
            f" (1, 1, 2, 'I will not call {SECRET}.')"
        )


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(tmp_path / "s.duckdb")
    seed(database)
    yield database
    database.close()


def rows_containing(db: Database, needle: str) -> list[tuple[str, int]]:
    found = []
    for table, column in TEXT_COLUMNS.items():
        found += [
            (table, r["id"])
            for r in db.query(f"SELECT id FROM {table} WHERE contains(coalesce({column}, ''), ?)", [needle])
        ]
    return found


def audit_rows(db: Database) -> list[dict]:
    return db.query(
        "SELECT user_id, action, target_table, target_id, CAST(details AS VARCHAR) AS details"
        " FROM audit_log ORDER BY id"
    )


def test_redacting_a_prompt_removes_its_text_everywhere_and_writes_one_audit_row(db: Database) -> None:
    assert len(rows_containing(db, SECRET)) == 6
    result = redact_item(db, ADMIN, "prompt", 1, "contains a phone number")
    assert result.redacted and result.audit_id is not None
    assert result.affected == {"prompts": 1, "messages": 1, "preferences": 1, "gold_answers": 1}
    assert db.scalar("SELECT text FROM prompts WHERE id = 1") == REDACTED
    assert db.scalar("SELECT content FROM messages WHERE conversation_id = 1 AND turn = 0") == REDACTED
    assert db.scalar("SELECT redacted_at IS NOT NULL FROM preferences WHERE id = 1")
    # the prompt's answers are not the prompt: only redacting the candidate/conversation removes them
    assert rows_containing(db, SECRET) == [("candidates", 1), ("messages", 2)]
    [audit] = audit_rows(db)
    assert (audit["user_id"], audit["action"], audit["target_table"], audit["target_id"]) == (
        ADMIN,
        "redact",
        "prompts",
        1,
    )
    details = json.loads(audit["details"])
    assert details["reason"] == "contains a phone number" and SECRET not in audit["details"]


def test_redacting_a_conversation_removes_every_text_in_it(db: Database) -> None:
    result = redact_item(db, ADMIN, "conversation", 1, "pii")
    assert result.affected == {"messages": 2, "candidates": 2, "gold_answers": 1, "preferences": 1}
    assert rows_containing(db, SECRET) == [("prompts", 1)]  # the queued prompt is its own item
    assert db.scalar("SELECT count(*) FROM messages WHERE conversation_id = 1 AND content <> ?", [REDACTED]) == 0
    assert db.scalar("SELECT content FROM messages WHERE conversation_id = 2 AND turn = 1") == "Hi!"


def test_redacting_a_candidate_removes_its_message_and_the_votes_on_it(db: Database) -> None:
    result = redact_item(db, ADMIN, "candidate", 1, "pii")
    assert result.affected == {"candidates": 1, "messages": 1, "gold_answers": 1, "preferences": 1}
    assert db.scalar("SELECT text FROM candidates WHERE id = 1") == REDACTED
    assert db.scalar("SELECT text FROM candidates WHERE id = 2") == "I cannot call anyone."
    assert db.scalar("SELECT note FROM preferences WHERE id = 1") == REDACTED


def test_redacting_a_preference_keeps_the_prompt(db: Database) -> None:
    result = redact_item(db, ADMIN, "preference", 1, "labeler asked")
    assert result.affected == {"preferences": 1, "gold_answers": 1}
    assert db.scalar("SELECT text FROM prompts WHERE id = 1").startswith("My number")


@pytest.mark.parametrize("kind, item_id", [("preference", 1), ("prompt", 1), ("candidate", 1), ("conversation", 1)])
def test_redacted_items_are_excluded_from_analytics(db: Database, kind: str, item_id: int) -> None:
    assert analytics.summary(db)["votes"] == 2 and analytics.summary(db)["ratings"] == 2
    redact_item(db, ADMIN, kind, item_id, "pii")
    assert analytics.summary(db)["votes"] == 1 and analytics.summary(db)["ratings"] == 1
    assert analytics.summary(db)["gold_edits"] == 0
    assert analytics.recent_items(db)["preference_id"].tolist() == [2]
    assert not analytics.recent_items(db, search=SECRET).shape[0]


def test_redacting_twice_is_a_no_op_with_a_clear_message(db: Database) -> None:
    redact_item(db, ADMIN, "preference", 1, "pii")
    again = redact_item(db, ADMIN, "preference", 1, "pii again")
    assert not again.redacted and "already redacted" in again.message and again.audit_id is None
    assert len(audit_rows(db)) == 1
    # a prompt whose votes were already redacted with it is still redacted once, then never again
    assert redact_item(db, ADMIN, "prompt", 1, "pii").redacted
    assert not redact_item(db, ADMIN, "prompt", 1, "pii").redacted
    assert len(audit_rows(db)) == 2


def test_only_admins_may_redact(db: Database) -> None:
    for user_id in (LABELER, 999, None):
        with pytest.raises(PermissionDenied):
            redact_item(db, user_id, "prompt", 1, "pii")
    assert rows_containing(db, SECRET) and not audit_rows(db)
    assert moderation.is_admin(db, ADMIN) and not moderation.is_admin(db, LABELER)


@pytest.mark.parametrize("kind", moderation.KINDS)
def test_unknown_id_is_not_found(db: Database, kind: str) -> None:
    with pytest.raises(NotFound):
        redact_item(db, ADMIN, kind, 12345, "pii")
    assert not audit_rows(db)


@pytest.mark.parametrize(
    "kind, item_id, reason", [("user", 1, "pii"), ("prompt", "1", "pii"), ("prompt", True, "pii"), ("prompt", 1, "   ")]
)
def test_bad_input_is_refused(db: Database, kind, item_id, reason) -> None:
    with pytest.raises(ValidationError):
        redact_item(db, ADMIN, kind, item_id, reason)


def test_a_failed_redaction_leaves_nothing_half_written(db: Database, monkeypatch) -> None:
    def broken(*_args):
        raise RuntimeError("disk full")

    monkeypatch.setattr(moderation, "_redact_gold", broken)  # fails after candidates/messages changed
    with pytest.raises(RuntimeError):
        redact_item(db, ADMIN, "candidate", 1, "pii")
    assert len(rows_containing(db, SECRET)) == 6 and not audit_rows(db)
    assert db.scalar("SELECT count(*) FROM candidates WHERE redacted_at IS NOT NULL") == 0


def test_audit_entries_show_who_did_what(db: Database) -> None:
    assert moderation.audit_entries(db).empty
    redact_item(db, ADMIN, "preference", 2, "duplicate")
    entry = moderation.audit_entries(db).iloc[0]
    assert (entry["user"], entry["action"], entry["target_table"], entry["target_id"]) == (
        "ada",
        "redact",
        "preferences",
        2,
    )
    assert json.loads(entry["details"])["reason"] == "duplicate"
