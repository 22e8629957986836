"""Load: N HDF5 submissions from C concurrent clients on loopback, drained by W workers (P6).

The compose stack's shape on one machine: the real API (``edx-arena serve``, uvicorn) and W
Celery worker processes (solo pool), PostgreSQL (a fresh database on the server at
``--pg``) and a private redis-server on a free port (no persistence). Tiers use the small
preset so scoring is quick; the daily quota is raised through ``EDX_QUOTA_DEV``. C client
threads each upload N / C valid Dev results through ``POST /api/v1/submissions``.

Reported: upload time and rate, drain time (first upload to the last submission finished) and
throughput, and straight from the database: scored, failed, lost (not finished in the time
bound), duplicated (a submission with more than one set of score rows of the scorer version,
or more than one run without a platform failure between).

Target (P6): every submission scored, 0 lost, 0 duplicated.
Run: ``python benchmarks/bench_load.py [--submissions 1000] [--clients 20] [--workers 2]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psycopg  # noqa: E402
import redis  # noqa: E402

ORGANIZER_TOKEN = "bench-load-organizer-token"
ORG = {"Authorization": f"Bearer {ORGANIZER_TOKEN}"}
PG_SERVER = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


@dataclass
class LoadReport:
    submissions: int
    clients: int
    workers: int
    accepted: int
    refused: int
    upload_seconds: float
    drain_seconds: float
    throughput_per_second: float
    scored: int
    failed: int
    lost: int
    duplicated: int
    retried: int


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.2)


def _result_bytes(tmp: Path, seed: int) -> bytes:
    from harness.formats import write_result
    from harness.scenes import build_tier
    from harness.solvers import solve_dataset

    path = tmp / "result.h5"
    write_result(solve_dataset(build_tier("dev", seed=seed, preset="small").without_truth(), solver="nnls"), path)
    return path.read_bytes()


def _counts(db_url: str) -> dict[str, int]:
    """Outcomes read from the database, not from the API (its view could hide a duplicate)."""
    dsn = db_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn:
        status = dict(conn.execute("SELECT status, count(*) FROM submissions GROUP BY status").fetchall())
        # The score rows of one submission: 4 (3 scenes + the tier row) exactly once.
        dup_scores = conn.execute(
            "SELECT count(*) FROM (SELECT submission_id FROM scores GROUP BY submission_id, scoring_version, scene_id "
            "HAVING count(*) > 1) d"
        ).fetchone()[0]
        wrong_sets = conn.execute(
            "SELECT count(*) FROM submissions s WHERE s.status = 'scored' AND "
            "(SELECT count(*) FROM scores WHERE submission_id = s.id) <> 4"
        ).fetchone()[0]
        succeeded_twice = conn.execute(
            "SELECT count(*) FROM (SELECT submission_id FROM runs WHERE outcome = 'succeeded' GROUP BY submission_id "
            "HAVING count(*) > 1) d"
        ).fetchone()[0]
        retried = conn.execute("SELECT count(*) FROM submissions WHERE attempt > 1").fetchone()[0]
    return {"status": status, "duplicated": dup_scores + wrong_sets + succeeded_twice, "retried": retried}


def run_load(
    *, submissions: int, clients: int, workers: int, work_dir: Path, timeout: float = 1800, lease_seconds: int = 60
) -> LoadReport:
    """Start the stack under ``work_dir``, push the load, wait for the drain, stop everything."""
    db_name = f"edx_arena_load_{uuid.uuid4().hex[:10]}"
    db_url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{db_name}"
    redis_port, api_port = _free_port(), _free_port()
    procs: list[subprocess.Popen] = []
    logs = work_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with psycopg.connect(PG_SERVER, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db_name}"')
    env = {
        **os.environ,
        "EDX_DATA_DIR": str(work_dir / "var"),
        "EDX_DATABASE_URL": db_url,
        "EDX_BROKER_URL": f"redis://127.0.0.1:{redis_port}/0",
        "EDX_ORGANIZER_TOKEN": ORGANIZER_TOKEN,
        "EDX_ENVIRONMENT": "production",
        "EDX_QUOTA_DEV": str(submissions + 1),  # the quota raised for the load, through the settings
        "EDX_LEASE_SECONDS": str(lease_seconds),
        "EDX_LEADERBOARD_CACHE_SECONDS": "2",
    }
    for key in ("EDX_STORAGE_DIR",):
        env.pop(key, None)

    def spawn(name: str, argv: list[str]) -> subprocess.Popen:
        proc = subprocess.Popen(
            argv, env=env, cwd=ROOT, stdout=open(logs / f"{name}.log", "ab"), stderr=subprocess.STDOUT
        )
        procs.append(proc)
        return proc

    try:
        spawn(
            "redis",
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        )
        _wait(lambda: _redis_up(redis_port), 15, "redis-server")
        api = spawn("api", [sys.executable, "-m", "services.cli.main", "serve", "--port", str(api_port)])
        base = f"http://127.0.0.1:{api_port}"
        _wait(lambda: _api_up(base, api), 90, "the API")
        with httpx.Client(base_url=base, timeout=120) as c:
            r = c.post("/api/v1/admin/tiers/dev/dataset", json={"seed": 41, "preset": "small"}, headers=ORG)
            r.raise_for_status()
            tokens = []
            for i in range(clients):
                r = c.post("/api/v1/admin/participants", json={"name": f"load{i}"}, headers=ORG)
                r.raise_for_status()
                tokens.append({"Authorization": f"Bearer {r.json()['token']}"})
        payload = _result_bytes(work_dir, 41)
        for i in range(workers):
            spawn(
                f"worker{i}",
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "services.worker.celery_app",
                    "worker",
                    "-Q",
                    "edx",
                    "--pool",
                    "solo",
                    "--hostname",
                    f"load{i}@%h",
                    "-l",
                    "warning",
                ],
            )

        ids: list[str] = []
        refused: list[str] = []
        lock = threading.Lock()
        per_client = [submissions // clients + (1 if i < submissions % clients else 0) for i in range(clients)]

        def client(i: int) -> None:
            with httpx.Client(base_url=base, timeout=120) as c:
                for _ in range(per_client[i]):
                    r = c.post(
                        "/api/v1/submissions",
                        data={"tier": "dev", "method": f"load{i}"},
                        files={"file": ("r.h5", payload)},
                        headers=tokens[i],
                    )
                    with lock:
                        (
                            ids.append(r.json()["id"])
                            if r.status_code == 202
                            else refused.append(f"{r.status_code} {r.text[:200]}")
                        )

        started = time.monotonic()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=timeout)
        uploaded = time.monotonic() - started

        def drained() -> bool:
            counts = _counts(db_url)["status"]
            return counts.get("scored", 0) + counts.get("failed", 0) >= len(ids)

        try:
            _wait(drained, max(timeout - uploaded, 1), "the queue to drain")
        except TimeoutError:
            pass  # reported as lost below
        drain = time.monotonic() - started
        counts = _counts(db_url)
        status = counts["status"]
        finished = status.get("scored", 0) + status.get("failed", 0)
        return LoadReport(
            submissions=submissions,
            clients=clients,
            workers=workers,
            accepted=len(ids),
            refused=len(refused),
            upload_seconds=round(uploaded, 2),
            drain_seconds=round(drain, 2),
            throughput_per_second=round(finished / drain, 2),
            scored=status.get("scored", 0),
            failed=status.get("failed", 0),
            lost=submissions - finished,
            duplicated=counts["duplicated"],
            retried=counts["retried"],
        )
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(procs):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        with psycopg.connect(PG_SERVER, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')


def _redis_up(port: int) -> bool:
    try:
        return redis.Redis(port=port, socket_timeout=1).ping()
    except redis.RedisError:
        return False


def _api_up(base: str, proc: subprocess.Popen) -> bool:
    if proc.poll() is not None:
        raise RuntimeError(f"the API exited with {proc.returncode}")
    try:
        return httpx.get(f"{base}/api/v1/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submissions", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=1800, help="bound on the whole run, seconds")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edx-load-"))
    try:
        report = run_load(
            submissions=args.submissions,
            clients=args.clients,
            workers=args.workers,
            work_dir=work,
            timeout=args.timeout,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for key, value in asdict(report).items():
        print(f"{key:>22}: {value}")
    ok = report.scored == report.submissions and report.lost == 0 and report.duplicated == 0
    print(f"P6 (all scored, 0 lost, 0 duplicated): {'met' if ok else 'NOT met'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
