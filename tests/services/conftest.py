"""Services fixtures: a fresh database per test on SQLite AND PostgreSQL (``backend``, from
tests/database_testing.py), a fresh data dir, and the API app in-process (FastAPI TestClient
over the real ASGI stack)."""

from __future__ import annotations

import pytest
from arena_testing import ORG
from database_testing import backend  # noqa: F401 - the database of every services test
from fastapi.testclient import TestClient
from worker_testing import api, stack, worker  # noqa: F401 - end-to-end fixtures (real worker), for every services test


@pytest.fixture
def client(backend):
    from services.main import app

    with TestClient(app) as c:
        yield c


@pytest.fixture
def seeded(client):
    for i, tier in enumerate(("public", "dev")):
        r = client.post(f"/api/v1/admin/tiers/{tier}/dataset", json={"seed": 100 + i, "preset": "small"}, headers=ORG)
        assert r.status_code == 201, r.text
    return client
