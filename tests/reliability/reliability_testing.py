"""Real processes for the reliability tests: private Redis and PostgreSQL servers on free
loopback ports (the machine's shared ones are never restarted), Celery workers and the API
server as subprocesses, and polling helpers. Every wait is bounded."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import redis

ROOT = Path(__file__).resolve().parents[2]
#: Seconds: short enough that an expired lease or a lost message is noticed within a test.
FAST = {
    "EDX_LEASE_SECONDS": "3",
    "EDX_QUEUED_STALE_SECONDS": "3",
    "EDX_MAX_ATTEMPTS": "3",
    "EDX_QUOTA_DEV": "0",
    "EDX_QUOTA_HIDDEN": "50",
}
SEEDS = {"public": 40, "dev": 41, "hidden": 42}


def fast_settings(monkeypatch, **extra: str) -> None:
    for key, value in {**FAST, **extra}.items():
        monkeypatch.setenv(key, value)
    from database_testing import reset_caches

    reset_caches()


def seed(client, tiers=("dev",)) -> None:
    for tier in tiers:
        r = client.post(
            f"/api/v1/admin/tiers/{tier}/dataset", json={"seed": SEEDS[tier], "preset": "small"}, headers=_org()
        )
        assert r.status_code == 201, r.text


def _org() -> dict[str, str]:
    from arena_testing import ORG

    return ORG


FINISHED = ("scored", "failed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, *, timeout: float, what: str, interval: float = 0.2):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


class PrivateRedis:
    """A redis-server of our own on a free port, without persistence (as scripts/setup.sh
    runs the machine's): a restart loses every message it held."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=open(self.workdir / "redis.log", "ab"),
            stderr=subprocess.STDOUT,
        )
        wait_for(self._ping, timeout=15, what="the private redis-server")

    def _ping(self) -> bool:
        try:
            return redis.Redis(port=self.port, socket_timeout=1).ping()
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)
        self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"{name} not found under /usr/lib/postgresql/*/bin (apt-get install postgresql)")
    return found[-1]


class PrivatePostgres:
    """A PostgreSQL cluster of our own (initdb into a temp dir, pg_ctl on a free port), run
    as the ``postgres`` user when we are root, so it can be stopped and started freely."""

    def __init__(self) -> None:
        import tempfile

        self.port = free_port()
        # Not under pytest's tmp_path: that is private to root, and the server runs as postgres.
        self.workdir = Path(tempfile.mkdtemp(prefix="edx-arena-pg-"))
        os.chmod(self.workdir, 0o755)
        self.data = self.workdir / "pgdata"
        self.socket_dir = self.workdir / "sock"

    def _run(self, *argv: str, timeout: float = 60) -> None:
        cmd = list(argv)
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, timeout=timeout, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def init(self) -> None:
        self.socket_dir.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.workdir, "postgres", "postgres")
            shutil.chown(self.socket_dir, "postgres", "postgres")
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self.start()
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE edx")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/edx"

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            _pg_bin("pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.workdir / "pg.log"),
            "-o",
            opts,
            "-w",
            "-t",
            "60",
            "start",
            timeout=90,
        )

    def stop(self) -> None:
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop", timeout=90)

    def destroy(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_worker(log_path: Path, *, name: str, env: dict | None = None, concurrency: int = 1) -> subprocess.Popen:
    """A real Celery worker process on the settings in ``os.environ`` (plus ``env``)."""
    pool = ["--pool", "solo"] if concurrency == 1 else ["--pool", "prefork", "--concurrency", str(concurrency)]
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "services.worker.celery_app",
            "worker",
            "-Q",
            "runs,scoring",
            *pool,
            "--hostname",
            f"{name}@%h",
            "-l",
            "info",
        ],
        env={**os.environ, **(env or {})},
        cwd=ROOT,
        stdout=open(log_path, "ab"),
        stderr=subprocess.STDOUT,
    )


def start_api(log_path: Path, *, port: int, env: dict | None = None) -> subprocess.Popen:
    """``edx-arena serve`` as a real process; returns once it answers /api/v1/health."""
    import httpx

    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli.main", "serve", "--port", str(port)],
        env={**os.environ, **(env or {})},
        cwd=ROOT,
        stdout=open(log_path, "ab"),
        stderr=subprocess.STDOUT,
    )

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the API exited with {proc.returncode}; see {log_path}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, timeout=60, what="the API to answer")
    return proc


def stop(proc: subprocess.Popen, *, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
    """Stop a process we started (by its own pid) and return its exit status."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
    return proc.returncode


def db_counts(submission_id: str) -> tuple[int, int]:
    """(score rows, run rows) of a submission, straight from the database."""
    from sqlalchemy import func, select

    from db.models import Run, Score
    from db.session import new_session

    with new_session() as s:
        return (
            s.scalar(select(func.count()).select_from(Score).where(Score.submission_id == submission_id)),
            s.scalar(select(func.count()).select_from(Run).where(Run.submission_id == submission_id)),
        )


def poll_states(client, headers, ids, *, timeout: float) -> dict[str, dict]:
    """Poll the API until every submission is scored or failed (a 503 while the database is
    down is waited out); their states by id."""
    states: dict[str, dict] = {}

    def done():
        for i in ids:
            if states.get(i, {}).get("status") in FINISHED:
                continue
            r = client.get(f"/api/v1/submissions/{i}", headers=headers)
            if r.status_code == 503:
                return False
            assert r.status_code == 200, r.text
            states[i] = r.json()
        return all(states.get(i, {}).get("status") in FINISHED for i in ids)

    try:
        wait_for(done, timeout=timeout, what="every submission to finish", interval=0.3)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: { {i: states.get(i, {}).get('status') for i in ids} }") from None
    return states
