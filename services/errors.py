"""Service-level errors: each maps to one HTTP status and a stable code (design §8)."""

from __future__ import annotations

__all__ = [
    "AuthError",
    "ConflictError",
    "ForbiddenError",
    "NotFoundError",
    "QuotaError",
    "ServiceError",
    "StorageError",
    "TooLargeError",
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
