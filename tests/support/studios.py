"""Studios and their data for the tests: in-process studios on the tiny model, team users files, labels written
through core's own functions (as the labeling app writes them), random LoRA versions, and the hyperparameters
that keep a real training job to a few seconds."""
from __future__ import annotations

import functools
import json
from pathlib import Path

from core.config import load_settings
from core.labeling.identity import ensure_user, hash_password
from core.labeling.votes import CandidateIn, Vote, add_user_message, new_conversation, record_vote, save_pair
from core.serving.models import build_tiny_model
from core.studio import Studio
from storage.db import Database

FAST = {"max_steps": 2, "logging_steps": 1, "max_length": 64}   # a real job, two optimizer steps


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
        a, b = save_pair(db, conv, turn, None, CandidateIn(f"A clear answer {i}.", 1),
                         CandidateIn(f"meh {i}", 1), None)
        record_vote(db, ada, Vote(a, b, "a", ratings={"a": {"helpfulness": 5}, "b": {"helpfulness": 2}},
                                  thumbs={"a": True, "b": False}, gold_text=f"The best answer {i}.", gold_side="a"))


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
    lora = get_peft_model(base, LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj"],
                                           init_lora_weights=False))
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

    studio = Studio(load_settings({"data_dir": str(data_dir), "model": "tiny"},
                                  env={"STUDIO_AUTH_MODE": "team", "STUDIO_USERS_FILE": str(users)}),
                    build_tiny_model(data_dir))
    client = TestClient(ApiFirst(PlainTextResponse("console", status_code=418), create_api(lambda: studio, 100_000)),
                        raise_server_exceptions=False)
    return studio, client

