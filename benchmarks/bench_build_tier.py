"""Benchmark: building a default tier (3 scenes, 128×128×1000) — time and peak memory.

Runs the build in a child process so its peak RSS (``ru_maxrss``) is the build's alone; the
baseline is the same child importing the harness and doing nothing else.

    .venv/bin/python benchmarks/bench_build_tier.py
"""

from __future__ import annotations

import json
import subprocess
import sys

_CHILD = """
import json, resource, sys, time
from harness.scenes import build_tier
from harness.formats import write_measurement
import tempfile, os
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
if sys.argv[1] == "build":
    ds = build_tier("hidden", seed=1, preset="default")
    built = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as d:
        write_measurement(ds, os.path.join(d, "t.h5"), include_truth=True)
        size = os.path.getsize(os.path.join(d, "t.h5"))
    total = time.perf_counter() - t
else:
    built = total = size = 0
print(json.dumps({"base_kib": base, "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "build_s": built, "total_s": total, "file_bytes": size}))
"""


def _run(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, mode], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main() -> None:
    idle, build = _run("idle"), _run("build")
    growth = (build["peak_kib"] - idle["peak_kib"]) / 1024
    print("| default tier (3 scenes, 128×128×1000) | value |")
    print("|---|---|")
    print(f"| build (phantoms + Poisson sampling) | {build['build_s']:.2f} s |")
    print(f"| build + write full file (gzip) | {build['total_s']:.2f} s |")
    print(f"| file size with truth | {build['file_bytes'] / 2**20:.1f} MiB |")
    print(f"| peak RSS of the child, idle baseline (imports only) | {idle['peak_kib'] / 1024:.0f} MiB |")
    print(f"| peak RSS growth of the build over the baseline | {growth:.0f} MiB |")


if __name__ == "__main__":
    main()
