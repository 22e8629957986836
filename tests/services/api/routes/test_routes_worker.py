"""services/api/routes/worker.py (and services/submissions/remote.py) through the real API: a
worker token reaches only the worker endpoints and only it does; a claimed run's job names the
limits, the image, the input (the view without truth) by sha256, the script; every call after
the claim names its attempt and a stale one is refused; an upload is held to the sandbox's
output cap; a succeeded record is validated before it goes to scoring.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import pytest
from arena_testing import ORG, add_participant

from db.models import Role, Run, Submission
from db.session import new_session
from services.auth import create_participant

SOLVER = (Path(__file__).parents[3] / "harness" / "sandbox" / "script_solver.py").read_bytes()

pytestmark = pytest.mark.docker  # a script's intake checks the base image on the daemon


def _worker_token() -> dict[str, str]:
    with new_session() as s:
        _, _, token = create_participant(s, name="compute-1", role=Role.worker)
        s.commit()
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def hidden(client):
    r = client.post("/api/v1/admin/tiers/hidden/dataset", json={"seed": 5, "preset": "small"}, headers=ORG)
    assert r.status_code == 201, r.text
    alice = add_participant(client, "alice")
    r = client.post("/api/v1/submissions/script", files={"file": ("main.py", SOLVER)}, headers=alice)
    assert r.status_code == 202, r.text
    return client, alice, r.json()["id"], _worker_token()


def _result(view: Path, out: Path) -> bytes:
    from harness.formats import read_measurement, write_result
    from harness.solvers import solve_dataset

    write_result(solve_dataset(read_measurement(view), solver="nnls"), out)
    return out.read_bytes()


def test_a_worker_token_reaches_only_the_worker_endpoints(hidden):
    client, alice, sid, worker = hidden
    for method, path in [("GET", f"/api/v1/submissions/{sid}"), ("GET", "/api/v1/admin/participants")]:
        r = client.request(method, path, headers=worker)
        assert r.status_code == 401 and "worker endpoints" in r.json()["error"]["message"], r.text
    r = client.post("/api/v1/submissions/script", files={"file": ("main.py", SOLVER)}, headers=worker)
    assert r.status_code == 401, r.text  # refused before the body is read (the body guard)
    for headers in (alice, ORG):
        assert client.post(f"/api/v1/worker/runs/{sid}/claim", json={}, headers=headers).status_code == 403
        r = client.put(f"/api/v1/worker/runs/{sid}/output?attempt=1", content=b"x", headers=headers)
        assert r.status_code == 403, r.text
    assert client.post(f"/api/v1/worker/runs/{sid}/claim", json={}).status_code == 401


def test_claim_download_upload_and_hand_off_to_scoring(hidden, tmp_path):
    client, _, sid, worker = hidden
    r = client.post(f"/api/v1/worker/runs/{sid}/claim", json={"host": "h1"}, headers=worker)
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["attempt"] == 1 and job["image_id"].startswith("sha256:")
    assert job["limits"]["sandbox_cpus"] == 1.0 and job["expectation"]["tier"] == "hidden"
    # A duplicate delivery: the run is held, nothing to do.
    assert client.post(f"/api/v1/worker/runs/{sid}/claim", json={}, headers=worker).status_code == 204

    view = tmp_path / "input.h5"
    view.write_bytes(client.get(job["input"]["url"], headers=worker).content)
    assert hashlib.sha256(view.read_bytes()).hexdigest() == job["input"]["sha256"]
    with h5py.File(view) as f:  # the view: measurements, no truth
        assert all("x_true" not in scene for scene in f["scenes"].values())
    script = client.get(job["script"]["url"], headers=worker)
    assert hashlib.sha256(script.content).hexdigest() == job["script"]["sha256"]

    assert client.post(f"/api/v1/worker/runs/{sid}/heartbeat?attempt=1", headers=worker).status_code == 204
    assert client.post(f"/api/v1/worker/runs/{sid}/heartbeat?attempt=2", headers=worker).status_code == 409
    assert client.get(f"/api/v1/worker/runs/{sid}/input?attempt=2", headers=worker).status_code == 409

    body = _result(view, tmp_path / "result.h5")
    r = client.put(f"/api/v1/worker/runs/{sid}/output?attempt=1", content=body, headers=worker)
    assert r.status_code == 204, r.text
    record = {"outcome": "succeeded", "exit_code": 0, "runtime_seconds": 2.5, "peak_memory_bytes": 10, "log": "ok"}
    r = client.post(f"/api/v1/worker/runs/{sid}/finish?attempt=1", json=record, headers=worker)
    assert r.status_code == 200 and r.json() == {"status": "queued"}, r.text  # queued for scoring
    with new_session() as s:
        sub = s.get(Submission, sid)
        assert sub.file_path and Path(sub.file_path).read_bytes() == body and sub.outcome == "succeeded"
        assert (sub.exit_code, sub.runtime_seconds, sub.log_tail) == (0, 2.5, "ok")
        runs = s.query(Run).filter(Run.submission_id == sid).all()
        assert [(r.worker, r.outcome) for r in runs] == [("compute-1:h1", "succeeded")]
    # The attempt is over: a late upload or record is refused.
    r = client.put(f"/api/v1/worker/runs/{sid}/output?attempt=1", content=body, headers=worker)
    assert r.status_code == 409, r.text
    r = client.post(f"/api/v1/worker/runs/{sid}/finish?attempt=1", json=record, headers=worker)
    assert r.status_code == 409, r.text


def test_the_output_is_held_to_the_sandbox_cap_and_validated(hidden, monkeypatch, tmp_path):
    from database_testing import reset_caches

    client, _, sid, worker = hidden
    job = client.post(f"/api/v1/worker/runs/{sid}/claim", json={}, headers=worker).json()
    # A result of a default-size tier is megabytes: the sandbox's cap, not the 1 MiB of a JSON body.
    r = client.put(
        f"/api/v1/worker/runs/{sid}/output?attempt={job['attempt']}", content=b"x" * 3 * 2**20, headers=worker
    )
    assert r.status_code == 204, r.text
    r = client.post(
        f"/api/v1/worker/runs/{sid}/finish?attempt={job['attempt']}",
        json={"outcome": "nonzero_exit", "exit_code": 1, "log": "\x00" * 2**20},
        headers=worker,
    )
    assert r.json() == {"status": "failed"}, r.text
    with new_session() as s:
        assert len(s.get(Submission, sid).log_tail) == 64 * 1024  # the kept tail
    r = client.post(f"/api/v1/admin/submissions/{sid}/rescore", headers=ORG)
    assert r.status_code == 202, r.text

    monkeypatch.setenv("EDX_SANDBOX_OUTPUT_BYTES", "1000")
    reset_caches()
    job = client.post(f"/api/v1/worker/runs/{sid}/claim", json={}, headers=worker).json()
    r = client.put(f"/api/v1/worker/runs/{sid}/output?attempt={job['attempt']}", content=b"x" * 1001, headers=worker)
    assert r.status_code == 413, r.text
    r = client.put(f"/api/v1/worker/runs/{sid}/output?attempt={job['attempt']}", content=b"x" * 100, headers=worker)
    assert r.status_code == 204, r.text
    record = {"outcome": "succeeded", "exit_code": 0}
    r = client.post(f"/api/v1/worker/runs/{sid}/finish?attempt={job['attempt']}", json=record, headers=worker)
    assert r.json() == {"status": "failed"}, r.text
    state = client.get(f"/api/v1/submissions/{sid}", headers=ORG).json()
    assert state["outcome"] == "invalid_output"
    assert state["error_message"].startswith("/output/result.h5 is not a valid result")


def test_a_platform_error_is_retried(hidden):
    client, _, sid, worker = hidden
    job = client.post(f"/api/v1/worker/runs/{sid}/claim", json={}, headers=worker).json()
    record = {"outcome": "platform_error", "message": "the compute host lost its daemon"}
    r = client.post(f"/api/v1/worker/runs/{sid}/finish?attempt={job['attempt']}", json=record, headers=worker)
    assert r.json() == {"status": "queued"}, r.text
    state = client.get(f"/api/v1/submissions/{sid}", headers=ORG).json()
    assert state["error_message"] == "the compute host lost its daemon"
