"""AI judges: spec parsing, the order-swap logic, and the three backends on real models (a reward model and the
policy on the tiny model in-process, `transformers serve` on loopback for the endpoint)."""
from __future__ import annotations

import socket

import pytest

from core import judges
from core.errors import ValidationError
from core.queue import GUIDELINES

PROMPT = [{"role": "user", "content": "What is the capital of France?"}]
GOOD, BAD = "The capital of France is Paris.", "I like turtles."
RUBRIC = judges.rubric("Prefer correct, helpful answers.", [{"name": "helpfulness", "description": "answers it"}])


def test_judge_specs_parse_and_bad_ones_say_what_to_write():
    assert judges.parse_judge("rm1") == judges.JudgeSpec("rm", "rm1")
    assert judges.parse_judge("rm:rm2").labeler == "ai:rm:rm2"
    assert judges.parse_judge("policy") == judges.JudgeSpec("policy", "base")
    assert judges.parse_judge("policy:v3").labeler == "ai:policy:v3"
    spec = judges.parse_judge("http://gpu-box:8000/v1#Qwen/Qwen3-8B")
    assert (spec.kind, spec.name, spec.url, spec.labeler) == ("endpoint", "Qwen/Qwen3-8B", "http://gpu-box:8000/v1",
                                                             "ai:Qwen/Qwen3-8B")
    with pytest.raises(ValidationError, match="names no model"):
        judges.parse_judge("http://gpu-box:8000/v1")
    with pytest.raises(ValidationError, match="Unknown judge") as refused:
        judges.parse_judge("gpt-judge")
    assert "rm:<rmN>" in refused.value.hint


def test_both_orders_must_agree_else_the_pair_is_a_tie():
    a = judges.combine(0.9, 0.2)                    # A first: A wins 0.9; B first: B wins 0.2 -> A wins 0.8
    assert (a.outcome, a.position_consistent) == ("a", True) and a.confidence == pytest.approx(0.85)
    b = judges.combine(0.3, 0.6)
    assert (b.outcome, b.confidence) == ("b", pytest.approx(0.65))
    biased = judges.combine(0.9, 0.9)               # always prefers whatever is shown first
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
    from tests.test_evaluation import open_studio, random_adapter
    from core.policies import register_policy
    from pathlib import Path

    root = tmp_path_factory.mktemp("judges")
    s = open_studio(root / "data")
    rm = random_adapter(Path(s.model_path), root / "rm1", seed=3, task="SEQ_CLS")
    register_policy(s.db, "rm1", s.base_policy_id, "tiny", "reward", None, config={"reward_model_path": str(rm)})
    yield s
    s.close()


def test_a_reward_model_judges_by_its_score_difference_in_both_orders(studio):
    from core.evaluation import RewardScorer

    scorer = RewardScorer.load(studio.db, "rm1")
    good, bad = scorer.score([PROMPT, PROMPT], [GOOD, BAD])
    verdict, = judges.judge_pairs(judges.RewardBackend(scorer), [(PROMPT, GOOD, BAD)])
    # a reward model has no position: both orders agree, and the confidence is the Bradley-Terry probability
    expected = 1 / (1 + pytest.importorskip("math").exp(-abs(good - bad)))
    assert verdict.position_consistent and verdict.outcome == ("a" if good > bad else "b")
    assert verdict.confidence == pytest.approx(expected, rel=1e-4)


def test_the_policy_judges_from_its_probability_of_replying_a_or_b(studio):
    backend = judges.PolicyBackend(studio, "base", RUBRIC)
    first = backend.prefer_first([(PROMPT, GOOD, BAD), (PROMPT, BAD, GOOD)])
    assert all(0.0 < p < 1.0 for p in first)
    assert backend.prefer_first([(PROMPT, GOOD, BAD)]) == first[:1]        # a forward pass: deterministic
    verdict, = judges.judge_pairs(backend, [(PROMPT, GOOD, BAD)])
    assert verdict.readable and verdict.p_a_shown_first == pytest.approx(first[0])
    assert verdict.p_a_shown_second == pytest.approx(1 - first[1])


def test_an_openai_compatible_endpoint_judges_and_counts_tokens(engine):
    """`transformers serve` on loopback: real requests, token counts from its usage. It ignores `logprobs`, so the
    reply's letter decides; the tiny random model names neither letter, which makes readable=False ties."""
    backend = judges.EndpointBackend(engine.url, engine.model, RUBRIC)
    verdicts = judges.judge_pairs(backend, [(PROMPT, GOOD, BAD)])
    assert backend.tokens > 0
    assert verdicts[0].outcome in ("a", "b", "tie")
    assert verdicts[0].readable == (verdicts[0].p_a_shown_first is not None
                                    and verdicts[0].p_a_shown_second is not None)


def test_the_reply_letter_and_logprobs_are_read_like_an_endpoint_sends_them():
    assert judges._letter_probability({"A": -0.1, " B": -2.3, "The": -5.0}) == pytest.approx(0.9002, abs=1e-3)
    assert judges._letter_probability({"The": -0.1}) is None


def test_a_down_endpoint_is_retried_with_backoff_then_a_clear_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]              # nothing listens here once the socket is closed
    waits: list[float] = []
    backend = judges.EndpointBackend(f"http://127.0.0.1:{port}", "judge", RUBRIC, sleep=waits.append)
    with pytest.raises(judges.JudgeError, match="could not be reached") as failed:
        backend.prefer_first([(PROMPT, GOOD, BAD)])
    assert waits == [0.5, 1.0, 2.0] and failed.value.http_status == 503
    assert "resume" in failed.value.hint
