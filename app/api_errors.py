"""The REST API's one error answer: ``{"error": {"code", "message", "hint"}}`` (app.schemas.ErrorBody)."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse


def printable(value: Any) -> Any:
    """Echoed input may hold lone surrogates, which no UTF-8 response can carry: spelled out as \\udxxx."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {printable(k): printable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [printable(v) for v in value]
    return value


def error_response(status: int, code: str, message: str, hint: str = "", **extra: Any) -> JSONResponse:
    """The one error answer of the REST API (:class:`ErrorBody`), with a code a client can act on."""
    return JSONResponse(printable({"error": {"code": code, "message": message, "hint": hint, **extra}}), status)
