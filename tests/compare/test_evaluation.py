"""Compare versions: side by side, automatic evaluation, active learning -- on the tiny model, with a real reward
model and real DPO versions trained through the job runner (a few steps each), the real DuckDB and the real
Compare page (Streamlit AppTest)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import pytest

from core.compare import active, evaluation as ev, sidebyside
from core.errors import Conflict, NotFound, ValidationError
from core.labeling import queue as prompt_queue
from core.labeling.identity import ensure_user
from core.serving import scoring
from core.serving.policies import comparable_policies, delete_policy, register_policy
from core.studio import Studio
from core.training.request import JobRequest
from core.training.reward import RewardScorer
from tests.support.studios import FAST, open_studio, random_adapter

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = [
    [{"role": "user", "content": text}]
    for text in ("Name a colour.", "What is 2 plus 2?", "Say hello.", "Describe the sea.", "Pick a fruit.")
]
SHORT = ev.CompareSettings(temperature=0.0, max_new_tokens=12)


def train(studio: Studio, algorithm: str, parent: str = "base", **hyperparams) -> str:
    admin = ensure_user(studio.db, "ada", "admin", "test")
    job_id = studio.supervisor.submit(JobRequest(algorithm, parent, {**FAST, **hyperparams}), admin)
    job = studio.supervisor.run_blocking(job_id)
    assert job["status"] == "succeeded", job["error"]
    return studio.db.scalar("SELECT name FROM policies WHERE job_id = ?", [job_id])


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    """base; v1 (from base) and v2 (from v1) as random LoRA adapters; rm1, a random LoRA reward model."""
    root = tmp_path_factory.mktemp("evaluation")
    s = open_studio(root / "data")
    base = Path(s.model_path)
    v1 = random_adapter(base, root / "v1", seed=1)
    v2 = random_adapter(base, root / "v2", seed=2)
    rm = random_adapter(base, root / "rm1", seed=3, task="SEQ_CLS")
    v1_id = register_policy(s.db, "v1", s.base_policy_id, "tiny", "dpo", str(v1), config={"beta": 0.1})
    register_policy(s.db, "v2", v1_id, "tiny", "dpo", str(v2), config={"beta": 0.2})
    register_policy(s.db, "rm1", s.base_policy_id, "tiny", "reward", None, config={"reward_model_path": str(rm)})
    yield s
    s.close()


# --- held-out split -------------------------------------------------------------------------------------------


def test_held_out_split_is_a_fixed_hash_of_the_prompt(studio):
    pairs = ev.held_out_pairs(studio.db, 100)
    assert len(pairs) == 24  # 12 votes with gold edits -> 24 pairs, all held out
    assert ev.held_out_pairs(studio.db, 0) == []
    some = ev.held_out_pairs(studio.db, 50)
    assert 0 < len(some) < 24 and ev.held_out_pairs(studio.db, 50) == some  # deterministic
    keys = {ev.prompt_key(p["prompt"]) for p in some}
    assert all((ev.prompt_key(p["prompt"]) in keys) == (ev.prompt_bucket(p["prompt"]) < 50) for p in pairs)
    # both pairs of a prompt land on the same side, and a smaller split is a subset of a larger one
    assert {ev.prompt_key(p["prompt"]) for p in ev.held_out_pairs(studio.db, 20)} <= keys
    assert sum(1 for p in pairs if ev.prompt_key(p["prompt"]) in keys) == len(some)


def test_preference_accuracy_counts_ties_half():
    assert ev.preference_accuracy([1.0, 2.0, 3.0], [0.0, 2.0, 4.0]) == pytest.approx(0.5)
    assert ev.preference_accuracy([1.0], [0.0]) == 1.0 and ev.preference_accuracy([], []) is None


# --- side by side ---------------------------------------------------------------------------------------------


def test_side_by_side_scores_measures_and_exports_every_prompt(studio):
    steps = []
    result = sidebyside.side_by_side(
        studio, "base", "v1", PROMPTS[:3], SHORT, "rm1", progress=lambda value, text: steps.append(value)
    )
    assert [r.prompt for r in result.rows] == [p[0]["content"] for p in PROMPTS[:3]]
    assert steps[-1] == 1.0 and steps == sorted(steps)
    for row in result.rows:
        assert row.answer_a and row.answer_b and row.answer_a != row.answer_b  # v1 really differs from base
        assert 0 < row.tokens_a <= 12 and 0 < row.tokens_b <= 12
        assert (row.chars_a, row.chars_b) == (len(row.answer_a), len(row.answer_b))
        assert 0 < row.latency_a_ms < 60_000 and 0 < row.latency_b_ms < 60_000
        assert math.isfinite(row.score_a) and math.isfinite(row.score_b)
    # the scores are the reward model's own scores of those answers
    scorer = RewardScorer.load(studio.db, "rm1")
    first = result.rows[0]
    assert scorer.score([PROMPTS[0]] * 2, [first.answer_a, first.answer_b]) == pytest.approx(
        [first.score_a, first.score_b], abs=1e-4
    )
    # greedy with fixed seeds: the same table again
    again = sidebyside.side_by_side(studio, "base", "v1", PROMPTS[:3], SHORT)
    assert [(r.answer_a, r.answer_b) for r in again.rows] == [(r.answer_a, r.answer_b) for r in result.rows]
    assert again.rows[0].score_a is None  # no reward model picked: not scored
    exported = list(csv.DictReader(io.StringIO(result.to_csv())))
    assert len(exported) == 3 and exported[1]["answer v1"] == result.rows[1].answer_b
    assert float(exported[0]["score base"]) == pytest.approx(first.score_a)


def test_side_by_side_refuses_bad_comparisons_with_clear_errors(studio):
    admin = ensure_user(studio.db, "ada", "admin", "test")
    with pytest.raises(ValidationError, match="with itself"):
        sidebyside.side_by_side(studio, "v1", "v1", PROMPTS)
    v1_adapter = studio.db.scalar("SELECT adapter_path FROM policies WHERE name = 'v1'")
    register_policy(studio.db, "gone", None, "tiny", "dpo", v1_adapter)
    delete_policy(studio.db, admin, "gone")
    with pytest.raises(NotFound, match="was deleted"):
        sidebyside.side_by_side(studio, "base", "gone", PROMPTS)
    with pytest.raises(NotFound, match="does not exist"):
        sidebyside.side_by_side(studio, "base", "v99", PROMPTS)
    with pytest.raises(ValidationError, match="is a reward model"):
        sidebyside.side_by_side(studio, "base", "rm1", PROMPTS)
    with pytest.raises(ValidationError, match="empty"):
        sidebyside.side_by_side(studio, "base", "v1", [])
    with pytest.raises(ValidationError, match="empty") as typed:
        ev.resolve_prompts(studio.db, ev.PromptSet("typed", text=" \n\n "))
    assert "type at least one prompt" in typed.value.hint
    empty_queue = prompt_queue.create_queue(studio.db, admin, "empty-queue")
    with pytest.raises(ValidationError, match="empty"):
        ev.resolve_prompts(studio.db, ev.PromptSet("queue", queue_id=empty_queue))
    with pytest.raises(NotFound):
        ev.resolve_prompts(studio.db, ev.PromptSet("queue", queue_id=9999))
    assert "gone" not in comparable_policies(studio.db) and "rm1" not in comparable_policies(studio.db)


def test_prompt_sets_come_from_held_out_pairs_queues_and_typed_text(studio):
    admin = ensure_user(studio.db, "ada", "admin", "test")
    held = ev.resolve_prompts(studio.db, ev.PromptSet("held_out", limit=100, held_out_percent=100))
    assert len(held) == 12 and all(p[-1]["role"] == "user" for p in held)
    qid = prompt_queue.create_queue(studio.db, admin, "compare-me")
    prompt_queue.import_prompts(studio.db, admin, qid, ["First?", "Second?"], "import:test")
    assert ev.resolve_prompts(studio.db, ev.PromptSet("queue", queue_id=qid)) == [
        [{"role": "user", "content": "First?"}],
        [{"role": "user", "content": "Second?"}],
    ]
    assert len(ev.resolve_prompts(studio.db, ev.PromptSet("typed", text="a\n\nb\nc", limit=2))) == 2


def test_diff_highlights_changed_words_and_escapes_html():
    a, b = sidebyside.diff_html("The cat sat on <the> mat.", "The dog sat on <the> mat.")
    assert '<del style="background:#fdd">cat</del>' in a and '<ins style="background:#dfd">dog</ins>' in b
    assert "&lt;the&gt;" in a and "<the>" not in a and "dog" not in a and "cat" not in b
    assert sidebyside.diff_html("same", "same") == ("same", "same")


# --- automatic evaluation -------------------------------------------------------------------------------------


def test_implicit_reward_is_zero_against_itself_and_not_against_the_parent(studio):
    answers = ["Blue.", "It is 4."]
    assert ev.implicit_rewards(studio, "v1", "v1", PROMPTS[:2], answers, 0.1) == [0.0, 0.0]
    against_parent = ev.implicit_rewards(studio, "v2", "v1", PROMPTS[:2], answers, 0.1)
    assert all(math.isfinite(r) for r in against_parent) and any(abs(r) > 1e-4 for r in against_parent)
    # beta scales it linearly
    assert ev.implicit_rewards(studio, "v2", "v1", PROMPTS[:2], answers, 0.2) == pytest.approx(
        [2 * r for r in against_parent], rel=1e-4
    )


def test_evaluation_numbers_are_computed_sane_and_tabled(studio):
    settings = ev.EvalSettings(held_out_percent=100, max_pairs=8, prompts=2, max_new_tokens=12)
    admin = ensure_user(studio.db, "ada", "admin", "test")
    base = ev.evaluate_version(studio, "base", "rm1", settings, admin)
    assert base.reference is None and base.kl_to_base == pytest.approx(0.0, abs=1e-4)
    assert base.implicit_accuracy == 0.5 and base.implicit_margin == 0.0
    v2 = ev.evaluate_version(studio, "v2", "rm1", settings, admin)
    assert v2.reference == "v1" and v2.beta == 0.2  # parent as reference, beta from the version's config
    for result in (base, v2):
        assert result.held_out_pairs == 8 and result.samples == 4 and result.seen_in_training == 0
        assert 0.0 <= result.rm_accuracy <= 1.0 and 0.0 <= result.implicit_accuracy <= 1.0
        assert math.isfinite(result.gen_reward) and 0 < result.mean_length <= 12
    assert v2.rm_accuracy == base.rm_accuracy  # the same reward model on the same pairs
    assert v2.implicit_margin != 0.0
    # the KL estimate is the mean log-ratio of its own samples, recomputed here independently; a random
    # adapter moves far from the base, so it is clearly positive
    rows = studio.adapter_rows("v2", "base")[0]
    prompts = [[{"role": "user", "content": a["prompt"]}] for a in v2.answers]
    texts = [a["answer"] for a in v2.answers]
    cut = [a["cut"] for a in v2.answers]  # stopped at the 12-token limit: scored without an end-of-turn
    assert any(cut)
    lp = scoring.sequence_logprobs(studio, [rows[0]] * 4 + [None] * 4, prompts * 2, texts * 2, cut * 2)
    assert v2.kl_to_base == pytest.approx(sum(lp[i][0] - lp[4 + i][0] for i in range(4)) / 4, abs=1e-3)
    whole = scoring.sequence_logprobs(studio, [None] * 4, prompts, texts)
    assert [n for _, n in whole] == [n + (2 if c else 0) for (_, n), c in zip(lp[4:], cut)]  # <|im_end|>, newline
    assert v2.kl_to_base > 1.0

    with pytest.raises(ValidationError, match="out of range"):
        ev.evaluate_version(studio, "v1", None, ev.EvalSettings(prompts=0))
    unscored = ev.evaluate_version(
        studio, "v1", None, ev.EvalSettings(held_out_percent=100, max_pairs=4, prompts=1, max_new_tokens=4)
    )
    assert unscored.rm_accuracy is None and unscored.gen_reward is None and unscored.implicit_accuracy is not None
    table = ev.eval_table(studio.db)
    assert [r["version"] for r in table] == ["base", "v1", "v2"]  # latest row per version, in version order
    assert table[1]["reward_model"] is None and table[2]["parent"] == "v1" and table[2]["reward_model"] == "rm1"
    assert table[1]["rm_seen_in_training"] is None and table[2]["rm_seen_in_training"] == 0


@pytest.mark.slow
def test_versions_trained_by_the_job_runner_evaluate_end_to_end(tmp_path):
    """rm1 and v1 trained through the real job runner (a few steps), then every comparison on them."""
    studio = open_studio(tmp_path / "data")
    try:
        assert train(studio, "reward") == "rm1"
        assert train(studio, "dpo", learning_rate=5e-3) == "v1"
        result = ev.evaluate_version(
            studio, "v1", "rm1", ev.EvalSettings(held_out_percent=100, max_pairs=8, prompts=2, max_new_tokens=8)
        )
        assert result.reference == "base" and result.held_out_pairs == 8
        # jobs hold out the evaluation split (20% of prompts) but train on the rest: those pairs are counted
        trained = sum(1 for p in ev.held_out_pairs(studio.db, 100)[:8] if ev.prompt_bucket(p["prompt"]) >= 20)
        assert 0 < trained < 8
        assert result.seen_in_training == result.rm_seen_in_training == trained
        assert ev.eval_table(studio.db)[-1]["rm_seen_in_training"] == trained  # reported, not hidden
        assert 0 <= result.rm_accuracy <= 1 and 0 <= result.implicit_accuracy <= 1
        assert math.isfinite(result.kl_to_base) and math.isfinite(result.gen_reward)
        table = sidebyside.side_by_side(studio, "base", "v1", PROMPTS[:2], SHORT, "rm1")
        assert all(math.isfinite(r.score_a) and math.isfinite(r.score_b) for r in table.rows)
        picks = active.pick_for_labeling(
            studio, "uncertainty", "base", "v1", PROMPTS, k=3, reward_model="rm1", settings=SHORT
        )
        assert [p.score for p in picks] == sorted(p.score for p in picks)
    finally:
        studio.close()


# --- active learning ------------------------------------------------------------------------------------------


def test_disagreement_picks_are_ranked_with_reasons(studio):
    picks = active.pick_for_labeling(
        studio, "disagreement", "base", "v2", PROMPTS, k=3, reward_model="rm1", settings=SHORT
    )
    assert len(picks) == 3 and [p.score for p in picks] == sorted((p.score for p in picks), reverse=True)
    assert all("base and v2 disagree" in p.reason and "nats/token" in p.reason for p in picks)
    assert all(f"rm1 scores them {p.score_a:.3f} vs {p.score_b:.3f}" in p.reason for p in picks)
    # the score is the symmetric cross log-likelihood per token of the two answers
    top = picks[0]
    rows = studio.adapter_rows("base", "v2")[0]
    a_row, b_row = rows or (None, None)
    (aa, na), (ba, nb) = scoring.sequence_logprobs(
        studio, [a_row, a_row], [top.prompt] * 2, [top.answer_a, top.answer_b]
    )
    (ab, _), (bb, _) = scoring.sequence_logprobs(studio, [b_row, b_row], [top.prompt] * 2, [top.answer_a, top.answer_b])
    assert top.score == pytest.approx(((aa - ab) + (bb - ba)) / (na + nb), abs=1e-4)
    with pytest.raises(ValidationError, match="with itself"):
        active.pick_for_labeling(studio, "disagreement", "v1", "v1", PROMPTS)


def test_uncertainty_picks_smallest_gaps_first_and_become_a_served_queue(studio):
    settings = ev.CompareSettings(temperature=1.0, max_new_tokens=10, seed=3)
    picks = active.pick_for_labeling(
        studio, "uncertainty", "v1", "v1", PROMPTS, k=4, reward_model="rm1", settings=settings
    )
    assert len(picks) == 4 and [p.score for p in picks] == sorted(p.score for p in picks)
    for pick in picks:
        assert pick.score == pytest.approx(abs(pick.score_a - pick.score_b))
        assert "rm1 is unsure" in pick.reason and f"gap {pick.score:.3f}" in pick.reason
    for bad, match in (
        (dict(reward_model=None), "needs a reward model"),
        (dict(k=0), "at least one"),
        (dict(prompts=[]), "empty"),
        (dict(settings=SHORT), "greedy answers of v1 are identical"),
    ):
        kwargs = {"k": 2, "reward_model": "rm1", "prompts": PROMPTS, "settings": settings, **bad}
        with pytest.raises(ValidationError, match=match):
            active.pick_for_labeling(studio, "uncertainty", "v1", "v1", kwargs.pop("prompts"), **kwargs)

    admin = ensure_user(studio.db, "ada", "admin", "test")
    qid = active.queue_picks(studio.db, admin, "active-test", "uncertainty", "v1", "v1", picks, "rm1")
    queued = active.queued_picks(studio.db, qid)
    assert [q["prompt"] for q in queued] == [p.text for p in picks] and [q["rank"] for q in queued] == [1, 2, 3, 4]
    assert queued[0]["reason"] == picks[0].reason
    # a normal queue: the labeling app serves its prompts, smallest gap first
    bo = ensure_user(studio.db, "bo", "labeler", "test")
    assert prompt_queue.next_prompt(studio.db, bo, qid)["text"] == picks[0].text
    with pytest.raises(Conflict, match="already exists"):  # one queue per batch, picks never mixed
        active.queue_picks(studio.db, admin, "active-test", "uncertainty", "v1", "v1", picks, "rm1")
    assert len(active.queued_picks(studio.db, qid)) == 4
    with pytest.raises(ValidationError, match="Nothing to queue"):
        active.queue_picks(studio.db, admin, "active-empty", "uncertainty", "v1", "v1", [])
    assert not any(q["name"] == "active-empty" for q in prompt_queue.list_queues(studio.db))


# --- the page -------------------------------------------------------------------------------------------------


def test_compare_page_generates_side_by_side_and_shows_the_versions_table(studio, monkeypatch):
    from streamlit.testing.v1 import AppTest

    import core.studio

    monkeypatch.setattr(core.studio, "_current", studio)
    if not ev.eval_table(studio.db):
        ev.evaluate_version(studio, "base", None, ev.EvalSettings(prompts=1, max_new_tokens=4))
    app = AppTest.from_file(str(ROOT / "pages" / "compare.py"), default_timeout=120).run()
    assert not app.exception and not app.error
    app.selectbox(key="sbs-a").select("base").run()
    app.selectbox(key="sbs-b").select("v1").run()
    app.radio(key="sbs-source").set_value("typed").run()
    app.text_area(key="sbs-typed").input("Say hello.\nName a colour.").run()
    app.number_input(key="sbs-settings-max_new_tokens").set_value(6).run()
    app.button(key="sbs-run").click().run()
    assert not app.exception and not app.error
    assert "Say hello." in " ".join(m.value for m in app.markdown)
    assert any(m.label == "Mean score v1" for m in app.metric)
    # comparing a version with itself: a clear error, no table
    app.selectbox(key="sbs-b").select("base").run()
    app.button(key="sbs-run").click().run()
    assert any("with itself" in e.value for e in app.error)
    # the versions table of the evaluations so far, with its trend plots
    versions_table = next(d.value for d in app.dataframe if "kl_to_base" in d.value.columns)
    assert list(versions_table["version"]) == [r["version"] for r in ev.eval_table(studio.db)]
    assert len(app.get("plotly_chart")) == 4


def test_a_report_cancelled_while_its_answers_are_generated_stops_within_seconds(tmp_path):
    """The answers are one long batched call (48 rows x up to 1024 tokens here): a cancel, or a studio shutting
    down, takes effect at the next decoding step, not after the whole batch (the server's Ctrl-C used to wait ~30 s
    for a report in progress)."""
    import time

    from core.compare.report import ReportSettings
    from core.config import load_settings
    from core.serving.models import build_tiny_model
    from tests.support.studios import make_random_adapter

    data_dir = tmp_path / "data"
    studio = Studio(load_settings({"data_dir": str(data_dir), "model": "tiny"}, env={}), build_tiny_model(data_dir))
    try:
        register_policy(studio.db, "v1", studio.base_policy_id, "tiny", "dpo", str(make_random_adapter(data_dir)))
        studio.reports.request("v1", settings=ReportSettings(max_new_tokens=1024))
        deadline = time.monotonic() + 120
        while "done" not in (studio.reports.state("v1").get("message") or ""):  # "answers ...: k of n done"
            assert time.monotonic() < deadline, studio.reports.state("v1")
            time.sleep(0.05)
        assert 0.3 <= studio.reports.state("v1")["progress"] < 0.85
        cancelled = time.monotonic()
        assert studio.reports.cancel("v1")
        while studio.reports.state("v1")["status"] in ("queued", "computing"):
            assert time.monotonic() - cancelled < 5, "the cancel waited for the whole batch"
            time.sleep(0.05)
        state = studio.reports.state("v1")
        assert state["status"] == "failed" and state["error"]["code"] == "cancelled"
    finally:
        studio.close()
