"""The release gate: checks from the real evidence tables (reports, blind arena votes, safety runs), the CLI's exit
codes and JSON, the REST route per role, and a Hub push refused, overridden (audit log + card) or allowed.

Real parts: a DuckDB file, the studio's own tables written by their own writers, `launch.py gate` in a subprocess,
the REST API in-process, the Hub stand-in with the real huggingface_hub client.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from core.compare import arena, gate as gates, safety, safety_prompts
from core.errors import NotFound
from core.labeling.identity import ensure_user
from core.serving.policies import ensure_base_policy, register_policy
from storage.db import Database
from tests.support import ROOT


def store_report(db: Database, version: str, verdict: str, kl: float = 0.1, settings: dict | None = None) -> None:
    ids = {r["name"]: r["id"] for r in db.query("SELECT id, name FROM policies")}
    metrics = {"version": version, "against": "base", "held_out_pairs": 8, "toward": 7, "away": 1, "kl_per_token": kl}
    report = {
        "version": version,
        "against": "base",
        "verdict": verdict,
        "summary": f"{verdict}: stored",
        "metrics": metrics,
        **({"settings": settings} if settings else {}),
    }
    db.write(
        lambda cur: cur.execute(
            "INSERT INTO version_reports (policy_id, against_id, verdict, summary, report) VALUES (?, ?, ?, ?, ?)",
            [ids[version], ids["base"], verdict, report["summary"], json.dumps(report)],
        )
    )


def store_safety(db: Database, version: str, unsafe: int, admin, max_new_tokens: int | None = None) -> None:
    """A safety run on the shipped prompt set where ``unsafe`` harmful requests were answered (the rest refused)."""
    prompts = safety_prompts.load_prompt_set().prompts
    answers = []
    for p in prompts:
        bad = p.kind == "harmful" and len([a for a in answers if a.unsafe]) < unsafe
        text = "Sure, here is how." if bad else "I'm sorry, but I can't help with that."
        answers.append(safety.SafetyAnswer(p, text, 5, not bad, bad if p.kind == "harmful" else None))
    settings = {} if max_new_tokens is None else {"max_new_tokens": max_new_tokens, "limit": None}
    safety.store_run(db, version, answers, None, safety_prompts.prompt_set_hash(prompts), settings, admin)


@pytest.fixture
def db(tmp_path):
    database = Database.in_data_dir(tmp_path / "data")
    base = ensure_base_policy(database, "tiny")
    register_policy(database, "v1", base, "tiny", "dpo", str(tmp_path / "adapter"))
    yield database
    database.close()


def statuses(result: gates.GateResult) -> dict[str, str]:
    return {c.name: c.status for c in result.checks}


def test_a_version_without_evidence_is_unknown_everywhere_and_passes(db):
    result = gates.evaluate_gate(db, "v1")
    assert statuses(result) == {
        "learned": "unknown",
        "human_check": "unknown",
        "safety": "unknown",
        "benchmarks": "unknown",
        "kl": "unknown",
    }
    assert result.passed and result.to_dict()["against"] == "base"
    with pytest.raises(gates.ValidationError, match="base model has no release gate"):
        gates.evaluate_gate(db, "base")
    with pytest.raises(NotFound):
        gates.evaluate_gate(db, "v9")


@pytest.mark.parametrize(
    "verdict, status",
    [
        ("learned", "pass"),
        ("changed", "fail"),
        ("no_change", "fail"),
        ("regressed", "fail"),
        ("mixed", "fail"),
        ("unmeasured", "unknown"),
    ],
)
def test_the_learned_check_follows_the_report(db, verdict, status):
    store_report(db, "v1", verdict)
    result = gates.evaluate_gate(db, "v1")
    assert statuses(result)["learned"] == status and statuses(result)["kl"] == "pass"
    assert result.passed == (status != "fail")


def test_kl_people_and_safety_decide_their_checks(db):
    admin = ensure_user(db, "ada", "admin", "local")
    store_report(db, "v1", "learned", kl=0.9)
    for i in range(8):  # people prefer v1 blind, 8 of 8
        battle = arena.PendingBattle(f"Prompt {i}?", "v1", "base", 2, 1, "a", "b", None, 1.0, (1, 1))
        arena.record_battle(db, admin, battle, "a")
    store_safety(db, "base", 0, admin)
    store_safety(db, "v1", 20, admin)
    result = gates.evaluate_gate(db, "v1")
    assert statuses(result) == {
        "learned": "pass",
        "human_check": "pass",
        "safety": "fail",
        "benchmarks": "unknown",
        "kl": "fail",
    }
    assert not result.passed and [c.name for c in result.failed] == ["safety", "kl"]
    assert "people preferred v1 on 8, base on 0" in next(c.evidence for c in result.checks if c.name == "human_check")


def test_a_quick_look_on_demand_never_replaces_the_evidence_a_release_rests_on(db, tmp_path):
    """A 12-prompt report after the automatic 48-prompt one is what the Compare page shows, not what the gate and
    the badge read; an 8-token safety run is compared with the parent's 8-token run, never with its 96-token one."""
    from core.compare.report import ReportSettings, badges, latest_report

    admin = ensure_user(db, "ada", "admin", "local")
    defaults = dataclasses.asdict(ReportSettings())
    store_report(db, "v1", "learned", settings=defaults)
    store_report(db, "v1", "no_change", settings={**defaults, "prompts": 12, "max_new_tokens": 64})
    newest = latest_report(db, "v1")
    assert newest["verdict"] == "no_change" and newest["thorough"] is False
    assert latest_report(db, "v1", thorough_first=True)["verdict"] == "learned"
    assert statuses(gates.evaluate_gate(db, "v1"))["learned"] == "pass"
    assert badges(db)["v1"].startswith("learned")
    store_report(db, "v1", "changed", settings={**defaults, "prompts": 96})  # more evidence than the defaults
    assert statuses(gates.evaluate_gate(db, "v1"))["learned"] == "fail"

    default = safety.MAX_NEW_TOKENS
    store_safety(db, "base", 0, admin, default)
    store_safety(db, "v1", 0, admin, default)
    assert safety.has_run(db, "base", safety.default_conditions())
    store_safety(db, "v1", 20, admin, 8)  # a quick look: 8-token answers that never reach a refusal
    change = safety.safety_change(db, "v1")
    assert change["comparable"] and not change["worse"] and change["notes"] == []
    assert statuses(gates.evaluate_gate(db, "v1"))["safety"] == "pass"
    store_safety(db, "base", 0, admin, 8)  # base looked at alike: now the quick runs compare
    assert safety.safety_change(db, "v1")["worse"]
    assert statuses(gates.evaluate_gate(db, "v1"))["safety"] == "fail"

    register_policy(db, "v2", db.scalar("SELECT id FROM policies WHERE name = 'base'"), "tiny", "dpo", str(tmp_path))
    store_safety(db, "v2", 0, admin, 32)  # nothing of base's was evaluated with 32 tokens
    change = safety.safety_change(db, "v2")
    assert not change["comparable"] and "answers were cut at different lengths (32 and 8 tokens)" in change["notes"]
    check = next(c for c in gates.evaluate_gate(db, "v2").checks if c.name == "safety")
    assert check.status == "unknown" and "not evaluated alike" in check.evidence


def test_enforce_refuses_a_hub_release_until_an_admin_gives_a_reason(db):
    admin = ensure_user(db, "ada", "admin", "local")
    store_report(db, "v1", "no_change")
    assert gates.check_release(db, "v1", admin, "off", to_hub=True) is None
    assert not gates.check_release(db, "v1", admin, "warn", to_hub=True).passed  # warned, not refused
    assert not gates.check_release(db, "v1", admin, "enforce", to_hub=False).passed  # local files: warned
    with pytest.raises(gates.GateFailed) as refused:
        gates.check_release(db, "v1", admin, "enforce", to_hub=True, override="   ")
    assert refused.value.code == "gate_failed" and refused.value.http_status == 409
    assert db.scalar("SELECT count(*) FROM audit_log WHERE action = 'gate_override'") == 0
    gates.check_release(db, "v1", admin, "enforce", to_hub=True, override="demo for the team", target="ada/x")
    [override] = gates.gate_overrides(db, "v1")
    assert override["reason"] == "demo for the team" and override["by"] == "ada" and override["target"] == "ada/x"
    assert override["failed"][0]["name"] == "learned"
    section = gates.card_section(gates.evaluate_gate(db, "v1"), "demo for the team", "ada")
    assert "| learned | fail |" in section and "Released despite the failed gate by ada: demo for the team" in section
    with pytest.raises(gates.ValidationError, match="release gate mode"):
        gates.check_release(db, "v1", admin, "sometimes", to_hub=True)


@pytest.mark.slow  # >= 3 s (a server, a child process or a CLI run): not in make test-fast
def test_the_cli_exits_1_on_a_failing_gate_and_prints_json(db, tmp_path):
    store_report(db, "v1", "learned")
    db.close()
    command = [
        sys.executable,
        str(ROOT / "launch.py"),
        "gate",
        "v1",
        "--data-dir",
        str(tmp_path / "data"),
        "--model",
        "tiny",
    ]
    passing = subprocess.run(command + ["--json"], capture_output=True, text=True, timeout=120)
    assert passing.returncode == 0, passing.stderr
    answer = json.loads(passing.stdout)
    assert set(answer) == {"version", "against", "passed", "checks"} and answer["passed"] is True
    assert [c["name"] for c in answer["checks"]] == ["learned", "human_check", "safety", "benchmarks", "kl"]
    assert {tuple(sorted(c)) for c in answer["checks"]} == {("evidence", "name", "status")}
    reopened = Database.in_data_dir(tmp_path / "data")
    store_report(reopened, "v1", "changed")
    reopened.close()
    failing = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert failing.returncode == 1 and failing.stdout.startswith("v1 against base: FAILED")
    assert "fail    learned: changed, but not toward its labels" in failing.stdout


def test_the_rest_route_answers_each_role(tmp_path):
    from tests.support.studios import team_studio, users_file

    data_dir = tmp_path / "data"
    studio, client = team_studio(data_dir, users_file(tmp_path / "users.txt", "ada:pw-ada:admin", "bob:pw-bob:labeler"))
    try:
        register_policy(studio.db, "v1", studio.base_policy_id, "tiny", "dpo", str(tmp_path / "adapter"))
        store_report(studio.db, "v1", "regressed")
        for auth in (("ada", "pw-ada"), ("bob", "pw-bob")):
            answer = client.get("/api/policies/v1/gate", auth=auth)
            assert answer.status_code == 200 and answer.json()["passed"] is False
            assert answer.json()["checks"][0] == {
                "name": "learned",
                "status": "fail",
                "evidence": "moved against its labels: regressed: stored",
            }
        chain = client.get("/api/policies/v1/lineage", auth=("bob", "pw-bob")).json()
        assert chain["report"] == {"verdict": "regressed", "summary": "regressed: stored"}
        assert chain["gate"]["passed"] is False and chain["pushes"] == [] and chain["benchmarks"] is None
        assert chain["labels"]["labelers"] == {"people": 0, "ai_judges": 0} and chain["job"] is None
        assert client.get("/api/policies/v1/lineage").status_code == 401
        assert client.get("/api/policies/base/lineage", auth=("ada", "pw-ada")).status_code == 422
        assert client.get("/api/policies/v1/gate").status_code == 401
        assert client.get("/api/policies/v9/gate", auth=("ada", "pw-ada")).json()["error"]["code"] == "not_found"
        assert client.get("/api/policies/base/gate", auth=("ada", "pw-ada")).status_code == 422
    finally:
        studio.close()


def test_the_card_tells_the_chain_from_labels_to_gate(db, tmp_path):
    """A version with a job: the lineage counts the people who had labeled when the job froze its data."""
    from core.labeling.votes import Vote, submit_labeled_pair
    from core.share.lineage import card_lines, lineage

    ada, bob = ensure_user(db, "ada", "admin", "local"), ensure_user(db, "bob", "labeler", "local")
    for user in (ada, bob):
        submit_labeled_pair(db, user, f"Question from {user.name}?", "Good.", "Bad.", Vote(0, 0, "a"))
    job_id = db.write(
        lambda cur: cur.execute(
            "INSERT INTO jobs (algorithm, status, config) VALUES ('dpo', 'succeeded', ?) RETURNING id",
            [json.dumps({"examples": 2, "eval_examples": 0, "filters": {"labelers": ["bob"]}})],
        ).fetchone()[0]
    )
    register_policy(
        db,
        "v2",
        db.scalar("SELECT id FROM policies WHERE name = 'base'"),
        "tiny",
        "dpo",
        str(tmp_path / "a2"),
        data_hash="e" * 64,
        config={},
        metrics={},
        job_id=job_id,
    )
    store_report(db, "v2", "learned")
    chain = lineage(db, "v2")
    assert chain["labels"]["labelers"] == {"people": 1, "ai_judges": 0} and chain["labels"]["examples"] == 2
    assert chain["job"]["id"] == job_id and chain["gate"]["passed"]
    text = "\n".join(card_lines(chain))
    assert "frozen as data hash `eeeeeeeeeeeeeeee`, from 1 person" in text and "**Job**: #" in text
    assert "3. **What changed**: learned: stored" in text and "7. **Release gate**: passed" in text
