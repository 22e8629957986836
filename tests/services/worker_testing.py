"""Fixtures for end-to-end tests through the real API and a real Celery worker process, on the
embedded stack (SQLite + filesystem broker) and the server stack (PostgreSQL + Redis).

``tests/services/conftest.py`` imports the fixtures, so any services test can ask for ``api``.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import redis
from arena_testing import ORG
from database_testing import drop_backend, make_backend, reset_caches

STACKS = {"embedded": ("sqlite", None), "server": ("postgres", "redis")}
#: Tiers the ``api`` fixture seeds (small preset), with their seeds.
SEEDED = {"public": 40, "dev": 41, "hidden": 42, "standard": 43}


@pytest.fixture(params=["embedded", pytest.param("server", marks=[pytest.mark.postgres, pytest.mark.redis])])
def stack(request, tmp_path, monkeypatch):
    kind, broker = STACKS[request.param]
    backend, db_name = make_backend(kind, tmp_path, monkeypatch)
    redis_db = None
    if broker == "redis":
        redis_db = random.randint(1, 15)
        redis.Redis(host="127.0.0.1", port=6379, db=redis_db).flushdb()
        monkeypatch.setenv("EDX_BROKER_URL", f"redis://127.0.0.1:6379/{redis_db}")
    monkeypatch.setenv("EDX_QUOTA_HIDDEN", "20")
    reset_caches()
    yield backend
    drop_backend(db_name)
    if redis_db is not None:
        redis.Redis(host="127.0.0.1", port=6379, db=redis_db).flushdb()


@pytest.fixture
def worker(stack, tmp_path):
    log = open(tmp_path / "worker.log", "wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "services.worker.celery_app",
            "worker",
            "-Q",
            "runs,scoring",
            "--pool",
            "solo",
            "-l",
            "info",
        ],
        env=dict(os.environ),
        stdout=log,
        stderr=subprocess.STDOUT,
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

    from services.main import app

    with TestClient(app) as c:
        for tier, seed in SEEDED.items():
            r = c.post(f"/api/v1/admin/tiers/{tier}/dataset", json={"seed": seed, "preset": "small"}, headers=ORG)
            assert r.status_code == 201, r.text
        yield c


def wait_finished(client, headers, ids: dict[str, str], timeout: float = 180) -> dict[str, dict]:
    """Poll until every submission in ``ids`` is scored or failed; their states by key."""
    deadline = time.monotonic() + timeout
    states: dict[str, dict] = {}
    while time.monotonic() < deadline:
        states = {k: client.get(f"/api/v1/submissions/{i}", headers=headers).json() for k, i in ids.items()}
        if all(s["status"] in ("scored", "failed") for s in states.values()):
            return states
        time.sleep(0.3)
    raise AssertionError(f"not finished in {timeout} s: { {k: s.get('status') for k, s in states.items()} }")


def error(r, status: int, code: str, message: str | None = None) -> dict:
    """Assert an error response; returns its body's ``error``."""
    assert r.status_code == status, r.text
    body = r.json()["error"]
    assert body["code"] == code, body
    if message is not None:
        assert body["message"] == message, body["message"]
    return body
