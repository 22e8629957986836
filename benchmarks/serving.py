"""What the HTTP benchmarks share: a free loopback port and an app served by its own uvicorn
process (as in production: one process, no reload, no access log)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_uvicorn(target: str, port: int, env: dict, *, factory: bool) -> subprocess.Popen:
    """Serve ``target`` (``module:app``, or a factory) on ``port``; returns once it accepts connections."""
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        target,
        "--app-dir",
        str(ROOT / "benchmarks"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    if factory:
        cmd.insert(4, "--factory")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{target} did not start on port {port}")
