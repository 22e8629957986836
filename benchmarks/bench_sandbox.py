"""Overhead of the sandbox: ``run_container`` vs a bare ``docker run`` of the same image.

    .venv/bin/python benchmarks/bench_sandbox.py [--repeats 7] [--no-runner]

Two workloads, each run both ways on the same input, interleaved so that daemon warm-up and
background load hit both alike:

* ``busybox``: ``edx-arena-test/busybox`` writing a one-line ``/output/result.h5``, the
  harness's fixed cost (inspect, create, watch threads, log, checks, removal);
* ``runner``: the reference image ``edx-arena/runner`` (nnls) on the small Hidden tier, with
  ``validate_result`` on its output as the sandbox does in production.

The bare baseline is ``docker run --rm --network none`` with the same two bind mounts, so
both sides pay for the same container and mounts; the ratio is the harness's overhead.
Prints a markdown table with medians, the ratio and the absolute difference.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.sandbox import Outcome, RunLimits, RunSpec, run_container
from harness.sandbox.runner import docker_client

BUSYBOX = "edx-arena-test/busybox:latest"
RUNNER = "edx-arena/runner:latest"


def _fresh_output(tmp: Path) -> Path:
    out = tmp / uuid.uuid4().hex / "output"
    out.mkdir(parents=True)
    out.chmod(0o777)
    return out


def _sandbox(client, tmp: Path, inp: Path, image: str, command, validate) -> float:
    spec = RunSpec(
        run_id=f"bench-{uuid.uuid4().hex[:8]}",
        image=image,
        input_path=inp,
        work_dir=tmp / uuid.uuid4().hex,
        limits=RunLimits(wall_seconds=600),
        command=command,
        validate_output=validate,
    )
    t0 = time.perf_counter()
    r = run_container(spec, client=client)
    elapsed = time.perf_counter() - t0
    assert r.outcome == Outcome.succeeded, (r.outcome, r.message, r.log[-500:])
    return elapsed


def _bare(tmp: Path, inp: Path, image: str, command) -> float:
    out = _fresh_output(tmp)
    argv = [
        "docker",
        "run",
        "--rm",
        "--network",
        "none",
        "--user",
        "65534:65534",
        "-v",
        f"{inp}:/input/measurement.h5:ro",
        "-v",
        f"{out}:/output",
        image,
        *(command or []),
    ]
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    elapsed = time.perf_counter() - t0
    assert (out / "result.h5").is_file()
    return elapsed


def _measure(name, repeats, sandbox, bare) -> tuple[str, float, float]:
    sandbox(), bare()  # warm-up: image layers and the Python imports of the first run
    s, b = [], []
    for _ in range(repeats):
        s.append(sandbox())
        b.append(bare())
    ms, mb = statistics.median(s), statistics.median(b)
    row = (
        f"| {name} | {ms:.3f} ({min(s):.3f}–{max(s):.3f}) | {mb:.3f} ({min(b):.3f}–{max(b):.3f}) "
        f"| {ms / mb:.2f} | {1000 * (ms - mb):+.0f} |"
    )
    return row, ms, mb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--no-runner", action="store_true", help="skip the reference-runner workload")
    args = ap.parse_args()
    client = docker_client()
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        tmp.chmod(0o755)
        inp = tmp / "tiny.h5"
        inp.write_bytes(b"\0" * 1024)
        inp.chmod(0o644)
        cmd = ["echo ok > /output/result.h5"]
        rows.append(
            _measure(
                "busybox, one-line result",
                args.repeats,
                lambda: _sandbox(client, tmp, inp, BUSYBOX, cmd, None),
                lambda: _bare(tmp, inp, BUSYBOX, cmd),
            )[0]
        )
        if not args.no_runner:
            from harness.formats import ResultExpectation, validate_result, write_measurement
            from harness.scenes import build_tier

            dataset = build_tier("hidden", seed=1, preset="small")
            measurement = tmp / "measurement.h5"
            write_measurement(dataset, measurement, include_truth=False)
            os.chmod(measurement, 0o644)
            expect = ResultExpectation.for_dataset(dataset, max_bytes=64 << 20)
            rows.append(
                _measure(
                    "reference runner (nnls, small Hidden tier)",
                    args.repeats,
                    lambda: _sandbox(client, tmp, measurement, RUNNER, None, lambda p: validate_result(p, expect)),
                    lambda: _bare(tmp, measurement, RUNNER, None),
                )[0]
            )
    print(f"Sandbox overhead, {args.repeats} interleaved repeats after one warm-up; median (min–max) seconds.\n")
    print("| workload | run_container | bare `docker run --rm` | ratio | Δ ms |")
    print("|---|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
