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
