"""Backups survive anything: snapshots to a directory and to a Hub dataset repo (the Hub stand-in, spoken to by
the real huggingface_hub client), restored row for row on an empty disk; faults delay but never lose; corrupt,
partial and newer snapshots are refused with nothing half-loaded; redaction reaches backups."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import httpx
import pytest

from bench.harness.hub_standin import HubStandin
from bench.harness.processes import free_port
from core.config import load_settings
from core.labeling.identity import ensure_user
from core.labeling.moderation import redact_item
from core.labeling.votes import CandidateIn, Vote, add_user_message, new_conversation, record_vote, save_pair
from core.serving.models import build_tiny_model
from core.serving.policies import register_policy
from core.share import backup_service
from core.share.backup import BackupRefused, DataDirNotEmpty, DirTarget, HubTarget, restore
from core.share.backup_service import BackupService
from core.studio import Studio
from storage.db import Database
from tests.support import ROOT
from tests.support.servers import Server, wait_for
from tests.support.studios import make_random_adapter, open_studio

TOKEN = "hf_backup_write_token_123456"


@pytest.fixture
def standin(tmp_path, monkeypatch):
    """The Hub stand-in with the real client pointed at it (conftest sets offline mode: lifted here)."""
    import huggingface_hub.constants

    server = HubStandin(tmp_path / "hub", {TOKEN: ("ada", "write")}).start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    yield server
    server.stop()


@pytest.fixture
def studio(tmp_path):
    """A studio on the tiny model with twelve votes and a version v1 (a real LoRA adapter in runs/v1)."""
    studio = open_studio(tmp_path / "data")
    adapter = make_random_adapter(studio.settings.data_dir)
    register_policy(
        studio.db, "v1", studio.base_policy_id, "tiny", "dpo", str(adapter), data_hash="h", config={"beta": 0.1}
    )
    yield studio
    studio.close()


def vote(db: Database, text: str) -> int:
    """One vote on a new conversation about ``text``; returns the conversation's id."""
    ada = ensure_user(db, "ada", "admin", "test")
    conv = new_conversation(db, ada, 1)
    turn = add_user_message(db, ada, conv, text)
    a, b = save_pair(db, conv, turn, None, CandidateIn(f"answer to {text}", 1), CandidateIn("meh", 1), None)
    record_vote(db, ada, Vote(a, b, "a"))
    return conv


def vote_in_an_older_schema(db: Database, text: str) -> None:
    """Like :func:`vote`, but the answers are written with the columns every schema has had (``save_pair`` writes
    the newest ones, which a studio one migration behind may not have)."""
    ada = ensure_user(db, "ada", "admin", "test")
    conv = new_conversation(db, ada, 1)
    turn = add_user_message(db, ada, conv, text)
    with db.transaction() as cur:
        a, b = (
            cur.execute(
                "INSERT INTO candidates (conversation_id, turn, policy_id, text) VALUES (?, ?, 1, ?) RETURNING id",
                [conv, turn, answer],
            ).fetchone()[0]
            for answer in (f"answer to {text}", "meh")
        )
    record_vote(db, ada, Vote(a, b, "a"))


def tables(db: Database) -> dict[str, list]:
    """Every table's rows, sorted: what a restore must give back exactly."""
    names = [
        r["table_name"]
        for r in db.query("SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE'")
    ]
    return {n: sorted(map(repr, db.cursor().execute(f'SELECT * FROM "{n}"').fetchall())) for n in names}


def comparable(rows: dict[str, list], old: str, new: str) -> dict[str, list]:
    return {t: [r.replace(old, new) for r in v] for t, v in rows.items()}


@pytest.mark.slow  # >= 3 s (a server, a child process or a CLI run): not in make test-fast
def test_a_hub_round_trip_restores_every_table_row_for_row_and_the_version_serves(studio, standin, tmp_path):
    data_dir = studio.settings.data_dir
    service = BackupService(studio.db, data_dir, HubTarget("ada/studio-backup"), every=300)
    snap = service.backup_now("test")
    repo = standin.repo("ada/studio-backup", "dataset")
    assert repo.private and snap.ref == repo.sha and "12 votes, 1 version," in snap.title
    assert "runs/v1/adapter/adapter_model.safetensors" in repo.files and "db/preferences.parquet" in repo.files
    assert not any(p.startswith(("models/", "studio.duckdb")) for p in repo.files)  # no base model, no live db
    uploaded = len(standin.calls)
    vote(studio.db, "one more question")
    service.backup_now("test")
    second = [path for kind, path in standin.calls[uploaded:] if kind == "commit"]
    assert len(second) == 1 and len(repo.commits) == 2
    assert "runs/v1/adapter/adapter_model.safetensors" not in repo.commits[-1]["files"]  # uploaded once
    expected = tables(studio.db)

    fresh = tmp_path / "fresh"
    result = restore(HubTarget("ada/studio-backup"), fresh)
    assert result.line().startswith("restored 13 votes, 1 version from ada/studio-backup@")
    restored_db = Database(fresh / "studio.duckdb")
    try:
        assert comparable(tables(restored_db), str(fresh.resolve()), str(data_dir.resolve())) == expected
    finally:
        restored_db.close()
    # an earlier snapshot by its commit
    first = restore(HubTarget("ada/studio-backup"), tmp_path / "first", ref=snap.ref)
    assert first.votes == 12
    # rewriting the history (after a redaction) leaves one commit: a fresh snapshot
    service.rewrite_history()
    assert len(repo.commits) == 1 and len(service.target.snapshots()) == 1

    again = Studio(load_settings({"data_dir": str(fresh), "model": "tiny"}, env={}), build_tiny_model(fresh))
    try:
        rows, _ = again.adapter_rows("v1", "base")
        assert rows == ("v1", None)  # the restored adapter loaded on the shared model
        policy = again.db.query("SELECT adapter_path FROM policies WHERE name = 'v1'")[0]
        assert policy["adapter_path"].startswith(str(fresh.resolve()))
    finally:
        again.close()


def test_a_directory_backup_stores_an_unchanged_adapter_once_and_lists_every_snapshot(studio, tmp_path):
    target = DirTarget(tmp_path / "backups")
    service = BackupService(studio.db, studio.settings.data_dir, target, every=300)
    service.backup_now("first")
    blobs = {p.name for p in (tmp_path / "backups" / "blobs").iterdir()}
    vote(studio.db, "another")
    service.backup_now("second")
    added = {p.name for p in (tmp_path / "backups" / "blobs").iterdir()} - blobs
    assert 0 < len(added) < 8  # the changed tables and nothing else (no second copy of the adapter)
    snaps = target.snapshots()
    assert [s.title.split("(")[-1] for s in snaps] == ["second)", "first)"]
    assert restore(target, tmp_path / "old", ref=snaps[1].ref).votes == 12


def test_a_restore_refuses_a_data_dir_in_use_unless_forced_and_then_moves_it_aside(studio, tmp_path):
    target = DirTarget(tmp_path / "backups")
    BackupService(studio.db, studio.settings.data_dir, target, every=300).backup_now("test")
    used = tmp_path / "used"
    Database(used / "studio.duckdb").close()
    with pytest.raises(DataDirNotEmpty) as refused:
        restore(target, used)
    assert refused.value.code == "data_dir_not_empty" and "--force" in refused.value.hint
    result = restore(target, used, force=True)
    assert result.moved_aside is not None and (result.moved_aside / "studio.duckdb").is_file()
    assert result.votes == 12


def test_corrupt_partial_and_newer_snapshots_are_refused_and_nothing_is_half_loaded(studio, tmp_path):
    target = DirTarget(tmp_path / "backups")
    BackupService(studio.db, studio.settings.data_dir, target, every=300).backup_now("test")
    manifest_path = next((tmp_path / "backups" / "snapshots").glob("*.json"))
    manifest = json.loads(manifest_path.read_text())
    adapter_sha = manifest["files"]["runs/v1/adapter/adapter_model.safetensors"]["sha256"]
    adapter_blob = tmp_path / "backups" / "blobs" / adapter_sha
    original = adapter_blob.read_bytes()

    adapter_blob.write_bytes(original[:-10] + b"0123456789")  # corrupt
    with pytest.raises(BackupRefused, match="does not match its checksum"):
        restore(target, tmp_path / "a")
    adapter_blob.unlink()  # partial
    with pytest.raises(BackupRefused, match="is missing"):
        restore(target, tmp_path / "b")
    adapter_blob.write_bytes(original)
    manifest_path.write_text(json.dumps({**manifest, "schema_version": 999}))  # from a newer studio
    with pytest.raises(BackupRefused, match="newer studio"):
        restore(target, tmp_path / "c")
    for name in "abc":
        assert not (tmp_path / name / "studio.duckdb").exists() and not (tmp_path / name / "runs").exists()
    assert not list(tmp_path.glob(".restore-*"))


@pytest.mark.slow  # >= 3 s (a server, a child process or a CLI run): not in make test-fast
def test_injected_hub_failures_delay_the_backup_but_lose_nothing(studio, standin, monkeypatch):
    monkeypatch.setattr(backup_service, "FIRST_RETRY_S", 0.2)
    service = BackupService(studio.db, studio.settings.data_dir, HubTarget("ada/studio-backup"), every=30)
    standin.fail("commit", 503, times=2)
    standin.fail("preupload", 429, times=1)
    service.start()
    try:
        ids = [vote(studio.db, f"question {i} while the Hub is down") for i in range(5)]  # acknowledged at once
        service.request("test")
        wait_for(lambda: service.status()["failures"] >= 1, timeout=30)
        assert service.status()["last_error"] and service.status()["pending"]
        wait_for(lambda: service.status()["failures"] == 0 and service.status()["last_good_at"], timeout=60)
    finally:
        service.close()
    assert len(ids) == 5
    restored = restore(HubTarget("ada/studio-backup"), studio.settings.data_dir.parent / "after")
    assert restored.votes == 17  # 12 + 5: nothing acknowledged was lost


@pytest.mark.slow  # >= 3 s (a server, a child process or a CLI run): not in make test-fast
def test_a_backup_killed_half_way_leaves_the_last_good_snapshot_restorable(studio, tmp_path):
    target_dir = tmp_path / "backups"
    BackupService(studio.db, studio.settings.data_dir, DirTarget(target_dir), every=300).backup_now("good")
    big = studio.settings.data_dir / "runs" / "v1" / "big.bin"
    with open(big, "wb") as f:  # a large run file: the next backup takes a while to copy it
        for _ in range(32):
            f.write(os.urandom(16 << 20))
    studio.close()
    child = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "launch.py"),
            "backup",
            "--data-dir",
            str(studio.settings.data_dir),
            "--backup-dir",
            str(target_dir),
            "--model",
            "tiny",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    wait_for(lambda: any(p.suffix == ".tmp" for p in (target_dir / "blobs").iterdir()), timeout=90, every=0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    snaps = DirTarget(target_dir).snapshots()
    assert len(snaps) == 1 and "(good)" in snaps[0].title
    assert restore(DirTarget(target_dir), tmp_path / "again").votes == 12


def test_redaction_reaches_the_next_snapshot_and_rewriting_the_history_drops_the_older_ones(studio, tmp_path):
    secret = "my phone number is 555-0199"
    conversation = vote(studio.db, secret)
    target = DirTarget(tmp_path / "backups")
    service = BackupService(studio.db, studio.settings.data_dir, target, every=300)
    service.backup_now("before")
    ada = ensure_user(studio.db, "ada", "admin", "test")
    redact_item(studio.db, ada.id, "conversation", conversation, "personal data")
    service.backup_now("after")
    status = service.status()
    assert status["history_holds_redacted"]

    def blobs_holding_secret() -> int:
        return sum(secret.encode() in p.read_bytes() for p in (tmp_path / "backups" / "blobs").iterdir())

    newest = json.loads(
        next(iter(sorted((tmp_path / "backups" / "snapshots").glob("*.json"), reverse=True))).read_text()
    )
    assert not any(
        secret.encode() in (tmp_path / "backups" / "blobs" / f["sha256"]).read_bytes() for f in newest["files"].values()
    )
    assert blobs_holding_secret() > 0  # the older snapshot still holds it
    service.rewrite_history()
    assert len(target.snapshots()) == 1 and blobs_holding_secret() == 0
    assert not service.status()["history_holds_redacted"]


@pytest.mark.slow
def test_a_studio_on_an_empty_disk_restores_its_votes_from_the_hub_then_serves(tmp_path, standin):
    """The Space scenario: votes through the REST API, backed up on a schedule, the process killed (-9), the disk
    wiped, a restart: every vote acknowledged before the last backup comes back, and the studio says so."""
    env = {
        "STUDIO_BACKUP_REPO": "ada/space-data",
        "STUDIO_BACKUP_EVERY": "10",
        "HF_TOKEN": TOKEN,
        "HF_ENDPOINT": standin.url,
        "HF_HUB_OFFLINE": "0",
        "HF_HOME": str(tmp_path / "hf-home"),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    srv = Server(tmp_path / "data", free_port())
    try:
        srv.start("--model", "tiny")
        assert "no backup in ada/space-data yet" in srv.log()
        for i in range(40):
            reply = httpx.post(
                srv.url + "/api/votes",
                json={"prompt": f"question {i}", "answer_a": "x", "answer_b": "y", "outcome": "a"},
                timeout=10,
            )
            assert reply.status_code == 201, reply.text
        health = wait_for(
            lambda: (
                (h := httpx.get(srv.url + "/api/health", timeout=10).json())["backup"]["last_good_at"]
                and not h["backup"]["pending"]
                and h
            ),
            timeout=60,
        )
        assert health["backup"]["target"] == "ada/space-data" and health["backup"]["failures"] == 0
        metrics = httpx.get(srv.url + "/metrics", timeout=10).text
        assert "studio_backup_seconds_since_last_good" in metrics
        srv.process.send_signal(signal.SIGKILL)
        srv.process.wait()
        import shutil

        shutil.rmtree(srv.data_dir)
        srv.start("--model", "tiny")
        assert "restored 40 votes, 0 versions from ada/space-data@" in srv.log()
        figures = httpx.get(srv.url + "/metrics", timeout=10).text
        assert "studio_votes 40" in figures
    finally:
        srv.stop()
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


def test_a_snapshot_from_an_older_schema_is_migrated_on_restore(tmp_path, monkeypatch):
    import storage.db

    shipped = storage.db.migration_files()
    monkeypatch.setattr(storage.db, "migration_files", lambda: shipped[:-1])  # a studio one migration behind
    old = Database(tmp_path / "old" / "studio.duckdb")
    assert old.schema_version == shipped[-2][0]
    vote_in_an_older_schema(old, "asked before the upgrade")
    BackupService(old, tmp_path / "old", DirTarget(tmp_path / "backups"), every=300).backup_now("old studio")
    old.close()
    monkeypatch.setattr(storage.db, "migration_files", lambda: shipped)  # the upgraded studio restores
    assert restore(DirTarget(tmp_path / "backups"), tmp_path / "new").votes == 1
    new = Database(tmp_path / "new" / "studio.duckdb")
    try:
        assert new.schema_version == shipped[-1][0]
        assert new.query("SELECT content FROM messages WHERE role = 'user'")[0]["content"] == "asked before the upgrade"
    finally:
        new.close()


def test_checkpoints_are_left_out_unless_asked_and_then_only_a_running_jobs_newest(tmp_path):
    from core.share.backup import data_files

    run = tmp_path / "data" / "runs" / "7"
    for step in (2, 10):
        (run / f"checkpoint-{step}").mkdir(parents=True)
        (run / f"checkpoint-{step}" / "adapter_model.safetensors").write_bytes(b"w" * step)
    (run / "metrics.jsonl").write_text("{}\n")
    (tmp_path / "data" / "models" / "base").mkdir(parents=True)
    (tmp_path / "data" / "models" / "base" / "model.safetensors").write_bytes(b"base")
    assert set(data_files(tmp_path / "data")) == {"runs/7/metrics.jsonl"}
    assert set(data_files(tmp_path / "data", [run])) == {
        "runs/7/metrics.jsonl",
        "runs/7/checkpoint-10/adapter_model.safetensors",
    }
