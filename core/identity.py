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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from core.config import Settings
from core.errors import ConfigError, PermissionDenied
from storage.db import Database

LOCAL_USER = "local"
ROLES = ("admin", "labeler")
_PBKDF2_ITERATIONS = 200_000
_SEEN_TTL_S = 60.0        # a known user's row is re-read (and last_seen_at bumped) at most once a minute
_VERIFIED_TTL_S = 300.0   # a checked password is not re-hashed (pbkdf2, ~0.1 s) for five minutes


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
        # Per-request work must stay small (20 labelers voting at once): remember users already seen
        # and passwords already checked instead of a DB commit and a pbkdf2 hash on every request.
        self._seen: dict[tuple[str, str, str], tuple[User, float]] = {}
        self._verified: dict[tuple[str, bytes], float] = {}

    def _ensure(self, name: str, role: str, source: str) -> User:
        key = (name, role, source)
        cached = self._seen.get(key)
        now = time.monotonic()
        if cached is not None and now - cached[1] < _SEEN_TTL_S:
            return cached[0]
        user = ensure_user(self.db, name, role, source)
        self._seen[key] = (user, now)
        return user

    def api_labeler(self, name: str) -> User:
        """Local mode: a labeler named by an API client (created on first sight)."""
        return self._ensure(name.strip()[:100], "labeler", "api")

    @property
    def team_mode(self) -> bool:
        return self.settings.auth_mode == "team"

    def authenticate(self, name: str, password: str) -> bool:
        account = self.accounts.get(name)
        if account is None:
            return False
        # keyed by a digest of the secret and the password, so a changed users file is re-checked
        key = (name, hashlib.sha256(f"{account.secret}\0{password}".encode()).digest())
        checked = self._verified.get(key)
        if checked is not None and time.monotonic() - checked < _VERIFIED_TTL_S:
            return True
        if not check_password(password, account.secret):
            return False
        self._verified[key] = time.monotonic()
        return True

    def user(self, name: str | None) -> User:
        """The user behind a request; in local mode everyone is the local admin."""
        if not self.team_mode:
            return self._ensure(LOCAL_USER, "admin", "local")
        if not name:
            raise PermissionDenied("You are not logged in (or your session expired)",
                                   hint="log in again; nothing you had saved is lost")
        account = self.accounts.get(name)
        if account is not None:
            return self._ensure(name, account.role, "file")
        if self.settings.on_space:  # Hugging Face login
            return self._ensure(name, "admin" if name in self.admins else "labeler", "oauth")
        raise PermissionDenied(f"Unknown user {name!r}", hint="ask an admin to add you to the users file")

    def require_admin(self, name: str | None) -> User:
        user = self.user(name)
        if not user.is_admin:
            raise PermissionDenied("Only admins can do this", hint="ask an admin")
        return user
