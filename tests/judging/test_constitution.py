"""Constitutional self-critique on the tiny model: the editable principles, the three generations, the stored pairs
(whole, by the AI labeler ai:constitution) and how training sets treat them."""

from __future__ import annotations

import json
import time

import pytest

from core.data import trainsets
from core.errors import ModelError, NotFound, PermissionDenied, ValidationError
from core.judging import constitution as cai
from core.labeling import queue as prompt_queue
from core.labeling.identity import ensure_user
from core.serving.generate import SamplingParams
from core.serving.policies import register_policy

SHORT = SamplingParams(temperature=0.7, top_p=0.9, max_new_tokens=12)
PROMPTS = ["Say hello.", "Name a colour.", "What is 2 plus 2?"]
TABLES = ("conversations", "messages", "candidates", "preferences")


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    from tests.support.studios import open_studio

    s = open_studio(tmp_path_factory.mktemp("constitution") / "data")  # tiny model + 12 people's votes
    yield s
    s.close()


@pytest.fixture(scope="module")
def admin(studio):
    return ensure_user(studio.db, "ada", "admin", "test")


@pytest.fixture(scope="module")
def labeler(studio):
    return ensure_user(studio.db, "bo", "labeler", "test")


def counts(db) -> dict[str, int]:
    return {t: db.scalar(f"SELECT count(*) FROM {t}") for t in TABLES}


# --- principles -----------------------------------------------------------------------------------------------


def test_the_default_principles_are_the_shipped_list(studio):
    items = cai.principles(studio.db)
    assert items == cai.parse_principles(cai.CONSTITUTION.read_text(encoding="utf-8"))
    assert 8 <= len(items) <= 12 and cai.principles_text(studio.db) == cai.CONSTITUTION.read_text(encoding="utf-8")
    assert not any(p.startswith(("-", "#", "*")) for p in items)  # markers and the heading are gone
    assert any("made up" in p.lower() or "make up" in p.lower() for p in items)


def test_the_list_reader_takes_markers_numbers_and_plain_lines():
    text = "# Mine\n\n- Be kind.\n* Be  brief.\n3. Cite nothing you did not read.\n2) No PII\nPlain line\n-\n"
    assert cai.parse_principles(text) == [
        "Be kind.",
        "Be brief.",
        "Cite nothing you did not read.",
        "No PII",
        "Plain line",
    ]
    assert cai.checked_principles(text) == cai.parse_principles(text)  # a written text, not its characters


def test_admins_edit_the_principles_and_bad_edits_change_nothing(studio, admin, labeler):
    try:
        saved = cai.save_principles(studio.db, admin, "# Ours\n- Answer in one sentence.\n- Never guess.\n")
        assert saved == ["Answer in one sentence.", "Never guess."] == cai.principles(studio.db)
        audit = studio.db.query(
            "SELECT user_id, action, details FROM audit_log WHERE target_table = 'constitution'"
            " ORDER BY id DESC LIMIT 1"
        )[0]
        assert (audit["user_id"], audit["action"], json.loads(audit["details"])) == (
            admin.id,
            "edit",
            {"principles": 2},
        )
        with pytest.raises(PermissionDenied):
            cai.save_principles(studio.db, labeler, "- Anything goes.")
        with pytest.raises(ValidationError, match="no principles"):
            cai.save_principles(studio.db, admin, "# Only a heading\n\n")
        with pytest.raises(ValidationError, match="more than"):
            cai.save_principles(studio.db, admin, "\n".join(f"- Rule {i}." for i in range(cai.MAX_PRINCIPLES + 1)))
        with pytest.raises(ValidationError, match="principle has"):
            cai.save_principles(studio.db, admin, "- " + "x" * (cai.MAX_PRINCIPLE_CHARS + 1))
        with pytest.raises(ValidationError, match="characters, more than"):
            cai.save_principles(studio.db, admin, "- a\n" * (cai.MAX_TEXT_CHARS // 4 + 1))
        assert cai.principles(studio.db) == saved  # the refused edits changed nothing
        with pytest.raises(PermissionDenied):
            cai.reset_principles(studio.db, labeler)
    finally:
        default = cai.reset_principles(studio.db, admin)
    assert default == cai.parse_principles(cai.CONSTITUTION.read_text(encoding="utf-8"))


# --- critique and revise --------------------------------------------------------------------------------------


def test_the_critique_and_revision_prompts_carry_the_answer_the_principles_and_the_critique():
    prompt = [{"role": "user", "content": "Hi?"}]
    chat = cai.revision_messages(prompt, "Hello.", ["Be kind.", "Be brief."], "It is fine.")
    assert [m["role"] for m in chat] == ["user", "assistant", "user", "assistant", "user"]
    assert chat[1]["content"] == "Hello." and chat[3]["content"] == "It is fine."
    assert chat[2]["content"].startswith("Critique the answer above against these principles:")
    assert "1. Be kind.\n2. Be brief." in chat[2]["content"]
    assert chat[4]["content"] == cai.REVISION_REQUEST and "new answer only" in chat[4]["content"]
    assert cai.critique_messages(prompt, "Hello.", ["Be kind.", "Be brief."]) == chat[:3]


def test_the_policy_answers_critiques_and_revises_reproducibly(studio):
    prompt = [{"role": "user", "content": "Describe the sea."}]
    first = cai.critique_and_revise(studio, "base", prompt, cai.principles(studio.db), SHORT, seed=7)
    assert first.original and first.critique and first.revision
    assert first.policy_id == studio.base_policy_id and first.seed == 7
    assert [s.text for s in first.steps] == [first.original, first.critique, first.revision]
    assert all(0 < s.new_tokens <= 12 and s.latency_ms > 0 for s in first.steps)
    # three different conversations: the three texts differ, and the same seed gives the same three again
    assert len({first.original, first.critique, first.revision}) == 3
    again = cai.critique_and_revise(studio, "base", prompt, cai.principles(studio.db), SHORT, seed=7)
    assert (again.original, again.critique, again.revision) == (first.original, first.critique, first.revision)


def test_empty_or_identical_revisions_are_reported_and_store_nothing(studio):
    user = cai.ensure_ai_labeler(studio.db, cai.LABELER)
    prompt = "Hi?"
    same = cai.Revision("Hello there.", "Fine as it is.", "  Hello there.\n", studio.base_policy_id)
    empty = cai.Revision("Hello there.", "Too long.", "   ", studio.base_policy_id)
    assert (same.skipped, empty.skipped, cai.Revision("", "c", "r").skipped) == ("identical", "empty", "empty")
    assert cai.Revision("a", "c", "b").skipped is None
    before = counts(studio.db)
    for revision in (same, empty):
        assert cai.store_revision(studio.db, user, prompt, revision, SHORT, ["Be kind."]) is None
    assert counts(studio.db) == before


# --- runs -----------------------------------------------------------------------------------------------------


def test_a_run_stores_whole_pairs_by_the_ai_labeler_that_training_sets_keep_apart(studio, admin):
    queue_id = prompt_queue.create_queue(studio.db, admin, "cai-source")
    prompt_queue.import_prompts(studio.db, admin, queue_id, PROMPTS, "test")
    rows_in = cai.queue_prompt_rows(studio.db, "cai-source")
    texts = cai.queue_prompts(studio.db, "cai-source")
    assert texts == PROMPTS == [t for _, t in rows_in] and cai.queue_prompts(studio.db, "cai-source", 2) == PROMPTS[:2]
    people_before = len(trainsets.preference_rows(studio.db).rows)
    ai_before = len(trainsets.preference_rows(studio.db, trainsets.Filters(label_kinds="ai")).rows)
    before = counts(studio.db)
    steps: list[tuple[float, str]] = []

    started = time.perf_counter()
    result = cai.run_constitution(
        studio,
        admin,
        "base",
        texts,
        sampling=SHORT,
        prompt_ids=[i for i, _ in rows_in],
        progress=lambda value, text: steps.append((value, text)),
    )
    elapsed = time.perf_counter() - started
    print(
        f"\nconstitution run: {len(texts)} prompts in {elapsed:.2f} s "
        f"({result['seconds_per_prompt']:.3f} s per prompt, max_new_tokens={SHORT.max_new_tokens})"
    )

    assert (result["version"], result["labeler"], result["prompts"]) == ("base", "ai:constitution", 3)
    assert result["pairs"] + result["skipped_identical"] + result["skipped_empty"] == 3 and result["pairs"] >= 2
    assert [v for v, _ in steps] == pytest.approx([1 / 3, 2 / 3, 1.0]) and "3/3 prompts" in steps[-1][1]
    pairs = result["pairs"]
    after = counts(studio.db)
    # whole pairs only: per stored prompt one conversation, one message, two candidates, one vote
    assert {t: after[t] - before[t] for t in TABLES} == {
        "conversations": pairs,
        "messages": pairs,
        "candidates": 2 * pairs,
        "preferences": pairs,
    }

    rows = studio.db.query(
        "SELECT p.id, p.outcome, p.source, p.confidence, p.note, p.turn, p.judge_run_id, u.name, u.kind,"
        " p.prompt_id, cv.prompt_id AS conversation_prompt, a.prompt_id AS a_prompt,"
        " cv.user_id AS owner, cv.policy_id AS conversation_policy, m.role, m.content AS prompt,"
        " a.text AS a_text, b.text AS b_text, a.policy_id AS a_policy, b.policy_id AS b_policy,"
        " a.sampling AS a_sampling, b.sampling AS b_sampling, a.new_tokens AS a_tokens"
        " FROM preferences p JOIN users u ON u.id = p.labeler_id JOIN conversations cv ON cv.id = p.conversation_id"
        " JOIN messages m ON m.conversation_id = cv.id AND m.turn = 0"
        " JOIN candidates a ON a.id = p.candidate_a JOIN candidates b ON b.id = p.candidate_b"
        " WHERE p.id IN (SELECT unnest(?)) ORDER BY p.id",
        [result["preference_ids"]],
    )
    assert len(rows) == pairs
    for row in rows:
        assert (row["outcome"], row["source"], row["confidence"], row["judge_run_id"]) == ("b", "judge", None, None)
        assert (row["name"], row["kind"], row["role"], row["turn"]) == ("ai:constitution", "ai", "user", 1)
        assert row["owner"] == studio.db.scalar("SELECT id FROM users WHERE name = 'ai:constitution'")
        assert row["prompt"] in PROMPTS and row["a_text"].strip() != row["b_text"].strip()
        queued = dict((t, i) for i, t in rows_in)[row["prompt"]]
        assert row["prompt_id"] == row["conversation_prompt"] == row["a_prompt"] == queued
        assert row["a_policy"] == row["b_policy"] == row["conversation_policy"] == studio.base_policy_id
        assert 0 < row["a_tokens"] <= 12
        note = json.loads(row["note"])
        assert note["kind"] == "constitution" and note["critique"]
        for side, sampling in (("original", row["a_sampling"]), ("revision", row["b_sampling"])):
            stored = json.loads(sampling)
            assert stored["constitution"]["critique"] == note["critique"], side
            assert len(stored["constitution"]["truncated_tokens"]) == 3
            assert stored["constitution"]["principles"] == cai.principles(studio.db)
            assert (stored["max_new_tokens"], stored["temperature"]) == (12, 0.7) and stored["seed"] in (0, 1, 2)

    # people's training data is unchanged; asked for AI labels, the revision is chosen over the original
    assert len(trainsets.preference_rows(studio.db).rows) == people_before
    ai_rows = trainsets.preference_rows(studio.db, trainsets.Filters(label_kinds="ai")).rows
    assert len(ai_rows) == ai_before + pairs
    by_prompt = {r["prompt"]: (r["a_text"], r["b_text"]) for r in rows}
    for row in ai_rows[-pairs:]:
        original, revision = by_prompt[row["prompt"][0]["content"]]
        assert row["prompt"] == [{"role": "user", "content": row["prompt"][0]["content"]}]
        assert (row["chosen"][0]["content"], row["rejected"][0]["content"]) == (revision, original)
    both = trainsets.preference_rows(studio.db, trainsets.Filters(label_kinds="both")).rows
    assert len(both) == people_before + len(ai_rows)
    audit = studio.db.query("SELECT details FROM audit_log WHERE action = 'run' AND target_table = 'constitution'")
    assert json.loads(audit[-1]["details"])["pairs"] == pairs


def test_bad_inputs_fail_before_any_row_is_written(studio, admin, labeler):
    register_policy(studio.db, "rm9", studio.base_policy_id, "tiny", "reward", None, config={})
    before = counts(studio.db)
    ai_users = studio.db.scalar("SELECT count(*) FROM users WHERE kind = 'ai'")
    with pytest.raises(NotFound, match="'v404' does not exist"):
        cai.run_constitution(studio, admin, "v404", PROMPTS, sampling=SHORT)
    with pytest.raises(ValidationError, match="reward model"):
        cai.run_constitution(studio, admin, "rm9", PROMPTS, sampling=SHORT)
    with pytest.raises(PermissionDenied):
        cai.run_constitution(studio, labeler, "base", PROMPTS, sampling=SHORT)
    with pytest.raises(ValidationError, match="No prompts"):
        cai.run_constitution(studio, admin, "base", [], sampling=SHORT)
    with pytest.raises(ValidationError, match="prompt is empty"):
        cai.run_constitution(studio, admin, "base", ["Fine.", "   "], sampling=SHORT)
    with pytest.raises(ValidationError, match="no principles"):
        cai.run_constitution(studio, admin, "base", PROMPTS, principles=["", "  "], sampling=SHORT)
    with pytest.raises(ValidationError, match="max_new_tokens"):
        cai.run_constitution(studio, admin, "base", PROMPTS, sampling=SamplingParams(max_new_tokens=0))
    with pytest.raises(NotFound, match="does not exist") as missing:
        cai.queue_prompts(studio.db, "no-such-queue")
    assert "cai-source" in missing.value.hint or "create one" in missing.value.hint
    prompt_queue.create_queue(studio.db, admin, "cai-empty")
    with pytest.raises(ValidationError, match="has no prompts"):
        cai.queue_prompts(studio.db, "cai-empty")
    assert counts(studio.db) == before
    assert studio.db.scalar("SELECT count(*) FROM users WHERE kind = 'ai'") == ai_users


def test_people_review_the_pairs_and_redacting_the_prompt_reaches_them(studio, admin, labeler):
    """The labeling app's Review tab (core.labeling.review) serves the revisions with their critique; a person's
    review is their own vote, and redacting the queue prompt removes the AI's copy of it and its vote."""
    from core.labeling import review
    from core.labeling.moderation import redact_item

    item = review.next_item(studio.db, labeler)
    assert item is not None and item.judge == "ai:constitution" and item.ai_outcome == "b"
    assert item.critique and item.ai_confidence is None and item.prompt[-1]["content"] in PROMPTS
    people = len(trainsets.preference_rows(studio.db).rows)
    review.record_review(studio.db, labeler, item.candidate_a, item.candidate_b, "a")
    assert len(trainsets.preference_rows(studio.db).rows) == people + 1  # the reviewer's vote is people's data

    ai = len(trainsets.preference_rows(studio.db, trainsets.Filters(label_kinds="ai")).rows)
    prompt_id = studio.db.scalar("SELECT prompt_id FROM candidates WHERE id = ?", [item.candidate_a])
    redact_item(studio.db, admin.id, "prompt", prompt_id, "test: personal data")
    assert (
        studio.db.scalar(
            "SELECT count(*) FROM messages m JOIN conversations c ON c.id = m.conversation_id"
            " WHERE c.prompt_id = ? AND m.redacted_at IS NULL",
            [prompt_id],
        )
        == 0
    )
    assert len(trainsets.preference_rows(studio.db, trainsets.Filters(label_kinds="ai")).rows) == ai - 1
    assert (
        studio.db.scalar(
            "SELECT count(*) FROM candidates WHERE prompt_id = ? AND sampling::VARCHAR LIKE '%critique%'", [prompt_id]
        )
        == 0
    )  # no copy of the critique is left


def test_a_generation_that_fails_stores_nothing_and_the_run_is_on_record(studio, admin, tmp_path):
    """A version whose adapter files are gone passes the checks but cannot generate: the first prompt fails inside
    the real generation path, before its transaction, so no row of it exists; the audit log keeps the error."""
    register_policy(studio.db, "v9", studio.base_policy_id, "tiny", "dpo", str(tmp_path / "moved-away"))
    before = counts(studio.db)
    with pytest.raises(ModelError, match="Cannot load the adapter of v9"):
        cai.run_constitution(studio, admin, "v9", PROMPTS[:1], sampling=SHORT)
    assert counts(studio.db) == before
    details = json.loads(
        studio.db.scalar(
            "SELECT details FROM audit_log WHERE action = 'run'"
            " AND target_table = 'constitution' ORDER BY id DESC LIMIT 1"
        )
    )
    assert (details["version"], details["pairs"]) == ("v9", 0) and "Cannot load the adapter" in details["error"]


def test_the_labeling_setup_page_edits_principles_and_runs_a_queue(studio, admin, monkeypatch):
    """The console's Constitution section in-process (Streamlit AppTest) as the local admin."""
    from streamlit.testing.v1 import AppTest

    import core.studio
    from tests.support import ROOT

    monkeypatch.setattr(core.studio, "_current", studio)
    queue_id = prompt_queue.create_queue(studio.db, admin, "page-cai")
    prompt_queue.import_prompts(studio.db, admin, queue_id, ["Say hi to the team."], "test")
    app = AppTest.from_file(str(ROOT / "pages" / "labeling.py"), default_timeout=120).run()
    assert not app.exception and not app.error
    try:
        app.text_area(key="constitution-text").input("- Be brief.\n- Be kind.\n")
        next(b for b in app.button if b.label == "Save principles").click().run()
        assert any("2 principles saved" in s.value for s in app.success)
        assert cai.principles(studio.db) == ["Be brief.", "Be kind."]
        before = counts(studio.db)["preferences"]
        next(s for s in app.selectbox if s.key == "constitution-queue").set_value("page-cai")
        next(n for n in app.number_input if n.label.startswith("Longest answer")).set_value(8)
        next(b for b in app.button if b.label == "Run").click().run()
        assert not app.exception and any("pairs stored for review" in s.value for s in app.success), [
            e.value for e in app.error
        ]
        assert counts(studio.db)["preferences"] >= before
    finally:
        cai.reset_principles(studio.db, admin)


@pytest.mark.slow  # >= 3 s (a server, a child process or a CLI run): not in make test-fast
def test_the_cli_shows_the_principles_and_runs_a_queue(tmp_path, tiny_model_dir):
    import shutil
    import subprocess
    import sys

    from core.serving.models import MODELS_SUBDIR, TINY_MODEL_DIR
    from storage.db import Database
    from tests.support import ROOT

    data_dir = tmp_path / "data"
    shutil.copytree(tiny_model_dir, data_dir / MODELS_SUBDIR / TINY_MODEL_DIR)
    db = Database.in_data_dir(data_dir)
    owner = ensure_user(db, "operator", "admin", "cli")
    prompt_queue.import_prompts(db, owner, prompt_queue.create_queue(db, owner, "cli-cai"), ["Name a fruit."], "t")
    db.close()
    base = [sys.executable, str(ROOT / "launch.py"), "constitution", "--data-dir", str(data_dir), "--model", "tiny"]
    shown = subprocess.run(base + ["--show"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0 and shown.stdout.startswith("1. ")
    run = subprocess.run(
        base + ["--queue", "cli-cai", "--max-new-tokens", "8", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout)
    assert result["prompts"] == 1 and result["pairs"] + result["skipped_identical"] + result["skipped_empty"] == 1
    missing = subprocess.run(base + ["--queue", "nope"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "error [not_found]" in missing.stderr
