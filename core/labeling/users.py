"""A person (or an AI labeler) as every surface sees them: id, name and role.

The one type that identity (who logs in), tokens (personal API tokens) and access (who may do what) share. It
lives apart from ``identity`` so that ``tokens`` can name users without importing the directory that resolves
logins, which itself verifies tokens: no import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass

ROLES = ("admin", "labeler")


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"
