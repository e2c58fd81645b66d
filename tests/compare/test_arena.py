"""Arena and leaderboard: Bradley-Terry fit, bootstrap intervals, battle files, pairing, votes, CLI, UI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bench.harness.processes import free_port
from core.compare import arena, leaderboard
from core.compare.leaderboard import Battle
from core.data.filters import Filters
from core.data.trainsets import preference_rows
from core.labeling.identity import ensure_user
from core.labeling.votes import undo_last_vote
from core.serving.policies import ensure_base_policy, register_policy, rename_policy
from storage.db import Database
from tests.support import ROOT
from tests.support.servers import Server

THREE_TO_ONE = 400 * math.log10(3)  # rating gap when one model takes 3 of every 4 points: 190.85


def battles(model_a: str, model_b: str, winner: str, n: int = 1) -> list[Battle]:
    return [Battle(model_a, model_b, winner)] * n


def simulate(true: dict[str, float], n: int, rng: np.random.Generator) -> list[Battle]:
    """A tournament under the Bradley-Terry model itself (no ties) with the given Elo ratings."""
    models = list(true)
    out = []
    for _ in range(n):
        i, j = rng.choice(len(models), 2, replace=False)
        a, b = models[i], models[j]
        p_a = 1 / (1 + 10 ** ((true[b] - true[a]) / 400))
        out.append(Battle(a, b, "model_a" if rng.random() < p_a else "model_b"))
    return out


def torch_fit(data: list[Battle]) -> dict[str, float]:
    """Independent reference: unregularised BT likelihood (FastChat's weighted logistic form) by LBFGS."""
    import torch

    models = leaderboard.model_order(data)
    index = {m: k for k, m in enumerate(models)}
    rows = []  # (i, j, y, weight): y=1 means i beat j; a tie is half a win and half a loss
    for b in data:
        i, j = index[b.model_a], index[b.model_b]
        if b.winner == "model_a":
            rows.append((i, j, 1.0, 1.0))
        elif b.winner == "model_b":
            rows.append((i, j, 0.0, 1.0))
        else:
            rows += [(i, j, 1.0, 0.5), (i, j, 0.0, 0.5)]
    i, j, y, w = (torch.tensor(c, dtype=torch.float64) for c in zip(*rows))
    i, j = i.long(), j.long()
    r = torch.zeros(len(models), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [r], lr=1, max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-14, line_search_fn="strong_wolfe"
    )

    def loss():
        opt.zero_grad()
        d = (r[i] - r[j]) * math.log(10)
        value = -(w * (y * torch.nn.functional.logsigmoid(d) + (1 - y) * torch.nn.functional.logsigmoid(-d))).sum()
        value.backward()
        return value

    opt.step(loss)
    ratings = 400 * r.detach().numpy()
    return dict(zip(models, (ratings - ratings.mean() + 1000).tolist()))


# ------------------------------------------------------------------------------------ BT fit


def test_three_wins_in_four_give_the_hand_computed_gap_anchored_on_base():
    ratings = leaderboard.bt_ratings(battles("v1", "base", "model_a", 3) + battles("base", "v1", "model_a"))
    assert ratings["base"] == pytest.approx(1000, abs=1e-9)
    assert ratings["v1"] == pytest.approx(1000 + THREE_TO_ONE, abs=0.01)


def test_ties_and_both_bad_count_half_a_win_each():
    with_tie = battles("x", "y", "model_a") + battles("x", "y", "tie")  # x takes 1.5 of 2 points
    with_bothbad = battles("x", "y", "model_a") + battles("y", "x", "tie (bothbad)")
    for data in (with_tie, with_bothbad):
        r = leaderboard.bt_ratings(data, anchor="y")
        assert r["x"] - r["y"] == pytest.approx(THREE_TO_ONE, abs=0.01)
    even = leaderboard.bt_ratings(battles("x", "y", "tie", 5), anchor=None)
    assert even == pytest.approx({"x": 1000, "y": 1000}, abs=1e-6)


def test_a_cycle_rates_everyone_equal_and_the_mean_is_1000_without_anchor():
    cycle = battles("a", "b", "model_a") + battles("b", "c", "model_a") + battles("c", "a", "model_a")
    assert leaderboard.bt_ratings(cycle, anchor=None) == pytest.approx({"a": 1000, "b": 1000, "c": 1000}, abs=1e-6)
    chain = (
        battles("a", "b", "model_a", 3)
        + battles("b", "a", "model_a")
        + battles("b", "c", "model_a", 3)
        + battles("c", "b", "model_a")
    )
    r = leaderboard.bt_ratings(chain, anchor=None)
    # a-b and b-c both 3:1 and never a-c: the MLE puts b exactly in the middle, gaps of 400·log10(3)
    assert r["a"] - r["b"] == pytest.approx(THREE_TO_ONE, abs=0.01)
    assert r["b"] - r["c"] == pytest.approx(THREE_TO_ONE, abs=0.01)
    assert sum(r.values()) / 3 == pytest.approx(1000, abs=1e-6)


def test_fit_agrees_with_an_independent_torch_fit_within_a_point():
    rng = np.random.default_rng(7)
    true = {"base": 0, "v1": 120, "v2": -60, "v3": 250, "v4": 30, "v5": 90}
    data = simulate(true, 600, rng)
    data += [Battle(b.model_a, b.model_b, "tie" if k % 3 else "tie (bothbad)") for k, b in enumerate(data[:90])]
    ours = leaderboard.bt_ratings(data, anchor=None)
    reference = torch_fit(data)
    assert max(abs(ours[m] - reference[m]) for m in ours) < 1.0
    assert max(abs(ours[m] - reference[m]) for m in ours) < 0.05  # in fact far closer than required


def test_simulated_tournament_recovers_the_ranking_and_ci_cover_the_truth():
    true = {"base": 0, "v1": 100, "v2": 200, "v3": -100, "v4": 300}
    board = leaderboard.compute_leaderboard(simulate(true, 4000, np.random.default_rng(1)), "base", rounds=200)
    by_true = sorted(true, key=lambda m: -true[m])
    assert [row["model"] for row in board.rows()] == by_true
    assert [row["rank"] for row in board.rows()] == [1, 2, 3, 4, 5]  # 100 points apart: all separable
    for m, lo, hi in zip(board.models, board.ci_low, board.ci_high):
        assert lo - 1e-9 <= 1000 + true[m] <= hi + 1e-9, m
    # coverage over many tournaments: a 95% interval must hold the truth about 95% of the time
    covered, total = 0, 0
    rng = np.random.default_rng(2)
    for _ in range(30):
        b = leaderboard.compute_leaderboard(
            simulate(true, 800, rng), "base", rounds=100, seed=int(rng.integers(1 << 30))
        )
        for m, lo, hi in zip(b.models, b.ci_low, b.ci_high):
            if m != "base":
                covered += lo <= 1000 + true[m] <= hi
                total += 1
    assert covered / total >= 0.88, covered / total


def test_bootstrap_is_reproducible_and_needs_100_rounds():
    data = simulate({"base": 0, "v1": 50, "v2": 80}, 300, np.random.default_rng(3))
    first, again = leaderboard.compute_leaderboard(data, seed=5), leaderboard.compute_leaderboard(data, seed=5)
    assert first.to_json() == again.to_json()
    assert leaderboard.compute_leaderboard(data, seed=6).to_json()["ci"] != first.to_json()["ci"]
    with pytest.raises(arena.ValidationError, match="too few"):
        leaderboard.compute_leaderboard(data, rounds=50)


def test_rank_counts_only_models_whose_interval_is_entirely_above():
    low, high = np.array([1100, 1050, 990, 700]), np.array([1200, 1120, 1060, 800])
    assert leaderboard.ranks_from_intervals(low, high).tolist() == [1, 1, 2, 4]


def test_win_rates_battle_counts_and_too_few_battles_warning():
    data = battles("base", "v1", "model_a", 3) + battles("v1", "base", "tie") + battles("v1", "v2", "model_b", 2)
    board = leaderboard.compute_leaderboard(data, rounds=100)
    k = {m: i for i, m in enumerate(board.models)}
    assert board.win_rate[k["base"], k["v1"]] == pytest.approx(3.5 / 4)
    assert board.win_rate[k["v2"], k["v1"]] == 1.0 and math.isnan(board.win_rate[k["base"], k["v2"]])
    assert dict(zip(board.models, board.battles_per_model.tolist())) == {"base": 4, "v1": 6, "v2": 2}
    assert board.total_battles == 6 and all(row["too_few_battles"] for row in board.rows())
    assert any(w.startswith("Too few battles") for w in board.warnings)
    assert any("v2 won every battle" in w for w in board.warnings)
    assert board.to_json()["ratings"]["base"] == 1000.0
    assert "too few battles" in leaderboard.format_table(board)


def test_disconnected_groups_are_reported():
    board = leaderboard.compute_leaderboard(
        battles("a", "b", "model_a", 3) + battles("b", "a", "model_a") + battles("c", "d", "tie", 4),
        anchor=None,
        rounds=100,
    )
    assert any("never compared" in w for w in board.warnings)


# ------------------------------------------------------------------------------------ battle files


def write(path: Path, lines: list) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def test_fastchat_jsonl_and_json_array_are_read(tmp_path):
    records = [
        {"model_a": "x", "model_b": "y", "winner": w, "judge": "j", "tstamp": 1.0, "anony": True}
        for w in ("model_a", "model_b", "tie", "tie (bothbad)")
    ]
    from_lines = leaderboard.read_battles_file(write(tmp_path / "b.jsonl", [*records[:2], "", *records[2:]]))
    (tmp_path / "b.json").write_text(json.dumps(records))
    assert from_lines == leaderboard.read_battles_file(tmp_path / "b.json")
    assert [b.winner for b in from_lines] == ["model_a", "model_b", "tie", "tie (bothbad)"]


@pytest.mark.parametrize(
    "lines, message",
    [
        (
            [{"model_a": "x", "model_b": "y", "winner": "model_a"}, {"model_a": "x", "model_b": "y", "winner": "x"}],
            r"unknown winner \(#2: 'x'\)",
        ),
        (
            [{"model_a": "x", "model_b": "y", "winner": "tie"}, {"model_a": "y", "model_b": "y", "winner": "tie"}],
            r"against itself \(#2\)",
        ),
        ([{"model_a": "x", "model_b": "y", "winner": "tie"}, "{oops"], "Line 2 .* is not JSON"),
        ([{"model_a": "x", "winner": "tie"}], "Line 1 .* lacks model_a, model_b or winner"),
        ([], "no battles"),
    ],
)
def test_bad_battle_files_are_refused_with_the_reason(tmp_path, lines, message):
    with pytest.raises(leaderboard.BattlesError, match=message):
        leaderboard.read_battles_file(write(tmp_path / "bad.jsonl", lines))


def test_one_model_only_and_missing_file_are_refused(tmp_path):
    only_x = [{"model_a": "x", "model_b": "x", "winner": "tie"}] * 3
    with pytest.raises(leaderboard.BattlesError, match=r"has only one model \(x\)"):
        leaderboard.read_battles_file(write(tmp_path / "x.jsonl", only_x))
    with pytest.raises(leaderboard.BattlesError, match="Cannot read"):
        leaderboard.read_battles_file(tmp_path / "missing.jsonl")


# ------------------------------------------------------------------------------------ pairing


def test_pairing_favours_few_battles_and_close_ratings():
    seasoned = battles("base", "v1", "model_a", 30) + battles("v1", "base", "model_a", 30)
    weights = arena.pair_weights(["base", "v1", "v2"], seasoned)
    assert weights[("base", "v2")] > weights[("base", "v1")] and weights[("v1", "v2")] > weights[("base", "v1")]
    lopsided = (
        battles("base", "v1", "model_a", 20)
        + battles("base", "v2", "model_a", 10)
        + battles("v2", "base", "model_a", 10)
    )
    weights = arena.pair_weights(["base", "v1", "v2"], lopsided)
    assert weights[("base", "v2")] > weights[("base", "v1")]  # same battle counts for base; v2 is closer


def test_sides_are_random_and_pairs_always_distinct():
    rng = np.random.default_rng(0)
    draws = [arena.sample_pair(["base", "v1"], [], rng) for _ in range(200)]
    assert set(draws) == {("base", "v1"), ("v1", "base")}
    first_is_base = sum(d[0] == "base" for d in draws)
    assert 70 < first_is_base < 130
    three = [arena.sample_pair(["base", "v1", "v2"], [], rng) for _ in range(300)]
    assert all(a != b for a, b in three) and len({frozenset(p) for p in three}) == 3
    with pytest.raises(arena.NotFound, match="at least two versions"):
        arena.sample_pair(["base"], [], rng)


# ------------------------------------------------------------------------------------ votes in the DB


@pytest.fixture
def db(tmp_path):
    database = Database.in_data_dir(tmp_path / "data")
    base = ensure_base_policy(database, "tiny")
    register_policy(database, "v1", base, "tiny", "dpo", "/runs/1/adapter")
    yield database
    database.close()


def pending(db, model_a="v1", model_b="base", prompt="Name a colour.", a="Blue.", b="Green."):
    ids = {r["name"]: r["id"] for r in db.query("SELECT id, name FROM policies")}
    return arena.PendingBattle(
        prompt, model_a, model_b, ids[model_a], ids[model_b], a, b, {"temperature": 0.7}, 12.5, (2, 2)
    )


def test_vote_is_a_battle_and_an_arena_preference_the_builders_read(db):
    ada = ensure_user(db, "ada", "labeler", "local")
    battle = replace(pending(db), cut=(False, True))  # B hit the length limit
    receipt = arena.record_battle(db, ada, battle, "a")
    assert receipt.created and receipt.winner == "model_a"
    again = arena.record_battle(db, ada, battle, "a")  # double click: same battle, nothing new
    assert not again.created and again.battle_id == receipt.battle_id
    row = db.query(
        "SELECT model_a, model_b, winner, judge, prompt, answer_a, answer_b, tstamp IS NOT NULL AS t"
        " FROM battle_records"
    )
    assert row == [
        {
            "model_a": "v1",
            "model_b": "base",
            "winner": "model_a",
            "judge": "ada",
            "prompt": "Name a colour.",
            "answer_a": "Blue.",
            "answer_b": "Green.",
            "t": True,
        }
    ]
    pref = db.query("SELECT source, outcome, labeler_id FROM preferences")
    assert pref == [{"source": "arena", "outcome": "a", "labeler_id": ada.id}]
    rows, _ = preference_rows(db, Filters(sources=("arena",)))
    assert rows == [
        {
            "prompt": [{"role": "user", "content": "Name a colour."}],
            "chosen": [{"role": "assistant", "content": "Blue."}],
            "rejected": [{"role": "assistant", "content": "Green."}],
            "rejected_cut": True,
        }
    ]
    assert db.query("SELECT p.name, c.cut FROM candidates c JOIN policies p ON p.id = c.policy_id ORDER BY c.id") == [
        {"name": "v1", "cut": False},
        {"name": "base", "cut": True},
    ]


def test_ties_both_bad_undo_and_renames_in_the_leaderboard_battles(db):
    ada = ensure_user(db, "ada", "admin", "local")
    arena.record_battle(db, ada, pending(db), "tie")
    arena.record_battle(db, ada, pending(db, "base", "v1"), "both_bad")
    arena.record_battle(db, ada, pending(db), "b")
    undo_last_vote(db, ada)  # the last vote no longer counts
    rename_policy(db, ada, "v1", "helpful-v1")
    assert leaderboard.battles_from_db(db) == [
        Battle("helpful-v1", "base", "tie"),
        Battle("base", "helpful-v1", "tie (bothbad)"),
    ]
    board = leaderboard.leaderboard_from_db(db, rounds=100)
    assert board.to_json()["ratings"] == {"base": 1000.0, "helpful-v1": 1000.0}
    assert leaderboard.battles_jsonl(leaderboard.battles_from_db(db)).count("\n") == 2


def test_bad_votes_write_nothing(db):
    ada = ensure_user(db, "ada", "labeler", "local")
    with pytest.raises(arena.ValidationError, match="Unknown choice"):
        arena.record_battle(db, ada, pending(db), "c")
    with pytest.raises(arena.ValidationError, match="two different versions"):
        arena.record_battle(db, ada, pending(db, "base", "base"), "a")
    with pytest.raises(arena.ValidationError, match="prompt is empty"):
        arena.record_battle(db, ada, pending(db, prompt="  \x00 "), "a")
    assert db.scalar("SELECT count(*) FROM battles") == db.scalar("SELECT count(*) FROM preferences") == 0
    assert db.scalar("SELECT count(*) FROM prompts") == db.scalar("SELECT count(*) FROM candidates") == 0


# ------------------------------------------------------------------------------------ CLI


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), "leaderboard", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow  # >= 3 s (a server, a child process or a CLI run): not in make test-fast
def test_cli_reads_a_fastchat_file_and_matches_an_independent_fit(tmp_path):
    data = simulate({"gpt-x": 0, "llama-y": 150, "mistral-z": -80}, 400, np.random.default_rng(11))
    data += battles("gpt-x", "llama-y", "tie", 20) + battles("llama-y", "mistral-z", "tie (bothbad)", 10)
    path = tmp_path / "clean_battle.jsonl"
    path.write_text(leaderboard.battles_jsonl(data))
    done = run_cli("--battles", str(path), "--json", "--data-dir", str(tmp_path / "unused"))
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert set(out) == {"ratings", "ci", "battles"} and out["battles"] == 430
    reference = torch_fit(data)
    assert all(abs(out["ratings"][m] - reference[m]) < 1.0 for m in reference)
    assert all(lo <= out["ratings"][m] <= hi for m, (lo, hi) in out["ci"].items())
    bad = tmp_path / "one.jsonl"
    bad.write_text(json.dumps({"model_a": "x", "model_b": "y", "winner": "model_z"}) + "\n")
    refused = run_cli("--battles", str(bad), "--json", "--data-dir", str(tmp_path / "unused"))
    assert refused.returncode == 2 and "unknown winner" in refused.stderr and refused.stdout == ""


def test_cli_reads_the_data_dir_battles_and_warns_on_stderr(db, tmp_path):
    ada = ensure_user(db, "ada", "labeler", "local")
    for outcome in ("a", "a", "b"):
        arena.record_battle(db, ada, pending(db), outcome)
    db.close()
    done = run_cli("--json", "--data-dir", str(tmp_path / "data"))
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["battles"] == 3 and out["ratings"]["base"] == 1000.0
    assert out["ratings"]["v1"] == pytest.approx(1000 + 400 * math.log10(2), abs=0.1)
    assert "Too few battles" in done.stderr
    style = out["style_controlled"]  # the same answers on both sides: style explains nothing here
    assert style["anchor"] == "base" and set(style["controlled"]) == {"base", "v1"}
    assert style["controlled"]["v1"] == pytest.approx(style["raw"]["v1"], abs=1.0)


# ------------------------------------------------------------------------------------ console page


def test_leaderboard_page_shows_ratings_charts_and_the_too_few_warning(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    import core.studio
    from core.config import load_settings

    data_dir = tmp_path / "data"
    database = Database.in_data_dir(data_dir)
    ensure_base_policy(database, "tiny")
    register_policy(database, "v1", 1, "tiny", "dpo", "/runs/1/adapter")
    ada = ensure_user(database, "ada", "labeler", "local")
    for outcome in ("a", "b", "a", "tie"):
        arena.record_battle(database, ada, pending(database), outcome)
    database.close()
    monkeypatch.setattr(core.studio, "_current", None)
    studio = core.studio.open_studio(
        load_settings({"data_dir": str(data_dir), "model": "tiny"}, env={}), tmp_path / "no-model"
    )
    try:
        app = AppTest.from_file(str(ROOT / "pages" / "leaderboard.py"), default_timeout=30).run()
        assert not app.exception and not app.error
        assert any("Too few battles" in w.value for w in app.warning)
        table = app.dataframe[0].value
        assert list(table["model"]) == ["v1", "base"] and table["status"].str.contains("too few").all()
        assert [m.value for m in app.metric][:2] == ["4", "2"]
        assert len(app.get("plotly_chart")) == 2
    finally:
        studio.close()


# ------------------------------------------------------------------------------------ through the server


@pytest.mark.slow
def test_arena_vote_flow_through_the_server_hides_names_until_the_vote(data_dir):
    from gradio_client import Client

    from tests.support.studios import make_random_adapter

    database = Database.in_data_dir(data_dir)
    ensure_base_policy(database, "tiny")
    register_policy(database, "v1", 1, "tiny", "dpo", str(make_random_adapter(data_dir)))
    database.close()
    srv = Server(data_dir, free_port()).start("--model", "tiny")
    try:
        client = Client(srv.url + "/label/", verbose=False)
        with pytest.raises(Exception, match="no battle to vote on"):
            client.predict(api_name="/arena_vote_a")
        with pytest.raises(Exception, match="prompt is empty"):
            client.predict("   ", 0.7, 0.9, 4, api_name="/arena_ask")
        seen = []
        for outcome in ("a", "tie"):
            job = client.submit("Hello there", 0.0, 0.9, 6, api_name="/arena_ask")
            updates = list(job)
            text_a, text_b, status, reveal = job.result()
            assert text_a and text_b and text_a != text_b  # greedy: only the two versions differ
            for update in updates:  # no output before the vote names a version
                assert not any(name in str(update[2:]) for name in ("v1", "base"))
            assert "hidden" in reveal and "Vote to reveal" in status
            status, reveal = client.predict(api_name=f"/arena_vote_{outcome}")
            assert "Saved" in status
            shown = reveal.split("**A** was **")[1].split("**")[0], reveal.split("**B** was **")[1].split("**")[0]
            assert set(shown) == {"v1", "base"}
            seen.append((shown, text_a, text_b))
        with pytest.raises(Exception, match="no battle to vote on"):
            client.predict(api_name="/arena_vote_b")  # the vote closed the battle
        client.close()
    finally:
        srv.stop()
    database = Database.in_data_dir(data_dir)
    rows = database.query(
        "SELECT model_a, model_b, winner, judge, prompt, answer_a, answer_b FROM battle_records ORDER BY id"
    )
    assert [(r["model_a"], r["model_b"]) for r in rows] == [s[0] for s in seen]
    assert [r["winner"] for r in rows] == ["model_a", "tie"]
    assert [(r["answer_a"], r["answer_b"]) for r in rows] == [(s[1], s[2]) for s in seen]
    assert all(r["prompt"] == "Hello there" and r["judge"] == "local" for r in rows)
    assert database.query("SELECT source, outcome FROM preferences ORDER BY id") == [
        {"source": "arena", "outcome": "a"},
        {"source": "arena", "outcome": "tie"},
    ]
    database.close()


@pytest.mark.slow
def test_browser_battle_reveals_names_only_after_the_vote_and_leaderboard_renders(data_dir):
    """A labeler in Chromium: prompt -> two anonymous answers -> vote -> names; then the console page."""
    from tests.support import ARTIFACTS
    from tests.support.studios import make_random_adapter

    database = Database.in_data_dir(data_dir)
    ensure_base_policy(database, "tiny")
    register_policy(database, "v1", 1, "tiny", "dpo", str(make_random_adapter(data_dir)))
    ada = ensure_user(database, "ada", "labeler", "local")
    for outcome in ("a", "a", "b", "tie", "both_bad"):
        arena.record_battle(database, ada, pending(database), outcome)
    database.close()
    srv = Server(data_dir, free_port()).start("--model", "tiny")
    try:
        with _chromium() as tab:
            ARTIFACTS.mkdir(exist_ok=True)
            tab.goto(srv.url + "/label/")
            tab.get_by_role("tab", name="Arena").click()
            tab.get_by_placeholder("Ask both versions something").fill("Say hello")
            tab.get_by_role("button", name="Start battle").click()
            tab.wait_for_selector("text=Vote to reveal", timeout=120_000)
            assert tab.locator("#arena-a").inner_text().strip() and tab.locator("#arena-b").inner_text().strip()
            before = tab.locator("#arena-reveal").inner_text() + tab.locator("#arena-status").inner_text()
            assert "hidden" in before and "v1" not in before and "base" not in before
            tab.screenshot(path=str(ARTIFACTS / "arena-before-vote.png"), full_page=True)
            tab.locator("#arena-vote-b").click()
            tab.wait_for_selector("text=B was", timeout=30_000)
            after = tab.locator("#arena-reveal").inner_text()
            assert "v1" in after and "base" in after
            tab.screenshot(path=str(ARTIFACTS / "arena-after-vote.png"), full_page=True)
            tab.goto(srv.url + "/leaderboard")
            tab.wait_for_selector("text=Observed win rate", timeout=60_000)
            tab.wait_for_selector(".js-plotly-plot", timeout=30_000)
            assert "Too few battles" in tab.content() and "Traceback" not in tab.content()
            tab.screenshot(path=str(ARTIFACTS / "leaderboard.png"), full_page=True)
    finally:
        srv.stop()
    database = Database.in_data_dir(data_dir)
    assert database.scalar("SELECT count(*) FROM battles") == 6
    assert database.scalar("SELECT winner FROM battles ORDER BY id DESC LIMIT 1") == "model_b"
    database.close()


def _chromium():
    """The same headless Chromium as the other browser tests (tests/support/browser.py), yielding a page."""
    from tests.support.browser import browser_page

    return browser_page()


def test_people_s_blind_votes_are_the_version_s_blind_check_and_move_its_verdict(db):
    """Arena votes between v1 and base from either side count for v1 (people only, undone votes left out), and
    the stored report's verdict is re-derived from them when read."""
    import json as _json

    from core.compare.report import latest_report
    from core.labeling.identity import ensure_ai_labeler

    ada, judge = ensure_user(db, "ada", "labeler", "local"), ensure_ai_labeler(db, "ai:policy:base")
    assert arena.blind_check(db, "v1", "base") is None
    for i in range(9):  # v1 wins 8 (as A or as B), one tie
        a_side = i % 2 == 0
        battle = pending(db, *(("v1", "base") if a_side else ("base", "v1")), prompt=f"Prompt {i}.")
        arena.record_battle(db, ada, battle, "tie" if i == 8 else ("a" if a_side else "b"))
    arena.record_battle(db, judge, pending(db, prompt="AI's."), "b")  # an AI judge: not a blind check
    assert arena.blind_check(db, "v1", "base") == {"votes": 9, "wins": 8, "losses": 0, "ties": 1}
    assert arena.blind_check(db, "base", "v1") == {"votes": 9, "wins": 0, "losses": 8, "ties": 1}

    v1, base = (db.scalar("SELECT id FROM policies WHERE name = ?", [n]) for n in ("v1", "base"))
    metrics = {
        "version": "v1",
        "against": "base",
        "held_out_pairs": 0,
        "toward": 0,
        "away": 0,
        "kl_per_token": 0.3,
        "blind_check": None,
    }
    stored = {"version": "v1", "against": "base", "verdict": "changed", "summary": "changed", "metrics": metrics}
    db.write(
        lambda cur: cur.execute(
            "INSERT INTO version_reports (policy_id, against_id, verdict, summary, report) VALUES (?, ?, ?, ?, ?)",
            [v1, base, "changed", "changed", _json.dumps(stored)],
        )
    )
    report = latest_report(db, "v1")
    assert report["verdict"] == "learned" and report["metrics"]["blind_check"]["wins"] == 8
    assert report["summary"] == (
        "learned: people preferred v1 blind on 8 of 9 votes, base on 0 (1 ties), p = 0.0078 after correction"
    )


def test_the_blind_check_offers_held_out_prompts_once_each_and_stops_when_decided(db):
    """The newest version against its parent, sides at random, on prompts neither trained on; one labeler never
    gets the same prompt twice, and the offer ends once people's votes decide."""
    import random as _random

    from core.compare import blind

    ada, bob = ensure_user(db, "ada", "labeler", "local"), ensure_user(db, "bob", "labeler", "local")
    status = blind.blind_status(db)
    assert (status.version, status.against, status.votes, status.open) == ("v1", "base", 0, True)
    rng = _random.Random(3)
    sides, prompts = set(), []
    for i in range(6):
        prompt, a, b, _ = blind.next_blind_pair(db, ada, rng)
        assert {a, b} == {"v1", "base"} and prompt not in prompts
        sides.add(a)
        prompts.append(prompt)
        arena.record_battle(db, ada, pending(db, a, b, prompt=prompt), "a" if a == "v1" else "b")  # v1 wins
        if i == 0:  # another labeler still gets the prompt ada just judged
            assert blind.next_blind_pair(db, bob, rng)[0] == prompts[0]
    assert sides == {"v1", "base"}  # both sides came up
    status = blind.blind_status(db)
    assert status.wins == 6 and status.decided and not status.open and "people prefer v1" in status.text()
    with pytest.raises(arena.ValidationError, match="decided") as done:
        blind.next_blind_pair(db, ada, rng)
    assert done.value.code == "blind_check_done"


# ------------------------------------------------------------------------------------ style control


def simulated(rng, n: int, by_length: bool) -> list:
    """v2 against base: v2 writes 40 more words on average; people prefer the longer answer (``by_length``) or
    v2 itself, 80% of the time whatever the length."""
    from core.compare.style import Comparison

    out = []
    for _ in range(n):
        la, lb, v2_is_a = rng.randint(5, 100), rng.randint(5, 100), rng.random() < 0.5
        if by_length:
            la, lb = (la + 40, lb) if v2_is_a else (la, lb + 40)
            outcome = 1.0 if la > lb else 0.0 if la < lb else 0.5
        else:
            outcome = float((rng.random() < 0.8) == v2_is_a)
        out.append(
            Comparison(
                "v2" if v2_is_a else "base",
                "base" if v2_is_a else "v2",
                " ".join(["w"] * la),
                " ".join(["w"] * lb),
                outcome,
            )
        )
    return out


def test_style_control_takes_away_a_lead_that_is_only_length():
    import random as _random

    from core.compare.style import style_controlled, style_diff, version_vs_style

    assert list(style_diff("a b c", "a")) == [0.5, 0.0, 0.0, 0.0]
    assert list(style_diff("# H\n- x\n**b**", "")) == [1.0, 1.0, 1.0, 1.0]
    rng = _random.Random(0)
    longer = style_controlled(simulated(rng, 200, by_length=True), "base")
    assert longer.raw["v2"] - 1000 > 200 and longer.controlled["v2"] - 1000 < (longer.raw["v2"] - 1000) / 2
    assert longer.coefficients["length"] > 1 and longer.warnings[0].endswith("v2 wins mostly by longer")
    only_style = version_vs_style(simulated(rng, 200, by_length=True), "v2")
    assert only_style["style_only"] and only_style["raw_share"] > 0.8 and only_style["mostly"] == "longer"
    better = style_controlled(simulated(rng, 200, by_length=False), "base")
    assert abs(better.controlled["v2"] - better.raw["v2"]) < 15 and better.warnings == []
    truly = version_vs_style(simulated(rng, 200, by_length=False), "v2")
    assert not truly["style_only"] and truly["controlled_share"] > 0.7 and truly["controlled_p"] < 1e-6


def test_the_report_warns_when_people_prefer_a_version_only_for_its_length(db):
    """People's blind votes between v1 and base, won by whichever answer is longer (v1's usually are): the verdict
    counts the blind check, and a warning says the win is only length."""
    import json as _json
    import random as _random

    from core.compare.report import latest_report

    ada = ensure_user(db, "ada", "labeler", "local")
    name = {"v2": "v1", "base": "base"}
    for i, c in enumerate(simulated(_random.Random(5), 40, by_length=True)):
        arena.record_battle(
            db,
            ada,
            pending(db, name[c.model_a], name[c.model_b], f"Prompt {i}?", c.answer_a, c.answer_b),
            {1.0: "a", 0.0: "b", 0.5: "tie"}[c.outcome],
        )
    assert len(arena.people_comparisons(db, ["v1", "base"])) == 40
    v1, base = (db.scalar("SELECT id FROM policies WHERE name = ?", [n]) for n in ("v1", "base"))
    metrics = {"version": "v1", "against": "base", "held_out_pairs": 0, "kl_per_token": 0.3}
    db.write(
        lambda cur: cur.execute(
            "INSERT INTO version_reports (policy_id, against_id, verdict, summary, report) VALUES (?, ?, ?, ?, ?)",
            [
                v1,
                base,
                "changed",
                "changed",
                _json.dumps(
                    {"version": "v1", "against": "base", "verdict": "changed", "summary": "changed", "metrics": metrics}
                ),
            ],
        )
    )
    report = latest_report(db, "v1")
    style = report["metrics"]["style_control"]["blind_check"]
    assert style["style_only"] and report["verdict"] == "learned"  # people did prefer v1's answers ...
    assert (
        "v1 wins only by longer: preferred by people in blind votes on 82% of 40, but at equal length and "
        "formatting 64% (style control)"
    ) in report["warnings"]
