"""Entry point of the reference solver image (``Dockerfile.runner``), design §5.

Reads ``/input/measurement.h5`` (no truth), runs the solver named by ``$SOLVER``
(default ``nnls``) on every scene and writes ``/output/result.h5``. Exits 0 on success, 1
with a one-line reason on stderr otherwise. Only numpy, scipy and h5py are needed, so the
image stays small; progress goes to stderr, which the harness captures as the run log.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from harness.formats import read_measurement, write_result
from harness.solvers import SOLVERS, solve_dataset

INPUT = Path(os.environ.get("EDX_INPUT", "/input/measurement.h5"))
OUTPUT = Path(os.environ.get("EDX_OUTPUT", "/output/result.h5"))


def main() -> int:
    solver = os.environ.get("SOLVER", "nnls")
    if solver not in SOLVERS:
        print(f"unknown SOLVER={solver!r}; choose one of {', '.join(sorted(SOLVERS))}", file=sys.stderr)
        return 1
    started = time.monotonic()
    dataset = read_measurement(INPUT).without_truth()
    print(f"{solver}: {dataset.tier} tier, {len(dataset.scenes)} scenes", file=sys.stderr, flush=True)

    def progress(done: int, total: int) -> None:
        print(f"{solver}: scene {done}/{total} ({time.monotonic() - started:.1f} s)", file=sys.stderr, flush=True)

    result = solve_dataset(dataset, solver=solver, progress=progress)
    result.method = f"reference {solver}"
    write_result(result, OUTPUT)
    print(f"{solver}: wrote {OUTPUT} in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
