"""Overhead of the sandbox: run_container vs a bare `docker run --rm --network none`.

    .venv/bin/python benchmarks/bench_sandbox.py [--repeats 7]

Both run `edx-arena-test/busybox` (ENTRYPOINT /bin/sh -c); runs are interleaved so that
daemon warm-up and background load hit both alike. Prints a markdown table and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.sandbox import Outcome, RunLimits, RunSpec, run_container  # noqa: E402
from harness.sandbox.runner import docker_client  # noqa: E402

IMAGE = "edx-arena-test/busybox:latest"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    client = docker_client()
    sandbox, bare = [], []
    with tempfile.TemporaryDirectory() as tmp:
        inp = Path(tmp) / "measurement.h5"
        inp.write_bytes(b"\0" * 1024)
        inp.chmod(0o644)
        for _ in range(args.repeats):
            spec = RunSpec(run_id=f"bench-{uuid.uuid4().hex[:8]}", image=IMAGE, input_path=inp,
                           work_dir=Path(tmp) / uuid.uuid4().hex, limits=RunLimits(wall_seconds=60),
                           command=["echo ok > /output/result.h5"])
            t0 = time.perf_counter()
            r = run_container(spec, client=client)
            sandbox.append(time.perf_counter() - t0)
            assert r.outcome == Outcome.succeeded, r
            t0 = time.perf_counter()
            subprocess.run(["docker", "run", "--rm", "--network", "none", IMAGE, "echo ok"],
                           check=True, capture_output=True)
            bare.append(time.perf_counter() - t0)
    ms, mb = statistics.median(sandbox), statistics.median(bare)
    print(f"| variant ({args.repeats} repeats, interleaved) | median s | min s | max s |")
    print("|---|---:|---:|---:|")
    print(f"| run_container (sandbox) | {ms:.3f} | {min(sandbox):.3f} | {max(sandbox):.3f} |")
    print(f"| docker run --rm --network none | {mb:.3f} | {min(bare):.3f} | {max(bare):.3f} |")
    print(f"\nratio sandbox / bare: {ms / mb:.2f}x")


if __name__ == "__main__":
    main()
