"""Who is labeling: the local user, team accounts from a users file or env, or a Hugging Face login.

Local mode (the default) has one user, ``local``, who is an admin: nobody has to log in on their own
machine. Team mode reads accounts from ``STUDIO_USERS_FILE`` (one ``name:password:role`` per line) and/or
``STUDIO_USERS`` (the same entries separated by commas). Passwords may be stored hashed:
``launch.py hash-password`` prints a ``pbkdf2_sha256$...`` string to paste instead of the plain text.
On a Space, people who log in with Hugging Face become labelers (admins listed in ``STUDIO_ADMINS``).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from core.config import Settings
from core.errors import ConfigError, PermissionDenied
from storage.db import Database

LOCAL_USER = "local"
ROLES = ("admin", "labeler")
_PBKDF2_ITERATIONS = 200_000


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True)
class Account:
    name: str
    secret: str   # plain text or pbkdf2_sha256$iterations$salt$hash
    role: str


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, _PBKDF2_ITERATIONS)
    return "$".join(["pbkdf2_sha256", str(_PBKDF2_ITERATIONS), base64.b64encode(salt).decode(),
                     base64.b64encode(digest).decode()])


def check_password(password: str, secret: str) -> bool:
    if secret.startswith("pbkdf2_sha256$"):
        _, iterations, salt, expected = secret.split("$", 3)
        digest = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
        return hmac.compare_digest(base64.b64encode(digest).decode(), expected)
    return hmac.compare_digest(password.encode(), secret.encode())


def parse_accounts(lines: list[str], origin: str) -> dict[str, Account]:
    """Parse ``name:password:role`` entries; blank lines and ``#`` comments are skipped."""
    accounts: dict[str, Account] = {}
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) != 3 or not parts[0] or not parts[1]:
            raise ConfigError(f"{origin} line {number} is not 'name:password:role'",
                              hint="write one account per line, e.g. ada:s3cret:admin")
        name, secret, role = (p.strip() for p in parts)
        if role not in ROLES:
            raise ConfigError(f"{origin} line {number}: unknown role {role!r}", hint="use admin or labeler")
        accounts[name] = Account(name, secret, role)
    return accounts


def load_accounts(settings: Settings, env: Mapping[str, str] | None = None) -> dict[str, Account]:
    env = os.environ if env is None else env
    accounts: dict[str, Account] = {}
    if settings.users_file:
        path = Path(settings.users_file)
        accounts.update(parse_accounts(path.read_text(encoding="utf-8").splitlines(), str(path)))
    if env.get("STUDIO_USERS"):
        accounts.update(parse_accounts(env["STUDIO_USERS"].split(","), "STUDIO_USERS"))
    if settings.auth_mode == "team" and not accounts and not settings.on_space:
        raise ConfigError("Team mode has no accounts", hint="add lines to the users file or set STUDIO_USERS")
    return accounts


def space_admins(env: Mapping[str, str] | None = None) -> set[str]:
    env = os.environ if env is None else env
    return {n.strip() for n in env.get("STUDIO_ADMINS", "").split(",") if n.strip()}


def ensure_user(db: Database, name: str, role: str, source: str) -> User:
    """The user's row, created on first sight; the role follows the accounts file if it changed."""
    with db.transaction() as cur:
        row = cur.execute("SELECT id, role FROM users WHERE name = ?", [name]).fetchone()
        if row is None:
            user_id = cur.execute("INSERT INTO users (name, role, source, last_seen_at) VALUES (?, ?, ?, now())"
                                  " RETURNING id", [name, role, source]).fetchone()[0]
        else:
            user_id = row[0]
            cur.execute("UPDATE users SET role = ?, last_seen_at = now() WHERE id = ?", [role, user_id])
    return User(user_id, name, role)


class Directory:
    """Resolves logins to users for both UIs and the API."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self.accounts = load_accounts(settings) if settings.auth_mode == "team" else {}
        self.admins = space_admins()

    @property
    def team_mode(self) -> bool:
        return self.settings.auth_mode == "team"

    def authenticate(self, name: str, password: str) -> bool:
        account = self.accounts.get(name)
        return account is not None and check_password(password, account.secret)

    def user(self, name: str | None) -> User:
        """The user behind a request; in local mode everyone is the local admin."""
        if not self.team_mode:
            return ensure_user(self.db, LOCAL_USER, "admin", "local")
        if not name:
            raise PermissionDenied("You are not logged in (or your session expired)",
                                   hint="log in again; nothing you had saved is lost")
        account = self.accounts.get(name)
        if account is not None:
            return ensure_user(self.db, name, account.role, "file")
        if self.settings.on_space:  # Hugging Face login
            return ensure_user(self.db, name, "admin" if name in self.admins else "labeler", "oauth")
        raise PermissionDenied(f"Unknown user {name!r}", hint="ask an admin to add you to the users file")

    def require_admin(self, name: str | None) -> User:
        user = self.user(name)
        if not user.is_admin:
            raise PermissionDenied("Only admins can do this", hint="ask an admin")
        return user
