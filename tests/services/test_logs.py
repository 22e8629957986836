"""Structured logs (services/logs.py): one JSON object per line, and every line the
worker logs while handling a submission carries its id, with the worker started the way the
compose stack starts it (``edx-arena worker`` with EDX_LOG_FORMAT=json).
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest
from arena_testing import ORG, add_participant, download_and_solve
from worker_testing import wait_finished

from services.logs import SubmissionContextMiddleware, current_submission, formatter, submission_context
from services.worker.celery_app import SUBMISSION_TASKS

SID = "0b6f4f1e-3a52-4c3e-9d8e-3f2a6f1b9c01"


def _logger(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"test.logging.{id(out)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, out


@pytest.fixture
def cli_worker(stack, tmp_path, monkeypatch):
    """The worker as the compose stack runs it: ``edx-arena worker`` with JSON logs."""
    monkeypatch.setenv("EDX_LOG_FORMAT", "json")
    log_path = tmp_path / "worker-json.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli.main", "worker"],
            env=dict(os.environ),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        yield log_path
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_json_lines_carry_fields_context_and_traceback():
    logger, out = _logger(formatter("json"))
    logger.info("outside")
    with submission_context(SID):
        logger.warning("scoring %s", "dev", extra={"tier": "dev", "obj": object()})
        try:
            raise ZeroDivisionError("division by zero")
        except ZeroDivisionError:
            logger.exception("boom\nsecond line")
    logger.info("after")
    lines = out.getvalue().splitlines()
    assert len(lines) == 4  # a multi-line message and a traceback stay on one line each
    first, warn, exc, after = (json.loads(line) for line in lines)
    assert set(first) >= {"timestamp", "level", "logger", "message", "submission_id", "process"}
    assert first["submission_id"] is None and after["submission_id"] is None
    assert first["timestamp"].endswith("Z") and first["level"] == "INFO"
    assert warn == warn | {"level": "WARNING", "message": "scoring dev", "submission_id": SID, "tier": "dev"}
    assert warn["obj"].startswith("<object object")  # not serialisable: its repr, never a crash
    assert exc["submission_id"] == SID and exc["message"] == "boom\nsecond line"
    assert "ZeroDivisionError" in exc["exception"]


def test_text_lines_name_the_submission_only_when_there_is_one():
    logger, out = _logger(formatter("text"))
    logger.info("idle")
    with submission_context(SID):
        logger.info("busy")
    idle, busy = out.getvalue().splitlines()
    assert "submission" not in idle and idle.endswith("INFO " + logger.name + ": idle")
    assert busy.endswith(f"INFO {logger.name} [submission {SID}]: busy")


def test_celery_task_lines_and_the_lease_thread_are_attributed():
    assert {"run_submission", "score_submission"} <= SUBMISSION_TASKS  # the worker's tasks, wired on import
    json_lines = formatter("json")
    received = logging.LogRecord(
        "celery.worker.strategy", logging.INFO, "", 0, "Task %(name)s[%(id)s] received", None, None
    )
    received.data = {"id": "task-uuid", "name": "run_submission", "args": f"('{SID}',)", "kwargs": "{}"}
    other = logging.LogRecord("celery.worker.strategy", logging.INFO, "", 0, "x", None, None)
    other.data = {"id": "t", "name": "celery.ping", "args": "('abc',)"}
    lease = logging.LogRecord("services.worker.tasks", logging.WARNING, "", 0, "could not renew", None, None)
    lease.threadName = f"lease-{SID}"
    for record, expected in ((received, SID), (other, None), (lease, SID)):
        assert json.loads(json_lines.format(record))["submission_id"] == expected


def test_api_requests_about_a_submission_are_attributed():
    import asyncio

    seen = []

    async def app(scope, receive, send):
        seen.append((scope["path"], current_submission()))

    middleware = SubmissionContextMiddleware(app)
    for path in (
        f"/api/v1/submissions/{SID}",
        f"/api/v1/admin/submissions/{SID}/rescore",
        "/api/v1/submissions",
        "/api/v1/leaderboard",
    ):
        asyncio.run(middleware({"type": "http", "path": path}, None, None))
    assert [s for _, s in seen] == [SID, SID, None, None]


@pytest.mark.slow
def test_worker_lines_all_carry_the_submission_id(cli_worker, tmp_path):
    from fastapi.testclient import TestClient

    from services.main import app

    with TestClient(app) as api:
        r = api.post("/api/v1/admin/tiers/public/dataset", json={"seed": 40, "preset": "small"}, headers=ORG)
        assert r.status_code == 201, r.text
        alice = add_participant(api, "alice")
        result = download_and_solve(api, "public", tmp_path)
        ids = {}
        for name in ("first", "second"):  # two, so one's lines cannot be taken for the other's
            r = api.post(
                "/api/v1/submissions",
                data={"tier": "public"},
                files={"file": ("r.h5", result.read_bytes())},
                headers=alice,
            )
            assert r.status_code == 202, r.text
            ids[name] = r.json()["id"]
        states = wait_finished(api, alice, ids, timeout=120)
        assert all(s["status"] == "scored" for s in states.values()), states

    # The API shows "scored" once the row is committed; Celery logs the task's end a moment later.
    deadline = time.monotonic() + 30
    while cli_worker.read_text().count("succeeded in") < len(ids) and time.monotonic() < deadline:
        time.sleep(0.2)
    lines = cli_worker.read_text().splitlines()
    entries = [json.loads(line) for line in lines]  # every line is one JSON object (no banner, no stray print)
    assert all({"timestamp", "level", "logger", "message", "submission_id"} <= set(e) for e in entries)
    for sid in ids.values():
        mine = [i for i, e in enumerate(entries) if e["submission_id"] == sid]
        assert mine, f"no line attributed to {sid}"
        # Everything from the task's arrival to its end is attributed to it, Celery's own lines included.
        assert "received" in entries[mine[0]]["message"] and "succeeded" in entries[mine[-1]]["message"]
        handling = entries[mine[0] : mine[-1] + 1]
        assert all(e["submission_id"] == sid for e in handling), handling
        assert all(e["submission_id"] == sid for e in entries if sid in e["message"])
    if os.geteuid() == 0:  # Celery warns a root worker; the warning is a JSON line too
        assert any(e["logger"] == "py.warnings" and "superuser" in e["message"] for e in entries)
