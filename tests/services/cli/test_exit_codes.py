"""The participant commands' exit codes, progress display and streaming upload.

The server side here is a small real HTTP server on loopback that answers what a test needs
(an error status, a sequence of stages, an HTML page): the client's handling of each answer is
what is under test. The same commands against the real API and worker are in
test_cli_client.py.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from services.cli import client as cli_client
from services.cli.client import UPLOAD_CHUNK_BYTES, multipart_stream
from services.cli.exit_codes import ExitCode
from services.cli.main import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[3]


class Stub:
    """A loopback HTTP server; ``routes[(method, path)]`` returns (status, content type, body)."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], object] = {}
        self.uploads: list[dict] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _answer(self, method: str) -> None:
                path = self.path.split("?")[0]
                if method == "POST":
                    length = int(self.headers.get("Content-Length", 0))
                    seen, head = 0, b""
                    while seen < length:  # read and drop: the stub keeps only counts and the head
                        chunk = self.rfile.read(min(1 << 20, length - seen))
                        if not chunk:
                            break
                        head = head or chunk[:4096]
                        seen += len(chunk)
                    stub.uploads.append(
                        {
                            "path": path,
                            "length": length,
                            "received": seen,
                            "head": head,
                            "content_type": self.headers.get("Content-Type", ""),
                            "chunked": self.headers.get("Transfer-Encoding"),
                        }
                    )
                route = stub.routes.get((method, path))
                status, ctype, body = (
                    route() if callable(route) else route or (404, "application/json", {"detail": "Not Found"})
                )
                data = json.dumps(body).encode() if not isinstance(body, bytes) else body
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._answer("GET")

            def do_POST(self) -> None:
                self._answer("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub():
    s = Stub()
    yield s
    s.close()


def _submission(status: str, **extra) -> dict:
    return {
        "id": "sub-1",
        "tier": "dev",
        "kind": "hdf5",
        "status": status,
        "outcome": None,
        "error_message": None,
        "runtime_seconds": None,
        "scores": [],
        **extra,
    }


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed on exit: nothing listens there


@pytest.fixture
def result_file(tmp_path) -> Path:
    path = tmp_path / "result.h5"
    path.write_bytes(os.urandom(3 * UPLOAD_CHUNK_BYTES + 123))
    return path


@pytest.mark.parametrize(
    "args",
    [
        ["status", "sub-1"],
        ["leaderboard"],
        ["download", "--tier", "public", "--out", "{tmp}/p.h5"],
        ["submit", "{file}", "--tier", "dev", "--wait"],
    ],
)
def test_unreachable_server_is_one_line_and_exit_6(args, tmp_path, result_file):
    url = f"http://127.0.0.1:{_closed_port()}"
    args = [a.format(tmp=tmp_path, file=result_file) for a in args]
    r = runner.invoke(app, [*args, "--api-url", url, *(["--token", "t"] if args[0] in ("status", "submit") else [])])
    assert r.exit_code == ExitCode.UNREACHABLE, r.output
    lines = r.stderr.strip().splitlines()
    assert lines == [f"error: cannot reach the server at {url}: Connection refused"], r.stderr
    assert "Traceback" not in r.output and r.stdout == ""
    assert not (tmp_path / "p.h5").exists() and not (tmp_path / "p.h5.part").exists()


def test_unreachable_from_a_real_process_has_no_traceback(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}"
    p = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "leaderboard", "--api-url", url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == ExitCode.UNREACHABLE
    assert p.stderr.strip() == f"error: cannot reach the server at {url}: Connection refused" and p.stdout == ""


def test_an_api_url_without_scheme_is_a_usage_error():
    r = runner.invoke(app, ["leaderboard", "--api-url", "localhost:8000"])
    assert r.exit_code == ExitCode.USAGE and "must start with http:// or https://" in r.stderr


@pytest.mark.parametrize(
    "status,body,code,text",
    [
        (
            401,
            {"error": {"code": "unauthorized", "message": "a bearer token is required"}},
            ExitCode.AUTH,
            "401 (unauthorized): a bearer token is required",
        ),
        (403, {"error": {"code": "forbidden", "message": "not yours"}}, ExitCode.AUTH, "403 (forbidden): not yours"),
        (
            404,
            {"error": {"code": "not_found", "message": "no submission 'sub-1'"}},
            ExitCode.NOT_FOUND,
            "no submission 'sub-1'",
        ),
        (404, {"detail": "Not Found"}, ExitCode.NOT_FOUND, "404 from"),
        (
            422,
            {"error": {"code": "invalid_file", "message": "/scenes/s1/x_hat: 12 values are NaN or infinite"}},
            ExitCode.INVALID_FILE,
            "/scenes/s1/x_hat: 12 values",
        ),
        (413, {"error": {"code": "file_too_large", "message": "over 1 GiB"}}, ExitCode.INVALID_FILE, "over 1 GiB"),
        (
            429,
            {"error": {"code": "quota_exceeded", "message": "5 dev submissions a day"}},
            ExitCode.FAILURE,
            "5 dev submissions a day",
        ),
        (
            503,
            {"error": {"code": "database_unavailable", "message": "retry in a few seconds"}},
            ExitCode.SERVER_ERROR,
            "retry in a few seconds",
        ),
        (500, b"Internal Server Error", ExitCode.SERVER_ERROR, "500 from"),
    ],
)
def test_each_refusal_has_its_exit_code(stub, status, body, code, text):
    stub.routes[("GET", "/api/v1/submissions/sub-1")] = (
        status,
        "application/json" if isinstance(body, dict) else "text/plain",
        body,
    )
    r = runner.invoke(app, ["status", "sub-1", "--api-url", stub.url, "--token", "t"])
    assert r.exit_code == code, r.output
    assert text in r.stderr and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.output


def test_a_server_that_is_not_the_api_is_a_server_error(stub):
    stub.routes[("GET", "/api/v1/leaderboard")] = (200, "text/html", b"<html>welcome to nginx</html>")
    r = runner.invoke(app, ["leaderboard", "--api-url", stub.url])
    assert r.exit_code == ExitCode.SERVER_ERROR and "not the EDX Arena API's JSON; check --api-url" in r.stderr


def test_server_messages_are_printed_verbatim_not_as_markup(stub):
    message = "spec value [bold]x[/bold] must lie in [lo, hi]"
    stub.routes[("GET", "/api/v1/submissions/sub-1")] = (
        400,
        "application/json",
        {"error": {"code": "bad_request", "message": message}},
    )
    r = runner.invoke(app, ["status", "sub-1", "--api-url", stub.url, "--token", "t"])
    assert r.exit_code == ExitCode.FAILURE and message in r.stderr


def _stages(stub, sequence: list[dict]) -> None:
    answers = iter(sequence)
    last = {}

    def next_state():
        nonlocal last
        last = next(answers, last)
        return 200, "application/json", last

    stub.routes[("POST", "/api/v1/submissions")] = (202, "application/json", {"id": "sub-1", "status": "queued"})
    stub.routes[("GET", "/api/v1/submissions/sub-1")] = next_state


SCORE = {"scene_id": "", "score": 0.5, "psnr": 25.0, "ssim": 0.6, "consistency": 0.7, "ci_low": 0.49, "ci_high": 0.51}


def test_wait_scored_failed_and_timeout_have_distinct_codes(stub, result_file):
    base = ["submit", str(result_file), "--tier", "dev", "--wait", "--api-url", stub.url, "--token", "t"]
    _stages(
        stub,
        [
            _submission("queued"),
            _submission("running"),
            _submission("scoring"),
            _submission("scored", scores=[{**SCORE, "scene_id": "dev-s0"}, SCORE]),
        ],
    )
    r = runner.invoke(app, base)
    assert r.exit_code == ExitCode.OK, r.output
    assert r.stdout.splitlines()[0] == "sub-1" and "status scored" in r.stdout and "[0.4900, 0.5100]" in r.stdout

    _stages(
        stub,
        [
            _submission("running"),
            _submission(
                "failed", outcome="nonzero_exit", error_message="exit 3", log_tail="Traceback...\nValueError: boom\n"
            ),
        ],
    )
    r = runner.invoke(app, base)
    assert r.exit_code == ExitCode.SUBMISSION_FAILED, r.output
    assert "outcome nonzero_exit" in r.stdout and "ValueError: boom" in r.stdout

    _stages(stub, [_submission("queued")])
    r = runner.invoke(app, [*base, "--timeout", "1.2"])
    assert r.exit_code == ExitCode.TIMEOUT, r.output
    assert "sub-1 still queued after 1 s; check later with `edx-arena status sub-1`" in r.stderr


def test_json_mode_prints_one_object_and_no_progress(stub, result_file, monkeypatch):
    terminal = io.StringIO()
    monkeypatch.setattr(cli_client, "console", Console(file=terminal, force_terminal=True, width=100))
    _stages(stub, [_submission("running"), _submission("scored", scores=[SCORE])])
    r = runner.invoke(
        app, ["submit", str(result_file), "--tier", "dev", "--wait", "--json", "--api-url", stub.url, "--token", "t"]
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["status"] == "scored"
    assert terminal.getvalue() == ""  # neither the upload bar nor the spinner


def test_upload_bar_and_stage_spinner_on_a_terminal(stub, result_file, monkeypatch):
    terminal = io.StringIO()
    monkeypatch.setattr(cli_client, "console", Console(file=terminal, force_terminal=True, width=120))
    monkeypatch.setattr(cli_client, "_POLL_FIRST_S", 0.3)  # let the spinner draw each stage
    _stages(
        stub,
        [_submission("queued"), _submission("running"), _submission("scoring"), _submission("scored", scores=[SCORE])],
    )
    r = runner.invoke(
        app, ["submit", str(result_file), "--tier", "dev", "--wait", "--api-url", stub.url, "--token", "t"]
    )
    assert r.exit_code == 0, r.output
    shown = terminal.getvalue()
    assert "uploading result.h5" in shown and "3.1/3.1 MB" in shown
    assert "sub-1: queued → running → scoring" in shown


def test_quiet_and_non_terminal_show_no_progress(stub, result_file, monkeypatch):
    _stages(stub, [_submission("scored", scores=[SCORE])])
    r = runner.invoke(
        app, ["submit", str(result_file), "--tier", "dev", "--wait", "--api-url", stub.url, "--token", "t"]
    )
    assert r.exit_code == 0 and r.stderr == ""  # CliRunner's stderr is not a terminal
    terminal = io.StringIO()
    monkeypatch.setattr(cli_client, "console", Console(file=terminal, force_terminal=True, width=100))
    r = runner.invoke(
        app, ["submit", str(result_file), "--tier", "dev", "--wait", "-q", "--api-url", stub.url, "--token", "t"]
    )
    assert r.exit_code == 0 and terminal.getvalue() == ""


def test_multipart_body_is_streamed_with_an_exact_length(result_file):
    seen = []
    headers, body = multipart_stream(
        {"tier": "dev", "method": "Mé"}, path=result_file, content_type="application/x-hdf5", on_chunk=seen.append
    )
    parts = list(body)
    assert max(len(p) for p in parts) <= UPLOAD_CHUNK_BYTES + 1024  # never the whole file at once
    assert sum(seen) == result_file.stat().st_size and len(seen) == 4
    raw = b"".join(parts)
    assert int(headers["Content-Length"]) == len(raw)
    assert result_file.read_bytes() in raw and 'name="method"\r\n\r\nMé'.encode() in raw


def test_routes_and_form_fields_of_each_kind_of_submission(stub, tmp_path, result_file):
    created = (202, "application/json", {"id": "sub-9", "status": "queued"})
    for path in (
        "/api/v1/submissions",
        "/api/v1/submissions/container",
        "/api/v1/submissions/container/archive",
        "/api/v1/submissions/script",
    ):
        stub.routes[("POST", path)] = created
    archive, script = tmp_path / "solver.tar", tmp_path / "main.py"
    archive.write_bytes(b"\0" * 10_000)
    script.write_text("print('hi')\n")
    common = ["--method", "M", "--source", "S", "--api-url", stub.url, "--token", "t"]
    for args in (
        [str(result_file), "--tier", "dev"],
        [str(archive), "--tier", "hidden"],
        [str(script), "--tier", "hidden"],
        ["--image", "team/solver:1"],
    ):
        r = runner.invoke(app, ["submit", *args, *common])
        assert r.exit_code == 0 and r.stdout == "sub-9\n", r.output
    assert [u["path"] for u in stub.uploads] == [
        "/api/v1/submissions",
        "/api/v1/submissions/container/archive",
        "/api/v1/submissions/script",
        "/api/v1/submissions/container",
    ]
    for u in stub.uploads[:3]:
        assert (
            u["received"] == u["length"]
            and u["chunked"] is None
            and u["content_type"].startswith("multipart/form-data")
        )
        assert b'name="method"\r\n\r\nM\r\n' in u["head"] and b'name="source"\r\n\r\nS\r\n' in u["head"]
    assert (
        b'name="tier"\r\n\r\ndev\r\n' in stub.uploads[0]["head"] and b'filename="solver.tar"' in stub.uploads[1]["head"]
    )
    assert json.loads(stub.uploads[3]["head"]) == {
        "image": "team/solver:1",
        "method": "M",
        "description": "",
        "source": "S",
    }


@pytest.mark.parametrize(
    "args,message",
    [
        (["--tier", "dev"], "give a FILE to upload, or --image"),
        (["{file}"], "--tier is required with a FILE"),
        (["{file}", "--image", "a:b"], "either a FILE or --image"),
        (["--image", "a:b", "--tier", "dev"], "--image submits to the hidden tier"),
    ],
)
def test_submit_usage_errors(args, message, result_file):
    r = runner.invoke(app, ["submit", *[a.format(file=result_file) for a in args], "--api-url", "http://127.0.0.1:1"])
    assert r.exit_code == ExitCode.USAGE and message in " ".join(r.output.split())


@pytest.mark.slow
def test_a_large_upload_does_not_sit_in_memory(stub, tmp_path):
    """A 512 MiB archive goes up with the CLI's peak memory far below the file size."""
    stub.routes[("POST", "/api/v1/submissions/container/archive")] = (
        202,
        "application/json",
        {"id": "big", "status": "queued"},
    )
    big = tmp_path / "big.tar"
    with open(big, "wb") as f:
        f.truncate(512 << 20)  # sparse: no disk used, reads return zeros
    # VmHWM, not getrusage's ru_maxrss: Linux keeps ru_maxrss across execve, so a child
    # forked from a big pytest process would report the parent's peak.
    code = (
        "import sys\nfrom services.cli.main import app\n"
        "try:\n    app()\nexcept SystemExit as e:\n    code = e.code\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1]\n"
        "print(hwm, file=sys.stderr)\nsys.exit(code)\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", code, "submit", str(big), "--tier", "hidden", "--api-url", stub.url, "--token", "t"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0 and p.stdout == "big\n", p.stderr
    peak_mib = int(p.stderr.strip().splitlines()[-1]) / 1024
    assert stub.uploads[0]["received"] == stub.uploads[0]["length"] > 512 << 20
    assert peak_mib < 256, f"peak RSS {peak_mib:.0f} MiB for a 512 MiB upload"


def test_download_bar_and_atomic_file(stub, tmp_path, monkeypatch):
    payload = os.urandom(2 * UPLOAD_CHUNK_BYTES + 7)
    stub.routes[("GET", "/api/v1/tiers/public/measurement")] = (200, "application/x-hdf5", payload)
    terminal = io.StringIO()
    monkeypatch.setattr(cli_client, "console", Console(file=terminal, force_terminal=True, width=120))
    out = tmp_path / "public.h5"
    r = runner.invoke(app, ["download", "--tier", "public", "--out", str(out), "--api-url", stub.url])
    assert r.exit_code == 0, r.output
    assert out.read_bytes() == payload and not (tmp_path / "public.h5.part").exists()
    assert "downloading public.h5" in terminal.getvalue() and "2.1/2.1 MB" in terminal.getvalue()
    stub.routes[("GET", "/api/v1/tiers/dev/measurement")] = (
        404,
        "application/json",
        {"error": {"code": "not_found", "message": "no active dev dataset"}},
    )
    r = runner.invoke(app, ["download", "--tier", "dev", "--out", str(tmp_path / "dev.h5"), "--api-url", stub.url])
    assert r.exit_code == ExitCode.NOT_FOUND and "no active dev dataset" in terminal.getvalue()
    assert not (tmp_path / "dev.h5").exists() and not (tmp_path / "dev.h5.part").exists()
