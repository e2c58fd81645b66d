"""What a role means: three roles, four scopes, and what being refused looks like.

Three roles: ``anonymous`` (no login, team mode only: local mode has one local admin and nobody else),
``labeler`` and ``admin``. A :class:`Rule` gives every role a scope on one resource:

- ``none``     not at all (401 for anonymous clients, 403 for logged-in ones);
- ``summary``  aggregates and figures that reveal nobody's text, nor paths, endpoints or keys;
- ``own``      the caller's own items only (their votes, feedback, contributions, chats);
- ``all``      everything.

Which resource gets which rule (REST routes, console pages and sections, labeling-app events) is the UIs'
business: the rule table is ``app/access.py``. Core only knows roles, scopes and :func:`grant`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.errors import PermissionDenied, Unauthenticated

ANONYMOUS, LABELER, ADMIN = "anonymous", "labeler", "admin"
ROLES = (ANONYMOUS, LABELER, ADMIN)
NONE, SUMMARY, OWN, ALL = "none", "summary", "own", "all"


@dataclass(frozen=True)
class Rule:
    anonymous: str
    labeler: str
    admin: str = ALL
    why: str = ""

    def for_role(self, role: str) -> str:
        return getattr(self, role)


def role_of(user: Any) -> str:
    """The role of a user (``None`` is an anonymous client)."""
    if user is None:
        return ANONYMOUS
    return ADMIN if user.is_admin else LABELER


def scope_of(user: Any, rule: Rule | None) -> str:
    """The scope ``rule`` gives ``user`` (``none`` without a rule: fail closed)."""
    return NONE if rule is None else rule.for_role(role_of(user))


def grant(user: Any, rule: Rule | None, resource: str, owner: Any = None) -> str:
    """The scope ``rule`` gives ``user``; raises when it is ``none`` (no rule at all: refused, fail closed), or when it
    is ``own`` and ``owner`` (a user id or name) is somebody else."""
    granted = scope_of(user, rule)
    if granted == NONE:
        if user is None:
            raise Unauthenticated(
                "Log in first: this needs a team account",
                hint="send your account (HTTP Basic or a personal API token) and try again",
            )
        if rule is None:
            raise PermissionDenied(
                f"No access rule covers {resource!r}", hint="report this: every surface needs a rule in app/access.py"
            )
        raise PermissionDenied("Only admins can do this", hint="ask an admin")
    if granted == OWN and owner is not None and owner not in (user.id, user.name):
        raise PermissionDenied("You can only see your own items", hint="ask an admin for anyone else's")
    return granted
