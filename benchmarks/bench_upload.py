"""Upload memory: a 1 GiB result through ``POST /api/v1/submissions``, API peak RSS growth.

Builds a *valid* 1 GiB result (3 scenes of (6, 3862, 3862) float32, uncompressed) for a Dev
dataset row whose expectation is scaled to that size, raises the upload cap to 2 GiB, starts
the real API under uvicorn and uploads the file with httpx (streamed multipart). The API
process's peak RSS growth is read from the kernel (``/proc/<pid>/clear_refs`` resets VmHWM just
before the upload; VmHWM after it is the peak), so no short spike is missed. The upload is
streamed to disk, hashed and validated (in a child process, not counted here) before 202.

Baseline, same run: a bare FastAPI app under its own uvicorn whose handler reads the upload
whole (``await file.read()``) and hashes it, the pattern the streamed path replaces.

Target: growth < 64 MiB. Run: ``python benchmarks/bench_upload.py [--size-gib 1] [--dir DIR]``.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import h5py  # noqa: E402
import httpx  # noqa: E402
import numpy as np  # noqa: E402
from fastapi import FastAPI, File, UploadFile  # noqa: E402
from serving import free_port, start_uvicorn  # noqa: E402 - benchmarks/ is the script directory

SCENES = ("dev-s0", "dev-s1", "dev-s2")
ELEMENTS = 6
CHUNK_ROWS = 256
TARGET_GROWTH = 64 * 2**20
ORGANIZER_TOKEN = "bench-organizer-token"


def naive_app():
    """The baseline: read the whole upload into memory, then hash it (uvicorn ``--factory``)."""
    app = FastAPI()

    @app.post("/upload")
    async def upload(file: Annotated[UploadFile, File()]) -> dict:
        data = await file.read()
        return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}

    return app


def _write_result(path: Path, size_bytes: int) -> int:
    """A valid result whose maps total ``size_bytes``; returns the map side."""
    from harness.formats import RESULT_FORMAT
    from harness.tiers import SPEC_PARAMETERS

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
            spec = group.create_group("spec")
            for name in SPEC_PARAMETERS:
                spec.attrs[name] = 0.0
    return side


def _seed(side: int) -> str:
    """A Dev dataset row expecting maps of ``side``² and a participant; returns its token."""
    from db.migrate import upgrade_to_head
    from db.models import Dataset
    from db.session import new_session
    from services.auth import create_participant

    upgrade_to_head()
    with new_session() as s:
        s.add(
            Dataset(
                tier="dev",
                content_hash="0" * 64,
                operator_version="edx-forward-v1",
                preset="bench",
                expectation={
                    "tier": "dev",
                    "scene_ids": list(SCENES),
                    "n_elements": ELEMENTS,
                    "height": side,
                    "width": side,
                },
                full_path="-",
                view_path="-",
            )
        )
        _, _, token = create_participant(s, name="bench")
        s.commit()
    return token


def _status(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def _measure(pid: int, upload) -> tuple[int, float, httpx.Response]:
    """(peak RSS growth in bytes, seconds, response) of one upload."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    before = _status(pid, "VmRSS")
    started = time.perf_counter()
    response = upload()
    elapsed = time.perf_counter() - started
    return _status(pid, "VmHWM") - before, elapsed, response


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=float, default=1.0)
    parser.add_argument("--dir", default=None, help="where to put the temporary files (needs ~3× the size free)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-upload-", dir=args.dir))
    env = {
        **os.environ,
        "EDX_DATA_DIR": str(tmp / "var"),
        "EDX_ORGANIZER_TOKEN": ORGANIZER_TOKEN,
        "EDX_ENVIRONMENT": "production",
        "EDX_MAX_UPLOAD_BYTES": str(2 * 2**30),
        "TMPDIR": str(tmp),
    }
    os.environ.update(env)
    procs = []
    try:
        result = tmp / "result.h5"
        started = time.perf_counter()
        side = _write_result(result, int(args.size_gib * 2**30))
        size = result.stat().st_size
        print(
            f"wrote a valid {size / 2**30:.2f} GiB result (3 × (6, {side}, {side})) in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
        token = _seed(side)
        api_port, naive_port = free_port(), free_port()
        procs.append(start_uvicorn("services.main:create_app", api_port, env, factory=True))
        procs.append(start_uvicorn("bench_upload:naive_app", naive_port, env, factory=True))
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(timeout=httpx.Timeout(30, read=900, write=900)) as client:
            # Warm up both servers (imports, first multipart parse) with a small request.
            client.post(
                f"http://127.0.0.1:{api_port}/api/v1/submissions",
                data={"tier": "dev"},
                files={"file": ("x.h5", b"x")},
                headers=headers,
            )
            client.post(f"http://127.0.0.1:{naive_port}/upload", files={"file": ("x.h5", b"x")})

            def streamed():
                with open(result, "rb") as f:
                    return client.post(
                        f"http://127.0.0.1:{api_port}/api/v1/submissions",
                        data={"tier": "dev", "method": "bench"},
                        files={"file": ("result.h5", f, "application/x-hdf5")},
                        headers=headers,
                    )

            def naive():
                with open(result, "rb") as f:
                    return client.post(f"http://127.0.0.1:{naive_port}/upload", files={"file": ("result.h5", f)})

            growth, seconds, response = _measure(procs[0].pid, streamed)
            assert response.status_code == 202, response.text
            print(
                f"API: {response.status_code} {response.json()} in {seconds:.1f} s; peak RSS growth {growth / 2**20:.1f} MiB",
                flush=True,
            )
            base_growth, base_seconds, base_response = _measure(procs[1].pid, naive)
            assert base_response.status_code == 200, base_response.text
            print(
                f"baseline (read whole): {base_seconds:.1f} s; peak RSS growth {base_growth / 2**20:.1f} MiB",
                flush=True,
            )
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)

    ok = growth < TARGET_GROWTH
    print()
    print(f"Upload of a {size / 2**30:.2f} GiB valid result, one uvicorn process, loopback, warm page cache")
    print()
    print("| path | time (upload + sha256 + isolated validation) | API peak RSS growth |")
    print("|---|---|---|")
    print(f"| POST /api/v1/submissions (streamed, 1 MiB chunks) | {seconds:.1f} s | {growth / 2**20:.1f} MiB |")
    print(f"| baseline: handler reads the upload whole | {base_seconds:.1f} s | {base_growth / 2**20:.1f} MiB |")
    print(
        f"\nstreamed uses {base_growth / max(growth, 1):.0f}× less memory than the baseline; "
        f"target (growth < 64 MiB): {'met' if ok else 'MISSED'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
