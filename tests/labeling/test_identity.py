"""Accounts, password hashes and roles."""

import subprocess
import sys

import pytest

from core.config import load_settings
from core.errors import ConfigError, PermissionDenied
from core.labeling.identity import Directory, check_password, hash_password, parse_accounts
from storage.db import Database
from tests.support import ROOT
from tests.support.studios import users_file


def test_hashed_passwords_check_at_owasp_strength():
    hashed = hash_password("s3cret")
    assert hashed.startswith("pbkdf2_sha256$600000$") and check_password("s3cret", hashed)
    assert not check_password("wrong", hashed)


@pytest.mark.parametrize("secret", ["plain", "pbkdf2_sha256$200000$c2FsdHNhbHRzYWx0c2FsdA==$" + "A" * 44])
def test_plain_text_and_weak_hashes_are_refused_with_the_command_that_hashes(secret):
    with pytest.raises(ConfigError, match="not a current password hash") as refused:
        parse_accounts([f"ada:{secret}:admin"], "users.txt")
    assert "launch.py hash-password" in refused.value.hint


def test_cli_hash_password_matches():
    out = subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), "hash-password"],
        input="pw\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and check_password("pw", out.stdout.strip())


@pytest.mark.parametrize("line, error", [("ada:pw", "name:password:role"), ("ada:pw:boss", "unknown role")])
def test_bad_account_lines_say_which_line(line, error):
    with pytest.raises(ConfigError, match=error):
        parse_accounts(["# comment", line], "users.txt")


def test_team_directory_roles_and_unknown_users(tmp_path):
    users = tmp_path / "users.txt"
    users_file(users, "ada:a:admin", "bob:b:labeler")
    settings = load_settings(
        {"data_dir": str(tmp_path)}, env={"STUDIO_AUTH_MODE": "team", "STUDIO_USERS_FILE": str(users)}
    )
    db = Database(tmp_path / "s.duckdb")
    directory = Directory(settings, db)
    assert directory.authenticate("ada", "a") and not directory.authenticate("ada", "b")
    assert directory.user("ada").is_admin and not directory.user("bob").is_admin
    with pytest.raises(PermissionDenied, match="session expired"):
        directory.user(None)
    with pytest.raises(PermissionDenied, match="Only admins"):
        directory.require_admin("bob")
    db.close()


def test_local_mode_is_one_admin_without_login(tmp_path):
    db = Database(tmp_path / "s.duckdb")
    user = Directory(load_settings({"data_dir": str(tmp_path)}, env={}), db).user(None)
    assert (user.name, user.is_admin) == ("local", True)
    db.close()


def test_a_new_users_parallel_first_requests_never_conflict(tmp_path):
    """A new session's first page load sends several requests at once; each resolves the same new user."""
    import threading

    from core.labeling.identity import ensure_user

    db = Database(tmp_path / "s.duckdb")
    errors: list[BaseException] = []
    start = threading.Barrier(16)

    def first_request() -> None:
        start.wait()
        try:
            for _ in range(5):  # the first sight inserts, the rest update the same row at once
                ensure_user(db, "cat", "labeler", "file")
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=first_request) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert db.query("SELECT name, role FROM users WHERE name = 'cat'") == [{"name": "cat", "role": "labeler"}]
    db.close()


@pytest.mark.slow  # >= 3 s (a server, a child process or a CLI run): not in make test-fast
def test_a_plain_text_password_stops_the_server_before_any_model_is_provisioned(tmp_path):
    """Fail fast: the accounts are checked before the (default) model's conversion, not after it."""
    import os
    import subprocess
    import sys
    import time

    from tests.support import ROOT

    users = tmp_path / "users.txt"
    users.write_text("ada:secret:admin\n")
    env = {**os.environ, "STUDIO_AUTH_MODE": "team", "STUDIO_USERS_FILE": str(users)}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), "--data-dir", str(tmp_path / "data"), "--model", "default"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "not a current password hash" in done.stderr
    assert not (tmp_path / "data" / "models").exists() and time.monotonic() - started < 60
