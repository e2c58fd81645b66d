"""Personal API tokens: scripts and notebooks call the REST API as their owner, without a password.

A token is ``rlhf_`` + 43 random URL-safe characters (256 bits), shown once at creation; the database keeps
only its SHA-256 (a fast hash is enough for a random secret of that size, unlike passwords). Each token has a
scope: ``label`` acts as a labeler even when its owner is an admin, ``admin`` acts as an admin only while the
owner still is one. Owners list and revoke their tokens on the console's Account page; admins revoke anyone's.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from core.errors import NotFound, PermissionDenied, Unauthenticated, ValidationError
from core.labeling.feedback import clean_text
from core.labeling.users import User
from storage.db import Database, one_value

PREFIX = "rlhf_"
SCOPES = ("label", "admin")
_LAST_USED_EVERY_S = 60.0  # last_used_at is written at most once a minute per token (no write per vote)


@dataclass(frozen=True)
class NewToken:
    id: int
    token: str  # the only time it is seen
    name: str
    scope: str


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def create_token(db: Database, owner: User, name: str, scope: str = "label") -> NewToken:
    """A new token for ``owner``; labelers may only create ``label`` tokens."""
    name = clean_text(name, "name", max_chars=100).strip()
    if scope not in SCOPES:
        raise ValidationError(f"Unknown token scope {scope!r}", hint="use 'label' or 'admin'")
    if scope == "admin" and not owner.is_admin:
        raise PermissionDenied("Only admins can create admin tokens", hint="create a 'label' token")
    token = PREFIX + secrets.token_urlsafe(32)
    token_id = db.write(
        lambda cur: one_value(
            cur.execute(
                "INSERT INTO api_tokens (user_id, name, scope, token_hash, prefix) VALUES (?, ?, ?, ?, ?) RETURNING id",
                [owner.id, name, scope, _digest(token), token[:12]],
            )
        )
    )
    return NewToken(token_id, token, name, scope)


def list_tokens(db: Database, viewer: User, everyone: bool = False) -> list[dict[str, Any]]:
    """The viewer's tokens (never the secrets); ``everyone`` lists all users' tokens (admins)."""
    if everyone and not viewer.is_admin:
        raise PermissionDenied("Only admins can see everyone's tokens", hint="list your own")
    return db.query(
        "SELECT t.id, u.name AS owner, t.name, t.scope, t.prefix, t.created_at, t.last_used_at,"
        " t.revoked_at FROM api_tokens t JOIN users u ON u.id = t.user_id"
        " WHERE ? OR t.user_id = ? ORDER BY t.revoked_at IS NOT NULL, t.id DESC",
        [everyone, viewer.id],
    )


def revoke_token(db: Database, actor: User, token_id: int) -> None:
    """Revoke a token: its owner or an admin; revoking twice is harmless."""
    rows = db.query("SELECT user_id FROM api_tokens WHERE id = ?", [token_id])
    if not rows:
        raise NotFound(f"Token {token_id} does not exist", hint="pick one from the list")
    if rows[0]["user_id"] != actor.id and not actor.is_admin:
        raise PermissionDenied("You can only revoke your own tokens", hint="ask an admin")
    db.write(
        lambda cur: cur.execute(
            "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()),"
            " revoked_by = coalesce(revoked_by, ?) WHERE id = ?",
            [actor.id, token_id],
        )
    )


class TokenVerifier:
    """Bearer token -> the user it acts as. Remembers when it last wrote ``last_used_at`` for each token."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._written: dict[int, float] = {}
        self._lock = threading.Lock()

    def user(self, token: str) -> User:
        rows = (
            self.db.query(
                "SELECT t.id, t.scope, u.id AS user_id, u.name, u.role FROM api_tokens t JOIN users u ON u.id ="
                " t.user_id"
                " WHERE t.token_hash = ? AND t.revoked_at IS NULL",
                [_digest(token)],
            )
            if token.startswith(PREFIX)
            else []
        )
        if not rows:
            raise Unauthenticated(
                "This API token is unknown or revoked", hint="create a new one on the console's Account page"
            )
        row = rows[0]
        now = time.monotonic()
        with self._lock:
            due = now - self._written.get(row["id"], -_LAST_USED_EVERY_S) >= _LAST_USED_EVERY_S
            if due:
                self._written[row["id"]] = now
        if due:
            self.db.write(
                lambda cur: cur.execute("UPDATE api_tokens SET last_used_at = now() WHERE id = ?", [row["id"]])
            )
        role = "admin" if row["scope"] == "admin" and row["role"] == "admin" else "labeler"
        return User(row["user_id"], row["name"], role)
