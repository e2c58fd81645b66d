"""AI judges: spec parsing, the order-swap logic, and the three backends on real models (a reward model and the
policy on the tiny model in-process, `transformers serve` on loopback for the endpoint)."""

from __future__ import annotations

import socket

import pytest

from core.errors import ValidationError
from core.judging import judges
from core.labeling.queue import GUIDELINES

PROMPT = [{"role": "user", "content": "What is the capital of France?"}]
GOOD, BAD = "The capital of France is Paris.", "I like turtles."
RUBRIC = judges.rubric("Prefer correct, helpful answers.", [{"name": "helpfulness", "description": "answers it"}])


def test_judge_specs_parse_and_bad_ones_say_what_to_write():
    assert judges.parse_judge("rm1") == judges.JudgeSpec("rm", "rm1")
    assert judges.parse_judge("rm:rm2").labeler == "ai:rm:rm2"
    assert judges.parse_judge("policy") == judges.JudgeSpec("policy", "base")
    assert judges.parse_judge("policy:v3").labeler == "ai:policy:v3"
    spec = judges.parse_judge("http://gpu-box:8000/v1#Qwen/Qwen3-8B")
    assert (spec.kind, spec.name, spec.url, spec.labeler) == (
        "endpoint",
        "Qwen/Qwen3-8B",
        "http://gpu-box:8000/v1",
        "ai:Qwen/Qwen3-8B",
    )
    with pytest.raises(ValidationError, match="names no model"):
        judges.parse_judge("http://gpu-box:8000/v1")
    with pytest.raises(ValidationError, match="Unknown judge") as refused:
        judges.parse_judge("gpt-judge")
    assert "rm:<rmN>" in refused.value.hint


def test_both_orders_must_agree_else_the_pair_is_a_tie():
    a = judges.combine(0.9, 0.2)  # A first: A wins 0.9; B first: B wins 0.2 -> A wins 0.8
    assert (a.outcome, a.position_consistent) == ("a", True) and a.confidence == pytest.approx(0.85)
    b = judges.combine(0.3, 0.6)
    assert (b.outcome, b.confidence) == ("b", pytest.approx(0.65))
    biased = judges.combine(0.9, 0.9)  # always prefers whatever is shown first
    assert (biased.outcome, biased.confidence, biased.position_consistent) == ("tie", 0.5, False)
    unreadable = judges.combine(None, 0.2)
    assert (unreadable.outcome, unreadable.readable) == ("tie", False)
    assert unreadable.as_dict()["p_a_shown_first"] is None


class FirstShown:
    """A judge with pure position bias: it always prefers the answer it reads first."""

    def prefer_first(self, items):
        return [0.8] * len(items)


def test_a_position_biased_judge_gives_only_ties():
    verdicts = judges.judge_pairs(FirstShown(), [(PROMPT, GOOD, BAD), (PROMPT, BAD, GOOD)])
    assert [v.outcome for v in verdicts] == ["tie", "tie"]


def test_the_rubric_carries_the_guidelines_and_aspects():
    text = judges.rubric(GUIDELINES.read_text(), [{"name": "honesty", "description": "no made-up facts"}])
    assert GUIDELINES.read_text().strip()[:80] in text and "- honesty: no made-up facts" in text
    chat = judges.judge_messages(text, PROMPT, GOOD, BAD)
    assert chat[0] == {"role": "system", "content": text}
    assert "[Answer A]\n" + GOOD in chat[1]["content"] and "[Answer B]\n" + BAD in chat[1]["content"]


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    from pathlib import Path

    from core.serving.policies import register_policy
    from tests.support.studios import open_studio, random_adapter

    root = tmp_path_factory.mktemp("judges")
    s = open_studio(root / "data")
    rm = random_adapter(Path(s.model_path), root / "rm1", seed=3, task="SEQ_CLS")
    register_policy(s.db, "rm1", s.base_policy_id, "tiny", "reward", None, config={"reward_model_path": str(rm)})
    yield s
    s.close()


def test_a_reward_model_judges_by_its_score_difference_in_both_orders(studio):
    from core.training.reward import RewardScorer

    scorer = RewardScorer.load(studio.db, "rm1")
    good, bad = scorer.score([PROMPT, PROMPT], [GOOD, BAD])
    (verdict,) = judges.judge_pairs(judges.RewardBackend(scorer), [(PROMPT, GOOD, BAD)])
    # a reward model has no position: both orders agree, and the confidence is the Bradley-Terry probability
    expected = 1 / (1 + pytest.importorskip("math").exp(-abs(good - bad)))
    assert verdict.position_consistent and verdict.outcome == ("a" if good > bad else "b")
    assert verdict.confidence == pytest.approx(expected, rel=1e-4)


def test_the_policy_judges_from_its_probability_of_replying_a_or_b(studio):
    backend = judges.PolicyBackend(studio, "base", RUBRIC)
    first = backend.prefer_first([(PROMPT, GOOD, BAD), (PROMPT, BAD, GOOD)])
    assert all(0.0 < p < 1.0 for p in first)
    assert backend.prefer_first([(PROMPT, GOOD, BAD)]) == first[:1]  # a forward pass: deterministic
    (verdict,) = judges.judge_pairs(backend, [(PROMPT, GOOD, BAD)])
    assert verdict.readable and verdict.p_a_shown_first == pytest.approx(first[0])
    assert verdict.p_a_shown_second == pytest.approx(1 - first[1])


def test_an_openai_compatible_endpoint_judges_and_counts_tokens(engine):
    """`transformers serve` on loopback: real requests, token counts from its usage. It ignores `logprobs`, so the
    reply's letter decides; the tiny random model names neither letter, which makes readable=False ties."""
    backend = judges.EndpointBackend(engine.url, engine.model, RUBRIC)
    verdicts = judges.judge_pairs(backend, [(PROMPT, GOOD, BAD)])
    assert backend.tokens > 0
    assert verdicts[0].outcome in ("a", "b", "tie")
    assert verdicts[0].readable == (
        verdicts[0].p_a_shown_first is not None and verdicts[0].p_a_shown_second is not None
    )


def test_the_reply_letter_and_logprobs_are_read_like_an_endpoint_sends_them():
    assert judges.choice_probability({"A": -0.1, " B": -2.3, "The": -5.0}, "A", "B") == pytest.approx(0.9002, abs=1e-3)
    assert judges.choice_probability({"The": -0.1}, "A", "B") is None
    assert judges.choice_probability({" Yes": -0.1, "no": -2.3}, "yes", "no") == pytest.approx(0.9002, abs=1e-3)


def test_a_down_endpoint_is_retried_with_backoff_then_a_clear_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket is closed
    waits: list[float] = []
    backend = judges.EndpointBackend(f"http://127.0.0.1:{port}", "judge", RUBRIC, sleep=waits.append)
    with pytest.raises(judges.JudgeError, match="could not be reached") as failed:
        backend.prefer_first([(PROMPT, GOOD, BAD)])
    assert waits == [0.5, 1.0, 2.0] and failed.value.http_status == 503
    assert "resume" in failed.value.hint


# --- judge runs: storage, training-set filters, failure and resume -------------------------------------------


def add_unlabeled_pairs(studio, n: int, start: int = 0) -> list[tuple[int, int]]:
    """Pairs shown in the chat that nobody voted on (what a judge run labels)."""
    from core.labeling.identity import ensure_user
    from core.labeling.votes import CandidateIn, add_user_message, new_conversation, save_pair

    bo = ensure_user(studio.db, "bo", "labeler", "test")
    pairs = []
    for i in range(start, start + n):
        conv = new_conversation(studio.db, bo, studio.base_policy_id)
        turn = add_user_message(studio.db, bo, conv, f"Unlabeled question {i}?")
        pairs.append(
            save_pair(
                studio.db,
                conv,
                turn,
                None,
                CandidateIn(f"A careful answer {i}.", studio.base_policy_id),
                CandidateIn(f"nah {i}", studio.base_policy_id),
                None,
            )
        )
    return pairs


@pytest.fixture(scope="module")
def admin(studio):
    from core.labeling.identity import ensure_user

    return ensure_user(studio.db, "ada", "admin", "test")


def test_a_judge_run_labels_unlabeled_pairs_as_its_own_labeler_and_a_rerun_resumes(studio, admin):
    from core.data import trainsets
    from core.judging.runs import pairs_to_judge

    pairs = add_unlabeled_pairs(studio, 5)
    human_before = len(trainsets.preference_rows(studio.db).rows)
    cost = __import__("core.judging.runs", fromlist=["estimate"]).estimate(studio, "rm1", "unlabeled")
    assert (cost["pairs"], cost["requests"], cost["tokens"]) == (5, 10, None) and cost["seconds_per_pair"] > 0
    assert studio.db.scalar("SELECT count(*) FROM preferences WHERE source = 'judge'") == 0  # estimating saves nothing

    run = studio.judge_runs.run_blocking("rm1", "unlabeled", admin)
    assert (run["status"], run["total"], run["done"], run["judge"]) == ("succeeded", 5, 5, "ai:rm:rm1")
    rows = studio.db.query(
        "SELECT p.candidate_a, p.candidate_b, p.outcome, p.confidence, u.kind, u.name"
        " FROM preferences p JOIN users u ON u.id = p.labeler_id WHERE p.judge_run_id = ?"
        " ORDER BY p.candidate_a",
        [run["id"]],
    )
    assert [(r["candidate_a"], r["candidate_b"]) for r in rows] == pairs
    assert all(r["kind"] == "ai" and r["name"] == "ai:rm:rm1" and 0.5 <= r["confidence"] <= 1 for r in rows)

    # never mixed in silently: people's labels by default, the judge's only when asked
    assert len(trainsets.preference_rows(studio.db).rows) == human_before
    uncalibrated = trainsets.preference_rows(studio.db, trainsets.Filters(label_kinds="ai"))
    assert uncalibrated.rows == [] and uncalibrated.stats["skipped"]["uncalibrated_judge"] == 5
    trusted = {"min_judge_calibration": 0}
    ai_only = trainsets.preference_rows(studio.db, trainsets.Filters(label_kinds="ai", **trusted)).rows
    assert len(ai_only) == sum(r["outcome"] in ("a", "b") for r in rows)
    both = trainsets.preference_rows(studio.db, trainsets.Filters(label_kinds="both", **trusted)).rows
    assert len(both) == human_before + len(ai_only)
    assert (
        trainsets.preference_rows(studio.db, trainsets.Filters(label_kinds="ai", min_ai_confidence=1.0, **trusted)).rows
        == []
    )
    with pytest.raises(ValidationError, match="label_kinds"):
        trainsets.preference_rows(studio.db, trainsets.Filters(label_kinds="robots"))

    again = studio.judge_runs.run_blocking("rm1", "unlabeled", admin)  # nothing left for this judge
    assert (again["status"], again["total"]) == ("succeeded", 0)
    assert len(pairs_to_judge(studio.db, "unlabeled", judges.parse_judge("policy"))) >= 5  # another judge may


@pytest.mark.slow  # >= 3 s (a server, a child process or a CLI run): not in make test-fast
def test_calibration_on_labeled_pairs_measures_agreement_and_opens_training(studio, admin):
    """The judge labels pairs people voted on (source labeled): kappa, alpha, confusion and disagreements against
    them; once it shares enough items its labels on unlabeled pairs may go into training."""
    from core.data import trainsets
    from core.judging.runs import judge_agreement, judges_overview
    from core.labeling.agreement import cohen_kappa
    from core.labeling.votes import Vote, submit_labeled_pair

    for i in range(4):  # people who prefer B too: with one label only, no kappa can be computed
        submit_labeled_pair(
            studio.db, admin, f"Which is better, {i}?", f"meh {i}", f"A fine answer {i}.", Vote(0, 0, "b")
        )
    human_pairs = studio.db.scalar(
        "SELECT count(DISTINCT candidate_a) FROM preferences WHERE source <> 'judge' AND retracted_at IS NULL"
    )
    add_unlabeled_pairs(studio, 2, start=200)
    run = studio.judge_runs.run_blocking("policy", "labeled", admin)
    assert (run["status"], run["done"]) == ("succeeded", human_pairs)
    agreement = judge_agreement(studio.db, "ai:policy:base", min_shared=human_pairs)
    assert agreement["shared"] == human_pairs == agreement["comparisons"]
    # the tiny random model judges by chance: enough shared items, but kappa's interval is not clear of 0
    assert not agreement["calibrated"] and agreement["calibration"].startswith(
        ("agreement with people not clear of chance", "kappa undefined")
    )
    assert sum(map(sum, agreement["confusion"])) == human_pairs
    diagonal = sum(agreement["confusion"][i][i] for i in range(3))
    assert agreement["agreement"] == pytest.approx(diagonal / human_pairs)
    assert len(agreement["disagreements"]) == human_pairs - diagonal
    votes = studio.db.query(
        "SELECT j.outcome AS judge, h.outcome AS human FROM preferences j JOIN preferences h"
        " ON h.candidate_a = j.candidate_a AND h.source <> 'judge' WHERE j.judge_run_id = ?",
        [run["id"]],
    )
    pairs = [(v["judge"], "tie" if v["human"] == "both_bad" else v["human"]) for v in votes]
    assert agreement["kappa"] == cohen_kappa(pairs)
    assert not judge_agreement(studio.db, "ai:policy:base", min_shared=human_pairs + 1)["calibrated"]

    # Enough shared items is not enough: the agreement must be clear of chance. A judge that says "tie" to every
    # pair agrees with people only by chance (kappa 0); one that says what the people said is calibrated.
    def judge_says(outcome_sql: str) -> dict:
        studio.db.write(
            lambda cur: cur.execute(
                f"UPDATE preferences j SET outcome = {outcome_sql} FROM preferences h WHERE j.judge_run_id = ? AND"
                " h.candidate_a = j.candidate_a AND h.candidate_b = j.candidate_b AND h.source <> 'judge'",
                [run["id"]],
            )
        )
        return judge_agreement(studio.db, "ai:policy:base", min_shared=human_pairs)

    chance = judge_says("'tie'")
    assert not chance["calibrated"] and chance["shared"] == human_pairs
    assert chance["calibration"].startswith(("agreement with people not clear of chance", "kappa undefined"))
    strict = trainsets.Filters(label_kinds="ai", labelers=("ai:policy:base",), min_judge_calibration=human_pairs)
    assert trainsets.preference_rows(studio.db, strict).rows == []
    agreeing = judge_says("CASE WHEN h.outcome = 'both_bad' THEN 'tie' ELSE h.outcome END")
    assert agreeing["calibrated"] and agreeing["kappa"] == 1.0 and agreeing["kappa_interval"] == [1.0, 1.0]
    assert agreeing["calibration"] == "kappa 95% interval 1.00 to 1.00, clear of chance"
    overview = {j["name"]: j for j in judges_overview(studio.db, min_shared=human_pairs)}
    assert overview["ai:policy:base"]["shared"] == human_pairs and overview["ai:policy:base"]["calibrated"]

    unlabeled = studio.judge_runs.run_blocking("policy", "unlabeled", admin)
    assert unlabeled["done"] >= 2
    decisive = studio.db.scalar(
        "SELECT count(*) FROM preferences WHERE judge_run_id = ? AND outcome IN ('a', 'b')", [unlabeled["id"]]
    )
    calibrated = trainsets.Filters(label_kinds="ai", labelers=("ai:policy:base",), min_judge_calibration=human_pairs)
    # the calibration run's own verdicts count too once the judge is calibrated: people labeled those pairs
    assert len(trainsets.preference_rows(studio.db, calibrated).rows) >= decisive
    strict = trainsets.Filters(label_kinds="ai", labelers=("ai:policy:base",), min_judge_calibration=human_pairs + 1)
    assert trainsets.preference_rows(studio.db, strict).rows == []


def test_people_cannot_take_ai_names_and_only_admins_run_judges(studio):
    from core.errors import PermissionDenied
    from core.labeling.identity import ensure_user

    with pytest.raises(ValidationError, match="kept for AI judges"):
        ensure_user(studio.db, "ai:rm:rm1", "labeler", "api")
    bo = ensure_user(studio.db, "bo", "labeler", "test")
    with pytest.raises(PermissionDenied):
        studio.judge_runs.start("rm1", "unlabeled", bo)
    with pytest.raises(ValidationError, match="Unknown judge source"):
        studio.judge_runs.start("rm1", "everything", ensure_user(studio.db, "ada", "admin", "test"))


class FlakyProxy:
    """A loopback HTTP proxy in front of the real engine that forwards ``budget`` requests, then answers 503:
    an endpoint that fails in the middle of a run."""

    def __init__(self, target: str, budget: int) -> None:
        import http.server
        import threading

        import httpx

        proxy = self
        self.budget, self.forwarded = budget, 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if proxy.forwarded >= proxy.budget:
                    self.send_response(503)
                    self.end_headers()
                    return
                proxy.forwarded += 1
                answer = httpx.post(
                    target + self.path[len("/v1") :],
                    content=body,
                    headers={"Content-Type": "application/json"},
                    timeout=60,
                )
                self.send_response(answer.status_code)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(answer.content)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def stop(self) -> None:
        self.server.shutdown()


def test_an_endpoint_failing_mid_run_loses_nothing_and_the_next_run_resumes(studio, admin, engine, monkeypatch):
    """Against `transformers serve` through a proxy that starts refusing after 3 pairs (6 requests): the run fails
    with the endpoint's error, the 3 judged pairs are saved whole, and a second run judges only the rest."""
    monkeypatch.setattr(judges, "BACKOFF_S", 0.01)
    add_unlabeled_pairs(studio, 5, start=100)
    cost = __import__("core.judging.runs", fromlist=["x"]).estimate(studio, f"{engine.url}#{engine.model}", "unlabeled")
    assert cost["tokens"] > 20 * cost["pairs"] and cost["requests"] == 2 * cost["pairs"]
    proxy = FlakyProxy(engine.url, budget=6)
    spec = f"{proxy.url}#{engine.model}"
    todo = len(
        __import__("core.judging.runs", fromlist=["x"]).pairs_to_judge(studio.db, "unlabeled", judges.parse_judge(spec))
    )
    try:
        failed = studio.judge_runs.run_blocking(spec, "unlabeled", admin)
        assert failed["status"] == "failed" and "answered 503" in failed["error"]
        assert failed["done"] == 3 and failed["tokens"] > 0
        saved = studio.db.scalar("SELECT count(*) FROM preferences WHERE judge_run_id = ?", [failed["id"]])
        assert saved == 3  # whole pairs only, nothing half-written
        proxy.budget = 10_000
        resumed = studio.judge_runs.run_blocking(spec, "unlabeled", admin)
        assert (resumed["status"], resumed["total"], resumed["done"]) == ("succeeded", todo - 3, todo - 3)
        judged = studio.db.query(
            "SELECT candidate_a, count(*) AS n FROM preferences p JOIN users u"
            " ON u.id = p.labeler_id WHERE u.name = ? GROUP BY candidate_a",
            [judges.parse_judge(spec).labeler],
        )
        assert len(judged) == todo and all(r["n"] == 1 for r in judged)  # every pair once
    finally:
        proxy.stop()


@pytest.mark.slow  # >= 3 s (a server, a child process or a CLI run): not in make test-fast
def test_the_cli_estimates_and_runs_a_judge(tmp_path, tiny_model_dir):
    """`launch.py judge --judge rm1 [--estimate] --json` in its own process on a stopped studio's data dir."""
    import json
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from core.config import load_settings
    from core.serving.models import MODELS_SUBDIR, TINY_MODEL_DIR
    from core.serving.policies import register_policy
    from core.studio import Studio
    from tests.support import ROOT
    from tests.support.studios import random_adapter

    data_dir = tmp_path / "data"
    shutil.copytree(tiny_model_dir, data_dir / MODELS_SUBDIR / TINY_MODEL_DIR)
    s = Studio(
        load_settings({"data_dir": str(data_dir), "model": "tiny"}, env={}), data_dir / MODELS_SUBDIR / TINY_MODEL_DIR
    )
    rm = random_adapter(Path(s.model_path), tmp_path / "rm1", seed=3, task="SEQ_CLS")
    register_policy(s.db, "rm1", s.base_policy_id, "tiny", "reward", None, config={"reward_model_path": str(rm)})
    add_unlabeled_pairs(s, 3)
    s.close()
    base = [sys.executable, str(ROOT / "launch.py"), "judge", "--data-dir", str(data_dir), "--model", "tiny"]
    cost = subprocess.run(
        base + ["--judge", "rm1", "--estimate", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert cost.returncode == 0, cost.stderr[-2000:]
    assert json.loads(cost.stdout)["pairs"] == 3
    run = subprocess.run(base + ["--judge", "rm1", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout)
    assert (result["status"], result["done"], result["judge"]) == ("succeeded", 3, "ai:rm:rm1")
    bad = subprocess.run(base + ["--judge", "gpt"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "error [invalid_input]" in bad.stderr and "rm:<rmN>" in bad.stderr


def test_the_rest_api_estimates_starts_polls_and_reads_agreement(studio):
    """The /api/judge-runs routes on the real app (local mode: the caller is the local admin)."""
    import time

    from starlette.responses import PlainTextResponse
    from starlette.testclient import TestClient

    from app.api import create_api
    from app.server import ApiFirst

    add_unlabeled_pairs(studio, 2, start=300)
    client = TestClient(
        ApiFirst(PlainTextResponse("console"), create_api(lambda: studio, 20_000)), raise_server_exceptions=False
    )
    cost = client.post("/api/judge-runs", json={"judge": "rm1", "estimate": True})
    assert cost.status_code == 202 and cost.json()["pairs"] >= 2
    started = client.post("/api/judge-runs", json={"judge": "rm1"})
    assert started.status_code == 202 and started.json()["status"] == "running"
    run_id = started.json()["id"]
    for _ in range(200):
        run = client.get(f"/api/judge-runs/{run_id}").json()
        if run["status"] != "running":
            break
        time.sleep(0.1)
    assert run["status"] == "succeeded" and run["done"] == run["total"] >= 2
    listed = client.get("/api/judge-runs").json()
    assert listed["runs"][0]["id"] == run_id and any(j["name"] == "ai:rm:rm1" for j in listed["judges"])
    agreement = client.get("/api/judges/agreement", params={"judge": "ai:rm:rm1"})
    assert agreement.status_code == 200 and agreement.json()["labels"] == ["a", "b", "tie"]
    bad = client.post("/api/judge-runs", json={"judge": "gpt-5"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_input"
    assert client.get("/api/judge-runs/999999").json()["error"]["code"] == "not_found"
    assert client.post("/api/judge-runs", json={"judge": "rm9"}).status_code == 404


def test_the_data_page_shows_agreement_and_runs_judges(studio, admin, monkeypatch):
    """The Data page's AI judges section in-process (Streamlit AppTest), as the local admin."""
    import streamlit as st

    import core.studio
    from tests.support.studios import data_page

    monkeypatch.setattr(core.studio, "_current", studio)
    st.cache_data.clear()
    add_unlabeled_pairs(studio, 1, start=400)
    studio.judge_runs.run_blocking("rm1", "labeled", admin)  # some agreement to show
    add_unlabeled_pairs(studio, 1, start=401)
    app = data_page("AI judges")
    assert not app.exception and not app.error
    table = next(frame.value for frame in app.dataframe if "Cohen's kappa" in frame.value.columns)
    assert "ai:rm:rm1" in set(table["judge"])
    assert any("calibrated" in status for status in table["status"])
    app.text_input(key="judge-key").input("sk-one-off-never-stored")
    next(t for t in app.text_input if t.label == "Judge").input("rm1")
    next(b for b in app.button if b.label == "Estimate").click().run()
    assert not app.exception and any("pairs" in info.value for info in app.info), [e.value for e in app.error]
    assert app.text_input(key="judge-key").value == ""  # the one-off key left the form
    next(b for b in app.button if b.label == "Start").click().run()
    assert any("started" in s.value for s in app.success), [e.value for e in app.error]
    run = studio.judge_runs.list()[0]
    studio.judge_runs.join(run["id"], timeout=60)
    assert studio.judge_runs.get(run["id"])["status"] == "succeeded"
    assert "sk-one-off" not in str(studio.db.query("SELECT * FROM judge_runs"))


def test_review_takes_the_least_seen_pair_and_stores_one_vote_per_person(studio, admin):
    from core.errors import Conflict
    from core.labeling import review
    from core.labeling.identity import ensure_user

    add_unlabeled_pairs(studio, 2, start=500)
    studio.judge_runs.run_blocking("rm1", "unlabeled", admin)
    cy = ensure_user(studio.db, "cy", "admin", "test")  # the pairs are from bo's chats: admins review them
    item = review.next_item(studio.db, cy)
    assert item is not None and item.judge.startswith("ai:") and item.human_votes == 0
    assert item.prompt[-1]["role"] == "user" and item.text_a and item.text_b
    vote_id = review.record_review(studio.db, cy, item.candidate_a, item.candidate_b, "a")
    assert studio.db.scalar("SELECT source FROM preferences WHERE id = ?", [vote_id]) == "review"
    with pytest.raises(Conflict):
        review.record_review(studio.db, cy, item.candidate_a, item.candidate_b, "b")
    following = review.next_item(studio.db, cy)
    assert following is None or (following.candidate_a, following.candidate_b) != (item.candidate_a, item.candidate_b)
    with pytest.raises(ValidationError):
        review.record_review(studio.db, cy, item.candidate_a, item.candidate_b, "maybe")


def test_a_judge_run_on_a_queue_answers_each_prompt_then_labels_the_pair(studio, admin):
    from core.errors import NotFound
    from core.judging.runs import estimate
    from core.labeling import queue as pq
    from core.serving.generate import SamplingParams

    queue_id = pq.create_queue(studio.db, admin, "judge-me")
    pq.import_prompts(studio.db, admin, queue_id, ["Name a river.", "What is 3 times 3?"], "test")
    short = SamplingParams(max_new_tokens=6)
    cost = estimate(studio, "policy", "queue:judge-me", sampling=short)
    assert (cost["pairs"], cost["requests"]) == (2, 4) and cost["seconds_per_pair"] > 0
    assert (
        studio.db.scalar(
            "SELECT count(*) FROM candidates c JOIN prompts p ON p.id = c.prompt_id WHERE p.queue_id = ?", [queue_id]
        )
        == 0
    )  # estimating stores nothing
    run = studio.judge_runs.run_blocking("policy", "queue:judge-me", admin, sampling=short)
    assert (run["status"], run["total"], run["done"]) == ("succeeded", 2, 2), run["error"]
    pairs = studio.db.query(
        "SELECT c.prompt_id, count(*) AS n, any_value(u.name) AS owner FROM candidates c"
        " JOIN prompts p ON p.id = c.prompt_id JOIN conversations cv ON cv.id = c.conversation_id"
        " JOIN users u ON u.id = cv.user_id WHERE p.queue_id = ? GROUP BY c.prompt_id",
        [queue_id],
    )
    assert len(pairs) == 2 and all(r["n"] == 2 and r["owner"] == "ai:policy:base" for r in pairs)
    again = studio.judge_runs.run_blocking("policy", "queue:judge-me", admin)
    assert again["total"] == 0  # every prompt has its judged pair
    with pytest.raises(NotFound, match="no labeling queue"):
        studio.judge_runs.start("policy", "queue:nope", admin)


@pytest.mark.slow  # >= 3 s (a server, a child process or a CLI run): not in make test-fast
def test_a_cancelled_run_stops_between_pairs_and_keeps_what_it_judged(studio, admin):
    add_unlabeled_pairs(studio, 24, start=600)
    run_id = studio.judge_runs.start("policy:base", "unlabeled", admin)
    studio.judge_runs.cancel(run_id)
    studio.judge_runs.join(run_id, timeout=120)
    run = studio.judge_runs.get(run_id)
    assert run["status"] == "cancelled" and run["done"] < run["total"]
    saved = studio.db.scalar("SELECT count(*) FROM preferences WHERE judge_run_id = ?", [run_id])
    assert saved == run["done"]  # every judged pair whole, nothing more
    resumed = studio.judge_runs.run_blocking("policy:base", "unlabeled", admin)
    assert resumed["total"] == run["total"] - run["done"] and resumed["status"] == "succeeded"


def test_ai_weight_thins_or_repeats_ai_votes_the_same_way_on_every_rebuild(studio, admin):
    """ai_weight 0 leaves AI votes out, 1 keeps each once, 2 twice, 0.5 about half (fixed by the vote); people's
    votes always count once; in KTO labels an AI vote counts ai_weight in the tally."""
    from core.data import trainsets

    add_unlabeled_pairs(studio, 12, start=700)
    studio.judge_runs.run_blocking("rm1", "unlabeled", admin)
    base = {"label_kinds": "ai", "labelers": ("ai:rm:rm1",), "min_judge_calibration": 0}

    def count(**extra: object) -> int:
        return len(trainsets.preference_rows(studio.db, trainsets.Filters(**base, **extra)).rows)

    once = count()
    assert once >= 10 and count(ai_weight=2.0) == 2 * once and count(ai_weight=0.0) == 0
    half = count(ai_weight=0.5)
    assert 0 < half < once and count(ai_weight=0.5) == half  # the same rows on a rebuild
    assert trainsets.preference_rows(studio.db, trainsets.Filters(**base, ai_weight=0.0)).stats["skipped"]["ai_weight"]
    people = len(trainsets.preference_rows(studio.db, trainsets.Filters(ai_weight=3.0)).rows)
    assert people == len(trainsets.preference_rows(studio.db).rows)  # people's votes are not weighted
    with pytest.raises(ValidationError, match="ai_weight"):
        trainsets.preference_rows(studio.db, trainsets.Filters(**base, ai_weight=-1))


def test_labelers_review_only_ai_made_pairs_and_their_own_chats(studio, admin):
    """A judge labels pairs from everyone's chats; a labeler's Review tab shows none of another person's chat
    text (admins see every pair), and a vote on such a pair is refused."""
    from core.errors import PermissionDenied
    from core.labeling import review
    from core.labeling.identity import ensure_user

    bo_pairs = add_unlabeled_pairs(studio, 1, start=800)  # bo's own chat
    studio.judge_runs.run_blocking("rm1", "unlabeled", admin)
    dee = ensure_user(studio.db, "dee", "labeler", "test")
    seen = set()
    while (item := review.next_item(studio.db, dee)) is not None:
        owner = studio.db.scalar(
            "SELECT u.name FROM candidates c JOIN conversations cv ON cv.id = c.conversation_id"
            " JOIN users u ON u.id = cv.user_id WHERE c.id = ?",
            [item.candidate_a],
        )
        assert owner.startswith("ai:") or owner == "dee", owner
        review.record_review(studio.db, dee, item.candidate_a, item.candidate_b, "tie")
        seen.add((item.candidate_a, item.candidate_b))
    assert not seen & set(bo_pairs)
    with pytest.raises(PermissionDenied):
        review.record_review(studio.db, dee, *bo_pairs[0], "a")
    admin_item = review.next_item(studio.db, admin)
    assert admin_item is not None  # admins review every AI-labeled pair
