"""Studios and their data for the tests: in-process studios on the tiny model, team users files, labels written
through core's own functions (as the labeling app writes them), random LoRA adapters, and the hyperparameters
that keep a real training job to a few seconds."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from core import ROOT
from core.config import load_settings
from core.labeling.identity import ensure_user, hash_password
from core.labeling.votes import CandidateIn, Vote, add_user_message, new_conversation, record_vote, save_pair
from core.serving.models import build_tiny_model
from core.studio import Studio
from storage.db import Database

FAST = {"max_steps": 2, "logging_steps": 1, "max_length": 64}  # a real job, two optimizer steps


@functools.cache
def hashed(password: str) -> str:
    """A users-file hash of ``password`` (600k PBKDF2 rounds: computed once per password per test run)."""
    return hash_password(password)


def users_file(path: Path, *accounts: str) -> Path:
    """Write a team users file from ``name:password:role`` entries, with the passwords hashed as required."""
    lines = []
    for entry in accounts:
        name, password, role = entry.split(":")
        lines.append(f"{name}:{hashed(password)}:{role}")
    path.write_text("\n".join(lines) + "\n")
    return path


def seed_labels(db: Database, n: int = 12) -> None:
    """Pairs with ratings, thumbs and gold edits: enough for every dataset kind."""
    ada = ensure_user(db, "ada", "admin", "test")
    for i in range(n):
        conv = new_conversation(db, ada, 1)
        turn = add_user_message(db, ada, conv, f"Question number {i}?")
        a, b = save_pair(db, conv, turn, None, CandidateIn(f"A clear answer {i}.", 1), CandidateIn(f"meh {i}", 1), None)
        record_vote(
            db,
            ada,
            Vote(
                a,
                b,
                "a",
                ratings={"a": {"helpfulness": 5}, "b": {"helpfulness": 2}},
                thumbs={"a": True, "b": False},
                gold_text=f"The best answer {i}.",
                gold_side="a",
            ),
        )


def open_studio(data_dir: Path) -> Studio:
    """An in-process studio on the tiny model with `seed_labels`' twelve votes."""
    studio = Studio(load_settings({"data_dir": str(data_dir), "model": "tiny"}, env={}), build_tiny_model(data_dir))
    seed_labels(studio.db)
    return studio


def random_adapter(base: Path, out: Path, seed: int, task: str = "CAUSAL_LM") -> Path:
    """A real LoRA adapter with random (not zero) weights: a version that clearly differs from the base without
    spending a training run. ``task="SEQ_CLS"`` gives a reward model (LoRA + score head) like the reward job's."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(seed)
    if task == "SEQ_CLS":
        model = AutoModelForSequenceClassification.from_pretrained(str(base), num_labels=1, dtype=torch.float32)
    else:
        model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=64, target_modules="all-linear", init_lora_weights=False, task_type=task)
    get_peft_model(model, config).save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(out))
    (out / "studio_training.json").write_text(json.dumps({"base_model": str(base)}))
    return out


def make_random_adapter(data_dir: Path, name: str = "v1") -> Path:
    """A LoRA adapter with random (non-zero) weights on the data dir's tiny base, where a training job would put
    it (runs/<name>/adapter): for tests that register a version before starting a server on that data dir.

    Not `random_adapter` with other arguments: the server tests that use it compare stored texts with the
    answers this exact adapter gives (q/v projections, seed 0), and a different adapter gives other answers."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(build_tiny_model(data_dir))
    lora = get_peft_model(
        base, LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    path = data_dir / "runs" / name / "adapter"
    lora.save_pretrained(path)
    return path


def team_studio(data_dir: Path, users: Path) -> tuple[Studio, object]:
    """An in-process team-mode studio on the tiny model and a TestClient on its REST API, routed at /api exactly as
    the server routes it (``ada``/``bob`` style accounts from ``users``). Close the studio when done."""
    from starlette.responses import PlainTextResponse
    from starlette.testclient import TestClient

    from app.api import create_api
    from app.server import ApiFirst

    studio = Studio(
        load_settings(
            {"data_dir": str(data_dir), "model": "tiny"},
            env={"STUDIO_AUTH_MODE": "team", "STUDIO_USERS_FILE": str(users)},
        ),
        build_tiny_model(data_dir),
    )
    client = TestClient(
        ApiFirst(PlainTextResponse("console", status_code=418), create_api(lambda: studio, 100_000)),
        raise_server_exceptions=False,
    )
    return studio, client


# -- a studio with history: many votes (its versions: bench/harness/versions.py) ---------------------------------
TOPICS = (
    "the water cycle",
    "compound interest",
    "sourdough bread",
    "black holes",
    "the French Revolution",
    "public-key cryptography",
    "photosynthesis",
    "marathon training",
    "sorting algorithms",
    "coral reefs",
    "jazz harmony",
    "vaccines",
    "the stock market",
    "volcanoes",
    "machine translation",
    "beekeeping",
    "the Roman Empire",
    "solar panels",
    "chess openings",
    "sleep hygiene",
    "climate models",
    "origami",
    "supply chains",
    "quantum computing",
    "the immune system",
    "bicycle repair",
    "Shakespeare's sonnets",
    "tide pools",
    "database indexes",
    "negotiation",
)
ASKS = (
    "Explain {} to a ten-year-old.",
    "What are three common misconceptions about {}?",
    "Write a short poem about {}.",
    "Give me a step-by-step plan to learn {} in a month.",
    "Summarise the history of {} in one paragraph.",
    "What would an expert say is the hardest part of {}?",
    "Compare {} with something from everyday life.",
    "List the key terms I need to understand {}.",
    "Is it true that everything about {} is settled science? Be honest.",
    "Write a tweet that makes {} sound exciting.",
)
OPENERS = ("Sure! ", "", "Great question. ", "In short: ", "Here is an overview. ", "Let me think about this. ")
SENTENCES = (
    "{} is easier to understand once you see the big picture.",
    "The key idea behind {} is that small parts add up to a large effect.",
    "Many people get {} wrong because the everyday words mislead them.",
    "Experts still debate some details of {}, so treat strong claims with care.",
    "A good way to start with {} is a concrete example you can check yourself.",
    "Historically, {} developed over many decades, with several false starts.",
    "If you remember one thing about {}, remember that it is a process, not a single event.",
    "Numbers help: measure before and after, and the pattern in {} becomes clear.",
)
REFUSAL = "I'm sorry, but I can't help with that request about {}."


DETAILS = ("beginners", "teachers", "engineers", "historians", "students", "critics", "readers", "doctors")


def _answer(rng, topic: str) -> str:
    """A plausible answer of varied length and shape (prose, a Markdown list, or rarely a refusal), each one
    different, as a model's sampled answers are."""
    if rng.random() < 0.04:
        return REFUSAL.format(topic)
    picked = [s.format(topic) for s in rng.sample(SENTENCES, rng.randint(1, 5))]
    picked.insert(
        rng.randint(0, len(picked)),
        f"About {rng.randint(2, 98)}% of {rng.choice(DETAILS)} say this took them {rng.randint(2, 500)} hours.",
    )
    if rng.random() < 0.3:
        return rng.choice(OPENERS) + "\n" + "\n".join(f"- {s}" for s in picked)
    return rng.choice(OPENERS) + " ".join(picked)


def seed_votes(db: Database, n: int = 10_000, labelers: int = 8, per_prompt: int = 3, seed: int = 0) -> None:
    """``n`` live votes by ``labelers`` people (one admin, the rest labelers), written as the REST API writes
    pairs (core.labeling.votes.write_labeled_pairs) a thousand per transaction, ~1 s for 10k: what a studio
    holds after a few weeks. Each prompt goes to ``per_prompt`` labelers (the overlap agreement is measured on);
    about a third of the votes carry 1-5 ratings of both answers on every aspect, a fifth thumbs, a few a note,
    a flag or a gold edit."""
    import random

    from core.labeling.votes import LabeledPair, active_aspects, write_labeled_pairs

    rng = random.Random(seed)
    aspects = [a["name"] for a in active_aspects(db)]
    people = [ensure_user(db, "ada", "admin", "test")] + [
        ensure_user(db, f"labeler{i}", "labeler", "test") for i in range(1, labelers)
    ]
    pairs: list[LabeledPair] = []
    while len(pairs) < n:
        topic = rng.choice(TOPICS)
        prompt = rng.choice(ASKS).format(topic) + ("" if rng.random() < 0.5 else f" (#{rng.randint(1, 400)})")
        answers = (_answer(rng, topic), _answer(rng, topic))
        for user in rng.sample(people, rng.randint(1, per_prompt)):
            roll = rng.random()
            vote = Vote(
                -1,
                -2,
                rng.choices(("a", "b", "tie", "both_bad"), (45, 40, 10, 5))[0],
                source="api",
                ratings={side: {a: rng.randint(1, 5) for a in aspects} for side in "ab"} if roll < 0.33 else {},
                thumbs={"a": rng.random() < 0.6} if roll > 0.8 else {},
                note="checked the facts twice" if roll < 0.03 else None,
                flags=("off_topic",) if 0.5 < roll < 0.51 else (),
                gold_text=f"A better answer: {topic} in two clear sentences." if 0.6 < roll < 0.62 else None,
                gold_side="a" if 0.6 < roll < 0.62 else None,
            )
            pairs.append(LabeledPair(user, prompt, answers, vote))
    del pairs[n:]
    for start in range(0, n, 1000):
        db.write(functools.partial(write_labeled_pairs, pairs=pairs[start : start + 1000]))


def data_page(tab: str = "Overview", timeout: float = 60) -> Any:
    """The console's Data page run in Streamlit's AppTest, opened on ``tab``: its tabs run lazily, so only the open
    tab's content exists (the page reads the studio from core.studio.current)."""
    from streamlit.testing.v1 import AppTest

    app = AppTest.from_file(str(ROOT / "pages" / "data.py"), default_timeout=timeout)
    app.session_state["data_tab"] = tab
    return app.run()
