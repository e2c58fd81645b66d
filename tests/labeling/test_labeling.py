"""Votes, undo, idempotency and prompt queues on a real DuckDB file."""

from __future__ import annotations

import threading

import pytest

from core.errors import Conflict, NotFound, PermissionDenied, ValidationError
from core.labeling import queue as pq
from core.labeling.identity import ensure_user
from core.labeling.votes import (
    CandidateIn,
    Vote,
    add_user_message,
    history,
    new_conversation,
    record_vote,
    save_pair,
    submit_labeled_pair,
    undo_last_vote,
)
from storage.db import Database


@pytest.fixture
def db(tmp_path):
    database = Database(tmp_path / "studio.duckdb")
    yield database
    database.close()


@pytest.fixture
def ada(db):
    return ensure_user(db, "ada", "admin", "test")


@pytest.fixture
def bob(db):
    return ensure_user(db, "bob", "labeler", "test")


def open_turn(db, user, text="Hi?", prompt_id=None):
    conv = new_conversation(db, user, None, prompt_id)
    turn = add_user_message(db, user, conv, text)
    a, b = save_pair(
        db,
        conv,
        turn,
        prompt_id,
        CandidateIn("answer A", None, 10.0, 2),
        CandidateIn("answer B", None, 10.0, 2),
        {"temperature": 0.7},
    )
    return conv, turn, a, b


def test_vote_with_everything_is_stored_and_continues_the_chat(db, bob):
    conv, turn, a, b = open_turn(db, bob)
    receipt = record_vote(
        db,
        bob,
        Vote(
            a,
            b,
            "b",
            ratings={"a": {"helpfulness": 2}, "b": {"helpfulness": 5}},
            thumbs={"b": True},
            note="B is clearer",
            flags=("pii",),
        ),
    )
    assert receipt.created and receipt.continuation == "answer B"
    assert history(db, conv) == [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "answer B"}]
    pref = db.query("SELECT outcome, labeler_id, note, flags FROM preferences")[0]
    assert pref == {"outcome": "b", "labeler_id": bob.id, "note": "B is clearer", "flags": ["pii"]}
    assert sorted((r["candidate_id"], r["score"]) for r in db.query("SELECT candidate_id, score FROM ratings")) == [
        (a, 2.0),
        (b, 5.0),
    ]
    assert db.query("SELECT candidate_id, up FROM thumbs") == [{"candidate_id": b, "up": True}]


def test_gold_edit_continues_the_conversation(db, bob):
    conv, turn, a, b = open_turn(db, bob)
    receipt = record_vote(db, bob, Vote(a, b, "both_bad", gold_text="The right answer.", gold_side="a"))
    assert receipt.continuation == "The right answer."
    assert db.query("SELECT candidate_id, text FROM gold_answers") == [{"candidate_id": a, "text": "The right answer."}]


def test_both_bad_without_gold_leaves_the_turn_open_for_a_new_pair(db, bob):
    conv, turn, a, b = open_turn(db, bob)
    assert record_vote(db, bob, Vote(a, b, "both_bad")).continuation is None
    a2, b2 = save_pair(db, conv, turn, None, CandidateIn("A2", None), CandidateIn("B2", None), None)
    assert record_vote(db, bob, Vote(a2, b2, "a")).continuation == "A2"


def test_repeated_submission_is_saved_once(db, bob):
    conv, turn, a, b = open_turn(db, bob)
    first = record_vote(db, bob, Vote(a, b, "a"))
    again = record_vote(db, bob, Vote(a, b, "a"))
    assert (again.preference_id, again.created) == (first.preference_id, False)
    assert db.scalar("SELECT count(*) FROM preferences") == 1


def test_concurrent_identical_submissions_are_saved_once(db, bob):
    conv, turn, a, b = open_turn(db, bob)
    receipts, errors = [], []

    def submit():
        try:
            receipts.append(record_vote(db, bob, Vote(a, b, "a", idempotency_key="same-click")))
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert db.scalar("SELECT count(*) FROM preferences") == 1
    assert len({r.preference_id for r in receipts}) == 1
    assert errors == []


def test_undo_retracts_the_vote_and_reopens_the_turn(db, bob):
    conv, turn, a, b = open_turn(db, bob)
    first = record_vote(db, bob, Vote(a, b, "a", ratings={"a": {"honesty": 4}}))
    undone = undo_last_vote(db, bob)
    assert (undone.preference_id, undone.turn) == (first.preference_id, turn)
    assert {undone.candidate_a, undone.candidate_b} == {a, b}
    assert history(db, conv) == [{"role": "user", "content": "Hi?"}]
    assert db.scalar("SELECT retracted_at IS NOT NULL FROM preferences") is True
    second = record_vote(db, bob, Vote(a, b, "b"))
    assert second.created and second.continuation == "answer B"
    assert db.scalar("SELECT count(*) FROM audit_log WHERE action = 'undo'") == 1


def test_undo_with_nothing_to_undo_is_a_clear_error(db, bob):
    with pytest.raises(NotFound, match="no vote to undo"):
        undo_last_vote(db, bob)


def test_undo_after_the_chat_went_on_is_refused(db, bob):
    conv, turn, a, b = open_turn(db, bob)
    record_vote(db, bob, Vote(a, b, "a"))
    add_user_message(db, bob, conv, "And then?")
    with pytest.raises(Conflict, match="went on"):
        undo_last_vote(db, bob)


@pytest.mark.parametrize(
    "vote_kwargs, error",
    [
        ({"outcome": "maybe"}, "Unknown choice"),
        ({"outcome": "a", "ratings": {"a": {"helpfulness": 6}}}, "1 to 5"),
        ({"outcome": "a", "ratings": {"a": {"charm": 3}}}, "Unknown aspect"),
        ({"outcome": "a", "flags": ("spam",)}, "Unknown flag"),
    ],
)
def test_invalid_votes_store_nothing(db, bob, vote_kwargs, error):
    conv, turn, a, b = open_turn(db, bob)
    with pytest.raises(ValidationError, match=error):
        record_vote(db, bob, Vote(a, b, **vote_kwargs))
    assert db.scalar("SELECT count(*) FROM preferences") == 0
    assert db.scalar("SELECT count(*) FROM ratings") == 0


def test_a_labeler_cannot_vote_in_someone_elses_conversation(db, bob, ada):
    conv, turn, a, b = open_turn(db, bob)
    with pytest.raises(PermissionDenied):
        record_vote(db, ada, Vote(a, b, "a"))


def test_writing_twice_before_voting_is_refused(db, bob):
    conv, turn, a, b = open_turn(db, bob)
    with pytest.raises(Conflict, match="no accepted answer"):
        add_user_message(db, bob, conv, "hello again")


def test_api_pairs_are_idempotent_by_key(db, bob):
    first = submit_labeled_pair(db, bob, "p", "x", "y", Vote(0, 0, "a", idempotency_key="k"))
    again = submit_labeled_pair(db, bob, "p", "x", "y", Vote(0, 0, "a", idempotency_key="k"))
    assert again.preference_id == first.preference_id and not again.created
    assert db.scalar("SELECT count(*) FROM candidates") == 2


# -- queues ----------------------------------------------------------------------------------------
def test_each_prompt_goes_to_k_labelers_never_twice_to_one(db, ada, bob):
    carl = ensure_user(db, "carl", "labeler", "test")
    qid = pq.create_queue(db, ada, "q", overlap=2)
    assert pq.import_prompts(db, ada, qid, ["p1", "p2"], "test") == 2
    served = {}
    for user in (ada, bob, carl):
        item = pq.next_prompt(db, user, qid)
        served[user.name] = item["text"]
        conv, turn, a, b = open_turn(db, user, item["text"], prompt_id=item["id"])
        record_vote(db, user, Vote(a, b, "a"))
    assert list(served.values()).count("p1") == 2 and served["carl"] == "p2"
    second = {u.name: pq.next_prompt(db, u, qid) for u in (ada, bob, carl)}
    assert second["ada"]["text"] == "p2" and second["bob"] is None or second["bob"]["text"] == "p2"
    assert second["carl"] is None  # carl already had p2, p1 is full
    assert pq.progress(db, ada, qid)["today"] == 1


def test_skip_hands_the_prompt_to_someone_else(db, ada, bob):
    qid = pq.create_queue(db, ada, "q", overlap=1)
    pq.import_prompts(db, ada, qid, ["only"], "test")
    item = pq.next_prompt(db, bob, qid)
    pq.skip_prompt(db, bob, item["id"])
    assert pq.next_prompt(db, bob, qid) is None
    assert pq.next_prompt(db, ada, qid)["text"] == "only"


def test_concurrent_labelers_never_exceed_the_overlap(db, ada):
    qid = pq.create_queue(db, ada, "q", overlap=1)
    pq.import_prompts(db, ada, qid, [f"p{i}" for i in range(5)], "test")
    users = [ensure_user(db, f"u{i}", "labeler", "test") for i in range(8)]
    got = []
    threads = [threading.Thread(target=lambda u=u: got.append(pq.next_prompt(db, u, qid))) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    texts = [g["text"] for g in got if g]
    assert sorted(texts) == [f"p{i}" for i in range(5)]  # each once, three labelers got nothing


@pytest.mark.parametrize(
    "name, data, expected",
    [
        ("p.txt", "one\n\ntwo\n", ["one", "two"]),
        ("p.jsonl", '{"prompt": "one"}\n{"text": "two"}\n', ["one", "two"]),
        ("p.csv", 'id,prompt\n1,one\n2,"two, with comma"\n', ["one", "two, with comma"]),
        ("p.json", '["one", {"prompt": "two"}]', ["one", "two"]),
    ],
)
def test_prompt_files_are_parsed(name, data, expected):
    assert pq.parse_prompts(data.encode(), name) == expected


@pytest.mark.parametrize(
    "name, data, error",
    [
        ("p.jsonl", '{"prompt": "ok"}\nnot json\n', "line 2"),
        ("p.csv", "a,b\n1,2\n", "no 'prompt'"),
        ("p.pdf", "x", "unknown file type"),
        ("p.txt", "\n\n", "no prompts"),
    ],
)
def test_bad_prompt_files_say_what_is_wrong(name, data, error):
    with pytest.raises(ValidationError, match=error):
        pq.parse_prompts(data, name)


def test_only_admins_manage_queues_and_guidelines(db, bob):
    with pytest.raises(PermissionDenied):
        pq.create_queue(db, bob, "mine")
    with pytest.raises(PermissionDenied):
        pq.save_guidelines(db, bob, "new rules")


def test_seed_queue_and_edited_guidelines(db, ada):
    qid = pq.load_seed_queue(db, ada)
    assert pq.list_queues(db)[0]["prompts"] >= 30
    assert pq.load_seed_queue(db, ada) == qid and pq.list_queues(db)[0]["prompts"] >= 30  # idempotent
    assert "Labeling guidelines" in pq.guidelines(db)
    pq.save_guidelines(db, ada, "# Our rules")
    assert pq.guidelines(db) == "# Our rules"


def test_concurrent_api_pairs_are_written_together_once_each(db, bob):
    """Many threads submitting labeled pairs at once, some repeating a key: one row per key, with its
    own prompt, candidates and ratings, and every repeat answered with the first receipt."""
    ensure_user(db, "ada", "admin", "test")
    receipts: dict[int, object] = {}
    errors = []

    def submit(i: int) -> None:
        key = f"key-{i % 15}"  # 30 submissions, 15 distinct keys
        vote = Vote(
            0,
            0,
            ("a", "b", "tie")[i % 3],
            ratings={"a": {"helpfulness": 1 + i % 5}},
            thumbs={"b": i % 2 == 0},
            idempotency_key=key,
            source="api",
        )
        try:
            receipts[i] = submit_labeled_pair(db, bob, f"prompt {i % 15}", f"A{i % 15}", f"B{i % 15}", vote)
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert db.scalar("SELECT count(*) FROM preferences") == 15
    assert db.scalar("SELECT count(*) FROM candidates") == 30 and db.scalar("SELECT count(*) FROM prompts") == 15
    assert db.scalar("SELECT count(*) FROM ratings") == 15 and db.scalar("SELECT count(*) FROM thumbs") == 15
    by_key: dict[str, set[int]] = {}
    for i, receipt in receipts.items():
        by_key.setdefault(f"key-{i % 15}", set()).add(receipt.preference_id)
    assert all(len(ids) == 1 for ids in by_key.values()) and len(by_key) == 15
    assert sum(r.created for r in receipts.values()) == 15
    rows = db.query(
        "SELECT p.idempotency_key AS k, pr.text AS prompt, ca.text AS a, cb.text AS b FROM preferences p"
        " JOIN prompts pr ON pr.id = p.prompt_id JOIN candidates ca ON ca.id = p.candidate_a"
        " JOIN candidates cb ON cb.id = p.candidate_b"
    )
    for row in rows:  # each preference points at its own prompt and answers, A shown as A
        n = row["k"].split("-")[1]
        assert (row["prompt"], row["a"], row["b"]) == (f"prompt {n}", f"A{n}", f"B{n}")
