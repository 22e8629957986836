"""Goal P3: result validation in constant memory, and streamed sha256.

Builds a ~2 GiB result file that *passes* validation and validates it in a child process,
reporting the child's peak RSS growth (target < 64 MiB) and wall time, against a baseline
measured in the same run: the naive validator that loads each ``x_hat`` whole and calls
``np.isfinite(x).all()``.

Choice of file: every byte of the 2 GiB is data the validator must read. The expectation
is scaled up to 3 scenes of (6, 5461, 5461) float32 (3 × 6 × 5461² × 4 B = 2.0 GiB),
stored uncompressed in row-block chunks of 5.6 MB, so the NaN/inf scan really streams
2 GiB through the validator. (Padding a default-tier result with an unread 2 GiB dataset
outside /scenes would pass too, but only shows that unread data costs nothing; the
``--padded`` run measures that case as well.)

Also measures :func:`file_sha256` throughput against a plain 1 MiB-block read of the same
file. The page cache is warm (the file was just written), so the numbers are CPU-bound
upper bounds on a cold disk's throughput.

Run: ``python benchmarks/bench_validate.py [--size-gib 2] [--padded] [--dir /tmp]``.
The file is created in a temporary directory and deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.formats import (  # noqa: E402
    RESULT_FORMAT,
    ResultExpectation,
    file_sha256,
    validate_result_isolated,
)
from harness.tiers import SPEC_PARAMETERS  # noqa: E402

ELEMENTS = 6
SCENES = ("s0", "s1", "s2")
CHUNK_ROWS = 256
TARGET_RSS_GROWTH = 64 << 20

# Runs in a fresh interpreter: imports first, then reset the peak-RSS mark, then validate.
_CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import h5py, numpy as np
from harness.formats import ResultExpectation, validate_result

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024

request = json.loads(sys.stdin.read())
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset VmHWM to the current RSS
before = status("VmRSS")
started = time.perf_counter()
if request["mode"] == "streamed":
    validate_result(request["path"], ResultExpectation.from_mapping(request["expect"]))
else:
    with h5py.File(request["path"], "r") as f:
        for scene_id in request["expect"]["scene_ids"]:
            x = f["scenes"][scene_id]["x_hat"][()]
            assert np.isfinite(x).all()
            del x
elapsed = time.perf_counter() - started
print(json.dumps({"seconds": elapsed, "rss_growth": status("VmHWM") - before}))
"""


def _write_spec(group: h5py.Group) -> None:
    spec = group.create_group("spec")
    for name in SPEC_PARAMETERS:
        spec.attrs[name] = 0.0


def make_scaled_file(path: Path, size_bytes: int) -> ResultExpectation:
    """A valid result whose x_hat data alone totals ``size_bytes``."""
    side = math.isqrt(size_bytes // (len(SCENES) * ELEMENTS * 4))
    block = np.linspace(0.0, 1.0, CHUNK_ROWS * side, dtype=np.float32).reshape(CHUNK_ROWS, side)
    with h5py.File(path, "w") as f:
        f.attrs["format"] = RESULT_FORMAT
        f.attrs["format_version"] = 1
        for scene_id in SCENES:
            group = f.create_group(f"scenes/{scene_id}")
            dset = group.create_dataset("x_hat", shape=(ELEMENTS, side, side), dtype="f4", chunks=(1, CHUNK_ROWS, side))
            for e in range(ELEMENTS):
                for r0 in range(0, side, CHUNK_ROWS):
                    r1 = min(side, r0 + CHUNK_ROWS)
                    dset[e, r0:r1, :] = block[: r1 - r0]
            _write_spec(group)
    return ResultExpectation("public", SCENES, ELEMENTS, side, side, max_bytes=path.stat().st_size + (1 << 20))


def make_padded_file(path: Path, size_bytes: int) -> ResultExpectation:
    """A valid default-tier result (3 × (6, 128, 128)) plus an unread dataset outside /scenes."""
    rng = np.random.default_rng(0)
    row = np.zeros((1 << 20) // 4, np.float32)
    rows = size_bytes // row.nbytes
    with h5py.File(path, "w") as f:
        f.attrs["format"] = RESULT_FORMAT
        f.attrs["format_version"] = 1
        for scene_id in SCENES:
            group = f.create_group(f"scenes/{scene_id}")
            group["x_hat"] = rng.uniform(0, 1, (ELEMENTS, 128, 128)).astype(np.float32)
            _write_spec(group)
        pad = f.create_dataset("padding", shape=(rows, row.size), dtype="f4", chunks=(1, row.size))
        for i in range(rows):
            pad[i] = row
    return ResultExpectation("public", SCENES, ELEMENTS, 128, 128, max_bytes=path.stat().st_size + (1 << 20))


def run_child(path: Path, expect: ResultExpectation, mode: str) -> dict:
    request = json.dumps({"path": str(path), "expect": expect.as_dict(), "mode": mode})
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(ROOT)],
        input=request,
        capture_output=True,
        text=True,
        check=True,
        env={"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"},
    )
    return json.loads(out.stdout)


def read_throughput(path: Path) -> float:
    buffer = bytearray(1 << 20)
    started = time.perf_counter()
    with open(path, "rb", buffering=0) as handle:
        while handle.readinto(buffer):
            pass
    return path.stat().st_size / (time.perf_counter() - started)


def sha_throughput(path: Path) -> float:
    started = time.perf_counter()
    file_sha256(path)
    return path.stat().st_size / (time.perf_counter() - started)


def measure(label: str, path: Path, expect: ResultExpectation, *, baseline: bool) -> list[str]:
    size = path.stat().st_size
    streamed = run_child(path, expect, "streamed")
    started = time.perf_counter()
    validate_result_isolated(path, expect, timeout=600)
    isolated_s = time.perf_counter() - started
    lines = [
        f"| {label} | {size / 2**30:.2f} GiB | validate_result (child) | {streamed['rss_growth'] / 2**20:.1f} MiB "
        f"| {streamed['seconds']:.2f} s |",
        f"| {label} | | validate_result_isolated (spawn + validate) | (limit 256 MiB) | {isolated_s:.2f} s |",
    ]
    print(
        f"{label}: streamed validator peak RSS growth {streamed['rss_growth'] / 2**20:.1f} MiB in {streamed['seconds']:.2f} s;"
        f" isolated {isolated_s:.2f} s",
        flush=True,
    )
    if baseline:
        naive = run_child(path, expect, "naive")
        ratio = naive["rss_growth"] / max(streamed["rss_growth"], 1)
        lines.append(
            f"| {label} | | baseline: load x_hat whole + isfinite | {naive['rss_growth'] / 2**20:.1f} MiB "
            f"| {naive['seconds']:.2f} s |"
        )
        print(
            f"{label}: naive loader peak RSS growth {naive['rss_growth'] / 2**20:.1f} MiB in {naive['seconds']:.2f} s"
            f" → streamed uses {ratio:.0f}× less memory",
            flush=True,
        )
    ok = streamed["rss_growth"] < TARGET_RSS_GROWTH
    print(f"{label}: target < 64 MiB: {'met' if ok else 'MISSED'}", flush=True)
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=float, default=2.0)
    parser.add_argument("--padded", action="store_true", help="also measure the padded default-tier file")
    parser.add_argument("--dir", default=None, help="where to create the temporary file")
    args = parser.parse_args()
    size = int(args.size_gib * 2**30)
    table = ["| file | size | what | peak RSS growth | time |", "|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-validate-") as tmp:
        path = Path(tmp) / "result.h5"
        started = time.perf_counter()
        expect = make_scaled_file(path, size)
        print(
            f"wrote {path.stat().st_size / 2**30:.2f} GiB scaled result ({expect.shape} × 3) in "
            f"{time.perf_counter() - started:.1f} s",
            flush=True,
        )
        table += measure("scaled x_hat", path, expect, baseline=True)
        raw, sha = read_throughput(path), sha_throughput(path)
        print(f"sha256: {sha / 2**20:.0f} MiB/s vs plain read {raw / 2**20:.0f} MiB/s ({sha / raw:.2f}× of read speed)")
        sha_line = f"file_sha256 (1 MiB blocks): {sha / 2**20:.0f} MiB/s; plain 1 MiB-block read {raw / 2**20:.0f} MiB/s (ratio {sha / raw:.2f}), warm cache"
        if args.padded:
            path.unlink()
            expect = make_padded_file(path, size)
            table += measure("default tier + unread padding", path, expect, baseline=False)
    print()
    print("\n".join(table))
    print()
    print(sha_line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
