"""Participant commands over real HTTP: ``edx-arena serve`` and ``edx-arena worker`` run as
processes on the embedded default (SQLite, filesystem broker); ``download``, ``submit
--wait``, ``status`` and ``leaderboard`` talk to them like a participant's machine would."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from arena_testing import ORG, make_backend, drop_backend
from typer.testing import CliRunner

from services.cli.main import app

runner = CliRunner()
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path, monkeypatch):
    backend, db_name = make_backend("sqlite", tmp_path, monkeypatch)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    exe = [sys.executable, "-m", "services.cli.main"]
    procs = []
    for name, args in (("api", ["serve", "--port", str(port)]), ("worker", ["worker"])):
        log = open(tmp_path / f"{name}.log", "wb")
        procs.append(subprocess.Popen(exe + args, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT))
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/api/v1/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "api.log").read_text()
            time.sleep(0.2)
        with httpx.Client(base_url=url, headers=ORG) as admin:
            assert admin.post("/api/v1/admin/tiers/dev/dataset", json={"seed": 11, "preset": "small"}).status_code == 201
            token = admin.post("/api/v1/admin/participants", json={"name": "cli-team"}).json()["token"]
        yield url, token
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        drop_backend(db_name)


def test_download_submit_wait_status_leaderboard(server, tmp_path):
    url, token = server
    measurement, result = tmp_path / "dev.h5", tmp_path / "result.h5"
    r = runner.invoke(app, ["download", "--tier", "dev", "--out", str(measurement), "--api-url", url])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["solve", str(measurement), "--out", str(result)])
    assert r.exit_code == 0, r.output

    r = runner.invoke(app, ["submit", str(result), "--tier", "dev", "--method", "NNLS", "--wait", "--api-url", url, "--token", token])
    assert r.exit_code == 0, r.output
    submission_id = r.stdout.strip().splitlines()[0]
    assert "scored" in r.stdout and "dev-s0" in r.stdout

    r = runner.invoke(app, ["status", submission_id, "--api-url", url], env={"EDX_TOKEN": token})
    assert r.exit_code == 0 and "status scored" in r.stdout

    r = runner.invoke(app, ["leaderboard", "--tier", "dev", "--api-url", url])
    assert r.exit_code == 0 and "cli-team" in r.stdout and "NNLS" in r.stdout


def test_refusals_exit_1_with_the_server_message(server, tmp_path):
    url, token = server
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    r = runner.invoke(app, ["submit", str(junk), "--tier", "dev", "--api-url", url, "--token", token])
    assert r.exit_code == 1 and "invalid_file" in r.output and "not an HDF5 file" in r.output
    r = runner.invoke(app, ["submit", str(junk), "--tier", "dev", "--api-url", url])
    assert r.exit_code == 1 and "unauthorized" in r.output
    r = runner.invoke(app, ["status", "nope", "--api-url", url, "--token", token])
    assert r.exit_code == 1 and "no submission 'nope'" in r.output
    r = runner.invoke(app, ["download", "--tier", "hidden", "--out", str(tmp_path / "h.h5"), "--api-url", url])
    assert r.exit_code == 1 and "never downloadable" in r.output and not (tmp_path / "h.h5").exists()
