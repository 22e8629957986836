"""services/api/routes/admin.py: datasets (generated, uploaded, validated first), participants
and tokens, rescoring, each denial with its exact error.
"""

from __future__ import annotations

from arena_testing import ORG, add_participant, download_and_solve
from sqlalchemy import func, select

from db.models import Dataset
from db.session import new_session


def _error(r, status: int, code: str, message: str | None = None) -> None:
    assert r.status_code == status, r.text
    body = r.json()["error"]
    assert body["code"] == code
    if message is not None:
        assert body["message"] == message


def _upload_files(backend) -> list:
    uploads = backend.data_dir / "storage" / "uploads"
    return sorted(p.name for p in uploads.iterdir()) if uploads.exists() else []


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
