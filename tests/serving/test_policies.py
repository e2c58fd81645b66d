"""Policy registry: rename and delete by admins, names unique, base protected."""

import pytest

from core.errors import Conflict, NotFound, PermissionDenied, ValidationError
from core.labeling.identity import ensure_user
from core.serving.policies import (
    delete_policy,
    ensure_base_policy,
    get_policy,
    list_policies,
    register_policy,
    rename_policy,
    servable_policies,
)
from storage.db import Database


@pytest.fixture
def db(tmp_path):
    database = Database(tmp_path / "s.duckdb")
    base = ensure_base_policy(database, "tiny")
    register_policy(
        database,
        "v1",
        base,
        "tiny",
        "dpo",
        "/runs/1/adapter",
        data_hash="h" * 64,
        config={"beta": 0.1},
        metrics={"loss": 0.5},
        job_id=1,
    )
    register_policy(database, "rm1", base, "tiny", "reward", None, config={"reward_model_path": "/x"}, job_id=2)
    yield database
    database.close()


def test_versions_are_listed_and_servable(db):
    assert [p["name"] for p in list_policies(db)] == ["base", "v1", "rm1"]
    assert [p["name"] for p in servable_policies(db)] == ["base", "v1"]  # reward models are not chat policies
    assert list_policies(db)[1]["parent"] == "base" and list_policies(db)[1]["config"] == {"beta": 0.1}


def test_admin_renames_and_deletes(db):
    ada = ensure_user(db, "ada", "admin", "t")
    rename_policy(db, ada, "v1", "helpful-v1")
    assert get_policy(db, "helpful-v1")["adapter_path"] == "/runs/1/adapter"
    delete_policy(db, ada, "helpful-v1")
    with pytest.raises(NotFound):
        get_policy(db, "helpful-v1")
    assert db.scalar("SELECT count(*) FROM audit_log WHERE target_table = 'policies'") == 2


def test_rules_for_renaming_and_deleting(db):
    ada, bob = ensure_user(db, "ada", "admin", "t"), ensure_user(db, "bob", "labeler", "t")
    with pytest.raises(PermissionDenied):
        delete_policy(db, bob, "v1")
    with pytest.raises(ValidationError):
        delete_policy(db, ada, "base")
    with pytest.raises(Conflict):
        rename_policy(db, ada, "v1", "rm1")
    with pytest.raises(ValidationError):
        rename_policy(db, ada, "v1", "bad name!")
