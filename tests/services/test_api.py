"""REST API v1 over the real ASGI stack, on SQLite and PostgreSQL: every denial and bad input
gets its status and exact JSON error, and a rejected upload leaves no row and no file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from arena_testing import ORG, add_participant, download_and_solve, reset_caches
from sqlalchemy import func, select, update

from db.models import ApiToken, Dataset, Submission
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


def test_health_and_tiers(client):
    assert client.get("/api/v1/health").json()["status"] == "ok"
    tiers = client.get("/api/v1/tiers").json()
    assert tiers["count"] == 4
    hidden = next(t for t in tiers["data"] if t["name"] == "hidden")
    assert hidden["downloadable"] is False and hidden["submit_as"] == "container image"
    assert hidden["ranges"]["absorption_correction_error"] == [-2.1, 6.9]


def test_downloads(seeded, tmp_path):
    import h5py

    public = tmp_path / "p.h5"
    public.write_bytes(seeded.get("/api/v1/tiers/public/measurement").content)
    dev = tmp_path / "d.h5"
    dev.write_bytes(seeded.get("/api/v1/tiers/dev/measurement").content)
    with h5py.File(public) as f:
        assert "x_true" in f["scenes/public-s0"] and "seed" not in f.attrs
    with h5py.File(dev) as f:
        assert "x_true" not in f["scenes/dev-s0"] and "seed" not in f.attrs
    _error(
        seeded.get("/api/v1/tiers/hidden/measurement"),
        403,
        "forbidden",
        "the hidden tier's measurements are never downloadable; submit a container image",
    )
    _error(
        seeded.get("/api/v1/tiers/gold/measurement"),
        422,
        "invalid_request",
        "tier: Input should be 'public', 'dev', 'hidden' or 'standard' (got 'gold')",
    )
    _error(
        seeded.get("/api/v1/tiers/standard/measurement"),
        404,
        "not_found",
        "the standard tier has no dataset yet; an organizer must seed it",
    )


def test_submit_valid_result_is_queued(seeded, tmp_path, backend):
    alice = add_participant(seeded, "alice")
    result = download_and_solve(seeded, "dev", tmp_path)
    r = seeded.post(
        "/api/v1/submissions",
        data={"tier": "dev", "method": "nnls"},
        files={"file": ("r.h5", result.read_bytes())},
        headers=alice,
    )
    assert r.status_code == 202, r.text
    sid = r.json()["id"]
    s = seeded.get(f"/api/v1/submissions/{sid}", headers=alice).json()
    assert s["status"] == "queued" and s["tier"] == "dev" and s["method"] == "nnls" and len(s["file_sha256"]) == 64
    assert _upload_files(backend) == [f"{sid}.h5"]


@pytest.mark.parametrize(
    "payload, status, code, message",
    [
        (
            b"junk",
            422,
            "invalid_file",
            "not an HDF5 file (no HDF5 signature found); write the file with h5py or another HDF5 library",
        ),
        (b"", 422, "invalid_file", None),
    ],
)
def test_bad_file_rejected_nothing_left(seeded, backend, payload, status, code, message):
    alice = add_participant(seeded, "alice")
    _error(
        seeded.post("/api/v1/submissions", data={"tier": "dev"}, files={"file": ("r.h5", payload)}, headers=alice),
        status,
        code,
        message,
    )
    assert _submission_count() == 0 and _upload_files(backend) == []


def test_result_for_another_tier_is_refused_by_scene(seeded, tmp_path, backend):
    alice = add_participant(seeded, "alice")
    result = download_and_solve(seeded, "public", tmp_path)
    r = seeded.post(
        "/api/v1/submissions", data={"tier": "dev"}, files={"file": ("r.h5", result.read_bytes())}, headers=alice
    )
    _error(r, 422, "invalid_file")
    assert "dev-s0" in r.json()["error"]["message"]
    assert _submission_count() == 0 and _upload_files(backend) == []


def test_wrong_tier_and_missing_fields(seeded):
    alice = add_participant(seeded, "alice")
    _error(
        seeded.post("/api/v1/submissions", data={"tier": "gold"}, files={"file": ("r.h5", b"x")}, headers=alice),
        422,
        "invalid_request",
        "tier: Input should be 'public', 'dev' or 'standard' (got 'gold')",
    )
    # The schema lists the HDF5 tiers only: hidden is refused before the upload is read.
    _error(
        seeded.post("/api/v1/submissions", data={"tier": "hidden"}, files={"file": ("r.h5", b"x")}, headers=alice),
        422,
        "invalid_request",
        "tier: Input should be 'public', 'dev' or 'standard' (got 'hidden')",
    )
    _error(
        seeded.post("/api/v1/submissions", files={"file": ("r.h5", b"x")}, headers=alice),
        422,
        "invalid_request",
        "tier: Field required",
    )
    _error(
        seeded.post("/api/v1/submissions", data={"tier": "dev"}, headers=alice),
        422,
        "invalid_request",
        "file: Field required",
    )
    long = "x" * 201
    _error(
        seeded.post(
            "/api/v1/submissions", data={"tier": "dev", "method": long}, files={"file": ("r.h5", b"x")}, headers=alice
        ),
        422,
        "invalid_request",
        "method: String should have at most 200 characters",
    )


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


def test_auth_denials(seeded):
    alice = add_participant(seeded, "alice")
    bob = add_participant(seeded, "bob")
    anon_msg = "this endpoint needs a bearer token: send 'Authorization: Bearer <token>'"
    _error(
        seeded.post("/api/v1/submissions", data={"tier": "dev"}, files={"file": ("r.h5", b"x")}),
        401,
        "unauthorized",
        anon_msg,
    )
    _error(
        seeded.get("/api/v1/submissions/x", headers={"Authorization": "Bearer nope"}),
        401,
        "unauthorized",
        "invalid token",
    )
    _error(
        seeded.post("/api/v1/admin/participants", json={"name": "eve"}, headers=alice),
        403,
        "forbidden",
        "this endpoint is for organizers",
    )
    _error(seeded.post("/api/v1/admin/tiers/dev/dataset", json={"seed": 1}), 401, "unauthorized", anon_msg)
    _error(
        seeded.get("/api/v1/submissions/does-not-exist", headers=alice),
        404,
        "not_found",
        "no submission 'does-not-exist'",
    )
    # bob cannot see alice's submission: same 404 as a missing id
    with new_session() as s:
        ds = s.scalar(select(Dataset).where(Dataset.tier == "dev"))
        alice_id = s.scalar(select(ApiToken.participant_id).where(ApiToken.prefix == alice["Authorization"][7:15]))
        sub = Submission(participant_id=alice_id, dataset_id=ds.id, tier="dev")
        s.add(sub)
        s.commit()
        sid = sub.id
    _error(seeded.get(f"/api/v1/submissions/{sid}", headers=bob), 404, "not_found", f"no submission '{sid}'")
    assert seeded.get(f"/api/v1/submissions/{sid}", headers=alice).status_code == 200
    assert seeded.get(f"/api/v1/submissions/{sid}", headers=ORG).status_code == 200


def test_revoked_and_expired_tokens(seeded):
    r = seeded.post("/api/v1/admin/participants", json={"name": "carol"}, headers=ORG).json()
    carol = {"Authorization": f"Bearer {r['token']}"}
    assert seeded.get("/api/v1/submissions/x", headers=carol).status_code == 404
    assert seeded.delete(f"/api/v1/admin/tokens/{r['token_id']}", headers=ORG).status_code == 204
    _error(
        seeded.get("/api/v1/submissions/x", headers=carol),
        401,
        "unauthorized",
        "this token was revoked; ask the organizer for a new one",
    )
    fresh = seeded.post(f"/api/v1/admin/participants/{r['id']}/tokens", headers=ORG).json()
    with new_session() as s:
        s.execute(
            update(ApiToken)
            .where(ApiToken.id == fresh["token_id"])
            .values(expires_at=datetime.now(UTC) - timedelta(hours=1))
        )
        s.commit()
    _error(
        seeded.get("/api/v1/submissions/x", headers={"Authorization": f"Bearer {fresh['token']}"}),
        401,
        "unauthorized",
        "this token has expired; ask the organizer for a new one",
    )
    _error(
        seeded.post("/api/v1/admin/participants", json={"name": "carol"}, headers=ORG),
        409,
        "conflict",
        "a participant named 'carol' already exists",
    )


def test_quota_and_refund(seeded, tmp_path, monkeypatch):
    monkeypatch.setenv("EDX_QUOTA_DEV", "1")
    reset_caches()
    alice = add_participant(seeded, "alice")
    result = download_and_solve(seeded, "dev", tmp_path).read_bytes()
    first = seeded.post("/api/v1/submissions", data={"tier": "dev"}, files={"file": ("r.h5", result)}, headers=alice)
    assert first.status_code == 202
    r = seeded.post("/api/v1/submissions", data={"tier": "dev"}, files={"file": ("r.h5", result)}, headers=alice)
    _error(r, 429, "quota_exceeded")
    assert r.json()["error"]["message"].startswith(
        "daily quota reached: 1 of 1 dev submissions today; the next slot opens at "
    )
    # a run that failed for a platform reason is refunded
    with new_session() as s:
        s.execute(
            update(Submission)
            .where(Submission.id == first.json()["id"])
            .values(charged=False, status="failed", outcome="platform_error")
        )
        s.commit()
    assert (
        seeded.post(
            "/api/v1/submissions", data={"tier": "dev"}, files={"file": ("r.h5", result)}, headers=alice
        ).status_code
        == 202
    )
    # Public is unlimited
    public = download_and_solve(seeded, "public", tmp_path).read_bytes()
    for _ in range(3):
        assert (
            seeded.post(
                "/api/v1/submissions", data={"tier": "public"}, files={"file": ("r.h5", public)}, headers=alice
            ).status_code
            == 202
        )


def test_dataset_upload_failing_validation_changes_nothing(seeded, backend):
    before = seeded.get("/api/v1/tiers").json()["data"]
    r = seeded.post("/api/v1/admin/tiers/dev/dataset/upload", files={"file": ("d.h5", b"not a dataset")}, headers=ORG)
    _error(r, 422, "invalid_file")
    assert seeded.get("/api/v1/tiers").json()["data"] == before
    with new_session() as s:
        assert s.scalar(select(func.count()).select_from(Dataset)) == 2
    assert _upload_files(backend) == []


def test_dataset_upload_roundtrip(seeded, tmp_path):
    from harness.formats import write_measurement
    from harness.scenes import build_tier

    full = tmp_path / "full.h5"
    ds = build_tier("standard", seed=3, preset="small")
    write_measurement(ds, full, include_truth=True)
    r = seeded.post(
        "/api/v1/admin/tiers/standard/dataset/upload", files={"file": ("full.h5", full.read_bytes())}, headers=ORG
    )
    assert r.status_code == 201, r.text
    assert r.json()["content_hash"] == ds.content_hash
    assert seeded.get("/api/v1/tiers/standard/measurement").status_code == 200


def test_leaderboard_validation(client):
    _error(
        client.get("/api/v1/leaderboard", params={"tier": "gold"}),
        422,
        "invalid_request",
        "tier: Input should be 'public', 'dev', 'hidden', 'standard' or 'overall' (got 'gold')",
    )
    _error(client.get("/api/v1/leaderboard", params={"tier": "dev", "page": 0}), 422, "invalid_request")
    assert client.get("/api/v1/leaderboard", params={"tier": "overall"}).json() == {"data": [], "count": 0}


def test_unknown_route_is_json(client):
    _error(client.get("/api/v1/nothing"), 404, "not_found", "Not Found")


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


def test_rescore_denials(seeded, tmp_path):
    alice = add_participant(seeded, "alice")
    result = download_and_solve(seeded, "dev", tmp_path)
    sid = seeded.post(
        "/api/v1/submissions", data={"tier": "dev"}, files={"file": ("r.h5", result.read_bytes())}, headers=alice
    ).json()["id"]
    _error(
        seeded.post(f"/api/v1/admin/submissions/{sid}/rescore", headers=alice),
        403,
        "forbidden",
        "this endpoint is for organizers",
    )
    _error(
        seeded.post(f"/api/v1/admin/submissions/{sid}/rescore", headers=ORG),
        409,
        "conflict",
        f"submission '{sid}' is queued; rescore it once it has finished",
    )
    _error(seeded.post("/api/v1/admin/submissions/nope/rescore", headers=ORG), 404, "not_found", "no submission 'nope'")


def test_participant_and_token_management(client):
    created = client.post("/api/v1/admin/participants", json={"name": "dana", "team": "Team D"}, headers=ORG).json()
    r = client.post(f"/api/v1/admin/participants/{created['id']}/tokens", json={"expires_in_days": 1}, headers=ORG)
    assert r.status_code == 201
    listing = client.get("/api/v1/admin/participants", headers=ORG).json()
    dana = next(p for p in listing["data"] if p["name"] == "dana")
    assert dana["team"] == "Team D" and dana["role"] == "participant"
    assert [t["expires_at"] is not None for t in dana["tokens"]] == [False, True]
    assert created["token"] not in r.text + str(listing) and dana["tokens"][0]["prefix"] == created["token"][:8]
    _error(
        client.post("/api/v1/admin/participants", json={"name": "organizer"}, headers=ORG),
        409,
        "conflict",
        "the name 'organizer' is reserved for the built-in organizer account",
    )
    _error(client.post("/api/v1/admin/participants", json={"name": "bad name!"}, headers=ORG), 422, "invalid_request")
    _error(
        client.post("/api/v1/admin/participants/999/tokens", headers=ORG),
        404,
        "not_found",
        "no participant with id 999",
    )
    _error(client.delete("/api/v1/admin/tokens/999", headers=ORG), 404, "not_found", "no token with id 999")
    _error(client.get("/api/v1/admin/participants"), 401, "unauthorized")


def test_dataset_upload_for_another_tier_is_refused(seeded, backend, tmp_path):
    from harness.formats import write_measurement
    from harness.scenes import build_tier

    full = tmp_path / "full.h5"
    write_measurement(build_tier("public", seed=5, preset="small"), full, include_truth=True)
    r = seeded.post(
        "/api/v1/admin/tiers/dev/dataset/upload", files={"file": ("full.h5", full.read_bytes())}, headers=ORG
    )
    _error(
        r,
        422,
        "invalid_file",
        "the file is a 'public' tier dataset (its scenes are named for that tier); "
        "upload it to the public tier or build it for 'dev'",
    )
    with new_session() as s:
        assert s.scalar(select(func.count()).select_from(Dataset)) == 2
    assert len(list((backend.data_dir / "storage" / "datasets" / "dev").iterdir())) == 1
    _error(
        seeded.post("/api/v1/admin/tiers/dev/dataset", json={"seed": 1, "preset": "huge"}, headers=ORG),
        422,
        "invalid_request",
        "preset: Input should be 'default' or 'small' (got 'huge')",
    )


def test_seed_replaces_the_active_dataset_and_keeps_the_seed_server_side(seeded):
    before = {t["name"]: t["content_hash"] for t in seeded.get("/api/v1/tiers").json()["data"]}
    r = seeded.post("/api/v1/admin/tiers/dev/dataset", json={"seed": 999, "preset": "small"}, headers=ORG)
    assert r.status_code == 201 and "seed" not in r.json()
    after = {t["name"]: t["content_hash"] for t in seeded.get("/api/v1/tiers").json()["data"]}
    assert after["dev"] != before["dev"] and after["public"] == before["public"]
    with new_session() as s:
        active = s.scalars(select(Dataset).where(Dataset.tier == "dev", Dataset.active.is_(True))).all()
        assert [d.seed for d in active] == [999]


def test_openapi_documents_every_endpoint(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/api/v1/health",
        "/api/v1/tiers",
        "/api/v1/tiers/{tier}/measurement",
        "/api/v1/submissions",
        "/api/v1/submissions/{submission_id}",
        "/api/v1/leaderboard",
        "/api/v1/admin/tiers/{tier}/dataset",
        "/api/v1/admin/submissions/{submission_id}/rescore",
        "/api/v1/admin/participants",
    ):
        assert path in paths, path
    assert client.get("/docs").status_code == 200
