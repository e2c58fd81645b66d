"""Export and Hub push: PEFT layout that reproduces the app's answers, merged weights, cards, datasets, and
pushes with the real huggingface_hub client against a Hub stand-in on loopback (bench/harness/hub_standin.py)."""

from __future__ import annotations

import json
import shutil
import traceback
from pathlib import Path

import pytest
import torch
import yaml

from bench.harness.hub_standin import HubStandin
from bench.harness.processes import free_port
from core.config import load_settings
from core.data.trainsets import preference_rows
from core.errors import NotFound, PermissionDenied, ValidationError
from core.labeling.identity import ensure_user
from core.labeling.votes import CandidateIn, Vote, add_user_message, new_conversation, record_vote, save_pair
from core.serving.generate import SamplingParams, generate_once, generate_pair, prepare_chat
from core.serving.models import MODELS_SUBDIR, TINY_MODEL_DIR
from core.serving.policies import register_policy
from core.share import cards, curves, exports, hub, versions
from core.studio import Studio

MESSAGES = [{"role": "user", "content": "Name a colour of the sky."}]
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=12)
TOKEN, READ_TOKEN = "hf_writeTokenForTests0123456789", "hf_readOnlyTokenForTests0123456"
CARD = cards.CardOptions(license="mit", base_model_id="studio-tests/tiny-llama", datasets=("ada/studio-labels",))
METRICS = {
    "loss": [0.69, 0.61, 0.52],
    "rewards/chosen": [0.0, 0.1, 0.2],
    "rewards/rejected": [0.0, -0.1, -0.3],
    "kl": [0.0, 0.02, 0.05],
}


def unique(name: str = "x") -> str:
    return f"{name}-{free_port()}"


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_model_dir):
    """A studio on the tiny model with v1: a random LoRA adapter (tokenizer saved with it, as training does),
    registered with a job, its config and metrics in DuckDB, plus a few labels for dataset exports."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data_dir = tmp_path_factory.mktemp("hub") / "data"
    shutil.copytree(tiny_model_dir, data_dir / MODELS_SUBDIR / TINY_MODEL_DIR)
    # fp32 chat: the exports are checked against the app's greedy answers token for token
    s = Studio(
        load_settings({"data_dir": str(data_dir), "model": "tiny", "chat_dtype": "float32"}, env={}),
        data_dir / MODELS_SUBDIR / TINY_MODEL_DIR,
    )
    torch.manual_seed(0)
    lora = get_peft_model(
        AutoModelForCausalLM.from_pretrained(s.model_path),
        LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    adapter = data_dir / "runs" / "1" / "adapter"
    lora.save_pretrained(adapter)
    AutoTokenizer.from_pretrained(s.model_path).save_pretrained(adapter)
    with s.db.transaction() as cur:
        job_id = cur.execute(
            "INSERT INTO jobs (algorithm, status, config, run_dir) VALUES ('dpo', 'succeeded', ?, ?) RETURNING id",
            [
                json.dumps(
                    {
                        "hyperparams": {"beta": 0.1, "learning_rate": 5e-6, "max_steps": 3},
                        "examples": 12,
                        "data_hash": "d" * 64,
                        "filters": {"labelers": ["ada"]},
                        "parent_policy": "base",
                    }
                ),
                str(adapter.parent),
            ],
        ).fetchone()[0]
        for name, values in METRICS.items():
            cur.executemany(
                "INSERT INTO job_metrics (job_id, step, name, value) VALUES (?, ?, ?, ?)",
                [(job_id, step + 1, name, value) for step, value in enumerate(values)],
            )
    register_policy(
        s.db,
        "v1",
        s.base_policy_id,
        "tiny",
        "dpo",
        str(adapter),
        data_hash="d" * 64,
        config={"beta": 0.1},
        metrics={"loss": 0.52},
        job_id=job_id,
    )
    seed_labels(s)
    yield s
    s.close()


def seed_labels(s: Studio) -> None:
    ada = ensure_user(s.db, "ada", "admin", "test")
    for i in range(4):
        conv = new_conversation(s.db, ada, s.base_policy_id)
        turn = add_user_message(s.db, ada, conv, f"Question {i}?")
        a, b = save_pair(
            s.db,
            conv,
            turn,
            None,
            CandidateIn(f"Good answer {i}.", s.base_policy_id),
            CandidateIn(f"meh {i}", s.base_policy_id),
            None,
        )
        record_vote(s.db, ada, Vote(a, b, "a", thumbs={"a": True, "b": False}))


@pytest.fixture(scope="module")
def admin(studio):
    return ensure_user(studio.db, "ada", "admin", "test")


@pytest.fixture(scope="module")
def app_answer(studio) -> str:
    """What the labeling app answers with v1 (adapter hot-swapped onto the shared base), greedy."""
    rows, _ = studio.adapter_rows("v1", "base")
    model, tokenizer = studio.model()
    pair = generate_pair(model, tokenizer, MESSAGES, GREEDY, adapter_names=rows)
    assert pair.text_a != pair.text_b, "the random adapter must change the answer, else the test proves nothing"
    return pair.text_a


@pytest.fixture
def standin(tmp_path, monkeypatch):
    """The Hub stand-in, with the real client pointed at it (conftest sets offline mode: lifted here)."""
    import huggingface_hub.constants

    server = HubStandin(
        tmp_path / "hub", {TOKEN: ("ada", "write"), READ_TOKEN: ("ada", "read")}, orgs={"ada": ["studio-org"]}
    ).start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    yield server
    server.stop()


def greedy_ids(model, tokenizer) -> list[int]:
    prompt = prepare_chat(tokenizer, model, MESSAGES, GREEDY.max_new_tokens)
    with torch.no_grad():
        out = model.generate(
            prompt.input_ids, attention_mask=torch.ones_like(prompt.input_ids), **GREEDY.generate_kwargs()
        )
    return out[0, prompt.input_ids.shape[1] :].tolist()


def load_tokenizer(path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    return tokenizer


def peft_from(base_dir, adapter_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base_dir)), str(adapter_dir)).eval()


# --- local exports -------------------------------------------------------------------------------------------


def test_exported_adapter_loads_with_peft_and_reproduces_the_apps_greedy_answer(studio, admin, app_answer):
    from transformers import AutoModelForCausalLM

    export = exports.export_adapter(studio.db, studio.settings.data_dir, "v1", admin, CARD)
    assert {
        "adapter_config.json",
        "adapter_model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "README.md",
        curves.CURVES_FILE,
        "training_config.json",
    } <= set(export.files)
    assert not any(".partial-" in p.name for p in export.path.parent.iterdir())
    model, tokenizer = peft_from(studio.model_path, export.path), load_tokenizer(export.path)
    text, _ = generate_once(model, tokenizer, MESSAGES, GREEDY)
    assert text == app_answer
    merged = exports.export_merged(studio.db, studio.settings.data_dir, "v1", admin, "float32", CARD)
    assert "model.safetensors" in merged.files and "adapter_config.json" not in merged.files
    standalone = AutoModelForCausalLM.from_pretrained(str(merged.path)).eval()
    merged_text, _ = generate_once(standalone, load_tokenizer(merged.path), MESSAGES, GREEDY)
    assert merged_text == app_answer
    assert greedy_ids(standalone, tokenizer) == greedy_ids(model, tokenizer)  # token for token
    rows = studio.db.query("SELECT kind, version, dtype, path FROM exports ORDER BY id")
    assert [(r["kind"], r["version"], r["dtype"]) for r in rows] == [
        ("adapter", "v1", None),
        ("merged", "v1", "float32"),
    ]
    assert rows[0]["path"] == str(export.path.resolve())


def test_merged_export_saves_the_requested_precision(studio, admin):
    from safetensors import safe_open

    export = exports.export_merged(studio.db, studio.settings.data_dir, "v1", admin, "bfloat16")
    with safe_open(str(export.path / "model.safetensors"), "pt") as fh:
        assert {fh.get_tensor(k).dtype for k in fh.keys()} == {torch.bfloat16}
    with pytest.raises(ValidationError, match="dtype"):
        exports.export_merged(studio.db, studio.settings.data_dir, "v1", admin, "int3")


def test_model_card_has_metadata_config_data_hash_metrics_and_plot(studio, admin):
    from PIL import Image

    export = exports.export_adapter(studio.db, studio.settings.data_dir, "v1", admin, CARD)
    card = (export.path / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["base_model"] == "studio-tests/tiny-llama" and meta["library_name"] == "peft"
    assert {"trl", "dpo", "peft", "lora"} <= set(meta["tags"]) and meta["license"] == "mit"
    assert meta["datasets"] == ["ada/studio-labels"]
    assert "d" * 64 in card and "| `beta` | `0.1` |" in card and "| `max_steps` | `3` |" in card
    assert "| loss | 0.69 | 0.52 | 0.52 | 0.69 | 3 |" in card and "| kl |" in card
    assert f"]({curves.CURVES_FILE})" in card
    assert Image.open(export.path / curves.CURVES_FILE).size == (1200, 360)
    config = json.loads((export.path / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "studio-tests/tiny-llama"
    assert json.loads((export.path / "training_config.json").read_text())["examples"] == 12


def test_dataset_export_writes_parquet_jsonl_and_card(studio, admin):
    import pyarrow.parquet as pq

    export = exports.export_dataset(studio.db, studio.settings.data_dir, "preference", admin, {}, name="votes")
    expected = preference_rows(studio.db).rows
    assert len(expected) == 4
    assert pq.read_table(export.path / "data" / "train.parquet").to_pylist() == expected
    lines = (export.path / "data" / "train.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == expected
    meta = yaml.safe_load((export.path / "README.md").read_text().split("---")[1])
    assert meta["configs"][0]["data_files"][0]["path"] == "data/train.parquet" and "dpo" in meta["tags"]
    kto = exports.export_dataset(studio.db, studio.settings.data_dir, "unpaired", admin, formats=["jsonl"])
    assert kto.files == ("README.md", "data/train.jsonl")
    with pytest.raises(ValidationError, match="No sft rows"):
        exports.export_dataset(studio.db, studio.settings.data_dir, "sft", admin, {"since": "2999-01-01"})


def test_only_admins_export_and_bad_versions_are_refused(studio):
    bob = ensure_user(studio.db, "bob", "labeler", "test")
    admin = ensure_user(studio.db, "ada", "admin", "test")
    before = studio.db.scalar("SELECT count(*) FROM exports")
    with pytest.raises(PermissionDenied):
        exports.export_adapter(studio.db, studio.settings.data_dir, "v1", bob)
    with pytest.raises(NotFound):
        exports.export_adapter(studio.db, studio.settings.data_dir, "v99", admin)
    with pytest.raises(ValidationError, match="base policy"):
        exports.export_adapter(studio.db, studio.settings.data_dir, "base", admin)
    assert studio.db.scalar("SELECT count(*) FROM exports") == before


# --- pushing to the Hub stand-in -----------------------------------------------------------------------------


def test_push_adapter_commits_files_and_card_and_a_later_push_updates_the_same_repo(
    studio, admin, standin, app_answer, tmp_path
):
    from huggingface_hub import snapshot_download

    export = exports.export_adapter(studio.db, studio.settings.data_dir, "v1", admin, CARD)
    steps = []
    result = hub.push_export(
        studio.db,
        export.id,
        admin,
        TOKEN,
        "ada/tiny-lora",
        private=True,
        progress=lambda f, text: steps.append((f, text)),
    )
    assert result.attempts == 1 and result.commit_url == f"{standin.url}/ada/tiny-lora/commit/{result.commit_oid}"
    repo = standin.repo("ada/tiny-lora")
    assert repo.private and [c["summary"] for c in repo.commits] == ["RLHF Studio: LoRA adapter of v1"]
    on_disk = standin.files_on_disk("ada/tiny-lora")
    assert set(on_disk) == set(export.files)
    assert on_disk["adapter_model.safetensors"] == (export.path / "adapter_model.safetensors").read_bytes()
    card = on_disk["README.md"].decode()
    assert yaml.safe_load(card.split("---")[1])["library_name"] == "peft"
    assert 'PeftModel.from_pretrained(base, "ada/tiny-lora")' in card
    assert steps[-1][0] == 1.0 and any("adapter_model.safetensors" in text for _, text in steps)
    assert [f for f, _ in steps] == sorted(f for f, _ in steps)  # progress only moves forward

    # the real client downloads it back and PEFT loads it onto the base: same answer as in the app
    local = snapshot_download("ada/tiny-lora", token=TOKEN, endpoint=standin.url, cache_dir=tmp_path / "cache")
    text, _ = generate_once(peft_from(studio.model_path, local), load_tokenizer(local), MESSAGES, GREEDY)
    assert text == app_answer

    manifest = hub.adapter_manifest(studio.db)
    assert manifest[0] | {"date": None} == manifest[0] | {
        "kind": "adapter",
        "version": "v1",
        "base_model": "studio-tests/tiny-llama",
        "repo_id": "ada/tiny-lora",
        "commit_url": result.commit_url,
        "date": None,
    }
    # a later export of v1 (new licence in the card) goes to the same repo as a second commit; the client
    # sends only what changed
    again = exports.export_adapter(
        studio.db,
        studio.settings.data_dir,
        "v1",
        admin,
        cards.CardOptions(license="apache-2.0", base_model_id=CARD.base_model_id),
    )
    assert hub.suggest_repo_id(studio.db, again.id, "ada") == "ada/tiny-lora"
    second = hub.push_export(studio.db, again.id, admin, TOKEN, hub.suggest_repo_id(studio.db, again.id, "ada"))
    assert [c["oid"] for c in repo.commits] == [result.commit_oid, second.commit_oid]
    assert repo.commits[1]["parent"] == result.commit_oid and repo.commits[1]["files"] == ["README.md"]
    assert [r["repo_id"] for r in hub.adapter_manifest(studio.db)][:2] == ["ada/tiny-lora"] * 2


def test_push_dataset_to_a_dataset_repo_with_its_card(studio, admin, standin):
    export = exports.export_dataset(studio.db, studio.settings.data_dir, "preference", admin, {})
    assert hub.suggest_repo_id(studio.db, export.id, "ada") == "ada/rlhf-studio-preference"
    result = hub.push_export(studio.db, export.id, admin, TOKEN, "studio-org/labels", private=False)
    assert result.repo_type == "dataset" and "/datasets/studio-org/labels/commit/" in result.commit_url
    files = standin.files_on_disk("studio-org/labels", "dataset")
    assert set(files) == {"README.md", "data/train.parquet", "data/train.jsonl"}
    assert not standin.repo("studio-org/labels", "dataset").private
    meta = yaml.safe_load(files["README.md"].decode().split("---")[1])
    assert meta["configs"][0]["data_files"][0]["split"] == "train" and "trl" in meta["tags"]
    assert hub.adapter_manifest(studio.db) == [r for r in hub.adapter_manifest(studio.db) if r["kind"] != "dataset"]
    bare = hub.push_export(studio.db, export.id, admin, TOKEN, "labels-bare")  # no owner: the token's user
    assert bare.repo_id == "ada/labels-bare" and standin.repo("ada/labels-bare", "dataset").commits


def assert_token_nowhere(studio, exc, caplog, *tokens):
    text = "".join(traceback.format_exception(exc)) + repr(exc) + str(exc.to_dict()) + caplog.text
    studio.db.cursor().execute("CHECKPOINT")
    raw = Path(studio.settings.db_path).read_bytes()
    for token in tokens:
        assert token not in text and token.encode() not in raw


@pytest.mark.slow  # >= 3 s (a server, a child process or a CLI run): not in make test-fast
def test_push_errors_are_clear_retried_when_transient_and_leave_nothing_registered(studio, admin, standin, caplog):
    export = exports.export_adapter(studio.db, studio.settings.data_dir, "v1", admin)
    pushes = studio.db.scalar("SELECT count(*) FROM hub_pushes")
    bad = "hf_thisTokenIsNotValidForTheHub42"
    with pytest.raises(hub.HubAuthError, match="rejected the token") as err:
        hub.push_export(studio.db, export.id, admin, bad, "ada/errors")
    assert "settings/tokens" in err.value.hint
    assert_token_nowhere(studio, err.value, caplog, bad)
    with pytest.raises(hub.HubForbidden, match="may not"):
        hub.push_export(studio.db, export.id, admin, READ_TOKEN, "ada/errors")
    with pytest.raises(hub.HubForbidden):  # a namespace the user does not belong to
        hub.push_export(studio.db, export.id, admin, TOKEN, "someone-else/errors")
    standin.fail("commit", 404)
    with pytest.raises(hub.HubNotFound, match="Not found"):
        hub.push_export(studio.db, export.id, admin, TOKEN, "ada/errors")
    standin.fail("commit", 409, times=2)
    with pytest.raises(hub.HubConflict, match="conflict") as err:
        hub.push_export(studio.db, export.id, admin, TOKEN, "ada/errors", retries=1, retry_wait=0.01)
    assert_token_nowhere(studio, err.value, caplog, TOKEN)
    assert standin.repo("ada/errors").commits == []  # the repo exists, nothing was committed
    assert studio.db.scalar("SELECT count(*) FROM hub_pushes") == pushes

    standin.fail("commit", 503)  # transient: the retry succeeds
    result = hub.push_export(studio.db, export.id, admin, TOKEN, "ada/errors", retry_wait=0.01)
    assert result.attempts == 2 and len(standin.repo("ada/errors").commits) == 1
    assert studio.db.scalar("SELECT count(*) FROM hub_pushes") == pushes + 1


def test_network_down_and_offline_mode_are_clear_errors(studio, admin, standin, monkeypatch, caplog):
    import huggingface_hub.constants

    export = exports.export_adapter(studio.db, studio.settings.data_dir, "v1", admin)
    pushes = studio.db.scalar("SELECT count(*) FROM hub_pushes")
    standin.stop()  # nothing listens on the port any more
    steps = []
    with pytest.raises(hub.HubUnreachable, match="Cannot reach the Hub") as err:
        hub.push_export(
            studio.db,
            export.id,
            admin,
            TOKEN,
            "ada/down",
            retries=2,
            retry_wait=0.01,
            progress=lambda f, text: steps.append(text),
        )
    assert sum("retrying" in s for s in steps) == 2 and err.value.retryable
    assert_token_nowhere(studio, err.value, caplog, TOKEN)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(hub.HubUnreachable, match="Offline mode") as err:
        hub.push_export(studio.db, export.id, admin, TOKEN, "ada/down", retries=0)
    assert "HF_HUB_OFFLINE" in err.value.hint
    assert studio.db.scalar("SELECT count(*) FROM hub_pushes") == pushes


def test_a_version_that_learned_nothing_is_refused_until_an_admin_overrides_with_a_reason(studio, admin, standin):
    """STUDIO_RELEASE_GATE=enforce (the default): nothing reaches the Hub, then an override with a reason pushes,
    and the card on the Hub names the failed check and the reason (so does the audit log)."""
    from core.compare.gate import GateFailed, gate_overrides

    export = exports.export_adapter(studio.db, studio.settings.data_dir, "v1", admin, CARD)
    v1, base = (studio.db.scalar("SELECT id FROM policies WHERE name = ?", [n]) for n in ("v1", "base"))
    report = {
        "version": "v1",
        "against": "base",
        "verdict": "no_change",
        "summary": "no measurable change: stored",
        "metrics": {"version": "v1", "against": "base", "held_out_pairs": 9, "kl_per_token": 0.001},
    }
    report_id = studio.db.write(
        lambda cur: cur.execute(
            "INSERT INTO version_reports (policy_id, against_id, verdict, summary, report) VALUES (?, ?, ?, ?, ?)"
            " RETURNING id",
            [v1, base, "no_change", report["summary"], json.dumps(report)],
        ).fetchone()[0]
    )
    pushes = studio.db.scalar("SELECT count(*) FROM hub_pushes")
    try:
        with pytest.raises(GateFailed, match="v1 fails its release gate \\(learned\\)") as refused:
            hub.push_export(studio.db, export.id, admin, TOKEN, "ada/gated")
        assert refused.value.code == "gate_failed" and "--override" in refused.value.hint
        assert ("models", "ada/gated") not in standin.repos
        assert studio.db.scalar("SELECT count(*) FROM hub_pushes") == pushes
        hub.push_export(studio.db, export.id, admin, TOKEN, "ada/gated", gate_mode="warn")  # warn: pushed
        result = hub.push_export(studio.db, export.id, admin, TOKEN, "ada/gated", override="a demo for the team")
        card = standin.files_on_disk("ada/gated")["README.md"].decode()
        assert "## Release gate" in card and "| learned | fail | learned nothing measurable" in card
        assert "Released despite the failed gate by ada: a demo for the team" in card
        assert gate_overrides(studio.db, "v1")[0]["target"] == "ada/gated" and result.repo_id == "ada/gated"
    finally:
        studio.db.write(lambda cur: cur.execute("DELETE FROM version_reports WHERE id = ?", [report_id]))


def test_token_comes_from_the_field_or_hf_token_and_bad_repo_ids_are_refused(studio, admin, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(hub.HubAuthError, match="No Hugging Face token"):
        hub.resolve_token("  ")
    monkeypatch.setenv("HF_TOKEN", "hf_fromEnv")
    assert hub.resolve_token(None) == "hf_fromEnv" and hub.resolve_token("hf_oneOff") == "hf_oneOff"
    export_id = studio.db.scalar("SELECT max(id) FROM exports")
    with pytest.raises(ValidationError, match="repo id"):
        hub.push_export(studio.db, export_id, admin, TOKEN, "bad name!")


def test_zip_download_holds_the_whole_export(studio, admin):
    import io
    import zipfile

    export = exports.export_adapter(studio.db, studio.settings.data_dir, "v1", admin)
    name, data = exports.zip_export(studio.db, export.id)
    assert name == f"{export.path.name}.zip"
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert sorted(n.split("/", 1)[1] for n in zf.namelist()) == sorted(export.files)
        assert (
            zf.read(f"{export.path.name}/adapter_model.safetensors")
            == (export.path / "adapter_model.safetensors").read_bytes()
        )


def test_export_page_exports_and_pushes_with_a_one_off_token(studio, standin, monkeypatch):
    """The console page in-process (Streamlit AppTest) against the real studio and the Hub stand-in."""
    from streamlit.testing.v1 import AppTest

    import core.studio

    monkeypatch.setattr(core.studio, "_current", studio)
    page = str(Path(__file__).resolve().parents[2] / "pages" / "export.py")
    app = AppTest.from_file(page, default_timeout=60).run()
    assert not app.exception and not app.error
    before = studio.db.scalar("SELECT count(*) FROM exports")
    next(b for b in app.button if b.label == "Export").click().run()
    assert not app.exception and any("written to" in s.value for s in app.success)
    new_id = studio.db.scalar("SELECT max(id) FROM exports")
    assert studio.db.scalar("SELECT count(*) FROM exports") == before + 1
    assert studio.db.scalar("SELECT kind FROM exports WHERE id = ?", [new_id]) == "adapter"

    app.text_input(key=f"push-{new_id}-repo_id").input("ada/page-push")
    app.text_input(key="push-token").input(TOKEN)
    next(b for b in app.button if b.label == "Push").click().run()
    assert not app.exception and any("Pushed to" in s.value for s in app.success), [e.value for e in app.error]
    assert len(standin.repo("ada/page-push").commits) == 1
    assert app.text_input(key="push-token").value == ""  # the one-off token is not kept
    assert any(r["repo_id"] == "ada/page-push" for r in hub.adapter_manifest(studio.db))

    app.text_input(key=f"push-{new_id}-repo_id").input("ada/page-push")
    app.text_input(key="push-token").input("hf_wrongTokenTypedIntoThePage99")
    next(b for b in app.button if b.label == "Push").click().run()
    assert any("rejected the token" in e.value for e in app.error)


@pytest.mark.slow  # >= 3 s (a server, a child process or a CLI run): not in make test-fast
def test_cli_exports_and_pushes_with_hf_token(tmp_path, tiny_model_dir, standin):
    """`launch.py export adapter v1 --push REPO` in its own process, token from HF_TOKEN, real client."""
    import os
    import subprocess
    import sys

    from core.serving.policies import ensure_base_policy
    from storage.db import Database
    from tests.support import ROOT

    data_dir = tmp_path / "data"
    shutil.copytree(tiny_model_dir, data_dir / MODELS_SUBDIR / TINY_MODEL_DIR)
    adapter = data_dir / "runs" / "1" / "adapter"
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    get_peft_model(
        AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)), LoraConfig(r=4, target_modules=["q_proj"])
    ).save_pretrained(adapter)
    db = Database.in_data_dir(data_dir)
    register_policy(db, "v1", ensure_base_policy(db, "tiny"), "tiny", "sft", str(adapter))
    db.close()
    env = {**os.environ, "HF_ENDPOINT": standin.url, "HF_TOKEN": TOKEN, "HF_HUB_OFFLINE": "0"}
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "launch.py"),
            "export",
            "adapter",
            "v1",
            "--data-dir",
            str(data_dir),
            "--model",
            "tiny",
            "--push",
            "cli-lora",
            "--license",
            "mit",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "pushed to ada/cli-lora: " in run.stdout and TOKEN not in run.stdout + run.stderr
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= set(
        standin.files_on_disk("ada/cli-lora")
    )
    assert standin.repo("ada/cli-lora").private  # private unless --public
    listed = subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), "export", "manifest", "--data-dir", str(data_dir)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert json.loads(listed.stdout)[0]["repo_id"] == "ada/cli-lora"
    bad = subprocess.run(
        [
            sys.executable,
            str(ROOT / "launch.py"),
            "export",
            "push",
            "1",
            "--push",
            "cli-lora",
            "--data-dir",
            str(data_dir),
        ],
        cwd=ROOT,
        env={**env, "HF_TOKEN": "hf_badTokenForCli12345"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "error [hub_unauthorized]" in bad.stderr
    assert "hf_badTokenForCli12345" not in bad.stderr


@pytest.mark.slow
def test_a_trained_version_exports_with_its_real_metrics_and_reproduces_the_app(tmp_path, tiny_model_dir):
    """End to end: labels -> a real 3-step DPO job through the supervisor -> adapter export whose card holds
    the metrics the trainer logged, and which PEFT loads to give the app's greedy answer."""
    from core.training.request import JobRequest

    data_dir = tmp_path / "data"
    shutil.copytree(tiny_model_dir, data_dir / MODELS_SUBDIR / TINY_MODEL_DIR)
    # fp32 chat: the exports are checked against the app's greedy answers token for token
    s = Studio(
        load_settings({"data_dir": str(data_dir), "model": "tiny", "chat_dtype": "float32"}, env={}),
        data_dir / MODELS_SUBDIR / TINY_MODEL_DIR,
    )
    try:
        ada = ensure_user(s.db, "ada", "admin", "test")
        for i in range(12):
            conv = new_conversation(s.db, ada, s.base_policy_id)
            turn = add_user_message(s.db, ada, conv, f"Question number {i}?")
            a, b = save_pair(
                s.db, conv, turn, None, CandidateIn(f"A clear answer {i}.", 1), CandidateIn(f"meh {i}", 1), None
            )
            record_vote(s.db, ada, Vote(a, b, "a"))
        job = s.supervisor.run_blocking(
            s.supervisor.submit(
                JobRequest(
                    "dpo", "base", {"max_steps": 3, "logging_steps": 1, "max_length": 64, "learning_rate": 0.05}
                ),
                ada,
            )
        )
        assert job["status"] == "succeeded", job["error"]
        version = s.db.scalar("SELECT name FROM policies WHERE job_id = ?", [job["id"]])
        export = exports.export_adapter(s.db, data_dir, version, ada)
        card = (export.path / "README.md").read_text()
        logged = s.db.query(
            "SELECT value FROM job_metrics WHERE job_id = ? AND name = 'loss' ORDER BY step", [job["id"]]
        )
        assert f"| loss | {logged[0]['value']:.4g} | {logged[-1]['value']:.4g} |" in card
        assert "| rewards/margins |" in card and curves.CURVES_FILE in export.files
        meta = yaml.safe_load(card.split("---")[1])
        assert {"trl", "dpo"} <= set(meta["tags"]) and "base_model" not in meta  # tiny: no Hub id to name
        rows, _ = s.adapter_rows(version, "base")
        model, tokenizer = s.model()
        app = generate_pair(model, tokenizer, MESSAGES, GREEDY, adapter_names=rows).text_a
        text, _ = generate_once(peft_from(s.model_path, export.path), load_tokenizer(export.path), MESSAGES, GREEDY)
        assert text == app
    finally:
        s.close()


# --- GGUF, bitsandbytes and portable cards -------------------------------------------------------------------

GGUF_PROMPT = [{"role": "user", "content": "Write one sentence about rivers and the sea."}]


@pytest.fixture(scope="module")
def gguf_exports(studio, admin):
    """v1 written as GGUF in three types (module-wide: transformers takes ~15 s to read each file's tokenizer)."""
    return {
        quant: exports.export_gguf(studio.db, studio.settings.data_dir, "v1", admin, quant, CARD)
        for quant in ("f16", "q8_0", "q4_0")
    }


def gguf_file(export) -> str:
    return next(f for f in export.files if f.endswith(".gguf"))


def load_gguf(export):
    """The GGUF through transformers' own loader, tokenizer included (rebuilt from the file's metadata)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = gguf_file(export)
    return (
        AutoModelForCausalLM.from_pretrained(str(export.path), gguf_file=name, dtype=torch.float32).eval(),
        AutoTokenizer.from_pretrained(str(export.path), gguf_file=name),
    )


def merged_v1(studio):
    model, tokenizer = versions.merged_model(versions.trained_version(studio.db, "v1"), "v1", studio.settings.data_dir)
    return model.eval(), tokenizer


def prompt_logits(model, tokenizer) -> torch.Tensor:
    ids = tokenizer.apply_chat_template(GGUF_PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True)[
        "input_ids"
    ]
    with torch.no_grad():
        return model(ids).logits[0]


@pytest.mark.slow  # >= 3 s (a server, a child process or a CLI run): not in make test-fast
def test_gguf_f16_loads_in_transformers_with_its_tokenizer_and_gives_the_apps_greedy_tokens(
    studio, gguf_exports, app_answer
):
    import gguf

    export = gguf_exports["f16"]
    assert set(export.files) >= {gguf_file(export), "Modelfile", "README.md", "training_config.json"}
    reader = gguf.GGUFReader(str(export.path / gguf_file(export)))
    meta = {
        k: f.contents()
        for k, f in reader.fields.items()
        if not k.startswith("tokenizer.ggml.")
        or k in ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.eos_token_id")
    }
    merged, tokenizer = merged_v1(studio)
    assert meta["general.architecture"] == "llama" and meta["tokenizer.ggml.model"] == "gpt2"
    assert meta["tokenizer.ggml.pre"] == "smollm" and meta["tokenizer.chat_template"] == tokenizer.chat_template
    assert meta["tokenizer.ggml.eos_token_id"] == tokenizer.eos_token_id
    assert {t.tensor_type.name for t in reader.tensors} == {"F16", "F32"}

    model, gguf_tokenizer = load_gguf(export)
    chat = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    assert gguf_tokenizer(chat)["input_ids"] == tokenizer(chat)["input_ids"]  # same tokens from the file's vocab
    assert greedy_ids(model, tokenizer) == greedy_ids(merged, tokenizer)
    text, _ = generate_once(model, gguf_tokenizer, MESSAGES, GREEDY)
    assert text == app_answer


@pytest.mark.slow  # >= 3 s (a server, a child process or a CLI run): not in make test-fast
def test_gguf_q8_0_and_q4_0_stay_close_to_the_fp32_model(studio, gguf_exports):
    """Stated tolerances, over every logit at every position of a chat prompt, against the merged fp32 model:
    q8_0 correlates above 0.995 with a mean absolute error under 5% of the logits' standard deviation; q4_0
    correlates above 0.8. (The tiny random model amplifies rounding: measured here 0.9989 / 3% for q8_0 and 0.89
    for q4_0; on SmolLM2-135M q8_0 gives the same greedy answer as fp32.) Files shrink as the types get smaller."""
    merged, tokenizer = merged_v1(studio)
    reference = prompt_logits(merged, tokenizer)

    def correlation(logits: torch.Tensor) -> float:
        return float(torch.corrcoef(torch.stack([logits.flatten(), reference.flatten()]))[0, 1])

    q8 = prompt_logits(load_gguf(gguf_exports["q8_0"])[0], tokenizer)
    assert correlation(q8) > 0.995
    assert float((q8 - reference).abs().mean()) < 0.05 * float(reference.std())
    q4 = prompt_logits(load_gguf(gguf_exports["q4_0"])[0], tokenizer)
    assert correlation(q4) > 0.8
    sizes = {q: (e.path / gguf_file(e)).stat().st_size for q, e in gguf_exports.items()}
    assert sizes["q4_0"] < sizes["q8_0"] < sizes["f16"]


def test_gguf_export_has_an_ollama_modelfile_and_a_card(gguf_exports):
    export = gguf_exports["q8_0"]
    modelfile = (export.path / "Modelfile").read_text()
    assert f"FROM ./{gguf_file(export)}" in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile and "PARAMETER temperature 0.7" in modelfile
    assert "<|im_start|>user\n{{ .Prompt }}<|im_end|>" in modelfile
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM' in modelfile  # the chat template's default
    card = (export.path / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["library_name"] == "gguf" and meta["base_model"] == CARD.base_model_id
    assert meta["base_model_relation"] == "quantized" and "gguf" in meta["tags"]
    assert "ollama create" in card and f'gguf_file="{gguf_file(export)}"' in card


def test_gguf_export_refuses_unknown_types_and_non_admins(studio, admin):
    from core.errors import PermissionDenied, ValidationError

    with pytest.raises(ValidationError, match="Unknown GGUF type"):
        exports.export_gguf(studio.db, studio.settings.data_dir, "v1", admin, "q3_k")
    with pytest.raises(PermissionDenied):
        exports.export_gguf(studio.db, studio.settings.data_dir, "v1", ensure_user(studio.db, "bo", "labeler", "test"))


def test_bitsandbytes_export_needs_cuda_and_says_what_to_do_instead(studio, admin):
    from core.errors import ValidationError

    if torch.cuda.is_available():  # a GPU machine: the real export, loaded back quantized
        from transformers import AutoModelForCausalLM

        export = exports.export_quantized(studio.db, studio.settings.data_dir, "v1", admin, "nf4", CARD)
        model = AutoModelForCausalLM.from_pretrained(str(export.path), device_map={"": 0})
        assert model.config.quantization_config.load_in_4bit
        return
    before = studio.db.scalar("SELECT count(*) FROM exports")
    with pytest.raises(ValidationError) as refused:
        exports.export_quantized(studio.db, studio.settings.data_dir, "v1", admin, "nf4")
    assert refused.value.code == "needs_cuda" and "GGUF" in refused.value.hint
    assert studio.db.scalar("SELECT count(*) FROM exports") == before


@pytest.mark.slow  # >= 3 s (a server, a child process or a CLI run): not in make test-fast
def test_pushed_adapter_runs_as_its_card_says_on_another_machine_and_names_its_training_data(
    studio, admin, standin, tmp_path
):
    """The base model and the adapter on the Hub stand-in; the card's Python snippet, run as written in a fresh
    process with an empty cache and no access to this data dir, loads both and chats. The card's ``datasets``
    names the repo the version's exact training rows were pushed to."""
    import os
    import subprocess
    import sys

    from huggingface_hub import HfApi

    from core.training.rundir import write_parquet

    base_repo = "studio-org/tiny-llama"
    api = HfApi(endpoint=standin.url, token=TOKEN)
    api.create_repo(base_repo, private=False, exist_ok=True)
    api.upload_folder(folder_path=str(studio.model_path), repo_id=base_repo)
    run_dir = Path(
        studio.db.scalar("SELECT run_dir FROM jobs WHERE id = (SELECT job_id FROM policies WHERE name = 'v1')")
    )
    (run_dir / "data").mkdir(exist_ok=True)
    write_parquet(preference_rows(studio.db, None).rows, run_dir / "data" / "train.parquet")
    data = exports.export_training_data(studio.db, studio.settings.data_dir, "v1", admin)
    assert exports.get_export(studio.db, data.id)["data_hash"] == "d" * 64  # the version's recorded hash
    hub.push_export(studio.db, data.id, admin, TOKEN, "ada/v1-training-data", private=False)

    card = cards.CardOptions(base_model_id=base_repo)  # no datasets given
    adapter = exports.export_adapter(studio.db, studio.settings.data_dir, "v1", admin, card)
    config = json.loads((adapter.path / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == base_repo
    hub.push_export(studio.db, adapter.id, admin, TOKEN, "ada/portable-lora", private=False)
    text = standin.files_on_disk("ada/portable-lora")["README.md"].decode()
    assert yaml.safe_load(text.split("---")[1])["datasets"] == ["ada/v1-training-data"]
    snippet = text.split("```python\n")[1].split("```")[0]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "STUDIO_"))}
    env |= {"HF_ENDPOINT": standin.url, "HF_HOME": str(elsewhere / "hf-home"), "HF_HUB_OFFLINE": "0"}
    run = subprocess.run(
        [sys.executable, "-c", snippet], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip()


def test_local_base_without_a_hub_id_is_named_in_the_card(studio, admin):
    adapter = exports.export_adapter(studio.db, studio.settings.data_dir, "v1", admin)  # "tiny": no Hub id
    assert "has no Hub id here" in (adapter.path / "README.md").read_text()


def test_export_page_writes_a_gguf_and_warns_about_a_base_without_hub_id(studio, monkeypatch):
    from streamlit.testing.v1 import AppTest

    import core.studio

    monkeypatch.setattr(core.studio, "_current", studio)
    page = str(Path(__file__).resolve().parents[2] / "pages" / "export.py")
    app = AppTest.from_file(page, default_timeout=60).run()
    assert any("has no Hub id" in w.value for w in app.warning)  # the tiny base: asked for one, and why
    next(r for r in app.radio if r.label == "Export").set_value("gguf").run()  # options follow the kind
    next(s for s in app.selectbox if s.label == "GGUF type").set_value("q4_0")
    next(b for b in app.button if b.label == "Export").click().run()
    assert not app.exception and any("written to" in s.value for s in app.success), [e.value for e in app.error]
    row = studio.db.query("SELECT kind, dtype, path FROM exports ORDER BY id DESC LIMIT 1")[0]
    assert (row["kind"], row["dtype"]) == ("gguf", "q4_0") and (Path(row["path"]) / "v1-q4_0.gguf").is_file()


@pytest.mark.slow  # >= 3 s (a server, a child process or a CLI run): not in make test-fast
def test_cli_exports_a_gguf(tmp_path, tiny_model_dir):
    """`launch.py export gguf v1 --quant q8_0` on a full fine-tune (weights of its own, no adapter)."""
    import subprocess
    import sys

    from core.serving.policies import ensure_base_policy
    from storage.db import Database
    from tests.support import ROOT

    data_dir = tmp_path / "data"
    shutil.copytree(tiny_model_dir, data_dir / MODELS_SUBDIR / TINY_MODEL_DIR)
    db = Database.in_data_dir(data_dir)
    register_policy(
        db, "v1", ensure_base_policy(db, "tiny"), "tiny", "sft", None, config={"model_path": str(tiny_model_dir)}
    )
    db.close()
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "launch.py"),
            "export",
            "gguf",
            "v1",
            "--quant",
            "q8_0",
            "--data-dir",
            str(data_dir),
            "--model",
            "tiny",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    folder = Path(run.stdout.split(": ", 1)[1].strip())
    assert (folder / "v1-q8_0.gguf").is_file() and (folder / "Modelfile").is_file()
    bad = subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), "export", "gguf", "v1", "--quant", "q2", "--data-dir", str(data_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "error [invalid_input]" in bad.stderr and "q8_0" in bad.stderr


def test_gguf_runs_in_llama_cpp_with_the_same_greedy_answer(studio, gguf_exports):
    """llama.cpp itself (llama-cpp-python) loads the f16 file, reads its chat template and answers greedily with
    the fp32 model's tokens. llama-cpp-python builds from source (~17 min on 2 cores), so `make test` does not
    install it: this runs where it is installed (`make llama-cpp`)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    merged, tokenizer = merged_v1(studio)
    expected = tokenizer.decode(greedy_ids(merged, tokenizer), skip_special_tokens=True)
    export = gguf_exports["f16"]
    llm = llama_cpp.Llama(model_path=str(export.path / gguf_file(export)), n_ctx=512, verbose=False)
    assert llm.metadata["tokenizer.chat_template"] == tokenizer.chat_template
    reply = llm.create_chat_completion(messages=MESSAGES, max_tokens=GREEDY.max_new_tokens, temperature=0.0)
    assert reply["choices"][0]["message"]["content"] == expected
