"""services/worker/dispatch.py: work is sent by task name, never by importing the task module;
a broker that does not answer is not an error (the row stays queued for the reaper)."""

from __future__ import annotations

import base64
import json
import sys

from database_testing import reset_caches

from core.settings import get_settings
from services.worker import dispatch


def test_each_kind_goes_to_its_task_by_name():
    assert {k: dispatch.task_for(k) for k in ("hdf5", "container", "script")} == {
        "hdf5": "score_submission",
        "container": "run_submission",
        "script": "run_submission",
    }


def _queued_messages() -> list[dict]:
    out = []
    for path in sorted((get_settings().broker_dir / "queue").iterdir()):
        envelope = json.loads(path.read_text())
        out.append({"headers": envelope["headers"], "body": json.loads(base64.b64decode(envelope["body"]))})
    return out


def test_a_task_is_sent_by_name_without_importing_the_task_module(backend, monkeypatch):
    monkeypatch.delitem(sys.modules, "services.worker.tasks", raising=False)
    assert dispatch.send("sub-1", "container") and dispatch.send("sub-2", "hdf5")
    sent = [(m["headers"]["task"], m["body"][0]) for m in _queued_messages()]
    assert sorted(sent) == [("run_submission", ["sub-1"]), ("score_submission", ["sub-2"])]
    assert "services.worker.tasks" not in sys.modules  # the sender never needed it


def test_a_broker_that_does_not_answer_is_reported_not_raised(backend, monkeypatch):
    monkeypatch.setenv("EDX_BROKER_URL", "redis://127.0.0.1:1/0")  # nothing listens on port 1
    reset_caches()
    assert dispatch.send("sub-3", "hdf5") is False
