"""Reliability fixtures: a fresh database per test (SQLite and PostgreSQL), short leases so a
dead worker is noticed in seconds, and the seeded API in-process.

Every test in this folder is marked ``reliability`` (run them alone with ``-m reliability``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "services"))  # arena_testing

from database_testing import drop_backend, make_backend
from reliability_testing import SEEDS, fast_settings, seed


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.reliability)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request, tmp_path, monkeypatch):
    b, db_name = make_backend(request.param, tmp_path, monkeypatch)
    fast_settings(monkeypatch)
    yield b
    drop_backend(db_name)


@pytest.fixture
def client(backend):
    from fastapi.testclient import TestClient

    from services.main import app

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
