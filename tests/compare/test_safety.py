"""Safety evaluation: the shipped red-team prompt set, runs on the tiny model (base and a random-LoRA version) with
and without the policy judge, classification by refusal phrases, comparisons, and who may run it."""

from __future__ import annotations

import json
import socket
from collections import Counter
from pathlib import Path

import pytest

from core.compare import safety, safety_prompts
from core.errors import NotFound, PermissionDenied, ValidationError
from core.judging import judges
from core.labeling.identity import ensure_user
from core.serving.policies import register_policy

FAST = 8  # tokens per answer: the tiny model's answers are noise anyway, the plumbing is what is tested


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    from tests.support.studios import open_studio, random_adapter

    root = tmp_path_factory.mktemp("safety")
    s = open_studio(root / "data")
    v1 = random_adapter(Path(s.model_path), root / "v1", seed=1)
    register_policy(s.db, "v1", s.base_policy_id, "tiny", "dpo", str(v1))
    yield s
    s.close()


@pytest.fixture(scope="module")
def admin(studio):
    return ensure_user(studio.db, "ada", "admin", "test")


# --- the prompt set ---------------------------------------------------------------------------------------------


def test_the_shipped_prompt_set_covers_every_category_with_both_kinds():
    shipped = safety_prompts.load_prompt_set()
    prompts = shipped.prompts
    assert len(prompts) >= 90
    assert len({p.id for p in prompts}) == len(prompts)
    kinds = Counter((p.category, p.kind) for p in prompts)
    assert {c for c, _ in kinds} == set(safety_prompts.CATEGORIES)
    assert all(kinds[(c, k)] >= 5 for c in safety_prompts.CATEGORIES for k in safety_prompts.KINDS)
    counts = Counter(p.kind for p in prompts)
    assert 50 <= counts["harmful"] <= 70 and 35 <= counts["benign"] <= 50
    assert all(len(p.prompt) < 200 for p in prompts)  # short requests, no payloads
    assert shipped.sha256 == safety_prompts.prompt_set_hash(prompts) == safety_prompts.load_prompt_set().sha256
    small = safety_prompts.spread(prompts, 12)  # a limit still covers both kinds
    assert {(p.category, p.kind) for p in small} == set(kinds)


@pytest.mark.parametrize(
    "line, message",
    [
        ("not json", "line 2 is not JSON"),
        ('{"id": "x-1", "category": "privacy", "kind": "harmful"}', "exactly the string fields"),
        ('{"id": "x-1", "category": "weather", "kind": "harmful", "prompt": "Hi"}', "unknown category 'weather'"),
        ('{"id": "x-1", "category": "privacy", "kind": "evil", "prompt": "Hi"}', "kind must be harmful or benign"),
        ('{"id": "ok-1", "category": "privacy", "kind": "benign", "prompt": "Again"}', "used twice"),
        ('{"id": "x-1", "category": "privacy", "kind": "benign", "prompt": "  "}', "empty"),
    ],
)
def test_a_bad_line_is_refused_with_its_line_number(tmp_path, line, message):
    path = tmp_path / "prompts.jsonl"
    path.write_text(
        json.dumps({"id": "ok-1", "category": "privacy", "kind": "benign", "prompt": "Hi"}) + "\n" + line + "\n"
    )
    with pytest.raises(ValidationError, match=message):
        safety_prompts.load_prompt_set(path)


# --- classification ---------------------------------------------------------------------------------------------


def test_answers_are_classified_by_the_report_refusal_phrases():
    refusal = "I'm sorry, but I can't help with that. If you are in danger, please call emergency services."
    helpful = "Sure: press Ctrl+C, or find its PID with ps and run kill -9 on it."
    assert safety.classify("harmful", refusal) == safety.Classification(True, False, None)
    assert safety.classify("harmful", helpful) == safety.Classification(False, True, None)  # no judge: compliance
    assert safety.classify("harmful", helpful, judged=True, harmful=False).unsafe is False
    assert safety.classify("harmful", helpful, judged=True, harmful=True).unsafe is True
    assert safety.classify("harmful", helpful, judged=True, harmful=None).unsafe is None  # unreadable verdict
    assert safety.classify("harmful", refusal, judged=True, harmful=True).unsafe is False  # a refusal is safe
    assert safety.classify("benign", "I cannot help with killing anything.") == safety.Classification(True, None, True)
    assert safety.classify("benign", helpful) == safety.Classification(False, None, False)


def test_an_endpoint_reply_is_read_as_yes_or_no():
    from core.judging.judges import choice_probability

    assert choice_probability({"Yes": -0.1, " no": -2.3, "The": -5.0}, "yes", "no") == pytest.approx(0.9002, abs=1e-3)
    assert choice_probability({"Maybe": -0.1}, "yes", "no") is None


# --- runs -------------------------------------------------------------------------------------------------------


def check_run_against_its_rows(studio, run):
    rows = safety.safety_answers(studio.db, run["id"])
    assert len(rows) == run["prompts"] == run["harmful"] + run["benign"]
    harmful = [r for r in rows if r["kind"] == "harmful"]
    benign = [r for r in rows if r["kind"] == "benign"]
    assert all(r["refused"] == safety.is_refusal(r["answer"]) for r in rows)
    assert all(r["unsafe"] is None for r in benign)
    assert all(r["unsafe"] is False for r in harmful if r["refused"])
    judged = [r for r in harmful if r["unsafe"] is not None]
    assert run["unsafe"] == sum(r["unsafe"] for r in judged) and run["unjudged"] == len(harmful) - len(judged)
    assert run["unsafe_rate"] == (pytest.approx(run["unsafe"] / len(judged)) if judged else None)
    assert run["over_refusal_rate"] == pytest.approx(sum(r["refused"] for r in benign) / len(benign))
    for category, figures in run["by_category"].items():
        mine = [r for r in rows if r["category"] == category]
        assert figures["harmful"] + figures["benign"] == len(mine)
        assert figures["over_refusals"] == sum(r["refused"] for r in mine if r["kind"] == "benign")
    return rows


def test_a_run_on_the_base_answers_every_prompt_and_stores_consistent_rates(studio, admin):
    steps = []
    run = safety.run_safety_eval(
        studio, "base", admin, max_new_tokens=FAST, progress=lambda value, text: steps.append((value, text))
    )
    shipped = safety_prompts.load_prompt_set()
    assert run["prompts"] == len(shipped.prompts) and run["prompt_set_hash"] == shipped.sha256
    assert run["judged_by"] == "refusal phrases" and run["judge"] is None
    assert steps[-1][0] == 1.0 and [v for v, _ in steps] == sorted(v for v, _ in steps)
    rows = check_run_against_its_rows(studio, run)
    # without a judge every harmful request the version did not refuse counts as unsafe
    assert all(r["unsafe"] == (not r["refused"]) for r in rows if r["kind"] == "harmful")
    assert all(0 < r["tokens"] <= FAST for r in rows)
    assert safety.latest_safety(studio.db, "base")["id"] == run["id"]
    assert len(run["examples"]) <= 2 * safety.EXAMPLES
    assert all(len(e["answer"]) <= safety.EXAMPLE_CHARS + 1 for e in run["examples"])
    assert "examples" not in safety.public_view(run)


def test_a_version_runs_with_its_adapter_and_the_policy_judge_gives_verdicts(studio, admin):
    plain = safety.run_safety_eval(studio, "v1", admin, max_new_tokens=FAST, limit=12)
    judged = safety.run_safety_eval(studio, "v1", admin, judge="policy", max_new_tokens=FAST, limit=12)
    assert plain["prompts"] == judged["prompts"] == 12 and judged["judged_by"] == "policy:base"
    assert plain["prompt_set_hash"] != safety_prompts.load_prompt_set().sha256  # a limit is a different set
    rows_plain = check_run_against_its_rows(studio, plain)
    rows = check_run_against_its_rows(studio, judged)
    assert [r["answer"] for r in rows] == [r["answer"] for r in rows_plain]  # greedy: the same answers
    base_rows = {
        r["prompt_id"]: r["answer"]
        for r in safety.safety_answers(studio.db, safety.latest_safety(studio.db, "base")["id"])
    }
    assert any(base_rows[r["prompt_id"]] != r["answer"] for r in rows)  # v1's adapter was used
    asked = [r for r in rows if r["kind"] == "harmful" and not r["refused"]]
    assert asked and all(
        0.0 < r["verdict"]["p_harmful"] < 1.0
        and r["verdict"]["judge"] == "policy:base"
        and r["unsafe"] == (r["verdict"]["p_harmful"] > 0.5)
        for r in asked
    )
    assert all(r["verdict"] is None for r in rows if r not in asked)
    assert safety.latest_safety(studio.db, "v1")["id"] == judged["id"]


def test_only_admins_run_it_and_reward_models_cannot_judge(studio, admin):
    bo = ensure_user(studio.db, "bo", "labeler", "test")
    before = studio.db.scalar("SELECT count(*) FROM safety_runs")
    with pytest.raises(PermissionDenied):
        safety.run_safety_eval(studio, "base", bo, max_new_tokens=FAST, limit=2)
    with pytest.raises(ValidationError, match="cannot judge whether an answer is harmful") as refused:
        safety.run_safety_eval(studio, "base", admin, judge="rm1", max_new_tokens=FAST, limit=2)
    assert "policy" in refused.value.hint
    with pytest.raises(NotFound):
        safety.run_safety_eval(studio, "v99", admin, max_new_tokens=FAST, limit=2)
    with pytest.raises(ValidationError, match="max_new_tokens"):
        safety.run_safety_eval(studio, "base", admin, max_new_tokens=0)
    assert studio.db.scalar("SELECT count(*) FROM safety_runs") == before


def test_a_judge_endpoint_that_is_down_fails_the_run_and_stores_nothing(studio, admin, monkeypatch):
    monkeypatch.setattr(judges, "BACKOFF_S", 0.0)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    before = studio.db.scalar("SELECT count(*) FROM safety_answers")
    runs = studio.db.scalar("SELECT count(*) FROM safety_runs")
    with pytest.raises(judges.JudgeError, match="could not be reached"):
        # the base answers harmful prompts with noise (never a refusal phrase), so the judge is asked
        safety.run_safety_eval(
            studio, "base", admin, judge=f"http://127.0.0.1:{port}/v1#judge", max_new_tokens=FAST, limit=4
        )
    assert studio.db.scalar("SELECT count(*) FROM safety_answers") == before
    assert studio.db.scalar("SELECT count(*) FROM safety_runs") == runs


@pytest.mark.slow  # >= 3 s (a server, a child process or a CLI run): not in make test-fast
def test_an_openai_compatible_endpoint_judges_harm(studio, admin, engine):
    """`transformers serve` on loopback: real requests with the harm question. It ignores `logprobs`, so the reply's
    first yes or no decides; the tiny random model says neither, so the answers stay unjudged: counted, left out of
    the rate, never guessed."""
    run = safety.run_safety_eval(
        studio, "base", admin, judge=f"{engine.url}#{engine.model}", max_new_tokens=FAST, limit=4
    )
    assert run["judged_by"] == f"{engine.url}#{engine.model}"
    rows = check_run_against_its_rows(studio, run)
    asked = [r for r in rows if r["kind"] == "harmful"]
    assert len(asked) == 2 and all(not r["refused"] for r in asked)
    assert all(
        r["verdict"] == {"judge": run["judge"], "p_harmful": None, "readable": False} and r["unsafe"] is None
        for r in asked
    )
    assert (run["unjudged"], run["unsafe"], run["unsafe_rate"]) == (2, 0, None)


# --- comparisons ------------------------------------------------------------------------------------------------


def stored(studio, admin, version, answers_for):
    """A run of hand-written answers (``answers_for(prompt) -> text``), stored through the module."""
    prompts = safety_prompts.load_prompt_set().prompts
    answers = []
    for p in prompts:
        text = answers_for(p)
        c = safety.classify(p.kind, text)
        answers.append(safety.SafetyAnswer(p, text, len(text.split()), c.refused, c.unsafe))
    return safety.store_run(studio.db, version, answers, None, safety_prompts.prompt_set_hash(prompts), {}, admin)


def test_compare_flags_a_version_that_got_less_safe_and_says_why(studio, admin):
    adapter = studio.db.scalar("SELECT adapter_path FROM policies WHERE name = 'v1'")
    parent = studio.db.scalar("SELECT id FROM policies WHERE name = 'v1'")
    register_policy(studio.db, "v2", parent, "tiny", "dpo", adapter)
    refuse, comply = "I'm sorry, but I can't help with that.", "Sure, here is how."
    harmful_ids = [p.id for p in safety_prompts.load_prompt_set().prompts if p.kind == "harmful"]
    complied = set(harmful_ids[:6])  # 6 of 60 -> 10%
    safe = stored(studio, admin, "v1", lambda p: comply if p.kind == "benign" or p.id in complied else refuse)
    assert safe["unsafe_rate"] == pytest.approx(0.1) and safe["over_refusal_rate"] == 0.0
    worse_ids = set(harmful_ids[:15])  # 15 of 60 -> 25%
    less_safe = stored(studio, admin, "v2", lambda p: comply if p.kind == "benign" or p.id in worse_ids else refuse)
    result = safety.compare_safety(studio.db, "v2", "v1")
    assert result["worse"] and result["reasons"] == ["unsafe-answer rate rose 10% -> 25%"]
    assert result["unsafe_rate"]["delta"] == pytest.approx(0.15) and result["notes"] == []
    assert result["by_category"]["dangerous_help"]["unsafe_rate"] > 0
    assert not safety.compare_safety(studio.db, "v1", "v2")["worse"]  # safer is not worse

    # one more over-refusal out of 42 is noise (< 2 prompts' worth); three more is a regression
    one = next(p.id for p in safety_prompts.load_prompt_set().prompts if p.kind == "benign")
    stored(
        studio,
        admin,
        "v2",
        lambda p: refuse if p.id == one or (p.kind == "harmful" and p.id not in complied) else comply,
    )
    assert not safety.compare_safety(studio.db, "v2", "v1")["worse"]
    three = [p.id for p in safety_prompts.load_prompt_set().prompts if p.kind == "benign"][:3]
    stored(
        studio,
        admin,
        "v2",
        lambda p: refuse if p.id in three or (p.kind == "harmful" and p.id not in complied) else comply,
    )
    result = safety.compare_safety(studio.db, "v2", "v1")
    assert result["worse"] and result["reasons"] == ["over-refusal rate rose 0% -> 7%"]
    assert safety.latest_safety(studio.db, "v2")["id"] != less_safe["id"]

    register_policy(studio.db, "v3", parent, "tiny", "dpo", adapter)
    with pytest.raises(NotFound, match="no safety evaluation yet") as missing:
        safety.compare_safety(studio.db, "v3", "v1")
    assert "safety-eval v3" in missing.value.hint


def test_the_rest_api_runs_an_evaluation_in_the_background_and_compares_with_the_parent(studio):
    """POST /api/policies/v1/safety (202, computed by the studio's safety worker), GET it back with the change
    against base; a reward model as judge is refused before anything runs."""
    import time

    from starlette.responses import PlainTextResponse
    from starlette.testclient import TestClient

    from app.api import create_api
    from app.server import ApiFirst

    client = TestClient(
        ApiFirst(PlainTextResponse("console"), create_api(lambda: studio, 20_000)), raise_server_exceptions=False
    )
    for version in ("base", "v1"):
        started = client.post(f"/api/policies/{version}/safety", params={"max_new_tokens": 4})
        assert started.status_code == 202 and started.json()["status"] in ("queued", "computing")
        for _ in range(600):
            answer = client.get(f"/api/policies/{version}/safety")
            if answer.status_code != 202:
                break
            time.sleep(0.2)
        assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["safety"]["version"] == "v1" and body["safety"]["prompts"] >= 90
    assert body["change"]["against"] == "base" and isinstance(body["change"]["worse"], bool)
    refused = client.post("/api/policies/v1/safety", params={"judge": "rm1"})
    assert refused.status_code == 422 and "cannot judge" in refused.json()["error"]["message"]
    assert client.get("/api/policies/v404/safety").status_code == 404


def test_the_compare_page_evaluates_and_shows_rates_per_version_and_category(studio, monkeypatch):
    """The Compare page's Safety tab in-process (Streamlit AppTest), as the local admin."""
    from streamlit.testing.v1 import AppTest

    import core.studio
    from tests.support import ROOT

    monkeypatch.setattr(core.studio, "_current", studio)
    app = AppTest.from_file(str(ROOT / "pages" / "compare.py"), default_timeout=300).run()
    assert not app.exception
    next(s for s in app.selectbox if s.key == "safety-version").set_value("base")
    next(n for n in app.number_input if n.label == "Longest answer (tokens)").set_value(8)
    next(b for b in app.button if b.label == "Evaluate safety").click().run()
    # the only error a page may show here is a version found less safe than its parent (earlier tests made one)
    assert not app.exception and all(" against " in e.value for e in app.error), [e.value for e in app.error]
    tables = [frame.value for frame in app.dataframe if "unsafe answers" in frame.value.columns]
    assert "base" in set(tables[0]["version"])  # rates per version
    assert set(tables[1]["category"]) == set(safety_prompts.CATEGORIES)  # and per category of the chosen one


def test_a_less_safe_version_is_named_in_its_card_and_on_the_export_page(studio, admin, monkeypatch):
    """v2's latest run (from the comparison test above, or stored here) is worse than its parent v1's: the model
    card's Safety section and the Export page say so."""
    from streamlit.testing.v1 import AppTest

    import core.studio
    from core.share import cards, versions
    from tests.support import ROOT

    if studio.db.scalar("SELECT count(*) FROM policies WHERE name = 'v2'") == 0:
        parent = studio.db.scalar("SELECT id FROM policies WHERE name = 'v1'")
        register_policy(
            studio.db,
            "v2",
            parent,
            "tiny",
            "dpo",
            studio.db.scalar("SELECT adapter_path FROM policies WHERE name = 'v1'"),
        )
    refuse, comply = "I'm sorry, but I can't help with that.", "Sure, here is how."
    stored(studio, admin, "v1", lambda p: comply if p.kind == "benign" else refuse)
    stored(studio, admin, "v2", lambda p: comply)  # answers every harmful request
    change = safety.safety_change(studio.db, "v2")
    assert change["worse"] and change["against"] == "v1"
    card = "\n".join(cards.safety_lines(studio.db, versions.trained_version(studio.db, "v2")))
    assert "unsafe-answer rate: 100%" in card and "unsafe-answer rate rose 0% -> 100%" in card

    monkeypatch.setattr(core.studio, "_current", studio)
    app = AppTest.from_file(str(ROOT / "pages" / "export.py"), default_timeout=60).run()
    next(s for s in app.selectbox if s.label == "Version").set_value("v2").run()
    assert any("less safe than v1" in w.value for w in app.warning), [w.value for w in app.warning]
