"""services/errors.py: one mapping from any error to (status, code, message), used by the API's
JSON handlers and the web pages alike (they had drifted: a file over the cap was 413 in the API
and 422 on pages)."""

from __future__ import annotations

import pytest
from arena_testing import add_participant
from database_testing import reset_caches
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import IntegrityError, OperationalError
from starlette.exceptions import HTTPException

from db.session import new_session
from harness.errors import FileTooLargeError, FormatError, ImageError, PlatformError
from services.errors import ConflictError, QuotaError, StorageError, describe
from services.submissions.scoring import score_submission
from services.submissions.state import claim


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (QuotaError("q"), 429, "quota_exceeded"),
        (ConflictError("c"), 409, "conflict"),
        (StorageError("s"), 507, "insufficient_storage"),
        (FileTooLargeError("big"), 413, "file_too_large"),
        (FormatError("bad"), 422, "invalid_file"),
        (ImageError("img"), 422, "image_invalid"),
        (PlatformError("down"), 503, "platform_error"),
        (HTTPException(404, "Not Found"), 404, "not_found"),
        (HTTPException(405, "Method Not Allowed"), 405, "method_not_allowed"),
        (HTTPException(418, "teapot"), 418, "http_error"),
        (OperationalError("SELECT 1", {}, Exception("down")), 503, "database_unavailable"),
        (IntegrityError("INSERT", {}, Exception("dup")), 409, "conflict"),
    ],
)
def test_each_error_class_has_one_status_and_code(exc, status, code):
    problem = describe(exc)
    assert (problem.status, problem.code) == (status, code)
    assert problem.body() == {"error": {"code": code, "message": problem.message}}


def test_request_validation_names_the_field_and_unknown_errors_are_not_described():
    exc = RequestValidationError([{"loc": ("body", "tier"), "msg": "Field required", "type": "missing"}])
    assert describe(exc).message == "tier: Field required" and describe(exc).status == 422
    assert describe(ValueError("a bug")) is None  # the caller answers 500, without details


def test_a_file_over_the_cap_is_413_on_a_page_as_in_the_api(seeded, tmp_path, monkeypatch):
    """A stored result read again under a cap lowered since its upload: the picture route answers
    413 ``file_too_large``, the API's status for the same error (it was 422 on pages)."""
    from arena_testing import download_and_solve

    alice = add_participant(seeded, "alice")
    result = download_and_solve(seeded, "dev", tmp_path)
    r = seeded.post(
        "/api/v1/submissions", data={"tier": "dev"}, files={"file": ("r.h5", result.read_bytes())}, headers=alice
    )
    assert r.status_code == 202, r.text
    sid = r.json()["id"]
    with new_session() as s:
        score_submission(s, claim(s, sid, worker="test"))
    monkeypatch.setenv("EDX_MAX_UPLOAD_BYTES", "1024")
    reset_caches()
    r = seeded.get(f"/submissions/{sid}/scenes/dev-s0/maps.png", headers=alice)
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "file_too_large"
