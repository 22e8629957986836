"""The Standard track (design §3) end to end through the API and a real worker: scenes at nominal
θ, downloadable without truth by default (the organizer may include it), HDF5 results scored
with the standard formula on their own board, outside the overall blind board."""

from __future__ import annotations

import h5py
import pytest
from arena_testing import ORG, add_participant, download_and_solve
from worker_testing import error, wait_finished

from harness.tiers import SPEC_PARAMETERS


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


def test_standard_truth_is_the_organizers_choice(seeded, tmp_path):
    r = seeded.post(
        "/api/v1/admin/tiers/standard/dataset", json={"seed": 7, "preset": "small", "with_truth": True}, headers=ORG
    )
    assert r.status_code == 201, r.text
    path = tmp_path / "s.h5"
    path.write_bytes(seeded.get("/api/v1/tiers/standard/measurement").content)
    with h5py.File(path) as f:
        for scene in f["scenes"].values():
            assert "x_true" in scene
            # scenes at nominal θ: the operator is exactly the published one
            assert all(scene.attrs[f"spec_true/{p}"] == f["spec/nominal"].attrs[p] for p in SPEC_PARAMETERS)
    # reseeding without the flag goes back to the default: no truth
    assert (
        seeded.post(
            "/api/v1/admin/tiers/standard/dataset", json={"seed": 8, "preset": "small"}, headers=ORG
        ).status_code
        == 201
    )
    path.write_bytes(seeded.get("/api/v1/tiers/standard/measurement").content)
    with h5py.File(path) as f:
        assert all("x_true" not in scene for scene in f["scenes"].values())

    message = (
        "with_truth is the organizer's choice on the standard tier only; the public tier always "
        "includes its truth and the dev and hidden tiers never do"
    )
    for tier in ("dev", "hidden", "public"):
        error(
            seeded.post(
                f"/api/v1/admin/tiers/{tier}/dataset",
                json={"seed": 9, "preset": "small", "with_truth": True},
                headers=ORG,
            ),
            400,
            "bad_request",
            message,
        )
    error(
        seeded.post("/api/v1/admin/tiers/gold/dataset", json={"seed": 9}, headers=ORG),
        422,
        "invalid_request",
        "tier: Input should be 'public', 'dev', 'hidden' or 'standard' (got 'gold')",
    )


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
