"""Benchmark (goal P1): one Hidden-tier run end to end through the API and a worker
(submission → scored) ÷ a bare ``docker run`` of the same image on the same input.

Embedded stack (SQLite, filesystem broker) with the API and a worker as child processes,
like ``edx-arena demo``. Identical digests on identical data are served from the cache, so
each repeat seeds a fresh Hidden dataset first (not timed). Target: ratio ≤ 1.15.

    .venv/bin/python benchmarks/bench_hidden_run.py [--repeats 3] [--size small]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from services.cli.demo import _check, _free_port, _processes, _wait_healthy

IMAGE = "edx-arena/runner:latest"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", default="small")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="edx-bench-"))
    (data_dir / "log").mkdir()
    token = secrets.token_urlsafe(16)
    env = {**os.environ, "EDX_DATA_DIR": str(data_dir), "EDX_ORGANIZER_TOKEN": token, "EDX_QUOTA_HIDDEN": "0"}
    for key in ("EDX_DATABASE_URL", "EDX_BROKER_URL"):
        env.pop(key, None)
    port = _free_port()
    harness_times, bare_times, sandbox_times = [], [], []
    with _processes(env, port, data_dir / "log"), httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as c:
        _wait_healthy(c)
        org = {"Authorization": f"Bearer {token}"}
        for i in range(args.repeats):
            _check(c.post("/api/v1/admin/tiers/hidden/dataset", json={"seed": 1000 + i, "preset": args.size}, headers=org))
            view = sorted((data_dir / "storage" / "datasets" / "hidden").glob("*/view.h5"), key=os.path.getmtime)[-1]
            out = Path(tempfile.mkdtemp())
            out.chmod(0o777)
            t = time.perf_counter()
            subprocess.run(["docker", "run", "--rm", "--network", "none", "--user", "65534:65534",
                            "-v", f"{view}:/input/measurement.h5:ro", "-v", f"{out}:/output", IMAGE],
                           check=True, capture_output=True)
            bare_times.append(time.perf_counter() - t)
            t = time.perf_counter()
            sid = _check(c.post("/api/v1/submissions/container", json={"image": IMAGE}, headers=org))["id"]
            while True:
                s = _check(c.get(f"/api/v1/submissions/{sid}", headers=org))
                if s["status"] in ("scored", "failed"):
                    break
                time.sleep(0.05)
            harness_times.append(time.perf_counter() - t)
            assert s["status"] == "scored", s
            assert "reused" not in (s["log_tail"] or ""), "served from the digest cache: not a real run"
            sandbox_times.append(s["runtime_seconds"])
    h, b = statistics.median(harness_times), statistics.median(bare_times)
    print(f"| path ({args.size} Hidden tier, {args.repeats} repeats) | median s |")
    print("|---|---|")
    print(f"| bare `docker run` of {IMAGE} (baseline) | {b:.2f} |")
    print(f"| POST /submissions/container → scored (API, queue, sandbox, validation, scoring) | {h:.2f} |")
    print(f"| of which the container run itself (sandbox) | {statistics.median(sandbox_times):.2f} |")
    print(f"\nP1 ratio {h / b:.2f} (target ≤ 1.15), overhead {h - b:.2f} s")


if __name__ == "__main__":
    main()
