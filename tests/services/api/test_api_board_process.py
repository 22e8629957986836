"""services/api/board_process.py: with ``leaderboard_process`` on, board pages and exports are
computed in a child process with the parent's settings (its database), and a child that dies is
replaced by the next request."""

from __future__ import annotations

import os
import signal
from datetime import UTC, datetime

import pytest
from arena_testing import add_scored
from database_testing import reset_caches

from db.models import Dataset, Participant
from db.session import new_session
from services.api import board_process

T0 = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture
def in_child(client, monkeypatch):
    monkeypatch.setenv("EDX_LEADERBOARD_PROCESS", "true")
    reset_caches()
    with new_session() as s:
        dev = Dataset(
            tier="dev", content_hash="h" * 64, operator_version="v", preset="small", full_path="-", view_path="-"
        )
        s.add(dev)
        for i, score in enumerate((0.61, 0.83, 0.72)):
            add_scored(
                s, dev, Participant(name=f"p{i}", team=f"T{i}"), score, created_at=T0, started_at=T0, method=f"m{i}"
            )
        s.commit()
    yield client
    board_process.shutdown()


def _child_pids() -> set[int]:
    pool = board_process._pool
    assert pool is not None, "no board child was started"
    return {p.pid for p in pool._processes.values()}


def test_pages_and_exports_are_computed_in_the_child_from_the_same_database(in_child):
    body = in_child.get("/api/v1/leaderboard", params={"tier": "dev"}).json()
    assert body["count"] == 3
    assert [(e["participant"], e["score"]) for e in body["data"]] == [("p1", 0.83), ("p2", 0.72), ("p0", 0.61)]
    (child,) = _child_pids()
    assert child != os.getpid()
    csv = in_child.get("/api/v1/leaderboard/export", params={"tier": "dev", "format": "csv"})
    assert csv.status_code == 200 and csv.text.count("\n") >= 4 and "p1" in csv.text
    assert _child_pids() == {child}  # one child serves every page


def test_a_child_that_dies_is_replaced(in_child):
    assert in_child.get("/api/v1/leaderboard", params={"tier": "dev"}).json()["count"] == 3
    (child,) = _child_pids()
    os.kill(child, signal.SIGKILL)
    body = in_child.get("/api/v1/leaderboard", params={"tier": "dev"}).json()
    assert body["count"] == 3
    assert child not in _child_pids()
