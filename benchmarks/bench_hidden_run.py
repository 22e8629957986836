"""Benchmark (goal P1, issue 18): one Hidden-tier submission end to end through the API and a
worker, run by the server on Public, Dev and Hidden (submission → three scored runs) ÷ three
bare hardened ``docker run`` s of the same image on the same three inputs, measured in one run.

Embedded stack (SQLite, filesystem broker) with the API and a worker as child processes,
like ``edx-arena demo``. Identical digests on identical data are served from the cache, so
each repeat seeds three fresh datasets first (not timed). Target: ratio ≤ 1.2.

The bare runs are hardened as the sandbox is (no network, read-only root, uid 65534, all
capabilities dropped, no-new-privileges, the memory and pids limits, a /tmp tmpfs) and get
the input without truth the server's run gets, so the ratio measures what the harness adds:
the API, the queue, container create/start/remove, output validation and scoring. Both sides
get the same CPUs: the sandbox is given every core of the machine (``EDX_SANDBOX_CPUS``)
instead of its 1-CPU default, as the bare runs have no CPU limit.

    .venv/bin/python benchmarks/bench_hidden_run.py [--repeats 3] [--size default] [--image IMAGE]

A representative solver: ``docker build -f Dockerfile.runner --build-arg SOLVER=calibrated -t
edx-arena/runner:calibrated .``; the default ``nnls`` runner (~1 s a run) shows the fixed
overhead instead. The machine's load average is printed with the result: the runs are timed
on a shared machine.
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
TIERS = ("public", "dev", "hidden")


def _bare_run(image: str, view: Path) -> float:
    out = Path(tempfile.mkdtemp())
    out.chmod(0o777)
    t = time.perf_counter()
    subprocess.run(
        [
            *("docker", "run", "--rm", "--network", "none", "--read-only", "--user", "65534:65534"),
            *("--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--memory", str(2 * 2**30)),
            *("--pids-limit", "256", "--tmpfs", "/tmp:size=268435456,mode=1777"),
            *("-v", f"{view}:/input/measurement.h5:ro", "-v", f"{out}:/output", image),
        ],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", default="small")
    parser.add_argument("--image", default=IMAGE, help="the solver image on both sides (default: %(default)s)")
    args = parser.parse_args()
    from db.models import Dataset
    from services.datasets import run_input_path

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
    loads = [os.getloadavg()[0]]
    with _processes(env, port, data_dir / "log"), httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as c:
        _wait_healthy(c)
        org = {"Authorization": f"Bearer {token}"}
        for i in range(args.repeats):
            inputs = {}
            for j, tier in enumerate(TIERS):
                seed = 1000 + 10 * i + j
                _check(
                    c.post(f"/api/v1/admin/tiers/{tier}/dataset", json={"seed": seed, "preset": args.size}, headers=org)
                )
                folder = sorted((data_dir / "storage" / "datasets" / tier).glob("*/view.h5"), key=os.path.getmtime)[-1]
                truth = tier == "public"  # the Public view carries the truth: runs read run.h5 beside it
                row = Dataset(
                    tier=tier, view_path=str(folder), full_path=str(folder.with_name("full.h5")), truth_in_view=truth
                )
                inputs[tier] = run_input_path(row)
            # Interleaved on the same inputs, the order alternating between repeats so that a
            # change in the machine's load weighs on both sides alike.
            if i % 2 == 0:
                bare_times.append(sum(_bare_run(args.image, inputs[t]) for t in TIERS))
            t = time.perf_counter()
            sid = _check(c.post("/api/v1/submissions/container", json={"image": args.image}, headers=org))["id"]
            while True:  # one light request per 0.2 s: the poll must not compete with the runs
                runs = _check(c.get(f"/api/v1/submissions/{sid}", headers=org))["tier_runs"]
                if all(r["status"] in ("scored", "failed") for r in runs):
                    break
                time.sleep(0.2)
            harness_times.append(time.perf_counter() - t)
            assert len(runs) == 3, runs
            states = [_check(c.get(f"/api/v1/submissions/{r['id']}", headers=org)) for r in runs]
            if i % 2 == 1:
                bare_times.append(sum(_bare_run(args.image, inputs[t]) for t in TIERS))
            for s in states:
                assert s["status"] == "scored", s
                assert "reused" not in (s["log_tail"] or ""), "served from the digest cache: not a real run"
            sandbox_times.append(sum(s["runtime_seconds"] for s in states))
            loads.append(os.getloadavg()[0])
    h, b = statistics.median(harness_times), statistics.median(bare_times)
    ratios = [x / y for x, y in zip(harness_times, bare_times)]
    print(f"| path ({args.size} tiers, {args.image}, median of {args.repeats}) | s |")
    print("|---|---|")
    print(f"| three bare hardened `docker run`s (baseline) | {b:.2f} |")
    print(f"| POST /submissions/container → three runs scored (API, queue, sandbox, validation, scoring) | {h:.2f} |")
    print(f"| of which the three container runs themselves (sandbox) | {statistics.median(sandbox_times):.2f} |")
    print(
        f"| the rest: API, queue, create/start/remove, validation, scoring (three runs) | {h - statistics.median(sandbox_times):.2f} |"
    )
    print(
        f"\nP1 ratio of medians {h / b:.2f}, median of per-repeat ratios {statistics.median(ratios):.2f} (target ≤ 1.2);"
    )
    print("every repeat: " + ", ".join(f"{r:.2f}" for r in ratios))
    print(f"sandbox CPUs = {os.cpu_count()}; 1-min load average during the run: {min(loads):.2f}–{max(loads):.2f}")


if __name__ == "__main__":
    main()
