"""A real Celery worker process, fed through the API: the embedded default (SQLite + the
filesystem broker) and the server stack (PostgreSQL + Redis). HDF5 results and a Hidden-tier
container end up scored; a broken image ends in its typed outcome."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import redis
from arena_testing import ORG, add_participant, download_and_solve, drop_backend, make_backend

from harness.scoring import SCORER_VERSION

STACKS = {"embedded": ("sqlite", None), "server": ("postgres", "redis")}


@pytest.fixture(params=["embedded", pytest.param("server", marks=[pytest.mark.postgres, pytest.mark.redis])])
def stack(request, tmp_path, monkeypatch):
    kind, broker = STACKS[request.param]
    backend, db_name = make_backend(kind, tmp_path, monkeypatch)
    redis_db = None
    if broker == "redis":
        redis_db = random.randint(1, 15)
        redis.Redis(host="127.0.0.1", port=6379, db=redis_db).flushdb()
        monkeypatch.setenv("EDX_BROKER_URL", f"redis://127.0.0.1:6379/{redis_db}")
    monkeypatch.setenv("EDX_QUOTA_HIDDEN", "10")
    from arena_testing import reset_caches

    reset_caches()
    yield backend
    drop_backend(db_name)
    if redis_db is not None:
        redis.Redis(host="127.0.0.1", port=6379, db=redis_db).flushdb()


@pytest.fixture
def worker(stack, tmp_path):
    log = open(tmp_path / "worker.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "services.worker.celery_app", "worker", "-Q", "edx", "--pool", "solo", "-l", "info"],
        env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT,
    )
    yield proc
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture
def api(worker):
    from fastapi.testclient import TestClient

    from services.api.main import app

    with TestClient(app) as c:
        for i, tier in enumerate(("public", "dev", "hidden")):
            assert c.post(f"/api/v1/admin/tiers/{tier}/dataset", json={"seed": 40 + i, "preset": "small"}, headers=ORG).status_code == 201
        yield c


def _wait(client, headers, ids, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = {k: client.get(f"/api/v1/submissions/{i}", headers=headers).json() for k, i in ids.items()}
        if all(s["status"] in ("scored", "failed") for s in states.values()):
            return states
        time.sleep(0.3)
    raise AssertionError(f"not finished in {timeout} s: { {k: s['status'] for k, s in states.items()} }")


@pytest.mark.docker
@pytest.mark.slow
def test_worker_scores_hdf5_and_container_submissions(api, tmp_path):
    import docker

    alice = add_participant(api, "alice")
    ids = {}
    for tier in ("public", "dev"):
        result = download_and_solve(api, tier, tmp_path, solver="mlem")
        r = api.post("/api/v1/submissions", data={"tier": tier, "method": "mlem"}, files={"file": ("r.h5", result.read_bytes())}, headers=alice)
        assert r.status_code == 202, r.text
        ids[tier] = r.json()["id"]
    r = api.post("/api/v1/submissions/container", json={"image": "edx-arena/runner:latest", "method": "runner"}, headers=alice)
    assert r.status_code == 202, r.text
    ids["hidden"] = r.json()["id"]
    r = api.post("/api/v1/submissions/container", json={"image": "edx-arena-test/busybox:latest", "method": "empty"}, headers=alice)
    ids["broken"] = r.json()["id"]
    states = _wait(api, alice, ids)

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

    overall = api.get("/api/v1/leaderboard", params={"tier": "overall"}).json()
    assert overall["count"] == 1 and overall["data"][0]["certified"] is True
    # This test's runs left no container behind (other suites may be running their own).
    client = docker.from_env()
    for key in ("hidden", "broken"):
        assert not client.containers.list(all=True, filters={"label": f"edx-arena.submission={ids[key]}"})


def _broker_empty(stack) -> bool:
    from services.settings import get_settings

    settings = get_settings()
    if settings.broker_url.startswith("redis"):
        return redis.Redis.from_url(settings.broker_url).llen("edx") == 0
    return not any((settings.broker_dir / "queue").iterdir())


@pytest.mark.slow
def test_duplicate_deliveries_and_rescore_score_once(api, stack, tmp_path):
    from sqlalchemy import func, select

    from db.models import Run, Score
    from db.session import new_session
    from services.worker.tasks import score_submission_task

    alice = add_participant(api, "alice")
    result = download_and_solve(api, "dev", tmp_path)
    r = api.post("/api/v1/submissions", data={"tier": "dev", "method": "nnls"}, files={"file": ("r.h5", result.read_bytes())}, headers=alice)
    sid = r.json()["id"]
    for _ in range(2):  # a broker redelivery, a client retry: the same task, again
        score_submission_task.delay(sid)
    first = _wait(api, alice, {"dev": sid})["dev"]
    deadline = time.monotonic() + 30
    while not _broker_empty(stack) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)  # the worker finishes the last message it took
    assert _broker_empty(stack)

    def counts():
        with new_session() as s:
            return (s.scalar(select(func.count()).select_from(Score).where(Score.submission_id == sid)),
                    s.scalar(select(func.count()).select_from(Run).where(Run.submission_id == sid)))

    assert first["status"] == "scored" and first["attempt"] == 1 and counts() == (4, 1)
    board = api.get("/api/v1/leaderboard", params={"tier": "dev"}).json()

    assert api.post(f"/api/v1/admin/submissions/{sid}/rescore", headers=ORG).status_code == 202
    again = _wait(api, alice, {"dev": sid})["dev"]
    assert again["status"] == "scored" and again["attempt"] == 2
    assert counts() == (4, 2)  # same scoring version: the rows are kept, not duplicated
    assert [x["score"] for x in again["scores"]] == [x["score"] for x in first["scores"]]
    assert api.get("/api/v1/leaderboard", params={"tier": "dev"}).json() == board
