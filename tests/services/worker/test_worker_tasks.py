"""services/worker/tasks.py: a real Celery worker process, fed through the API: the embedded
default (SQLite + the filesystem broker) and the server stack (PostgreSQL + Redis). HDF5
results and a Hidden-tier container end up scored; a broken image ends in its typed outcome;
duplicate deliveries and a rescore score once.
"""

from __future__ import annotations

import time

import pytest
import redis
from arena_testing import ORG, add_participant, download_and_solve
from worker_testing import wait_finished

from harness.scoring import SCORER_VERSION


def _broker_empty(stack) -> bool:
    from core.settings import get_settings

    settings = get_settings()
    if settings.broker_url.startswith("redis"):
        client = redis.Redis.from_url(settings.broker_url)
        return client.llen("runs") == 0 and client.llen("scoring") == 0
    return not any((settings.broker_dir / "queue").iterdir())


@pytest.mark.docker
@pytest.mark.slow
def test_worker_scores_hdf5_and_container_submissions(api, tmp_path):
    import docker

    alice = add_participant(api, "alice", images=("edx-arena/runner:latest", "edx-arena-test/busybox:latest"))
    ids = {}
    for tier in ("public", "dev"):
        result = download_and_solve(api, tier, tmp_path, solver="mlem")
        r = api.post(
            "/api/v1/submissions",
            data={"tier": tier, "method": "mlem"},
            files={"file": ("r.h5", result.read_bytes())},
            headers=alice,
        )
        assert r.status_code == 202, r.text
        ids[tier] = r.json()["id"]
    r = api.post(
        "/api/v1/submissions/container", json={"image": "edx-arena/runner:latest", "method": "runner"}, headers=alice
    )
    assert r.status_code == 202, r.text
    ids["hidden"] = r.json()["id"]
    r = api.post(
        "/api/v1/submissions/container",
        json={"image": "edx-arena-test/busybox:latest", "method": "empty"},
        headers=alice,
    )
    ids["broken"] = r.json()["id"]
    states = wait_finished(api, alice, ids)

    for tier in ("public", "dev", "hidden"):
        s = states[tier]
        assert s["status"] == "scored" and s["outcome"] == "succeeded", s
        tier_rows = [x for x in s["scores"] if x["scene_id"] == ""]
        assert len(tier_rows) == 1 and len(s["scores"]) == 4 and 0 < tier_rows[0]["score"] < 1
        assert tier_rows[0]["scoring_version"] == SCORER_VERSION
    hidden = states["hidden"]
    assert hidden["image_digest"].startswith("sha256:") and hidden["exit_code"] == 0 and hidden["runtime_seconds"] > 0
    # The owner of a successful Hidden run sees no log (it could carry the hidden data); the organizer does.
    assert "not shown to its owner when the run succeeds" in hidden["log_tail"]
    assert "wrote /output/result.h5" in api.get(f"/api/v1/submissions/{ids['hidden']}", headers=ORG).json()["log_tail"]
    broken = states["broken"]
    assert broken["status"] == "failed" and broken["outcome"] == "missing_output"
    assert broken["error_message"] == "the container exited 0 but wrote no /output/result.h5"

    # The children (the image's Public and Dev runs) are scored from the scoring queue after
    # their runs: the overall board fills once they are.
    deadline = time.monotonic() + 180
    while True:
        overall = api.get("/api/v1/leaderboard", params={"tier": "overall"}).json()
        if overall["count"] == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert overall["count"] == 1 and overall["data"][0]["certified"] is True
    # This test's runs left no container behind (other suites may be running their own).
    client = docker.from_env()
    for key in ("hidden", "broken"):
        assert not client.containers.list(all=True, filters={"label": f"edx-arena.submission={ids[key]}"})


@pytest.mark.slow
def test_duplicate_deliveries_and_rescore_score_once(api, stack, tmp_path):
    from sqlalchemy import func, select

    from db.models import Run, Score
    from db.session import new_session
    from services.worker.tasks import score_submission_task

    alice = add_participant(api, "alice")
    result = download_and_solve(api, "dev", tmp_path)
    r = api.post(
        "/api/v1/submissions",
        data={"tier": "dev", "method": "nnls"},
        files={"file": ("r.h5", result.read_bytes())},
        headers=alice,
    )
    sid = r.json()["id"]
    for _ in range(2):  # a broker redelivery, a client retry: the same task, again
        score_submission_task.delay(sid)
    first = wait_finished(api, alice, {"dev": sid})["dev"]
    deadline = time.monotonic() + 30
    while not _broker_empty(stack) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)  # the worker finishes the last message it took
    assert _broker_empty(stack)

    def counts():
        with new_session() as s:
            return (
                s.scalar(select(func.count()).select_from(Score).where(Score.submission_id == sid)),
                s.scalar(select(func.count()).select_from(Run).where(Run.submission_id == sid)),
            )

    assert first["status"] == "scored" and first["attempt"] == 1 and counts() == (4, 1)
    board = api.get("/api/v1/leaderboard", params={"tier": "dev"}).json()

    assert api.post(f"/api/v1/admin/submissions/{sid}/rescore", headers=ORG).status_code == 202
    again = wait_finished(api, alice, {"dev": sid})["dev"]
    assert again["status"] == "scored" and again["attempt"] == 1  # a rescore is a new round of attempts
    assert counts() == (4, 2)  # same scoring version: the rows are kept, not duplicated
    assert [x["score"] for x in again["scores"]] == [x["score"] for x in first["scores"]]
    assert api.get("/api/v1/leaderboard", params={"tier": "dev"}).json() == board
