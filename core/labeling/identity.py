"""Who is labeling: the local user, team accounts from a users file or env, or a Hugging Face login.

Local mode (the default) has one user, ``local``, who is an admin: nobody has to log in on their own
machine. Team mode reads accounts from ``STUDIO_USERS_FILE`` (one ``name:hash:role`` per line) and/or
``STUDIO_USERS`` (the same entries separated by commas). Passwords are stored hashed (PBKDF2-SHA256, 600 000
iterations, OWASP's current figure): ``launch.py hash-password`` prints the ``pbkdf2_sha256$...`` string to paste;
plain-text or weaker entries are refused at start with that command in the message.
On a Space, people who log in with Hugging Face become labelers (admins listed in ``STUDIO_ADMINS``).

Logins are throttled per account and per client address (:class:`LoginThrottle`), and an unknown name costs
the same hashing work as a wrong password, so neither guessing nor timing tells which accounts exist.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import math
import os
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import duckdb

from core.config import Settings
from core.errors import ConfigError, PermissionDenied, TooManyAttempts, ValidationError
from core.labeling.tokens import TokenVerifier
from core.labeling.users import ROLES, User
from storage.db import Database, one_row, one_value

LOCAL_USER = "local"
_PBKDF2_ITERATIONS = 600_000  # OWASP 2023+ for PBKDF2-HMAC-SHA256
HASH_COMMAND = ".venv/bin/python launch.py hash-password"
_SEEN_TTL_S = 60.0  # a known user's row is re-read (and last_seen_at bumped) at most once a minute
_VERIFIED_TTL_S = 300.0  # a checked password is not re-hashed (pbkdf2, ~0.1 s) for five minutes


@dataclass(frozen=True)
class Account:
    name: str
    secret: str  # pbkdf2_sha256$iterations$salt$hash
    role: str


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, _PBKDF2_ITERATIONS)
    return "$".join(
        ["pbkdf2_sha256", str(_PBKDF2_ITERATIONS), base64.b64encode(salt).decode(), base64.b64encode(digest).decode()]
    )


def check_password(password: str, secret: str) -> bool:
    """Constant-time check of a password against a ``pbkdf2_sha256$iterations$salt$hash`` string."""
    _, iterations, salt, expected = secret.split("$", 3)
    digest = hashlib.pbkdf2_hmac(
        "sha256", password.encode("utf-8", "surrogatepass"), base64.b64decode(salt), int(iterations)
    )
    return hmac.compare_digest(base64.b64encode(digest).decode(), expected)


def _strong_hash(secret: str) -> bool:
    """A PBKDF2-SHA256 hash of at least the current iteration count (what hash_password writes)."""
    parts = secret.split("$")
    try:
        return (
            len(parts) == 4
            and parts[0] == "pbkdf2_sha256"
            and int(parts[1]) >= _PBKDF2_ITERATIONS
            and len(base64.b64decode(parts[2], validate=True)) >= 16
            and len(base64.b64decode(parts[3], validate=True)) == 32
        )
    except ValueError:
        return False


@functools.cache
def _dummy_secret() -> str:
    """Checked when a name is unknown, so that costs the same as a wrong password (no enumeration by timing)."""
    return hash_password(secrets.token_urlsafe(16))


def parse_accounts(lines: list[str], origin: str) -> dict[str, Account]:
    """Parse ``name:password:role`` entries; blank lines and ``#`` comments are skipped."""
    accounts: dict[str, Account] = {}
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) != 3 or not parts[0] or not parts[1]:
            raise ConfigError(
                f"{origin} line {number} is not 'name:password:role'",
                hint="write one account per line, e.g. ada:s3cret:admin",
            )
        name, secret, role = (p.strip() for p in parts)
        if role not in ROLES:
            raise ConfigError(f"{origin} line {number}: unknown role {role!r}", hint="use admin or labeler")
        if not _strong_hash(secret):
            raise ConfigError(
                f"{origin} line {number}: the password of {name!r} is not a current password hash "
                "(plain text, or a hash from an older version)",
                hint=f"run `{HASH_COMMAND}`, type the password, and paste the printed "
                "pbkdf2_sha256$... string in its place",
            )
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
    if settings.auth_mode == "team" and not accounts and not oauth_configured(env):
        raise ConfigError(
            "Team mode has no accounts",
            hint="add lines to the users file or set STUDIO_USERS; on "
            "a Hugging Face Space, 'hf_oauth: true' in the Space metadata enables sign-in instead",
        )
    return accounts


def check_accounts(settings: Settings) -> None:
    """Refuse a bad team configuration (plain-text passwords, unknown roles, no accounts) at once, before the
    studio provisions a model: the default model's conversion takes ~15 s, and the error came only after it."""
    if settings.auth_mode == "team":
        load_accounts(settings)


def oauth_configured(env: Mapping[str, str] | None = None) -> bool:
    """Hugging Face sign-in is set up the way a Space with ``hf_oauth: true`` sets it up (the variables Gradio's
    real OAuth flow reads)."""
    env = os.environ if env is None else env
    return (
        env.get("SYSTEM") == "spaces"
        and bool(env.get("SPACE_ID"))
        and all(env.get(k) for k in ("OAUTH_CLIENT_ID", "OAUTH_CLIENT_SECRET", "OAUTH_SCOPES", "OPENID_PROVIDER_URL"))
    )


def space_admins(env: Mapping[str, str] | None = None) -> set[str]:
    env = os.environ if env is None else env
    return {n.strip() for n in env.get("STUDIO_ADMINS", "").split(",") if n.strip()}


AI_PREFIX = "ai:"  # labeler names of AI judges (core.judging.judges); people cannot take them


def ensure_user(db: Database, name: str, role: str, source: str) -> User:
    """The user's row, created on first sight; the role follows the accounts file if it changed.

    Written through the database's serialised writer (:meth:`Database.write`): a new session's first page
    load sends several requests at once, and as parallel transactions they collided on the same row
    (``TransactionException: Conflict on update!``, or a duplicate-name insert) instead of taking turns.
    """
    if name.startswith(AI_PREFIX):
        raise ValidationError(
            f"Names starting with {AI_PREFIX!r} are kept for AI judges ({name!r})", hint="pick another name"
        )

    seen = db.query(
        "SELECT id, role, now() - last_seen_at < INTERVAL 60 SECOND AS recent FROM users WHERE name = ?", [name]
    )
    if seen and seen[0]["role"] == role and seen[0]["recent"]:
        return User(int(seen[0]["id"]), name, role)  # seen this minute: no write (a page load sends many requests)

    def upsert(cur: duckdb.DuckDBPyConnection) -> int:
        row = one_row(cur.execute("SELECT id FROM users WHERE name = ?", [name]))
        if row is None:
            return int(
                one_value(
                    cur.execute(
                        "INSERT INTO users (name, role, source, last_seen_at) VALUES (?, ?, ?, now()) RETURNING id",
                        [name, role, source],
                    )
                )
            )
        cur.execute("UPDATE users SET role = ?, last_seen_at = now() WHERE id = ?", [role, row["id"]])
        return int(row["id"])

    return User(db.write(upsert), name, role)


def ensure_ai_labeler(db: Database, name: str) -> User:
    """The labeler row of an AI judge (kind 'ai', created on first use): its labels stay apart from people's."""
    if not name.startswith(AI_PREFIX):
        raise ValidationError(f"AI judge names start with {AI_PREFIX!r}, got {name!r}", hint="see core.judging.judges")
    with db.transaction() as cur:
        row = one_row(cur.execute("SELECT id, kind FROM users WHERE name = ?", [name]))
        if row is None:
            user_id = one_value(
                cur.execute(
                    "INSERT INTO users (name, role, source, kind) VALUES (?, 'labeler', 'judge', 'ai') RETURNING id",
                    [name],
                )
            )
        elif row["kind"] != "ai":
            raise ValidationError(f"{name!r} is a person's account, not an AI judge", hint="rename that account")
        else:
            user_id = row["id"]
    return User(user_id, name, "labeler")


class LoginThrottle:
    """Failed logins per account and per client address, with a growing lockout.

    The ``account_limit``-th failure for an account, or the ``client_limit``-th from an address (a team behind
    one NAT shares it), locks that key for ``base_s`` seconds, doubling with every further failure up to
    ``max_s``. While locked, every login for the key is refused before any password is checked (429 with
    Retry-After). A success clears the account's count (not the address's: one valid account must not reset
    the guessing budget of a whole address); failures are forgotten after ``forget_s`` without another one.
    Kept in memory: a restart forgives.
    """

    def __init__(
        self,
        account_limit: int = 5,
        client_limit: int = 20,
        base_s: float = 30.0,
        max_s: float = 900.0,
        forget_s: float = 3600.0,
    ) -> None:
        self.limit = {"account": account_limit, "client": client_limit}
        self.base_s, self.max_s, self.forget_s = base_s, max_s, forget_s
        # key -> (failures, locked until, last failure), monotonic seconds
        self._failures: dict[tuple[str, str], tuple[int, float, float]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _keys(name: str, client: str | None) -> list[tuple[str, str]]:
        return [("account", name)] + ([("client", client)] if client else [])

    def check(self, name: str, client: str | None) -> None:
        """Raise :class:`TooManyAttempts` while the account or the address is locked."""
        now = time.monotonic()
        with self._lock:
            waits = [
                until - now
                for key in self._keys(name, client)
                for _, until, _ in [self._failures.get(key, (0, 0.0, 0.0))]
                if until > now
            ]
        if waits:
            raise TooManyAttempts(
                "Too many failed logins: this account or address is locked for now",
                retry_after=max(1, math.ceil(max(waits))),
            )

    def failed(self, name: str, client: str | None) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._failures) > 100_000:  # a flood of made-up names: forget expired entries
                self._failures = {k: v for k, v in self._failures.items() if v[1] > now}
            for key in self._keys(name, client):
                count, _, last = self._failures.get(key, (0, 0.0, 0.0))
                count = 1 if now - last > self.forget_s else count + 1
                over = count - self.limit[key[0]]
                until = now + min(self.max_s, self.base_s * 2 ** min(over, 30)) if over >= 0 else 0.0
                self._failures[key] = (count, until, now)

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._failures.pop(("account", name), None)


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
        self.throttle = LoginThrottle()
        self._tokens: TokenVerifier | None = None

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

    def authenticate(self, name: str, password: str, client: str | None = None) -> bool:
        """True when ``password`` is the account's. Raises :class:`TooManyAttempts` while the account or the
        client address is locked; unknown names cost the same hashing work as wrong passwords."""
        self.throttle.check(name, client)
        account = self.accounts.get(name)
        secret = account.secret if account is not None else _dummy_secret()
        # keyed by a digest of the secret and the password, so a changed users file is re-checked
        key = (name, hashlib.sha256(f"{secret}\0{password}".encode("utf-8", "surrogatepass")).digest())
        checked = self._verified.get(key)
        if account is not None and checked is not None and time.monotonic() - checked < _VERIFIED_TTL_S:
            return True
        if not check_password(password, secret) or account is None:
            self.throttle.failed(name, client)
            return False
        self.throttle.succeeded(name)
        self._verified[key] = time.monotonic()
        return True

    def user(self, name: str | None) -> User:
        """The user behind a request; in local mode everyone is the local admin."""
        if not self.team_mode:
            return self._ensure(LOCAL_USER, "admin", "local")
        if not name:
            raise PermissionDenied(
                "You are not logged in (or your session expired)", hint="log in again; nothing you had saved is lost"
            )
        account = self.accounts.get(name)
        if account is not None:
            return self._ensure(name, account.role, "file")
        raise PermissionDenied(f"Unknown user {name!r}", hint="ask an admin to add you to the users file")

    def token_user(self, token: str, client: str | None = None) -> User:
        """The user a personal API token acts as (core.labeling.tokens); bad tokens are throttled like passwords."""
        if self._tokens is None:
            self._tokens = TokenVerifier(self.db)
        key = "token:" + token[:12]
        self.throttle.check(key, client)
        try:
            return self._tokens.user(token)
        except PermissionDenied:
            self.throttle.failed(key, client)
            raise

    def oauth_user(self, name: str) -> User:
        """Someone signed in with Hugging Face: a labeler, or an admin when listed in ``STUDIO_ADMINS``. A name
        that is also a team account is refused, so a Hub user cannot take over that account's data or role."""
        if not self.team_mode:
            return self.user(None)
        if name in self.accounts:
            raise PermissionDenied(
                f"{name!r} is the name of a team account",
                hint="log in with that account's password, or ask an admin to rename it",
            )
        return self._ensure(name, "admin" if name in self.admins else "labeler", "oauth")

    def require_admin(self, name: str | None) -> User:
        user = self.user(name)
        if not user.is_admin:
            raise PermissionDenied("Only admins can do this", hint="ask an admin")
        return user
