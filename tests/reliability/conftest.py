"""Reliability fixtures: a fresh database per test (SQLite and PostgreSQL), short leases so a
dead worker is noticed in seconds, and the seeded API in-process.

Every test in this folder is marked ``reliability`` (run them alone with ``-m reliability``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "services"))  # arena_testing

from arena_testing import ORG, drop_backend, make_backend, reset_caches  # noqa: E402

#: Seconds: short enough that an expired lease or a lost message is noticed within a test.
FAST = {"EDX_LEASE_SECONDS": "3", "EDX_QUEUED_STALE_SECONDS": "3", "EDX_MAX_ATTEMPTS": "3", "EDX_QUOTA_DEV": "0",
        "EDX_QUOTA_HIDDEN": "50"}
SEEDS = {"public": 40, "dev": 41, "hidden": 42}


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.reliability)


def fast_settings(monkeypatch, **extra: str) -> None:
    for key, value in {**FAST, **extra}.items():
        monkeypatch.setenv(key, value)
    reset_caches()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request, tmp_path, monkeypatch):
    b, db_name = make_backend(request.param, tmp_path, monkeypatch)
    fast_settings(monkeypatch)
    yield b
    drop_backend(db_name)


def seed(client, tiers=("dev",)) -> None:
    for tier in tiers:
        r = client.post(f"/api/v1/admin/tiers/{tier}/dataset", json={"seed": SEEDS[tier], "preset": "small"}, headers=ORG)
        assert r.status_code == 201, r.text


@pytest.fixture
def client(backend):
    from fastapi.testclient import TestClient

    from services.api.main import app

    with TestClient(app) as c:
        seed(c)
        yield c


@pytest.fixture(scope="session")
def dev_result(tmp_path_factory) -> bytes:
    """A valid result file for the ``dev`` tier seeded with :data:`SEEDS` (small preset)."""
    from harness.formats import write_result
    from harness.scenes import build_tier
    from harness.solvers import solve_dataset

    path = tmp_path_factory.mktemp("dev-result") / "r.h5"
    dataset = build_tier("dev", seed=SEEDS["dev"], preset="small")
    write_result(solve_dataset(dataset.without_truth(), solver="nnls"), path)
    return path.read_bytes()
