"""One exception hierarchy for the whole studio.

Every error a user can cause or meet carries a stable ``code`` (for the API, tests and docs), a
message that says what went wrong, and a ``hint`` that says what to do about it. UIs and the REST API
map these to messages and HTTP statuses; nothing else should need to pattern-match on text.
"""

from __future__ import annotations


class StudioError(Exception):
    """Base class: ``code`` is stable, ``message`` explains, ``hint`` tells the user what to do."""

    code = "studio_error"
    http_status = 500

    def __init__(self, message: str, *, hint: str = "", code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "hint": self.hint}

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(StudioError):
    """A setting from the CLI or environment is invalid."""

    code = "config_invalid"
    http_status = 400


class ValidationError(StudioError):
    """Input from a user (form, API body, file) is malformed."""

    code = "invalid_input"
    http_status = 422


class PayloadTooLarge(ValidationError):
    code = "payload_too_large"
    http_status = 413


class NotFound(StudioError):
    code = "not_found"
    http_status = 404


class Conflict(StudioError):
    code = "conflict"
    http_status = 409


class PermissionDenied(StudioError):
    code = "forbidden"
    http_status = 403


class Unauthenticated(PermissionDenied):
    """No (valid) credentials where an account is needed: HTTP 401, so clients know to log in."""

    code = "unauthorized"
    http_status = 401


class TooManyAttempts(PermissionDenied):
    """Too many failed logins for an account or from one address: HTTP 429 with ``retry_after`` seconds."""

    code = "too_many_attempts"
    http_status = 429

    def __init__(self, message: str, *, retry_after: int, hint: str = "") -> None:
        super().__init__(message, hint=hint or f"wait {retry_after} s and try again")
        self.retry_after = retry_after


class ModelError(StudioError):
    """A model could not be provisioned, found or loaded."""

    code = "model_unavailable"
    http_status = 503


class StorageError(StudioError):
    """The database could not be opened, migrated or written."""

    code = "storage_error"
    http_status = 500


class Busy(StudioError):
    """Every generation slot and the waiting line are full: try again in a moment (HTTP 503)."""

    code = "busy"
    http_status = 503
