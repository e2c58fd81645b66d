"""Training-set builders: labels in a real DuckDB -> TRL datasets, one test per mapping rule and filter."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from core.data.filters import Filters, resolve_aspect_weights
from core.data.trainsets import (
    build_preference,
    build_reward,
    build_sft,
    build_unpaired,
    preference_rows,
    sft_rows,
    unpaired_rows,
)
from core.errors import ValidationError
from storage.db import Database

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def bot(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


class Lab:
    """Writes labels the way the studio stores them (see core/labeling/votes.py), with controllable times."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.users: dict[str, int] = {}
        self.policies: dict[str, int] = {}
        self.clock = T0

    def _id(self, sql: str, params: list) -> int:
        with self.db.transaction() as cur:
            return cur.execute(sql + " RETURNING id", params).fetchone()[0]

    def _tick(self, at: datetime | None) -> datetime:
        self.clock = at or self.clock + timedelta(minutes=1)
        return self.clock

    def user(self, name: str) -> int:
        if name not in self.users:
            self.users[name] = self._id("INSERT INTO users (name) VALUES (?)", [name])
        return self.users[name]

    def policy(self, name: str) -> int:
        if name not in self.policies:
            self.policies[name] = self._id("INSERT INTO policies (name, base_model) VALUES (?, 'tiny')", [name])
        return self.policies[name]

    def chat(self, labeler: str, history: list[str], a: str, b: str, outcome: str, **vote) -> dict[str, int]:
        """A conversation whose turns are ``history`` (user, assistant, user, ...), then a voted pair."""
        at = self._tick(vote.pop("at", None))
        conv = self._id("INSERT INTO conversations (user_id, policy_id, created_at) VALUES (?, ?, ?)",
                        [self.user(labeler), self.policy("base"), at])
        with self.db.transaction() as cur:
            for turn, text in enumerate(history):
                cur.execute("INSERT INTO messages (conversation_id, turn, role, content, created_at)"
                            " VALUES (?, ?, ?, ?, ?)", [conv, turn, "user" if turn % 2 == 0 else "assistant",
                                                         text, at])
        ids = self._pair(conv, len(history), None, a, b, vote.pop("policies", ("base", "base")), at)
        ids["conversation"] = conv
        ids |= self.vote(labeler, ids, outcome, at=at, **vote)
        # like the app: the accepted answer continues the conversation at the voted turn
        if outcome != "both_bad" or vote.get("gold"):
            text = vote.get("gold") or (b if outcome == "b" else a)
            with self.db.transaction() as cur:
                cur.execute("INSERT INTO messages (conversation_id, turn, role, content) VALUES (?, ?, 'assistant', ?)",
                            [conv, len(history), text])
        return ids

    def api_pair(self, labeler: str, prompt: str, a: str, b: str, outcome: str, **vote) -> dict[str, int]:
        at = self._tick(vote.pop("at", None))
        prompt_id = self._id("INSERT INTO prompts (text, source) VALUES (?, 'api')", [prompt])
        ids = self._pair(None, None, prompt_id, a, b, vote.pop("policies", (None, None)), at)
        ids["prompt"] = prompt_id
        return ids | self.vote(labeler, ids, outcome, at=at, source=vote.pop("source", "api"), **vote)

    def _pair(self, conv, turn, prompt_id, a, b, policies, at) -> dict[str, int]:
        return {side: self._id(
            "INSERT INTO candidates (conversation_id, turn, prompt_id, policy_id, text, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)", [conv, turn, prompt_id, self.policy(pol) if pol else None, text, at])
            for side, text, pol in (("a", a, policies[0]), ("b", b, policies[1]))}

    def vote(self, labeler: str, ids: dict[str, int], outcome: str, *, at: datetime | None = None,
             source: str = "chat", flags: tuple[str, ...] = (), ratings: dict | None = None,
             thumbs: dict | None = None, gold: str | None = None, gold_side: str | None = None) -> dict[str, int]:
        """A vote on an existing pair (``ids`` has candidate ids under "a" and "b")."""
        at = at or self._tick(None)
        uid = self.user(labeler)
        pref = self._id("INSERT INTO preferences (candidate_a, candidate_b, outcome, labeler_id, source, flags,"
                        " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [ids["a"], ids["b"], outcome, uid, source, list(flags), at])
        with self.db.transaction() as cur:
            for side, scores in (ratings or {}).items():
                for aspect, score in scores.items():
                    cur.execute("INSERT INTO ratings (candidate_id, user_id, aspect, score, preference_id,"
                                " created_at) VALUES (?, ?, ?, ?, ?, ?)", [ids[side], uid, aspect, score, pref, at])
            for side, up in (thumbs or {}).items():
                cur.execute("INSERT INTO thumbs (candidate_id, preference_id, user_id, up, created_at)"
                            " VALUES (?, ?, ?, ?, ?)", [ids[side], pref, uid, up, at])
            if gold:
                cur.execute("INSERT INTO gold_answers (preference_id, candidate_id, user_id, text, created_at)"
                            " VALUES (?, ?, ?, ?, ?)", [pref, ids.get(gold_side or ""), uid, gold, at])
        return {"preference": pref}

    def feedback(self, prompt: str, response: str, score: float, **kw) -> None:
        with self.db.transaction() as cur:
            cur.execute("INSERT INTO feedback (prompt, response, score, labeler_id, source, created_at)"
                        " VALUES (?, ?, ?, ?, ?, ?)", [prompt, response, score, kw.get("labeler_id"),
                                                       kw.get("source", "api"), self._tick(kw.get("at"))])

    def execute(self, sql: str, params: list) -> None:
        with self.db.transaction() as cur:
            cur.execute(sql, params)


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    db = Database(tmp_path / "s.duckdb")
    yield Lab(db)
    db.close()


HISTORY = ["Hi, I need a recipe.", "Sure, what ingredients do you have?", "Eggs and spinach."]
PROMPT = [user(HISTORY[0]), bot(HISTORY[1]), user(HISTORY[2])]


# ----------------------------------------------------------------------------------------- preference

def test_ab_vote_is_one_pair_with_the_whole_conversation_as_prompt(lab: Lab):
    lab.chat("alice", HISTORY, "Make an omelette.", "Eat them raw.", "a")
    lab.chat("alice", ["What is 2+2?"], "5", "4", "b")

    rows, stats = preference_rows(lab.db)

    assert rows == [
        {"prompt": PROMPT, "chosen": [bot("Make an omelette.")], "rejected": [bot("Eat them raw.")]},
        {"prompt": [user("What is 2+2?")], "chosen": [bot("4")], "rejected": [bot("5")]},
    ]
    assert stats == {"rows": 2, "skipped": {}}


def test_api_pair_prompt_is_one_user_message(lab: Lab):
    lab.api_pair("bob", "Name a color.", "Blue.", "Seven.", "a")
    assert preference_rows(lab.db).rows == [
        {"prompt": [user("Name a color.")], "chosen": [bot("Blue.")], "rejected": [bot("Seven.")]}]


def test_gold_edit_adds_a_gold_vs_rejected_pair_and_keeps_the_pick(lab: Lab):
    lab.chat("alice", ["Capital of France?"], "Paris", "Lyon", "a", gold="Paris is the capital of France.",
             gold_side="a")
    lab.chat("alice", ["Capital of Spain?"], "Madrid", "Rome", "a", gold="Madrid", gold_side="a")  # unchanged

    assert preference_rows(lab.db).rows == [
        {"prompt": [user("Capital of France?")], "chosen": [bot("Paris")], "rejected": [bot("Lyon")]},
        {"prompt": [user("Capital of France?")], "chosen": [bot("Paris is the capital of France.")],
         "rejected": [bot("Lyon")]},
        {"prompt": [user("Capital of Spain?")], "chosen": [bot("Madrid")], "rejected": [bot("Rome")]},
    ]


def test_tie_makes_no_pair_and_both_bad_only_with_a_gold_edit(lab: Lab):
    lab.chat("alice", ["Say hi"], "Hi", "Hello", "tie")
    lab.chat("alice", ["Say bye"], "Hi", "Hello", "both_bad")
    lab.chat("alice", ["2*3?"], "5", "7", "both_bad", gold="6", gold_side="a")

    rows, stats = preference_rows(lab.db)

    assert rows == [
        {"prompt": [user("2*3?")], "chosen": [bot("6")], "rejected": [bot("5")]},
        {"prompt": [user("2*3?")], "chosen": [bot("6")], "rejected": [bot("7")]},
    ]
    assert stats == {"rows": 2, "skipped": {"both_bad_without_gold": 1, "tie": 1}}


def test_pair_with_identical_texts_is_skipped(lab: Lab):
    lab.chat("alice", ["Hi"], "Hello!", "Hello!", "a")
    assert preference_rows(lab.db).stats == {"rows": 0, "skipped": {"identical_answers": 1}}


# ----------------------------------------------------------------------------------------- reward

def test_reward_margin_is_the_weighted_rating_gap(lab: Lab):
    lab.execute("UPDATE aspects SET weight = 3 WHERE name = 'helpfulness'", [])
    lab.chat("alice", ["Q1"], "good", "bad", "a",
             ratings={"a": {"helpfulness": 5, "honesty": 4}, "b": {"helpfulness": 2, "honesty": 4}})
    lab.chat("alice", ["Q2"], "x", "y", "b", ratings={"a": {"helpfulness": 3}})         # only one side rated
    lab.chat("alice", ["Q3"], "p", "q", "a",                                             # rated against the pick
             ratings={"a": {"helpfulness": 2}, "b": {"helpfulness": 4}}, gold="p!", gold_side="a")

    rows, _ = preference_rows(lab.db, margin_from_ratings=True)
    # (3*5 + 1*4)/4 - (3*2 + 1*4)/4 = 4.75 - 2.5
    assert [(r["chosen"][0]["content"], r["margin"]) for r in rows] == [
        ("good", 2.25), ("y", 0.0), ("p", 0.0), ("p!", 0.0)]

    custom = build_reward(lab.db, margin_from_ratings=True, aspect_weights={"honesty": 1.0, "helpfulness": 0.0})
    assert custom.dataset.column_names == ["prompt", "chosen", "rejected", "margin"]
    assert custom.dataset["margin"] == [0.0, 0.0, 0.0, 0.0]
    only_help = build_reward(lab.db, Filters(aspects=["helpfulness"]), margin_from_ratings=True)
    assert only_help.dataset["margin"] == [3.0, 0.0, 0.0, 0.0]
    plain = build_reward(lab.db)
    assert plain.dataset.column_names == ["prompt", "chosen", "rejected"]


def test_aspect_weights_come_from_the_active_aspects(lab: Lab):
    lab.execute("UPDATE aspects SET active = FALSE WHERE name = 'honesty'", [])
    assert resolve_aspect_weights(lab.db) == {"helpfulness": 1.0, "harmlessness": 1.0}
    assert resolve_aspect_weights(lab.db, Filters(aspects=["honesty"])) == {"honesty": 1.0}
    with pytest.raises(ValidationError, match="Unknown aspect"):
        resolve_aspect_weights(lab.db, override={"style": 1.0})
    with pytest.raises(ValidationError, match="≥ 0"):
        resolve_aspect_weights(lab.db, override={"honesty": -1})


# ----------------------------------------------------------------------------------------- unpaired

def test_unpaired_labels_from_votes_thumbs_ratings_gold_and_feedback(lab: Lab):
    lab.chat("alice", ["Q-ab"], "win", "lose", "a")
    lab.chat("alice", ["Q-bad"], "bad1", "bad2", "both_bad")
    lab.chat("alice", ["Q-tie"], "t1", "t2", "tie", ratings={"a": {"helpfulness": 5}, "b": {"helpfulness": 3}})
    # thumbs win over the vote: picked A, but gave it a thumbs down
    lab.chat("alice", ["Q-thumb"], "meh", "worse", "a", thumbs={"a": False})
    lab.chat("alice", ["Q-gold"], "draft", "other", "a", gold="polished", gold_side="a")
    lab.feedback("Is water wet?", "Yes.", 0.9)
    lab.feedback("Is fire cold?", "Yes.", 0.1)

    rows, stats = unpaired_rows(lab.db)

    got = [(r["prompt"][-1]["content"], r["completion"][0]["content"], r["label"]) for r in rows]
    assert got == [
        ("Q-ab", "win", True), ("Q-ab", "lose", False),
        ("Q-bad", "bad1", False), ("Q-bad", "bad2", False),
        ("Q-tie", "t1", True),                                # tie: rating 5 decides, rating 3 is neutral
        ("Q-thumb", "meh", False), ("Q-thumb", "worse", False),
        ("Q-gold", "draft", True), ("Q-gold", "other", False),
        ("Q-gold", "polished", True),
        ("Is water wet?", "Yes.", True), ("Is fire cold?", "Yes.", False),
    ]
    assert stats == {"rows": 12, "skipped": {"no_clear_label": 1, "tie": 1}}
    assert rows[0] == {"prompt": [user("Q-ab")], "completion": [bot("win")], "label": True}

    without = unpaired_rows(lab.db, use_ratings=False, include_feedback=False).rows
    assert ("Q-tie", "t1", True) not in [(r["prompt"][-1]["content"], r["completion"][0]["content"], r["label"])
                                         for r in without]
    assert len(without) == 9


def test_lone_thumbs_and_conflicting_thumbs_defer_to_the_vote(lab: Lab):
    ids = lab.chat("alice", ["Q"], "A-text", "B-text", "b")
    bob = lab.user("bob")
    carol = lab.user("carol")
    lab.execute("INSERT INTO thumbs (candidate_id, user_id, up) VALUES (?, ?, TRUE), (?, ?, FALSE)",
                [ids["a"], bob, ids["a"], carol])  # 1 up, 1 down: tied, the vote (B won) decides
    lab.execute("INSERT INTO thumbs (candidate_id, user_id, up) VALUES (?, ?, TRUE)", [ids["b"], bob])

    got = [(r["completion"][0]["content"], r["label"]) for r in unpaired_rows(lab.db).rows]
    assert got == [("A-text", False), ("B-text", True)]


# ----------------------------------------------------------------------------------------- sft

def test_sft_uses_gold_edits_and_picks(lab: Lab):
    lab.chat("alice", HISTORY, "Omelette.", "Raw.", "a")
    lab.chat("alice", ["2*3?"], "5", "7", "both_bad", gold="6", gold_side="a")
    lab.chat("alice", ["Hi"], "Hey", "Yo", "b", gold="Hello! How can I help?", gold_side="b")
    lab.chat("alice", ["Tie?"], "x", "y", "tie")

    rows, stats = sft_rows(lab.db)
    assert rows == [
        {"messages": PROMPT + [bot("Omelette.")]},
        {"messages": [user("2*3?"), bot("6")]},
        {"messages": [user("Hi"), bot("Hello! How can I help?")]},   # the gold edit replaces the pick
    ]
    assert stats == {"rows": 3, "skipped": {"tie": 1}}

    gold_only = build_sft(lab.db, only_gold=True)
    assert gold_only.dataset["messages"] == [[user("2*3?"), bot("6")], [user("Hi"), bot("Hello! How can I help?")]]
    assert gold_only.stats["skipped"] == {"no_gold": 1, "tie": 1}


def test_lone_gold_edit_uses_its_source_answer_prompt(lab: Lab):
    ids = lab.chat("alice", ["Q"], "a", "b", "tie")
    lab.user("bob")
    lab.execute("INSERT INTO gold_answers (candidate_id, user_id, text) VALUES (?, ?, 'the fix')",
                [ids["a"], lab.user("alice")])
    assert sft_rows(lab.db).rows == [{"messages": [user("Q"), bot("the fix")]}]
    assert sft_rows(lab.db, Filters(min_agreement=0.5)).stats == {"rows": 0, "skipped": {"low_agreement": 2}}
    assert sft_rows(lab.db, Filters(labelers=["bob"])).stats["skipped"] == {"labeler": 2}


# ----------------------------------------------------------------------------------------- exclusions

def test_retracted_and_redacted_labels_are_ignored(lab: Lab):
    lab.chat("alice", ["keep"], "good", "bad", "a")
    retracted = lab.chat("alice", ["undone"], "u1", "u2", "a", thumbs={"a": True}, gold="u-gold", gold_side="a")
    deleted = lab.chat("alice", ["deleted vote"], "d1", "d2", "b")
    bad_answer = lab.chat("alice", ["redacted answer"], "r1", "r2", "a")
    bad_message = lab.chat("alice", ["secret", "ok", "go on"], "m1", "m2", "a")
    bad_prompt = lab.api_pair("alice", "redacted prompt", "p1", "p2", "a")
    lab.execute("UPDATE preferences SET retracted_at = now() WHERE id = ?", [retracted["preference"]])
    lab.execute("UPDATE preferences SET redacted_at = now() WHERE id = ?", [deleted["preference"]])
    lab.execute("UPDATE candidates SET redacted_at = now() WHERE id = ?", [bad_answer["b"]])
    lab.execute("UPDATE messages SET redacted_at = now() WHERE conversation_id = ? AND turn = 0",
                [bad_message["conversation"]])
    lab.execute("UPDATE prompts SET redacted_at = now() WHERE id = ?", [bad_prompt["prompt"]])

    rows, stats = preference_rows(lab.db)
    assert [r["prompt"][-1]["content"] for r in rows] == ["keep"]
    assert stats["skipped"] == {"redacted": 4, "retracted": 1}
    assert [r["completion"][0]["content"] for r in unpaired_rows(lab.db).rows] == ["good", "bad"]
    assert sft_rows(lab.db).rows == [{"messages": [user("keep"), bot("good")]}]


# ----------------------------------------------------------------------------------------- filters

def test_filter_by_date_labeler_policy_source_and_flags(lab: Lab):
    lab.chat("alice", ["old"], "a", "b", "a", at=datetime(2025, 1, 10, tzinfo=timezone.utc))
    lab.chat("bob", ["new"], "a", "b", "a", at=datetime(2025, 2, 10, tzinfo=timezone.utc))
    lab.chat("alice", ["arena"], "a", "b", "b", source="arena", policies=("base", "v1"),
             at=datetime(2025, 2, 11, tzinfo=timezone.utc))
    lab.chat("alice", ["v1 only"], "a", "b", "b", policies=("v1", "v1"), at=datetime(2025, 2, 12, tzinfo=timezone.utc))
    lab.chat("alice", ["unsafe"], "a", "b", "a", flags=("unsafe",), at=datetime(2025, 2, 13, tzinfo=timezone.utc))
    lab.chat("alice", ["off"], "a", "b", "a", flags=("off_topic",), at=datetime(2025, 2, 14, tzinfo=timezone.utc))
    lab.api_pair("bob", "api", "a", "b", "a", source="import:hh", at=datetime(2025, 2, 15, tzinfo=timezone.utc))

    def prompts(**kw) -> list[str]:
        return [r["prompt"][-1]["content"] for r in preference_rows(lab.db, Filters(**kw)).rows]

    assert prompts() == ["old", "new", "arena", "v1 only", "off", "api"]
    assert prompts(since=date(2025, 2, 1), until="2025-02-12") == ["new", "arena"]
    assert prompts(since=datetime(2025, 2, 14)) == ["off", "api"]           # naive = UTC, inclusive
    assert prompts(labelers=["bob"]) == ["new", "api"]
    assert prompts(labelers=[lab.user("bob")]) == ["new", "api"]
    assert prompts(policies=["v1"]) == ["v1 only"]                          # both answers must match
    assert prompts(policies=["base", "v1"]) == ["old", "new", "arena", "v1 only", "off"]
    assert prompts(sources=["arena"]) == ["arena"]
    assert prompts(sources=["import:*"]) == ["api"]
    assert prompts(exclude_flags=()) == ["old", "new", "arena", "v1 only", "unsafe", "off", "api"]
    assert prompts(exclude_flags=["off_topic"]) == ["old", "new", "arena", "v1 only", "unsafe", "api"]

    stats = preference_rows(lab.db, Filters(labelers=["bob"], since=date(2025, 2, 1))).stats
    assert stats == {"rows": 2, "skipped": {"date": 1, "labeler": 4}}  # first failing filter counts


def test_the_pair_texts_and_counts_are_those_of_the_preference_rows(lab: Lab):
    """preference_texts (the label signature and the guided loop's counts, one read of the votes without prompts)
    gives exactly preference_rows' pairs, and marks recent exactly those of preference_rows(since=...): picks, gold
    edits, ties, both bad, identical texts, flags and dates."""
    from core.data.trainsets import preference_texts

    day = [datetime(2025, 2, d, tzinfo=timezone.utc) for d in range(1, 8)]
    lab.chat("alice", ["p1"], "short", "a longer answer", "a", at=day[0])
    lab.chat("bob", ["p2"], "x", "y", "b", gold="a gold answer", gold_side="a", at=day[1])
    lab.chat("alice", ["p3"], "same", "same", "a", at=day[2])
    lab.chat("bob", ["p4"], "t1", "t2", "tie", at=day[3])
    lab.chat("alice", ["p5"], "bad1", "bad2", "both_bad", gold="better", at=day[4])
    lab.chat("alice", ["p6"], "u1", "u2", "a", flags=("unsafe",), at=day[5])
    lab.api_pair("bob", "api", "c", "d", "b", at=day[6])
    for since in (None, day[2], day[5], datetime(2026, 1, 1, tzinfo=timezone.utc)):
        rows = preference_rows(lab.db, Filters()).rows
        recent = preference_rows(lab.db, Filters(since=since)).rows if since else rows
        texts = preference_texts(lab.db, None, since)
        assert [(c, r) for c, r, _ in texts] == [(row["chosen"][0]["content"], row["rejected"][0]["content"])
                                                 for row in rows]
        assert [(c, r) for c, r, is_recent in texts if is_recent] == [
            (row["chosen"][0]["content"], row["rejected"][0]["content"]) for row in recent] and len(rows) >= 5


def test_filters_apply_to_feedback_and_lone_signals(lab: Lab):
    lab.feedback("q", "r", 1.0, source="api", at=datetime(2025, 1, 1, tzinfo=timezone.utc))
    assert len(unpaired_rows(lab.db).rows) == 1
    assert unpaired_rows(lab.db, Filters(since=date(2025, 2, 1))).stats == {"rows": 0, "skipped": {"date": 1}}
    assert unpaired_rows(lab.db, Filters(sources=["chat"])).rows == []
    lab.policy("base")
    assert unpaired_rows(lab.db, Filters(policies=["base"])).stats["skipped"] == {"policy": 1}
    assert unpaired_rows(lab.db, Filters(min_agreement=0.0)).stats["skipped"] == {"low_agreement": 1}


def test_min_agreement_keeps_majority_votes_on_prompts_labeled_by_several_people(lab: Lab):
    # prompt "P": three labelers saw the same pair; two say A, one says B
    pair = lab.api_pair("alice", "P", "good", "bad", "a")
    lab.vote("bob", pair, "a")
    lab.vote("carol", pair, "b")
    # prompt "Q": two labelers disagree
    q = lab.api_pair("alice", "Q", "q1", "q2", "a")
    lab.vote("bob", q, "tie")
    # prompt "S": one labeler only
    lab.api_pair("alice", "S", "s1", "s2", "a")

    def kept(min_agreement) -> list[tuple[str, str]]:
        rows = preference_rows(lab.db, Filters(min_agreement=min_agreement)).rows
        return [(r["prompt"][0]["content"], r["chosen"][0]["content"]) for r in rows]

    assert kept(None) == [("P", "good"), ("P", "good"), ("P", "bad"), ("Q", "q1"), ("S", "s1")]
    assert kept(0.6) == [("P", "good"), ("P", "good")]          # 2/3 agree; carol's minority vote dropped
    assert kept(0.5) == [("P", "good"), ("P", "good"), ("Q", "q1")]   # Q: 1/2, both outcomes are "majority"
    assert kept(0.7) == []
    stats = preference_rows(lab.db, Filters(min_agreement=0.6)).stats
    assert stats["skipped"] == {"low_agreement": 3, "minority": 1}
    # a labeler's latest vote on the prompt is the one that counts
    lab.vote("carol", pair, "a")
    assert kept(1.0) == [("P", "good"), ("P", "good"), ("P", "good")]


BAD_FILTERS = [
    (Filters(labelers=["mallory"]), "Unknown labeler"),
    (Filters(labelers=[999]), "Unknown labeler"),
    (Filters(policies=["v9"]), "Unknown policy"),
    (Filters(since=date(2025, 3, 1), until=date(2025, 2, 1)), "is after until"),
    (Filters(since="last tuesday"), "not a date"),
    (Filters(exclude_flags=["nsfw"]), "Unknown flag"),
    (Filters(sources=["email"]), "Unknown source"),
    (Filters(min_agreement=1.5), "min_agreement"),
    (Filters(min_agreement=True), "min_agreement"),
    (Filters(aspects=["style"]), "Unknown aspect"),
]


def test_bad_filters_raise_validation_error(lab: Lab):
    lab.user("alice")
    lab.policy("base")
    for filters, message in BAD_FILTERS:
        for build in (build_preference, build_unpaired, build_sft):
            with pytest.raises(ValidationError, match=message):
                build(lab.db, filters)


# ----------------------------------------------------------------------------------------- TRL shapes

def test_datasets_have_trl_shapes_and_render_with_the_chat_template(lab: Lab):
    from transformers import AutoTokenizer
    from trl.data_utils import is_conversational, maybe_apply_chat_template

    tokenizer = AutoTokenizer.from_pretrained(str(ROOT / "assets" / "tokenizer"))
    lab.chat("alice", HISTORY, "Make an omelette.", "Eat them raw.", "a", gold="Make a spinach omelette.",
             gold_side="a", ratings={"a": {"helpfulness": 5}, "b": {"helpfulness": 1}}, thumbs={"b": False})
    lab.feedback("Hi", "Hello!", 1.0)

    preference = build_preference(lab.db).dataset
    reward = build_reward(lab.db, margin_from_ratings=True).dataset
    unpaired = build_unpaired(lab.db).dataset
    sft = build_sft(lab.db).dataset
    assert (len(preference), len(reward), len(unpaired), len(sft)) == (2, 2, 4, 1)
    assert reward["margin"] == [4.0, 0.0]
    assert unpaired.features["label"].dtype == "bool"

    for dataset in (preference, reward, unpaired, sft):
        for example in dataset:
            assert is_conversational(example)
            rendered = maybe_apply_chat_template(example, tokenizer)
            texts = {k: v for k, v in rendered.items() if k != "label"}
            assert texts and all(isinstance(v, str) and v for v in texts.values())
    first = maybe_apply_chat_template(preference[0], tokenizer)
    assert first["prompt"].endswith("<|im_start|>user\nEggs and spinach.<|im_end|>\n<|im_start|>assistant\n")
    assert first["chosen"] == "Make an omelette.<|im_end|>\n"
    assert first["rejected"] == "Eat them raw.<|im_end|>\n"
    kto = maybe_apply_chat_template(unpaired[0], tokenizer)
    assert set(kto) == {"prompt", "completion", "label"}


def test_empty_database_gives_empty_datasets_with_the_right_columns(lab: Lab):
    assert build_preference(lab.db).dataset.column_names == ["prompt", "chosen", "rejected"]
    assert build_unpaired(lab.db).dataset.column_names == ["prompt", "completion", "label"]
    assert build_sft(lab.db).dataset.column_names == ["messages"]
    assert build_sft(lab.db).stats == {"rows": 0, "skipped": {}}


def test_hold_out_leaves_the_evaluation_split_out_of_training_data(lab: Lab):
    """``hold_out_percent`` drops exactly the prompts the Compare page evaluates on (same fixed hash split),
    for pairs and SFT rows alike, and the dry run counts them as skipped."""
    from core.data.job_data import build_rows
    from core.data.split import prompt_bucket
    from core.training import get_algorithm

    for i in range(40):
        lab.api_pair("ann", f"question {i}?", f"good {i}", f"bad {i}", "a", gold=f"gold {i}", gold_side="a")
    everything = preference_rows(lab.db).rows
    held = [r for r in everything if prompt_bucket(r["prompt"]) < 20]
    assert 0 < len(held) < len(everything)
    rows, stats = build_rows(lab.db, get_algorithm("dpo"), Filters(hold_out_percent=20))
    assert len(rows) == len(everything) - len(held) and stats["skipped"]["held_out"] == len(held)
    assert all(prompt_bucket(r["prompt"]) >= 20 for r in rows)
    sft, _ = build_rows(lab.db, get_algorithm("sft"), Filters(hold_out_percent=20))
    assert sft and all(prompt_bucket(r["messages"][:-1]) >= 20 for r in sft)
    full, stats = build_rows(lab.db, get_algorithm("dpo"), Filters())
    assert len(full) == len(everything) and "held_out" not in stats["skipped"]
    with pytest.raises(ValidationError, match="hold_out_percent"):
        preference_rows(lab.db, Filters(hold_out_percent=100))


def test_answers_cut_at_the_length_limit_are_marked_for_dpo_and_never_imitated(lab: Lab):
    """An answer that hit max_new_tokens stops mid-thought: preference rows say which side was cut (DPO trains it
    without the end-of-turn), exports keep the TRL schema, and SFT / KTO never take it as an answer to imitate."""
    owls = lab.chat("alice", ["Tell me about owls."], "Owls are birds that hunt at", "Owls hoot.", "a")
    colour = lab.chat("alice", ["Name a colour."], "Blue.", "Seven, and then on the other", "a")
    lab.execute("UPDATE candidates SET cut = true WHERE id IN (?, ?)", [owls["a"], colour["b"]])

    rows, stats = preference_rows(lab.db)
    assert rows == [
        {"prompt": [user("Tell me about owls.")], "chosen": [bot("Owls are birds that hunt at")],
         "rejected": [bot("Owls hoot.")], "chosen_cut": True},
        {"prompt": [user("Name a colour.")], "chosen": [bot("Blue.")],
         "rejected": [bot("Seven, and then on the other")], "rejected_cut": True},
    ]
    assert build_preference(lab.db).dataset.column_names == ["prompt", "chosen", "rejected"]

    sft = sft_rows(lab.db)
    assert [row["messages"][-1] for row in sft.rows] == [bot("Blue.")]
    assert sft.stats["skipped"] == {"cut_answer": 1}

    kto = unpaired_rows(lab.db)
    assert [(row["completion"][0]["content"], row["label"]) for row in kto.rows] == [
        ("Owls hoot.", False), ("Blue.", True), ("Seven, and then on the other", False)]
    assert kto.stats["skipped"] == {"cut_answer": 1}
