"""Compute hosts (issue 19): Hidden runs of the reference image on one vs two compute daemons,
and the per-run overhead of the HTTP file path vs the bind mount, in one run.

The second-host test's shape (tests/reliability/remote_testing.py): the API and a scoring
worker on the machine's daemon (PostgreSQL, Redis), a registry on loopback, and one or two
extra dockerds (own data root, exec root, socket; a private bridge), each with a compute worker
(solo pool: one run at a time) whose runs are limited to one CPU (``EDX_SANDBOX_CPUS=1``).

Each run must really run: ``N`` distinct images are built from the reference image (a label
each, so ``_reuse`` finds no identical earlier run) and submitted as local image names; the
registry holds their shared layers once. Phase 1 queues ``N`` runs, then one compute daemon
drains them; phase 2 another ``N`` with two; the span is the first run's start to the last
one's end (intake and worker start-up excluded) and the ratio is span(one) ÷ span(two). The base
layers are pulled on each daemon before the clock starts (a warm cache, as in steady state).
Defaults: the default preset and the ``calibrated`` solver, so the run, not the platform,
dominates.

Overhead: per run, ``finished − started − runtime`` (claim, input, upload, validation, hand-off
and scoring), for ``K`` runs through a compute worker vs ``K`` through a worker of role
``all`` on the machine's daemon (the bind mount path); medians.

Run: ``python benchmarks/bench_remote.py [--runs 20] [--overhead-runs 5]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "reliability"))

import httpx  # noqa: E402
import psycopg  # noqa: E402
from reliability_testing import PrivateRedis, free_port, start_api, stop, wait_for  # noqa: E402
from remote_testing import second_host, start_worker  # noqa: E402

ORGANIZER_TOKEN = "bench-remote-organizer-token"
ORG = {"Authorization": f"Bearer {ORGANIZER_TOKEN}"}
PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
RUNNER = "edx-arena/runner:latest"


def _images(n: int, tag: str, solver: str) -> list[str]:
    """``n`` distinct images of the reference solver (one label each)."""
    names = []
    for i in range(n):
        name = f"edx-arena-bench/remote-{tag}-{i}:latest"
        subprocess.run(
            ["docker", "build", "-q", "-t", name, "--label", f"edx-arena.bench={tag}-{i}", "-"],
            input=f"FROM {RUNNER}\nENV SOLVER={solver}\n".encode(),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        names.append(name)
    return names


def _submit(api: httpx.Client, headers: dict, images: list[str]) -> list[str]:
    ids = []
    for name in images:
        # as the organizer: any image on the daemon (a participant may submit only the images it owns)
        r = api.post("/api/v1/submissions/container", json={"image": name, "method": "bench"}, headers=ORG)
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    return ids


def _wait(api: httpx.Client, ids: list[str], timeout: float = 3600) -> tuple[float, list[dict]]:
    """Wait for ``ids``; the span from the first run's start to the last one's end (intake and
    worker start-up excluded), and their states."""
    states: dict[str, dict] = {}

    def done() -> bool:
        for sid in ids:
            if states.get(sid, {}).get("status") not in ("scored", "failed"):
                states[sid] = api.get(f"/api/v1/submissions/{sid}", headers=ORG).json()  # exact runtimes
        return all(states[i]["status"] in ("scored", "failed") for i in ids)

    wait_for(done, timeout=timeout, what="the runs to finish", interval=0.5)
    failed = [s for s in states.values() if s["status"] != "scored"]
    assert not failed, failed[:3]
    started = min(datetime.fromisoformat(s["started_at"]) for s in states.values())
    finished = max(datetime.fromisoformat(s["finished_at"]) for s in states.values())
    return (finished - started).total_seconds(), [states[i] for i in ids]


def _drain(api: httpx.Client, headers: dict, images: list[str]) -> tuple[float, list[dict]]:
    return _wait(api, _submit(api, headers, images))


def _overheads(states: list[dict]) -> list[float]:
    out = []
    for s in states:
        started = datetime.fromisoformat(s["started_at"])
        finished = datetime.fromisoformat(s["finished_at"])
        out.append((finished - started).total_seconds() - (s.get("runtime_seconds") or 0))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--overhead-runs", type=int, default=5)
    parser.add_argument("--preset", default="default", help="the Hidden tier's preset")
    parser.add_argument("--solver", default="calibrated", help="the reference image's solver (its SOLVER)")
    args = parser.parse_args()
    load_before = os.getloadavg()
    db = f"edx_bench_remote_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    work = Path(tempfile.mkdtemp(prefix="edxr-bench-"))
    broker_server = PrivateRedis(work / "redis")  # not a number on the shared server: another's
    broker_server.start()
    broker = broker_server.url
    procs: list[subprocess.Popen] = []
    report: dict = {"runs": args.runs, "preset": args.preset, "solver": args.solver, "load_before": load_before}
    try:
        with ExitStack() as stack:
            host_a = stack.enter_context(second_host())
            host_b = stack.enter_context(second_host())
            server_env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("EDX_")},
                "EDX_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}",
                "EDX_BROKER_URL": broker,
                "EDX_DATA_DIR": str(work / "server"),
                "EDX_ORGANIZER_TOKEN": ORGANIZER_TOKEN,
                "EDX_IMAGE_REGISTRY": host_a.registry,
                "EDX_QUOTA_HIDDEN": "0",
                "EDX_SANDBOX_CPUS": "1",
            }
            os.environ.update(server_env)
            port = free_port()
            api_url = f"http://127.0.0.1:{port}"
            procs.append(start_api(work / "api.log", port=port, env=server_env))
            procs.append(
                start_worker(["--role", "scoring", "--hostname", "scoring@%h"], server_env, work / "scoring.log")
            )
            api = httpx.Client(base_url=api_url, timeout=1800)
            r = api.post("/api/v1/admin/tiers/hidden/dataset", json={"seed": 42, "preset": args.preset}, headers=ORG)
            assert r.status_code == 201, r.text
            alice = {
                "Authorization": f"Bearer {api.post('/api/v1/admin/participants', json={'name': 'alice'}, headers=ORG).json()['token']}"
            }
            token = (
                subprocess.run(
                    [sys.executable, "-m", "services.cli.main", "admin", "create-worker", "bench"],
                    env=server_env,
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )

            def compute_env(host, name):
                env = {k: v for k, v in os.environ.items() if not k.startswith("EDX_")}
                env.update(
                    EDX_BROKER_URL=broker,
                    EDX_API_URL=api_url,
                    EDX_WORKER_TOKEN=token,
                    EDX_DATA_DIR=str(host.root / "compute"),
                    DOCKER_HOST=host.docker_host,
                )
                return env

            # Warm both daemons: the base layers pulled once (as a compute host in steady state).
            warm = _images(1, "warm", args.solver)
            w = start_worker(["--hostname", "a@%h"], compute_env(host_a, "a"), work / "compute-a.log")
            procs.append(w)
            _drain(api, alice, warm)
            stop(w)
            wb = start_worker(["--hostname", "b@%h"], compute_env(host_b, "b"), work / "compute-b.log")
            procs.append(wb)
            _drain(api, alice, _images(1, "warmb", args.solver))
            stop(wb)

            # Phase 1: N runs queued, then one compute daemon drains them.
            ids = _submit(api, alice, _images(args.runs, "one", args.solver))
            w = start_worker(["--hostname", "a@%h"], compute_env(host_a, "a"), work / "compute-a.log")
            procs.append(w)
            t1, states1 = _wait(api, ids)
            stop(w)
            # Phase 2: N more, then two compute daemons.
            ids = _submit(api, alice, _images(args.runs, "two", args.solver))
            for host, name in ((host_a, "a"), (host_b, "b")):
                procs.append(
                    start_worker(["--hostname", f"{name}@%h"], compute_env(host, name), work / f"compute-{name}.log")
                )
            t2, _ = _wait(api, ids)
            report.update(one_daemon_seconds=t1, two_daemons_seconds=t2, ratio=t1 / t2)
            report["remote_overhead_median"] = statistics.median(_overheads(states1))
            for p in procs[-2:]:
                stop(p)

            # The bind mount path: a worker of role all on the machine's daemon.
            local = start_worker(["--role", "all", "--hostname", "local@%h"], server_env, work / "local.log")
            procs.append(local)
            _, states_local = _drain(api, alice, _images(args.overhead_runs, "local", args.solver))
            report["local_overhead_median"] = statistics.median(_overheads(states_local))
            report["runtime_median"] = statistics.median(s.get("runtime_seconds") or 0 for s in states1)
            report["load_after"] = os.getloadavg()
    finally:
        for p in procs:
            stop(p)
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        broker_server.stop()
        subprocess.run(
            "docker images -q --filter 'reference=edx-arena-bench/*' | xargs -r docker rmi -f",
            shell=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
