"""services/api/board_process.py: with ``leaderboard_process`` on, board pages and exports are
computed in a child process with the parent's settings (its database), and a child that dies is
replaced by the next request."""

from __future__ import annotations

import os
import signal
from datetime import UTC, datetime
from pathlib import Path

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


def test_the_child_ends_when_its_api_process_is_killed(tmp_path):
    """An API process killed with SIGKILL cannot shut its pool down: the child notices its
    parent is gone and exits instead of staying behind."""
    import subprocess
    import sys
    import time

    script = tmp_path / "parent.py"
    script.write_text(
        "import os, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parents[3])!r})\n"
        "os.environ.update(EDX_DATA_DIR=sys.argv[1], EDX_ORGANIZER_TOKEN='t' * 32, EDX_ENVIRONMENT='development')\n"
        "from services.api import board_process\n"
        "if __name__ == '__main__':\n"  # the spawned child imports this file again
        "    pool = board_process._get_pool()\n"
        "    pool.submit(board_process._ready).result(timeout=120)\n"
        "    print(*[p.pid for p in pool._processes.values()], flush=True)\n"
        "    import time; time.sleep(600)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "var")], stdout=subprocess.PIPE, text=True, cwd=os.getcwd()
    )
    try:
        child = int(parent.stdout.readline())
        assert _alive(child)
        parent.kill()
        parent.wait(timeout=10)
        deadline = time.monotonic() + 15
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(child), "the board child outlived its API process"
    finally:
        parent.kill()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False
