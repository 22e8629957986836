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

**Ceiling (issue 20).** In the same run, before the load, the same N results are validated
(:func:`harness.formats.validate_result`, in-process) and scored (:func:`harness.scoring.score_tier`,
the dataset loaded once per process) by calling the harness directly in W processes: no API, no
queue, no database. ``throughput ÷ ceiling`` is the share of what the cores can score that the
service delivers (goal ≥ 0.5). Where the rest goes is read from the database's own timestamps
(row created, run claimed, scoring started and ended, submission finished) and from the
clients' request times, and printed as a table.

Run: ``python benchmarks/bench_load.py [--submissions 1000] [--clients 20] [--workers 2]``.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
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
    #: The same N validated and scored by the harness in W processes: results/s.
    ceiling_per_second: float = 0.0
    ratio_to_ceiling: float = 0.0
    #: phase → (mean ms, p99 ms, total s): where a submission's time goes.
    phases: dict | None = None


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


def _ceiling_worker(args: tuple[str, str, int]) -> float:
    """Validate and score ``count`` copies of the result in this process; returns seconds."""
    dataset_path, result_path, count = args
    from harness.formats import ResultExpectation, read_measurement, read_result, validate_result
    from harness.scoring import score_tier

    dataset = read_measurement(dataset_path)  # once per process, as a worker's cache does
    expect = ResultExpectation.for_dataset(dataset, max_bytes=1 << 30)
    started = time.perf_counter()
    for _ in range(count):
        validate_result(result_path, expect)
        score_tier(dataset, read_result(result_path, expect))
    return time.perf_counter() - started


def ceiling(*, submissions: int, workers: int, work_dir: Path, seed: int = 41) -> float:
    """Results/s when W processes validate and score N results by calling the harness directly."""
    from harness.formats import write_measurement
    from harness.scenes import build_tier

    dataset_path, result_path = work_dir / "ceiling-dev.h5", work_dir / "ceiling-result.h5"
    write_measurement(build_tier("dev", seed=seed, preset="small"), dataset_path, include_truth=True)
    result_path.write_bytes(_result_bytes(work_dir, seed))
    shares = [submissions // workers + (1 if i < submissions % workers else 0) for i in range(workers)]
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        pool.map(_ceiling_worker, [(str(dataset_path), str(result_path), n) for n in shares])
    return submissions / (time.perf_counter() - started)


def _p99(values: list[float]) -> float:
    return sorted(values)[max(0, round(0.99 * len(values)) - 1)] if values else 0.0


def _phases(db_url: str, request_seconds: list[float]) -> dict[str, tuple[float, float, float]]:
    """Where each submission's time went, from the database's timestamps and the clients' clocks.

    - request: the client's upload request (stream + hash + isolated validation + insert), per upload;
    - queue wait: row created → a worker claimed it (backlog and broker delivery);
    - claim → scoring: the worker's claim, lease and loading before scoring starts;
    - scoring: reading the result, scoring it and building the rows (score row start → end);
    - record: score rows end → submission finished (the commit);
    - worker idle between tasks: per worker, the gap from one submission's end to its next claim
      (broker delivery and the task's preamble when the queue is not empty).
    """
    dsn = db_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT s.created_at, r.started_at, sc.started_at, sc.ended_at, s.finished_at, r.worker "
            "FROM submissions s JOIN runs r ON r.submission_id = s.id "
            "JOIN scores sc ON sc.submission_id = s.id AND sc.scene_id = '' "
            "WHERE s.status = 'scored'"
        ).fetchall()
    parts: dict[str, list[float]] = {"queue wait": [], "claim → scoring": [], "scoring": [], "record": []}
    by_worker: dict[str, list[tuple]] = {}
    for created, claimed, score_start, score_end, finished, worker in rows:
        parts["queue wait"].append((claimed - created).total_seconds())
        parts["claim → scoring"].append((score_start - claimed).total_seconds())
        parts["scoring"].append((score_end - score_start).total_seconds())
        parts["record"].append((finished - score_end).total_seconds())
        by_worker.setdefault(worker, []).append((claimed, finished))
    gaps = []
    for spans in by_worker.values():
        spans.sort()
        gaps += [(b[0] - a[1]).total_seconds() for a, b in itertools.pairwise(spans)]
    parts["worker idle between tasks"] = [max(0.0, g) for g in gaps]
    parts = {"request (upload + validate + insert)": request_seconds, **parts}
    return {
        name: (
            round(1e3 * statistics.fmean(v), 1) if v else 0.0,
            round(1e3 * _p99(v), 1),
            round(sum(v), 1),
        )
        for name, v in parts.items()
    }


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
                    "runs,scoring",
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
        request_seconds: list[float] = []
        lock = threading.Lock()
        per_client = [submissions // clients + (1 if i < submissions % clients else 0) for i in range(clients)]

        def client(i: int) -> None:
            with httpx.Client(base_url=base, timeout=120) as c:
                for _ in range(per_client[i]):
                    sent = time.perf_counter()
                    r = c.post(
                        "/api/v1/submissions",
                        data={"tier": "dev", "method": f"load{i}"},
                        files={"file": ("r.h5", payload)},
                        headers=tokens[i],
                    )
                    with lock:
                        request_seconds.append(time.perf_counter() - sent)
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
            phases=_phases(db_url, request_seconds),
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
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="edx-load-"))
    try:
        top = ceiling(submissions=args.submissions, workers=args.workers, work_dir=work)
        report = run_load(
            submissions=args.submissions,
            clients=args.clients,
            workers=args.workers,
            work_dir=work,
            timeout=args.timeout,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report.ceiling_per_second = round(top, 2)
    report.ratio_to_ceiling = round(report.throughput_per_second / top, 2)
    print(f"load average before/after: {load_before} / {os.getloadavg()}")
    for key, value in asdict(report).items():
        if key != "phases":
            print(f"{key:>22}: {value}")
    print("\n| phase | mean ms | p99 ms | total s |\n|---|---|---|---|")
    for name, (mean, p99, total) in (report.phases or {}).items():
        print(f"| {name} | {mean} | {p99} | {total} |")
    goal = report.ratio_to_ceiling >= 0.5
    print(f"\nthroughput ÷ ceiling = {report.ratio_to_ceiling} (goal ≥ 0.5): {'met' if goal else 'MISSED'}")
    ok = report.scored == report.submissions and report.lost == 0 and report.duplicated == 0
    print(f"P6 (all scored, 0 lost, 0 duplicated): {'met' if ok else 'NOT met'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
