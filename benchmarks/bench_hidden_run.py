"""Benchmark (goal P1): one Hidden-tier run end to end through the API and a worker
(submission → scored) ÷ a bare ``docker run`` of the same image on the same input.

Embedded stack (SQLite, filesystem broker) with the API and a worker as child processes,
like ``edx-arena demo``. Identical digests on identical data are served from the cache, so
each repeat seeds a fresh Hidden dataset first (not timed). Target: ratio ≤ 1.15.

Both sides get the same CPUs: the bare ``docker run`` has no CPU limit, so the sandbox is
given every core of the machine (``EDX_SANDBOX_CPUS``) instead of its 1-CPU default;
otherwise the ratio would measure the organizer's CPU policy, not the harness.

    .venv/bin/python benchmarks/bench_hidden_run.py [--repeats 3] [--size small] [--image IMAGE]

The target has two readings, both recorded in docs/benchmarks.md: with a fast solver (the
default ``nnls`` runner, ~1 s) the fixed overhead must stay under 1 s; with a representative
one (``edx-arena/runner:calibrated``: ``docker build -f Dockerfile.runner --build-arg
SOLVER=calibrated -t edx-arena/runner:calibrated .``) the ratio must be ≤ 1.15.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

from services.cli.demo import _check, _free_port, _processes, _wait_healthy

IMAGE = "edx-arena/runner:latest"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", default="small")
    parser.add_argument("--image", default=IMAGE, help="the solver image on both sides (default: %(default)s)")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="edx-bench-"))
    (data_dir / "log").mkdir()
    token = secrets.token_urlsafe(16)
    env = {
        **os.environ,
        "EDX_DATA_DIR": str(data_dir),
        "EDX_ORGANIZER_TOKEN": token,
        "EDX_QUOTA_HIDDEN": "0",
        "EDX_SANDBOX_CPUS": str(os.cpu_count()),
    }
    for key in ("EDX_DATABASE_URL", "EDX_BROKER_URL"):
        env.pop(key, None)
    port = _free_port()
    harness_times, bare_times, sandbox_times = [], [], []
    stages: dict[str, list[float]] = {
        "queued (POST → claimed by the worker)": [],
        "claimed → scored, less the container run (start, stop, validation, scoring)": [],
    }
    with _processes(env, port, data_dir / "log"), httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as c:
        _wait_healthy(c)
        org = {"Authorization": f"Bearer {token}"}
        for i in range(args.repeats):
            _check(
                c.post("/api/v1/admin/tiers/hidden/dataset", json={"seed": 1000 + i, "preset": args.size}, headers=org)
            )
            view = sorted((data_dir / "storage" / "datasets" / "hidden").glob("*/view.h5"), key=os.path.getmtime)[-1]
            out = Path(tempfile.mkdtemp())
            out.chmod(0o777)
            t = time.perf_counter()
            subprocess.run(
                [
                    "docker",
                    "run",
                    "--rm",
                    "--network",
                    "none",
                    "--user",
                    "65534:65534",
                    "-v",
                    f"{view}:/input/measurement.h5:ro",
                    "-v",
                    f"{out}:/output",
                    args.image,
                ],
                check=True,
                capture_output=True,
            )
            bare_times.append(time.perf_counter() - t)
            t = time.perf_counter()
            sid = _check(c.post("/api/v1/submissions/container", json={"image": args.image}, headers=org))["id"]
            while True:
                s = _check(c.get(f"/api/v1/submissions/{sid}", headers=org))
                if s["status"] in ("scored", "failed"):
                    break
                time.sleep(0.05)
            harness_times.append(time.perf_counter() - t)
            assert s["status"] == "scored", s
            assert "reused" not in (s["log_tail"] or ""), "served from the digest cache: not a real run"
            sandbox_times.append(s["runtime_seconds"])
            created, started, finished = (
                datetime.fromisoformat(s[k]) for k in ("created_at", "started_at", "finished_at")
            )
            run = s["runtime_seconds"]
            stages["queued (POST → claimed by the worker)"].append((started - created).total_seconds())
            stages["claimed → scored, less the container run (start, stop, validation, scoring)"].append(
                (finished - started).total_seconds() - run
            )
    h, b = statistics.median(harness_times), statistics.median(bare_times)
    print(f"| path ({args.size} Hidden tier, {args.repeats} repeats) | median s |")
    print("|---|---|")
    print(f"| bare `docker run` of {args.image} (baseline) | {b:.2f} |")
    print(f"| POST /submissions/container → scored (API, queue, sandbox, validation, scoring) | {h:.2f} |")
    print(f"| of which the container run itself (sandbox) | {statistics.median(sandbox_times):.2f} |")
    for name, values in stages.items():
        if values:
            print(f"| of which {name} | {statistics.median(values):.2f} |")
    print(f"\nP1 ratio {h / b:.2f} (target ≤ 1.15), overhead {h - b:.2f} s; sandbox CPUs = {os.cpu_count()}")


if __name__ == "__main__":
    main()
