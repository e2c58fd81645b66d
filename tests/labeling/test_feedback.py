"""Feedback validation and storage rules, shared by every entry point."""

import pytest

from core.errors import ValidationError
from core.labeling.feedback import Feedback, clean_text, record_feedback
from storage.db import Database


def test_control_characters_are_stripped_but_newlines_kept():
    assert clean_text("a\x00b\x1b[31m\nc\td", "prompt") == "ab[31m\nc\td"


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"score": -0.1}, "outside 0..1"),
        ({"score": True}, "must be a number"),
        ({"prompt": "\x00\x01 "}, "prompt is empty"),
        ({"response": "x" * 100_001}, "more than 100000"),
    ],
)
def test_invalid_feedback_is_refused_before_touching_the_db(tmp_path, kwargs, fragment):
    db = Database(tmp_path / "s.duckdb")
    fields = {"prompt": "p", "response": "r", "score": 0.5, **kwargs}
    with pytest.raises(ValidationError, match=fragment):
        record_feedback(db, Feedback(**fields))
    assert db.scalar("SELECT count(*) FROM feedback") == 0
    db.close()


def test_valid_feedback_is_stored_cleaned(tmp_path):
    db = Database(tmp_path / "s.duckdb")
    fid, created = record_feedback(db, Feedback(prompt="hi\x07", response="hello", score=1, notes="ok"))
    assert created
    assert db.query("SELECT prompt, score, notes FROM feedback WHERE id = ?", [fid]) == [
        {"prompt": "hi", "score": 1.0, "notes": "ok"}
    ]
    db.close()
