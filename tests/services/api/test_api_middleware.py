"""services/api/middleware.py: every request body is capped per route, by its declared length
or as it streams.
"""

from __future__ import annotations

from arena_testing import ORG, add_participant
from database_testing import reset_caches
from sqlalchemy import func, select

from db.models import Submission
from db.session import new_session


def _error(r, status: int, code: str, message: str | None = None) -> None:
    assert r.status_code == status, r.text
    body = r.json()["error"]
    assert body["code"] == code
    if message is not None:
        assert body["message"] == message


def _submission_count() -> int:
    with new_session() as s:
        return s.scalar(select(func.count()).select_from(Submission))


def _upload_files(backend) -> list:
    uploads = backend.data_dir / "storage" / "uploads"
    return sorted(p.name for p in uploads.iterdir()) if uploads.exists() else []


def test_oversized_body(seeded, monkeypatch, backend, tmp_path):
    alice = add_participant(seeded, "alice")
    monkeypatch.setenv("EDX_MAX_UPLOAD_BYTES", "1000")
    reset_caches()
    big = b"\0" * 3 * 2**20
    _error(
        seeded.post("/api/v1/submissions", data={"tier": "dev"}, files={"file": ("r.h5", big)}, headers=alice),
        413,
        "file_too_large",
    )
    # Under the header check but over the streamed cap (the multipart envelope hides the file size).
    r = seeded.post("/api/v1/submissions", data={"tier": "dev"}, files={"file": ("r.h5", b"\0" * 5000)}, headers=alice)
    _error(r, 413, "file_too_large", "the file is over the 1000 byte upload cap")
    assert _submission_count() == 0 and _upload_files(backend) == []


def test_chunked_body_over_the_cap_is_cut_off(seeded, monkeypatch, backend):
    alice = add_participant(seeded, "alice")
    monkeypatch.setenv("EDX_MAX_UPLOAD_BYTES", "1000")
    reset_caches()

    def chunks():  # no Content-Length: the cap is enforced while the body streams
        for _ in range(8):
            yield b"\0" * 2**19

    headers = {**alice, "Content-Type": "multipart/form-data; boundary=xyz"}
    r = seeded.post("/api/v1/submissions", content=chunks(), headers=headers)
    _error(r, 413, "file_too_large", "the request body is over the cap for this endpoint (1049576 bytes)")
    assert _submission_count() == 0 and _upload_files(backend) == []


def test_other_bodies_are_capped_too(client):
    r = client.post(
        "/api/v1/admin/participants",
        content=b"{" + b" " * 2**21 + b"}",
        headers={**ORG, "Content-Type": "application/json"},
    )
    _error(r, 413, "file_too_large", "the request body is 2097154 bytes; the cap for this endpoint is 1048576 bytes")
