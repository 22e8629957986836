"""Fault injection with real processes: a worker killed mid-run, Redis and PostgreSQL restarted
(private servers on free ports, so other suites are not disturbed), a full or read-only
upload filesystem, an unreachable Docker daemon, and graceful shutdown of worker and API.
Every wait is bounded."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from arena_testing import add_participant
from database_testing import drop_backend, make_backend, reset_caches
from reliability_testing import (
    PrivatePostgres,
    PrivateRedis,
    db_counts,
    fast_settings,
    free_port,
    poll_states,
    seed,
    start_api,
    start_worker,
    stop,
    wait_for,
)

SLOW_IMAGE = "edx-arena-test/slow-runner:latest"
#: The slow runner sleeps this long before solving: a window to kill or stop its worker in.
SLOW_SECONDS = 6


@pytest.fixture(scope="session")
def slow_image():
    """The reference runner behind a sleep (built locally FROM edx-arena/runner, no network)."""
    import io

    import docker

    client = docker.from_env()
    dockerfile = (
        "FROM edx-arena/runner:latest\n"
        f'ENTRYPOINT ["sh", "-c", "sleep {SLOW_SECONDS}; exec python3 -m harness.entrypoint"]\n'
    )
    client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=SLOW_IMAGE, rm=True, pull=False)
    return SLOW_IMAGE


@pytest.fixture
def redis_server(tmp_path, monkeypatch):
    server = PrivateRedis(tmp_path / "redis")
    try:
        server.start()
        yield server  # the backend fixture points EDX_BROKER_URL at it
    finally:
        server.stop()


@pytest.fixture
def pg_stack(tmp_path, monkeypatch, redis_server):
    """Shared PostgreSQL (a database of our own) + a private Redis: the compose stack's shape."""
    backend, db_name = make_backend("postgres", tmp_path, monkeypatch)
    monkeypatch.setenv("EDX_BROKER_URL", redis_server.url)
    fast_settings(monkeypatch)
    yield backend
    drop_backend(db_name)


@pytest.fixture
def workers(tmp_path):
    """Start workers with ``workers.start(name, **env)``; all are stopped at the end."""

    class Workers(list):
        def start(self, name: str, **env: str) -> subprocess.Popen:
            proc = start_worker(tmp_path / f"{name}.log", name=name, env=env)
            self.append(proc)
            return proc

    procs = Workers()
    yield procs
    for proc in procs:
        stop(proc, timeout=30)


def _client():
    from fastapi.testclient import TestClient

    from services.main import app

    return TestClient(app)


def _containers(submission_id: str) -> list:
    import docker

    return docker.from_env().containers.list(all=True, filters={"label": f"edx-arena.submission={submission_id}"})


def _submit_hdf5(client, headers, payload: bytes) -> str:
    r = client.post(
        "/api/v1/submissions",
        data={"tier": "dev", "method": "nnls"},
        files={"file": ("r.h5", payload)},
        headers=headers,
    )
    assert r.status_code == 202, r.text
    return r.json()["id"]


def _assert_scored_once(states: dict[str, dict]) -> None:
    for sid, state in states.items():
        assert state["status"] == "scored" and state["outcome"] == "succeeded", state
        assert db_counts(sid)[0] == 4, sid  # 3 scenes + the tier row: never a second set


@pytest.mark.docker
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_worker_killed_mid_container_run_is_reaped_and_scored_once(pg_stack, workers, slow_image):
    with _client() as api:
        seed(api, ("hidden",))
        alice = add_participant(api, "alice", images=(slow_image,))
        first = workers.start("first")
        r = api.post("/api/v1/submissions/container", json={"image": slow_image, "method": "slow"}, headers=alice)
        assert r.status_code == 202, r.text
        sid = r.json()["id"]
        container = wait_for(
            lambda: next(iter(c for c in _containers(sid) if c.status == "running"), None),
            timeout=90,
            what="the sandbox container to start",
        )
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=15)
        container.reload()
        assert container.status == "running"  # the daemon keeps the dead worker's container

        workers.start("second")
        state = poll_states(api, alice, [sid], timeout=150)[sid]
        assert state["status"] == "scored" and state["outcome"] == "succeeded", state
        assert state["attempt"] == 2 and state["charged"] is True
        assert db_counts(sid) == (4, 2)  # scored once; two runs, the first closed as lost
        provenance = api.get(f"/api/v1/submissions/{sid}/provenance", headers=alice).json()
        assert [run["outcome"] for run in provenance["runs"]] == ["platform_error", "succeeded"]
        # The reaper removed the dead run's container; the second run removed its own.
        import docker

        with pytest.raises(docker.errors.NotFound):
            container.reload()
        assert _containers(sid) == []


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_redis_restart_loses_no_submission(pg_stack, redis_server, workers, dev_result):
    """Redis without persistence is restarted while submissions wait in it, and later is down
    while more are submitted: every one of them is scored once. The database, not the broker,
    is the record; the reapers send lost messages again."""
    with _client() as api:
        seed(api)
        alice = add_participant(api, "alice")
        queued = [_submit_hdf5(api, alice, dev_result) for _ in range(5)]
        assert redis_server.client().llen("scoring") == 5
        redis_server.stop()
        redis_server.start()
        assert redis_server.client().llen("scoring") == 0  # every message is gone

        worker = workers.start("w1")
        _assert_scored_once(poll_states(api, alice, queued, timeout=120))

        # Broker down while the API accepts uploads, then back with the worker still running.
        redis_server.stop()
        during = [_submit_hdf5(api, alice, dev_result) for _ in range(2)]
        assert all(api.get(f"/api/v1/submissions/{i}", headers=alice).json()["status"] == "queued" for i in during)
        redis_server.start()
        _assert_scored_once(poll_states(api, alice, during, timeout=120))
        assert worker.poll() is None  # it reconnected rather than died


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.timeout(420)
def test_postgres_restart_during_scoring(tmp_path, monkeypatch, redis_server, workers, dev_result):
    """A private PostgreSQL is stopped while a worker is scoring: the API answers 503 with a
    clear code meanwhile, and once it is back every submission ends scored once."""
    pg = PrivatePostgres()
    try:
        pg.init()
        make_backend("sqlite", tmp_path, monkeypatch)
        monkeypatch.setenv("EDX_DATABASE_URL", pg.url)
        monkeypatch.setenv("EDX_BROKER_URL", redis_server.url)
        fast_settings(monkeypatch)
        with _client() as api:
            seed(api)
            alice = add_participant(api, "alice")
            worker = workers.start("w1")
            ids = [_submit_hdf5(api, alice, dev_result) for _ in range(6)]

            def in_progress() -> str | None:
                for i in ids:
                    if api.get(f"/api/v1/submissions/{i}", headers=alice).json()["status"] in ("running", "scoring"):
                        return i
                return None

            # Freeze the worker inside a run, so the restart lands mid-run whatever the timing.
            caught = None
            for _ in range(len(ids)):
                wait_for(in_progress, timeout=60, what="a run in progress", interval=0.02)
                worker.send_signal(signal.SIGSTOP)
                caught = in_progress()
                if caught:
                    break
                worker.send_signal(signal.SIGCONT)
            assert caught, "no run could be caught in progress"
            pg.stop()
            worker.send_signal(signal.SIGCONT)
            for path in ("/api/v1/health", f"/api/v1/submissions/{caught}"):
                r = api.get(path, headers=alice)
                assert r.status_code == 503, r.text
                assert r.json()["error"] == {
                    "code": "database_unavailable",
                    "message": "the database is unavailable; retry in a few seconds",
                }
            time.sleep(4)  # longer than a lease: the interrupted run's lease expires meanwhile
            pg.start()
            states = poll_states(api, alice, ids, timeout=180)
            _assert_scored_once(states)
            assert db_counts(caught)[1] <= 3  # the interrupted run was retried within the attempts
            assert api.get("/api/v1/health").status_code == 200
    finally:
        reset_caches()
        pg.destroy()


@pytest.fixture
def small_fs(backend, tmp_path):
    """The uploads folder on a 1 MiB tmpfs of its own (a real "disk full")."""
    from core.settings import get_settings

    uploads = get_settings().storage_dir / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(uploads)], check=True)
    yield uploads
    subprocess.run(["umount", "-l", str(uploads)], check=True)


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_upload_to_full_or_read_only_storage(small_fs, dev_result, fault):
    from db.models import Submission
    from db.session import new_session

    if fault == "full":  # leave less room than the upload needs
        filler = small_fs / "filler"
        with open(filler, "wb") as f:
            try:
                f.write(b"\0" * (2 * 2**20))
            except OSError:
                pass
        os.truncate(filler, 2**20 - len(dev_result) // 2)
    else:
        subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    before = sorted(p.name for p in small_fs.iterdir())
    with _client() as api:
        seed(api)
        alice = add_participant(api, "alice")
        r = api.post("/api/v1/submissions", data={"tier": "dev"}, files={"file": ("r.h5", dev_result)}, headers=alice)
        assert r.status_code == 507, r.text
        assert r.json()["error"] == {
            "code": "insufficient_storage",
            "message": "the server could not store the upload (storage full or unwritable); nothing was recorded",
        }
    assert sorted(p.name for p in small_fs.iterdir()) == before  # no half-written file
    with new_session() as s:
        assert s.query(Submission).count() == 0  # no row, no quota used


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_docker_daemon_unreachable_ends_platform_error_uncharged(backend, tmp_path, monkeypatch, workers):
    """The worker's daemon is a dead socket: the run is retried, then fails as
    ``platform_error`` with a message the participant can act on, and the slot is given back."""
    monkeypatch.setenv("EDX_QUOTA_HIDDEN", "1")
    reset_caches()
    with _client() as api:
        seed(api, ("hidden",))
        alice = add_participant(api, "alice", images=("edx-arena/runner:latest",))
        workers.start("nodocker", DOCKER_HOST=f"unix://{tmp_path}/dead.sock")
        r = api.post("/api/v1/submissions/container", json={"image": "edx-arena/runner:latest"}, headers=alice)
        assert r.status_code == 202, r.text
        sid = r.json()["id"]
        state = poll_states(api, alice, [sid], timeout=150)[sid]
        assert state["status"] == "failed" and state["outcome"] == "platform_error", state
        assert state["attempt"] == 3 and state["charged"] is False
        assert state["error_message"] == (
            "the container platform is unavailable: DockerException (after 3 attempts; not charged)"
        )
        assert db_counts(sid) == (0, 3)
        # Not charged: the day's only Hidden slot is free again.
        again = api.post("/api/v1/submissions/container", json={"image": "edx-arena/runner:latest"}, headers=alice)
        assert again.status_code == 202, again.text


@pytest.mark.docker
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigterm_worker_finishes_its_current_run(pg_stack, workers, slow_image):
    with _client() as api:
        seed(api, ("hidden",))
        alice = add_participant(api, "alice", images=(slow_image,))
        worker = workers.start("w1")
        r = api.post("/api/v1/submissions/container", json={"image": slow_image}, headers=alice)
        sid = r.json()["id"]
        wait_for(
            lambda: any(c.status == "running" for c in _containers(sid)), timeout=90, what="the container to start"
        )
        assert stop(worker, timeout=120) == 0  # warm shutdown: it waited for the run
        state = api.get(f"/api/v1/submissions/{sid}", headers=alice).json()
        assert state["status"] == "scored" and state["attempt"] == 1, state
        assert db_counts(sid) == (4, 1)
        assert _containers(sid) == []


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_sigterm_api_finishes_an_upload_in_flight(backend, tmp_path, dev_result):
    """SIGTERM arrives while a client is still sending its file: the upload completes (202,
    stored, queued), then the server exits cleanly."""
    import httpx

    port = free_port()
    api = start_api(tmp_path / "api.log", port=port)
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=60) as c:
            seed(c)
            alice = add_participant(c, "alice")
        boundary = "edxarenaboundary"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="tier"\r\n\r\ndev\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="r.h5"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        half = len(dev_result) // 2

        def body():
            yield head + dev_result[:half]
            time.sleep(0.5)
            api.send_signal(signal.SIGTERM)  # mid-upload
            time.sleep(1.0)
            yield dev_result[half:] + tail

        r = httpx.post(
            f"{base}/api/v1/submissions",
            content=body(),
            timeout=60,
            headers={**alice, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        assert r.status_code == 202, r.text
        # uvicorn re-raises the signal once its graceful shutdown is complete.
        assert api.wait(timeout=60) in (0, -signal.SIGTERM)
        log = (tmp_path / "api.log").read_text()
        assert (
            log.index("Shutting down")
            < log.index('"POST /api/v1/submissions HTTP/1.1" 202')
            < log.index("Finished server process")
        )
    finally:
        stop(api)
    from db.models import Submission
    from db.session import new_session

    with new_session() as s:
        row = s.get(Submission, r.json()["id"])
        assert row.status == "queued" and Path(row.file_path).read_bytes() == dev_result
