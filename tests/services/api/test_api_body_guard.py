"""Upload bodies through a real uvicorn: who sends one is checked before the server reads it, and a
body that trickles in is cut off (services.api.body_guard). Raw sockets, so the test sees exactly
when the server answers and how much of the body it took."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time

import httpx
import pytest
from arena_testing import ORG, add_participant
from database_testing import drop_backend, make_backend

BODY_TIMEOUT = 3
BIG = 50_000_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A SQLite backend behind a real uvicorn; yields (port, alice's headers, the spool directory)."""
    from fastapi.testclient import TestClient

    from services.main import app

    _backend, db_name = make_backend("sqlite", tmp_path, monkeypatch)
    with TestClient(app) as client:
        alice = add_participant(client, "alice")
    spool = tmp_path / "spool"  # where the server's multipart parser would put uploaded files
    spool.mkdir()
    port = _free_port()
    log = open(tmp_path / "uvicorn.log", "wb")
    env = {**os.environ, "TMPDIR": str(spool), "EDX_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "services.main:app", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, (tmp_path / "uvicorn.log").read_text()
            assert time.monotonic() < deadline, "uvicorn did not answer within 60 s"
            time.sleep(0.3)
        yield port, alice, spool
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        drop_backend(db_name)


def _start(port: int, path: str, length: int, headers: dict[str, str]) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: multipart/form-data; boundary=edxboundary",
        f"Content-Length: {length}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    return sock


def _response(sock: socket.socket, timeout: float) -> tuple[int, dict] | None:
    """The status and JSON body if the server answers within ``timeout`` s, else None."""
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sock], [], [], max(deadline - time.monotonic(), 0))
        if not ready:
            break
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = int(
                next(x for x in head.split(b"\r\n") if x.lower().startswith(b"content-length:")).split(b":")[1]
            )
            if len(body) >= length:
                return int(head.split()[1]), json.loads(body[:length])
    return None


def _body_taken(sock: socket.socket, total: int) -> int:
    """Keep sending the declared body; how many bytes the connection took before it was closed."""
    sent = 0
    chunk = b"x" * 65536
    sock.settimeout(5)
    try:
        while sent < total:
            sent += sock.send(chunk[: total - sent])
    except OSError:  # reset or broken pipe: the server closed the connection
        pass
    return sent


PREAMBLE = b'--edxboundary\r\nContent-Disposition: form-data; name="file"; filename="x.tar"\r\n\r\n'


@pytest.mark.parametrize(
    ("path", "who", "status", "code"),
    [
        ("/api/v1/submissions/container/archive", None, 401, "unauthorized"),
        ("/api/v1/submissions", "Bearer not-a-token", 401, "unauthorized"),
        ("/api/v1/submissions/script", "Bearer tökén", 401, "unauthorized"),
        ("/api/v1/admin/tiers/hidden/dataset/upload", "alice", 403, "forbidden"),
    ],
    ids=["anonymous-archive", "bad-token", "non-ascii-token", "participant-on-admin"],
)
def test_an_unauthorised_upload_is_refused_before_its_body(server, path, who, status, code):
    port, alice, spool = server
    headers = {} if who is None else {"Authorization": alice["Authorization"] if who == "alice" else who}
    sock = _start(port, path, BIG, {k: v.encode().decode("latin-1") for k, v in headers.items()})
    with sock:
        answer = _response(sock, timeout=5)  # not one body byte sent yet
        assert answer is not None, "the server waited for the body before refusing"
        assert answer[0] == status and answer[1]["error"]["code"] == code, answer
        taken = _body_taken(sock, BIG)
    assert taken < 16 * 2**20, taken  # what the kernel's buffers absorb, not the 50 MB
    assert list(spool.iterdir()) == []  # nothing was spooled to disk


def test_an_authorised_upload_goes_through(server):
    port, alice, _ = server
    form = PREAMBLE + b"print('hi')\n\r\n--edxboundary--\r\n"
    sock = _start(port, "/api/v1/submissions/script", len(form), alice)
    with sock:
        sock.sendall(form)
        answer = _response(sock, timeout=20)
    # The body was read and the route ran: it refuses for a reason of its own.
    assert answer == (
        404,
        {"error": {"code": "not_found", "message": "the hidden tier has no dataset yet; an organizer must seed it"}},
    )


def test_a_slow_body_is_cut_off(server):
    port, alice, spool = server
    sock = _start(port, "/api/v1/submissions/script", 10_000, alice)
    with sock:
        sock.sendall(PREAMBLE)
        started = time.monotonic()
        answer = None
        while answer is None and time.monotonic() - started < BODY_TIMEOUT + 10:
            try:
                sock.sendall(b"#")  # a byte every half second: never done, never idle for long
            except OSError:
                break
            answer = _response(sock, timeout=0.5)
        elapsed = time.monotonic() - started
    assert answer == (
        408,
        {
            "error": {
                "code": "request_timeout",
                "message": f"the request body did not arrive within {BODY_TIMEOUT} s; send it again",
            }
        },
    )
    assert BODY_TIMEOUT - 1 < elapsed < BODY_TIMEOUT + 5, elapsed
    assert list(spool.iterdir()) == []


def test_the_organizer_may_upload(server):
    port, _, _ = server
    form = PREAMBLE + b"not hdf5\r\n--edxboundary--\r\n"
    sock = _start(port, "/api/v1/admin/tiers/hidden/dataset/upload", len(form), ORG)
    with sock:
        sock.sendall(form)
        answer = _response(sock, timeout=20)
    assert answer is not None and answer[0] not in (401, 403, 408), answer  # past the guard: the route judged it
