"""services/api/routes/submissions.py over the real ASGI stack, on SQLite and PostgreSQL: an HDF5
result is validated before it is queued, every bad input gets its status and exact JSON
error and leaves no row and no file, quotas and refunds; the Standard track end to end.
"""

from __future__ import annotations

import h5py
import pytest
from arena_testing import ORG, add_participant, download_and_solve
from database_testing import reset_caches
from sqlalchemy import func, select, update
from worker_testing import error, wait_finished

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


@pytest.mark.slow
def test_standard_submission_is_scored_on_its_own_board(api, tmp_path):
    alice = add_participant(api, "alice")
    measurement = tmp_path / "standard.h5"
    measurement.write_bytes(api.get("/api/v1/tiers/standard/measurement").content)
    with h5py.File(measurement) as f:  # the default: no truth in the download
        assert f.attrs["tier"] == "standard" and all("x_true" not in f["scenes"][s] for s in f["scenes"])

    result = download_and_solve(api, "standard", tmp_path, solver="nnls")
    r = api.post(
        "/api/v1/submissions",
        data={
            "tier": "standard",
            "method": "NNLS",
            "source": "Lawson & Hanson 1974",
            "description": "per-pixel NNLS with the nominal operator",
        },
        files={"file": ("r.h5", result.read_bytes())},
        headers=alice,
    )
    assert r.status_code == 202, r.text
    sid = r.json()["id"]
    s = wait_finished(api, alice, {"std": sid})["std"]
    assert s["status"] == "scored" and s["tier"] == "standard", s
    tier_row = next(x for x in s["scores"] if x["scene_id"] == "")
    # scored with the standard formula: 0.5·PSNR_norm + 0.5·SSIM, not the blind one
    assert tier_row["score"] == tier_row["standard"] != tier_row["blind"]
    scenes = [x for x in s["scores"] if x["scene_id"]]
    assert len(scenes) == 3
    for scene in scenes:
        psnr_norm = min(max((scene["psnr"] - 15) / 30, 0), 1)
        assert scene["score"] == scene["standard"] == pytest.approx(0.5 * psnr_norm + 0.5 * scene["ssim"], abs=1e-9)
    assert tier_row["score"] == pytest.approx(sum(x["score"] for x in scenes) / 3, abs=1e-12)

    board = api.get("/api/v1/leaderboard", params={"tier": "standard"}).json()
    assert board["count"] == 1
    entry = board["data"][0]
    assert (entry["rank"], entry["participant"], entry["method"], entry["source"], entry["description"]) == (
        1,
        "alice",
        "NNLS",
        "Lawson & Hanson 1974",
        "per-pixel NNLS with the nominal operator",
    )
    assert entry["score"] == tier_row["score"] and entry["certified"] is False
    assert (
        api.get("/api/v1/leaderboard", params={"tier": "overall"}).json()["count"] == 0
    )  # not part of the blind score
    export = api.get("/api/v1/leaderboard/export", params={"tier": "standard", "format": "json"}).json()
    assert [(e["submission_id"], e["method"]) for e in export["data"]] == [(sid, "NNLS")]


def test_standard_results_are_checked_against_its_scenes(seeded, tmp_path):
    alice = add_participant(seeded, "alice")
    assert (
        seeded.post(
            "/api/v1/admin/tiers/standard/dataset", json={"seed": 7, "preset": "small"}, headers=ORG
        ).status_code
        == 201
    )
    dev_result = download_and_solve(seeded, "dev", tmp_path)
    body = error(
        seeded.post(
            "/api/v1/submissions",
            data={"tier": "standard"},
            files={"file": ("r.h5", dev_result.read_bytes())},
            headers=alice,
        ),
        422,
        "invalid_file",
    )
    assert "standard-s0" in body["message"]
