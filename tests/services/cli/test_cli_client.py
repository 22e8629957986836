"""Participant commands over real HTTP: ``edx-arena serve`` and ``edx-arena worker`` run as
processes on the embedded default (SQLite, filesystem broker); ``download``, ``submit
--wait``, ``status`` and ``leaderboard`` talk to them like a participant's machine would, and
exit with the codes of services/cli/exit_codes.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import h5py
import httpx
import pytest
from arena_testing import ORG
from database_testing import ORGANIZER_TOKEN, drop_backend, make_backend
from typer.testing import CliRunner

from services.cli.exit_codes import ExitCode
from services.cli.main import app

runner = CliRunner()
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(tmp_path, monkeypatch, *, with_worker: bool):
    _backend, db_name = make_backend("sqlite", tmp_path, monkeypatch)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    exe = [sys.executable, "-m", "services.cli.main"]
    procs = []
    for name, args in (("api", ["serve", "--port", str(port)]), ("worker", ["worker"]))[: 2 if with_worker else 1]:
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
            for tier, seed in (("dev", 11), ("hidden", 12)):
                assert (
                    admin.post(
                        f"/api/v1/admin/tiers/{tier}/dataset", json={"seed": seed, "preset": "small"}
                    ).status_code
                    == 201
                )
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


@pytest.fixture
def server(tmp_path, monkeypatch):
    yield from _serve(tmp_path, monkeypatch, with_worker=True)


@pytest.fixture
def server_without_worker(tmp_path, monkeypatch):
    yield from _serve(tmp_path, monkeypatch, with_worker=False)


def test_download_submit_wait_status_leaderboard(server, tmp_path):
    url, token = server
    measurement, result = tmp_path / "dev.h5", tmp_path / "result.h5"
    r = runner.invoke(app, ["download", "--tier", "dev", "--out", str(measurement), "--api-url", url])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["solve", str(measurement), "--out", str(result)])
    assert r.exit_code == 0, r.output

    r = runner.invoke(
        app, ["submit", str(result), "--tier", "dev", "--method", "NNLS", "--wait", "--api-url", url, "--token", token]
    )
    assert r.exit_code == ExitCode.OK, r.output
    submission_id = r.stdout.strip().splitlines()[0]
    assert "scored" in r.stdout and "dev-s0" in r.stdout
    assert r.stderr == ""  # not a terminal: no bar, no spinner

    r = runner.invoke(app, ["status", submission_id, "--json", "--api-url", url, "--token", token])
    data = json.loads(r.stdout)
    assert (
        r.exit_code == 0
        and data["status"] == "scored"
        and {s["scene_id"] for s in data["scores"]} == {"", "dev-s0", "dev-s1", "dev-s2"}
    )

    r = runner.invoke(app, ["status", submission_id, "--api-url", url], env={"EDX_TOKEN": token})
    assert r.exit_code == 0 and "status scored" in r.stdout

    r = runner.invoke(app, ["leaderboard", "--tier", "dev", "--api-url", url])
    assert r.exit_code == 0 and "cli-team" in r.stdout and "NNLS" in r.stdout


def test_refusals_exit_with_their_code_and_the_server_message(server, tmp_path):
    url, token = server
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    r = runner.invoke(app, ["submit", str(junk), "--tier", "dev", "--api-url", url, "--token", token])
    assert r.exit_code == ExitCode.INVALID_FILE and "invalid_file" in r.output and "not an HDF5 file" in r.output
    r = runner.invoke(app, ["submit", str(junk), "--tier", "dev", "--api-url", url])
    assert r.exit_code == ExitCode.AUTH and "unauthorized" in r.output
    r = runner.invoke(app, ["submit", str(junk), "--tier", "dev", "--api-url", url, "--token", "wrong-token"])
    assert r.exit_code == ExitCode.AUTH
    r = runner.invoke(app, ["status", "nope", "--api-url", url, "--token", token])
    assert r.exit_code == ExitCode.NOT_FOUND and "no submission 'nope'" in r.output
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.output
    r = runner.invoke(app, ["download", "--tier", "hidden", "--out", str(tmp_path / "h.h5"), "--api-url", url])
    assert r.exit_code == ExitCode.AUTH and "never downloadable" in r.output and not (tmp_path / "h.h5").exists()
    r = runner.invoke(app, ["submit", str(junk), "--tier", "gold", "--api-url", url, "--token", token])
    assert r.exit_code == ExitCode.FAILURE and "tier: Input should be" in r.output and "(got 'gold')" in r.output


@pytest.mark.docker
def test_wait_on_a_failed_run_exits_4_with_the_outcome(server):
    """An image that writes no result (busybox) ends failed with missing_output: exit 4."""
    url, token = server
    with httpx.Client(base_url=url, headers=ORG) as admin:  # a participant runs only their own images
        team = next(p for p in admin.get("/api/v1/admin/participants").json()["data"] if p["name"] == "cli-team")
        r = admin.post(
            f"/api/v1/admin/participants/{team['id']}/images", json={"image": "edx-arena-test/busybox:latest"}
        )
        assert r.status_code == 201, r.text
    r = runner.invoke(
        app,
        [
            "submit",
            "--image",
            "edx-arena-test/busybox:latest",
            "--method",
            "empty",
            "--wait",
            "--timeout",
            "300",
            "--api-url",
            url,
            "--token",
            token,
        ],
    )
    assert r.exit_code == ExitCode.SUBMISSION_FAILED, r.output
    first, second = r.stdout.splitlines()[:2]
    assert second.startswith(first) and "status failed" in second and "outcome missing_output" in second
    r = runner.invoke(app, ["status", first, "--wait", "--json", "--api-url", url, "--token", token])
    assert r.exit_code == ExitCode.SUBMISSION_FAILED and json.loads(r.stdout)["outcome"] == "missing_output"


def test_wait_without_a_worker_times_out_with_exit_5(server_without_worker, tmp_path):
    url, token = server_without_worker
    measurement, result = tmp_path / "dev.h5", tmp_path / "result.h5"
    assert runner.invoke(app, ["download", "--tier", "dev", "--out", str(measurement), "--api-url", url]).exit_code == 0
    assert runner.invoke(app, ["solve", str(measurement), "--out", str(result)]).exit_code == 0
    r = runner.invoke(
        app, ["submit", str(result), "--tier", "dev", "--wait", "--timeout", "3", "--api-url", url, "--token", token]
    )
    assert r.exit_code == ExitCode.TIMEOUT, r.output
    submission_id = r.stdout.strip()
    assert f"{submission_id} still queued after 3 s; check later with `edx-arena status {submission_id}`" in r.stderr


def test_organizer_uploads_a_built_dataset(server_without_worker, tmp_path, monkeypatch):
    """dataset build → admin upload-dataset over HTTP: the server serves a view of exactly that file."""
    url, token = server_without_worker
    full = tmp_path / "hidden.h5"
    assert (
        runner.invoke(app, ["dataset", "build", "--tier", "hidden", "--size", "small", "--out", str(full)]).exit_code
        == 0
    )
    with h5py.File(full) as f:
        content_hash = f.attrs["content_hash"]
    r = runner.invoke(
        app, ["admin", "upload-dataset", str(full), "--tier", "hidden", "--api-url", url, "--token", token]
    )
    assert r.exit_code == ExitCode.AUTH and "organizer" in r.output
    r = runner.invoke(
        app,
        ["admin", "upload-dataset", str(full), "--tier", "dev", "--api-url", url],
        env={"EDX_ORGANIZER_TOKEN": ORGANIZER_TOKEN},
    )
    assert r.exit_code == ExitCode.INVALID_FILE and "is a 'hidden' tier dataset" in r.output
    r = runner.invoke(
        app,
        ["admin", "upload-dataset", str(full), "--tier", "hidden", "--api-url", url],
        env={"EDX_ORGANIZER_TOKEN": ORGANIZER_TOKEN},
    )
    assert r.exit_code == ExitCode.OK, r.output
    row = json.loads(r.stdout)
    assert (row["tier"], row["content_hash"]) == ("hidden", content_hash)
    tiers = httpx.get(f"{url}/api/v1/tiers").json()
    assert content_hash in json.dumps(tiers)


@pytest.mark.docker
def test_a_hidden_image_waits_for_and_shows_its_runs_on_every_tier(server):
    """--wait follows the Hidden submission and its runs on the other tiers (here Dev: the
    server has no Public dataset), and prints them together."""
    url, token = server
    with httpx.Client(base_url=url, headers=ORG) as admin:  # a participant runs only their own images
        team = next(p for p in admin.get("/api/v1/admin/participants").json()["data"] if p["name"] == "cli-team")
        r = admin.post(f"/api/v1/admin/participants/{team['id']}/images", json={"image": "edx-arena/runner:latest"})
        assert r.status_code == 201, r.text
    r = runner.invoke(
        app,
        [
            *("submit", "--image", "edx-arena/runner:latest", "--method", "NNLS image", "--wait", "--timeout", "600"),
            *("--json", "--api-url", url, "--token", token),
        ],
    )
    assert r.exit_code == ExitCode.OK, r.output
    data = json.loads(r.stdout)
    assert [(x["tier"], x["status"], x["certified"]) for x in data["tier_runs"]] == [
        ("dev", "scored", True),
        ("hidden", "scored", True),
    ]
    r = runner.invoke(app, ["status", data["id"], "--api-url", url, "--token", token])
    assert r.exit_code == 0 and "one artifact, run on every tier" in r.stdout
    lines = r.stdout.splitlines()
    for tier in ("dev ", "hidden*"):
        assert any(tier in line and "scored" in line and "certified" in line for line in lines), r.stdout
