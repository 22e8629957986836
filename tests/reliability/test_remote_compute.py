"""A compute worker on a second host, simulated on one machine (issue 19): a second dockerd
(its own data root, exec root and socket), a registry on a loopback port, Redis, and a compute
worker with DOCKER_HOST on the second daemon, its own data dir and no database settings; the API
and a scoring worker on the first host, against PostgreSQL.

An archive submission and a script submission to Hidden run on the second daemon, whose images
came only from the registry, and are scored; neither the second host's disk (its data dir and
its daemon's data root) nor the registry's storage holds a byte of the scene's truth; a compute
worker killed mid-run leaves the run to be requeued and scored exactly once by a compute worker
started afterwards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import httpx
import numpy as np
import pytest
from arena_testing import ORG
from database_testing import drop_backend, make_backend
from reliability_testing import ROOT, PrivateRedis, fast_settings, free_port, start_api, stop, wait_for
from remote_testing import scan, second_host, start_worker
from sqlalchemy import select

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

RUNNER = "edx-arena/runner:latest"
SOLVER = (ROOT / "tests" / "harness" / "sandbox" / "script_solver.py").read_text()
#: Slow enough to be killed mid-run: the sandbox is running when the worker dies.
SLOW_SOLVER = "import time\ntime.sleep(25)\n" + SOLVER


def _cli(*argv: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", *argv],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _truth_needles(full_path: str) -> list[bytes]:
    """Bytes only the truth has: a varied stretch of each x_true map, raw and as stored (gzip)."""
    needles = []
    with h5py.File(full_path, "r") as f:
        for scene in f["scenes"].values():
            x = scene["x_true"]
            for e in range(x.shape[0]):
                raw = np.ascontiguousarray(x[e], dtype=np.float32).tobytes()
                start = max(range(0, len(raw) - 256, 64), key=lambda i: len(set(raw[i : i + 256])))
                needles.append(raw[start : start + 256])
                _, stored = x.id.read_direct_chunk((e, 0, 0))
                needles.append(bytes(stored[16:272]))
    return needles


@pytest.fixture
def server(tmp_path, monkeypatch):
    backend, db_name = make_backend("postgres", tmp_path, monkeypatch)
    # A redis-server of its own: a database number on the shared one could be another test's.
    broker_server = PrivateRedis(tmp_path / "redis")
    broker_server.start()
    fast_settings(monkeypatch, EDX_BROKER_URL=broker_server.url, EDX_LEASE_SECONDS="6")
    yield {"broker": broker_server.url, "backend": backend}
    broker_server.stop()
    drop_backend(db_name)


def _status(api, headers, sid) -> dict:
    r = api.get(f"/api/v1/submissions/{sid}", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def _wait_scored(api, headers, ids, timeout=900) -> dict[str, dict]:
    states: dict[str, dict] = {}

    def done():
        states.update({k: _status(api, headers, sid) for k, sid in ids.items()})
        return all(s["status"] in ("scored", "failed") for s in states.values())

    wait_for(done, timeout=timeout, what=f"{list(ids)} to finish", interval=1)
    return states


@pytest.mark.timeout(1800)
def test_compute_worker_on_a_second_host(server, tmp_path, monkeypatch):
    from db.models import Dataset, Run, Score, Submission
    from db.session import new_session

    with second_host() as host:
        monkeypatch.setenv("EDX_IMAGE_REGISTRY", host.registry)
        server_env = {**os.environ}
        port = free_port()
        api_url = f"http://127.0.0.1:{port}"
        api_proc = start_api(tmp_path / "api.log", port=port)
        scoring = start_worker(["--role", "scoring", "--hostname", "scoring@%h"], server_env, tmp_path / "scoring.log")
        compute = None
        try:
            api = httpx.Client(base_url=api_url, timeout=900)
            r = api.post("/api/v1/admin/tiers/hidden/dataset", json={"seed": 42, "preset": "small"}, headers=ORG)
            assert r.status_code == 201, r.text
            r = api.post("/api/v1/admin/participants", json={"name": "alice"}, headers=ORG)
            alice = {"Authorization": f"Bearer {r.json()['token']}"}

            made = _cli("admin", "create-worker", "remote-1", env=server_env)
            assert made.returncode == 0, made.stderr
            token = made.stdout.strip().splitlines()[-1]
            # The worker token reaches only the worker endpoints.
            worker_auth = {"Authorization": f"Bearer {token}"}
            r = api.post("/api/v1/submissions/script", files={"file": ("m.py", b"")}, headers=worker_auth)
            assert r.status_code == 401 and "worker endpoints" in r.text, r.text
            assert api.get("/api/v1/submissions/none", headers=worker_auth).status_code == 401
            assert api.post("/api/v1/worker/runs/x/claim", headers=alice, json={}).status_code == 403

            # The compute host: no database, no server data dir, its own daemon and caches.
            compute_dir = host.root / "compute"
            compute_env = {k: v for k, v in os.environ.items() if not k.startswith("EDX_")}
            compute_env.update(
                EDX_BROKER_URL=server["broker"],
                EDX_API_URL=api_url,
                EDX_WORKER_TOKEN=token,
                EDX_DATA_DIR=str(compute_dir),
                DOCKER_HOST=host.docker_host,
            )
            second = host.client()
            assert second.images.list(all=True) == []  # nothing loaded there by hand
            compute = start_worker(["--hostname", "remote-1@%h"], compute_env, tmp_path / "compute-1.log")

            archive = tmp_path / "runner.tar"  # 1.5 GB: on disk, streamed, never held in memory
            subprocess.run(["docker", "save", "-o", str(archive), RUNNER], check=True, timeout=600)
            with archive.open("rb") as f:
                r = api.post(
                    "/api/v1/submissions/container/archive",
                    data={"method": "runner archive"},
                    files={"file": ("image.tar", f, "application/x-tar")},
                    headers=alice,
                )
            archive.unlink()
            assert r.status_code == 202, r.text
            ids = {"archive": r.json()["id"]}
            r = api.post(
                "/api/v1/submissions/script",
                data={"method": "script"},
                files={"file": ("main.py", SOLVER.encode(), "text/x-python")},
                headers=alice,
            )
            assert r.status_code == 202, r.text
            ids["script"] = r.json()["id"]
            states = _wait_scored(api, alice, ids)
            for key, state in states.items():
                assert (state["status"], state["outcome"]) == ("scored", "succeeded"), (key, state)

            with new_session() as s:
                subs = {k: s.get(Submission, sid) for k, sid in ids.items()}
                for sub in subs.values():
                    assert sub.image_ref and sub.image_ref.startswith(f"{host.registry}/"), sub.image_ref
                    assert "@sha256:" in sub.image_ref
                    runs = s.scalars(select(Run).where(Run.submission_id == sub.id).order_by(Run.attempt)).all()
                    assert "remote-1@" in runs[0].worker, [r.worker for r in runs]  # "<account>:<host>"
                    assert runs[0].outcome == "succeeded"
                    assert runs[-1].worker.startswith("scoring@"), [r.worker for r in runs]  # scored at home
                    tier_rows = s.scalars(select(Score).where(Score.submission_id == sub.id, Score.scene_id == ""))
                    assert len(tier_rows.all()) == 1
                second_ids = {image.id for image in second.images.list()}
                assert {sub.image_digest for sub in subs.values()} <= second_ids  # pulled, by digest
                full = s.scalar(select(Dataset.full_path).where(Dataset.tier == "hidden", Dataset.active))

            # A compute worker killed mid-run: requeued, then scored once by one started later.
            r = api.post(
                "/api/v1/submissions/script",
                data={"method": "slow script"},
                files={"file": ("main.py", SLOW_SOLVER.encode(), "text/x-python")},
                headers=alice,
            )
            assert r.status_code == 202, r.text
            slow = r.json()["id"]
            wait_for(
                lambda: second.containers.list(filters={"label": f"edx-arena.submission={slow}"}),
                timeout=300,
                what="the slow run's container on the second daemon",
            )
            os.kill(compute.pid, signal.SIGKILL)
            compute.wait(timeout=30)

            def reaped() -> bool:
                with new_session() as s:
                    first = s.scalars(select(Run).where(Run.submission_id == slow).order_by(Run.attempt)).first()
                    return first is not None and first.outcome == "platform_error"

            wait_for(reaped, timeout=120, what="the reaper to requeue the dead worker's run")
            compute = start_worker(["--hostname", "remote-2@%h"], compute_env, tmp_path / "compute-2.log")
            state = _wait_scored(api, alice, {"slow": slow})["slow"]
            assert (state["status"], state["outcome"]) == ("scored", "succeeded"), state
            with new_session() as s:
                runs = s.scalars(select(Run).where(Run.submission_id == slow).order_by(Run.attempt)).all()
                seen = [(r.worker, r.outcome) for r in runs]
                assert "remote-1@" in runs[0].worker and runs[0].outcome == "platform_error", seen
                assert any("remote-2@" in r.worker and r.outcome == "succeeded" for r in runs), seen
                assert runs[-1].worker.startswith("scoring@"), seen
                rows = s.scalars(select(Score).where(Score.submission_id == slow)).all()
                assert sum(row.scene_id == "" for row in rows) == 1
                assert len(rows) == len({row.scene_id for row in rows})  # one row per scene: scored once
            # The dead worker's container was removed by the next one at its start.
            assert second.containers.list(all=True) == []

            # The truth never left the server: not on the second host, not in the registry.
            needles = _truth_needles(full)
            assert scan([Path(full).parent], needles)  # the scan finds it where it is
            assert scan([compute_dir, host.registry_dir], needles) == []
            assert scan([host.data_root], needles) == []
        finally:
            for proc in (compute, scoring, api_proc):
                if proc is not None:
                    stop(proc)
    assert subprocess.run(["ip", "link", "show", "docker0"], capture_output=True).returncode == 0
