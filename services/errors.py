"""Service-level errors, each with one HTTP status and a stable code (design §8), and
:func:`describe`: the one mapping from any error the server answers with to ``(status, code,
message)``, used by the API's JSON handlers and the web pages alike."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from starlette.exceptions import HTTPException

from harness.errors import EdxArenaError, FileTooLargeError

__all__ = [
    "AuthError",
    "ConflictError",
    "ForbiddenError",
    "NotFoundError",
    "Problem",
    "QuotaError",
    "ServiceError",
    "StorageError",
    "TooLargeError",
    "describe",
    "validation_message",
]


class ServiceError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFoundError(ServiceError):
    status, code = 404, "not_found"


class AuthError(ServiceError):
    status, code = 401, "unauthorized"


class ForbiddenError(ServiceError):
    status, code = 403, "forbidden"


class QuotaError(ServiceError):
    status, code = 429, "quota_exceeded"


class TooLargeError(ServiceError):
    status, code = 413, "file_too_large"


class ConflictError(ServiceError):
    status, code = 409, "conflict"


class StorageError(ServiceError):
    status, code = 507, "insufficient_storage"


class UnavailableError(ServiceError):
    """Try again shortly: the server is in a transient state (e.g. boards being rebuilt)."""

    status, code = 503, "unavailable"


#: A refused value is quoted back when it is this short: enough for a name or a number.
_QUOTED_CHARS = 40


def validation_message(errors: list[dict]) -> str:
    """One line for a request's validation errors (pydantic's ``errors()``), each naming the
    field, the rule and, when it is short, the value refused: ``tier: Input should be 'public',
    'dev' or 'standard' (got 'gold')``."""
    parts = []
    for e in errors:
        where = ".".join(str(p) for p in e["loc"] if p not in ("body", "query", "path", "header", "cookie"))
        text = f"{where}: {e['msg']}" if where else e["msg"]
        value = e.get("input")
        if e.get("type") != "missing" and isinstance(value, str | int | float) and not isinstance(value, bool):
            shown = repr(value)
            if len(shown) <= _QUOTED_CHARS:
                text += f" (got {shown})"
        parts.append(text)
    return "; ".join(parts)


@dataclass(frozen=True)
class Problem:
    """What an error becomes in an answer: ``{"error": {"code", "message"}}`` with ``status``."""

    status: int
    code: str
    message: str

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


#: Status of a harness error by class, most specific first; others are the file's fault (422).
_HARNESS_STATUS = ((FileTooLargeError, 413),)
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def describe(exc: Exception) -> Problem | None:
    """The status, stable code and user-safe message of ``exc``; None for an error no rule
    covers (a bug: the caller answers 500 without details)."""
    if isinstance(exc, ServiceError):
        return Problem(exc.status, exc.code, exc.message)
    if isinstance(exc, EdxArenaError):
        status = next((s for cls, s in _HARNESS_STATUS if isinstance(exc, cls)), None)
        if status is None:
            status = 503 if exc.code == "platform_error" else 422
        return Problem(status, exc.code, exc.message)
    if isinstance(exc, RequestValidationError):
        return Problem(422, "invalid_request", validation_message(exc.errors()))
    if isinstance(exc, HTTPException):
        return Problem(exc.status_code, _HTTP_CODES.get(exc.status_code, "http_error"), str(exc.detail))
    if isinstance(exc, OperationalError):
        return Problem(503, "database_unavailable", "the database is unavailable; retry in a few seconds")
    if isinstance(exc, DataError):
        # SQLSTATE class 22: a value the request carried (PostgreSQL refuses NUL in text, and
        # numbers beyond a column's range), never the server's state.
        return Problem(
            422,
            "invalid_request",
            "a value in the request cannot be stored (a NUL character, or a number out of range)",
        )
    if isinstance(exc, IntegrityError):
        return Problem(409, "conflict", "the request conflicts with a concurrent change; retry it")
    return None
