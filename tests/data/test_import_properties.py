"""Property-based tests of dataset import: whatever a file holds (random bytes, arbitrary JSON rows in any
known shape, unicode edge cases), import either succeeds or fails with a clear StudioError, and a failed
import writes nothing (one transaction)."""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

from core.data.datasets_io import import_file
from core.data.import_formats import inspect_file
from core.errors import StudioError
from core.labeling.identity import User
from storage.db import Database

ADMIN = User(0, "admin", "admin")
TABLES = ("prompts", "candidates", "preferences", "conversations", "messages", "thumbs", "queues")
EDGE = st.sampled_from(["", " ", "\x00", "\u202e", "\ufeff", "🧪", "e\u0301", "\\n\\nHuman: hi\\n\\nAssistant:",
                        "\n\nHuman: hi\n\nAssistant: yo", "true", "0", "NaN"])
TEXT = st.one_of(st.text(max_size=40), EDGE)
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-10, 10), st.floats(allow_nan=False, allow_infinity=False),
                   TEXT)
VALUE = st.recursive(SCALAR, lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(TEXT, c, max_size=3)),
                     max_leaves=8)
MESSAGES = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "bot", ""]),
                                           "content": TEXT}), max_size=3)
WORDS = st.text(alphabet="abcdefgh ?!é🧪", min_size=1, max_size=30)
# rows that look like each supported shape (often valid), with arbitrary values mixed in
ROW = st.one_of(
    st.fixed_dictionaries({"prompt": WORDS, "chosen": WORDS, "rejected": WORDS}),
    st.fixed_dictionaries({"prompt": WORDS, "completion": WORDS, "label": st.booleans()}),
    st.fixed_dictionaries({"prompt": st.one_of(TEXT, MESSAGES), "chosen": st.one_of(TEXT, MESSAGES),
                           "rejected": st.one_of(TEXT, MESSAGES)}),
    st.fixed_dictionaries({"prompt": st.one_of(TEXT, MESSAGES), "completion": st.one_of(TEXT, MESSAGES),
                           "label": st.one_of(st.booleans(), TEXT, st.integers(-1, 2))}),
    st.fixed_dictionaries({"chosen": TEXT, "rejected": TEXT}),
    st.fixed_dictionaries({"chosen": MESSAGES, "rejected": MESSAGES, "score_chosen": SCALAR,
                           "score_rejected": SCALAR}),
    st.fixed_dictionaries({"message_id": TEXT, "parent_id": st.one_of(st.none(), TEXT), "text": TEXT,
                           "role": st.sampled_from(["prompter", "assistant", "x"]), "rank": SCALAR}),
    st.fixed_dictionaries({"prompt": TEXT}),
    st.dictionaries(TEXT, VALUE, max_size=4),
    VALUE,
)
PROPS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    database = Database(tmp_path_factory.mktemp("import-props") / "studio.duckdb")
    yield database
    database.close()


def counts(db: Database) -> dict[str, int]:
    return {t: db.scalar(f"SELECT count(*) FROM {t}") for t in TABLES}


def attempt(db: Database, path, skip_bad: bool) -> None:
    before = counts(db)
    try:
        result = import_file(db, path, name="prop", skip_bad=skip_bad, user=ADMIN)
    except StudioError as exc:
        event(f"refused: {exc.code}")
        assert exc.message and exc.code, exc
        assert counts(db) == before, "a refused import wrote something"
    else:
        event(f"imported as {result.format}")


@PROPS
@given(rows=st.lists(ROW, max_size=6), skip_bad=st.booleans(), as_array=st.booleans())
def test_any_json_rows_import_cleanly_or_write_nothing(db, tmp_path_factory, rows, skip_bad, as_array):
    folder = tmp_path_factory.mktemp("rows")
    if as_array:
        path = folder / "data.json"
        path.write_text(json.dumps(rows), encoding="utf-8")
    else:
        path = folder / "data.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    attempt(db, path, skip_bad)


@PROPS
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".jsonl", ".json", ".csv", ".parquet", ".txt", ".zip",
                                                             ".gz"]))
def test_random_bytes_in_any_format_are_a_clear_error_or_an_import(db, tmp_path_factory, data, suffix):
    path = tmp_path_factory.mktemp("bytes") / f"file{suffix}"
    path.write_bytes(data)
    try:
        inspect_file(path)
    except StudioError as exc:
        assert exc.message and exc.code
    attempt(db, path, skip_bad=True)


@PROPS
@given(lines=st.lists(st.one_of(TEXT, st.text(alphabet=",;\"\t\n", max_size=10)), max_size=8),
       header=st.sampled_from(["prompt,chosen,rejected", "prompt,completion,label", "prompt", "a,b", ""]))
def test_csv_with_odd_quoting_and_delimiters_is_handled(db, tmp_path_factory, lines, header):
    path = tmp_path_factory.mktemp("csv") / "data.csv"
    path.write_text(header + "\n" + "\n".join(lines), encoding="utf-8")
    attempt(db, path, skip_bad=True)
