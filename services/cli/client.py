"""Participant commands: talk to an EDX Arena server over HTTP.

``--api-url`` (env ``EDX_API_URL``) and ``--token`` (env ``EDX_TOKEN``). Exit codes are the
table in :mod:`services.cli.exit_codes`; every failure is one line on stderr, never a traceback.

Progress (upload and download bars, the waiting spinner) goes to stderr, and only when stderr is
a terminal and ``--quiet`` is not given, so stdout stays clean for scripts and ``--json``.
Uploads stream from disk in 1 MiB chunks: a multi-GiB ``docker save`` archive never sits in
memory.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, NoReturn

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from services.cli.exit_codes import EPILOG, ExitCode

console = Console(stderr=True)
out = Console()

#: Read size of a streamed upload; also the granularity of the upload bar.
UPLOAD_CHUNK_BYTES = 1 << 20
#: Polling interval of ``--wait``: starts short (a small result scores in seconds), grows to the cap.
_POLL_FIRST_S, _POLL_MAX_S = 0.5, 3.0
_STAGES = ("queued", "running", "scoring")
_TERMINAL = ("scored", "failed")
#: Which upload goes to which endpoint: a Hidden-tier file is a script or a docker save archive.
_SCRIPT_SUFFIXES = (".py", ".zip")

ApiUrl = Annotated[str, typer.Option("--api-url", envvar="EDX_API_URL", help="Server base URL.")]
Token = Annotated[str | None, typer.Option("--token", envvar="EDX_TOKEN", help="Your API token (from the organizer).")]
Quiet = Annotated[
    bool,
    typer.Option(
        "--quiet", "-q", help="No progress bars or spinner (they are also off when stderr is not a terminal)."
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the server's JSON on stdout instead of a table.")]


def fail(code: ExitCode, message: str) -> NoReturn:
    """Print one line on stderr and exit with ``code`` (no traceback, no wrapping)."""
    console.print(f"[red]error[/red]: {escape(message)}", soft_wrap=True, highlight=False)
    raise typer.Exit(int(code))


def _show_progress(quiet: bool) -> bool:
    return not quiet and console.is_terminal


def _client(api_url: str, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        return httpx.Client(base_url=api_url, headers=headers, timeout=httpx.Timeout(30, read=600))
    except (httpx.InvalidURL, ValueError) as exc:
        fail(ExitCode.USAGE, f"bad --api-url {api_url!r}: {exc}")


def _send(client: httpx.Client, method: str, url: str, **kwargs) -> httpx.Response:
    """One request; a network failure becomes exit 6 with the reason, a bad URL exit 2."""
    try:
        return client.request(method, url, **kwargs)
    except httpx.UnsupportedProtocol:
        fail(ExitCode.USAGE, f"bad --api-url {str(client.base_url)!r}: it must start with http:// or https://")
    except httpx.TransportError as exc:
        fail(ExitCode.UNREACHABLE, f"cannot reach the server at {client.base_url}: {_reason(exc)}")


def _reason(exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "no answer in time (network timeout)"
    text = str(exc) or type(exc).__name__
    # httpx passes the OS error through: "[Errno 111] Connection refused" → "Connection refused".
    return text.split("] ", 1)[-1]


def _exit_code_of(response: httpx.Response, code: str | None) -> ExitCode:
    status = response.status_code
    if status in (401, 403):
        return ExitCode.AUTH
    if status == 404:
        return ExitCode.NOT_FOUND
    if status >= 500:
        return ExitCode.SERVER_ERROR
    if code in ("invalid_file", "file_too_large", "image_invalid"):
        return ExitCode.INVALID_FILE
    return ExitCode.FAILURE


def _ok(response: httpx.Response) -> dict:
    """The JSON body of a successful answer, or exit with the code its status maps to."""
    try:
        body = response.json() if response.content else {}
    except ValueError:
        body = None
    if response.status_code >= 400:
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict) and "message" in err:
            fail(
                _exit_code_of(response, err.get("code")),
                f"{response.status_code} ({err.get('code')}): {err['message']}",
            )
        detail = body.get("detail") if isinstance(body, dict) else None
        text = str(detail) if detail else response.text.strip()[:200] or response.reason_phrase
        fail(_exit_code_of(response, None), f"{response.status_code} from {response.request.url}: {text}")
    if not isinstance(body, dict):
        fail(
            ExitCode.SERVER_ERROR,
            f"{response.request.url} answered {response.status_code} with something that is not the EDX Arena API's JSON; check --api-url",
        )
    return body


def multipart_stream(
    fields: dict[str, str],
    *,
    path: Path,
    field: str = "file",
    content_type: str = "application/octet-stream",
    on_chunk: Callable[[int], None] = lambda n: None,
    chunk_bytes: int = UPLOAD_CHUNK_BYTES,
) -> tuple[dict[str, str], Iterator[bytes]]:
    """A ``multipart/form-data`` body that streams ``path`` from disk, with its exact length.

    Returns the headers (``Content-Type`` with the boundary, ``Content-Length``) and a generator
    of the body: the form fields, then the file in ``chunk_bytes`` reads (``on_chunk(n)`` is
    called for each, for a progress bar), then the closing boundary. A known length lets the
    server apply its size cap before reading anything; memory stays one chunk whatever the size.
    """
    boundary = secrets.token_hex(16)
    filename = path.name.replace("\\", "\\\\").replace('"', "%22")
    head = (
        b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value.encode() + b"\r\n"
            for name, value in fields.items()
        )
        + (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
    )
    tail = f"\r\n--{boundary}--\r\n".encode()
    size = path.stat().st_size

    def body() -> Iterator[bytes]:
        yield head
        sent = 0
        with open(path, "rb") as f:
            while chunk := f.read(chunk_bytes):
                sent += len(chunk)
                on_chunk(len(chunk))
                yield chunk
        if sent != size:  # the declared length would be a lie: the server would wait or cut the body
            raise OSError(f"{path} changed size during the upload ({size} → {sent} bytes)")
        yield tail

    headers = {
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Content-Length": str(len(head) + size + len(tail)),
    }
    return headers, body()


def _upload(
    client: httpx.Client, url: str, path: Path, fields: dict[str, str], *, content_type: str, show: bool
) -> dict:
    progress = Progress(
        TextColumn(f"uploading {escape(path.name)}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not show,
    )
    with progress:
        task = progress.add_task("upload", total=path.stat().st_size)
        headers, body = multipart_stream(
            fields, path=path, content_type=content_type, on_chunk=lambda n: progress.advance(task, n)
        )
        response = _send(client, "POST", url, content=body, headers=headers)
    return _ok(response)


def _stage_line(submission_id: str, seen: list[str], started: float) -> str:
    return f"{submission_id}: {' → '.join(seen)}  ({time.monotonic() - started:.0f} s)"


def wait_for_score(client: httpx.Client, submission_id: str, *, timeout: float, show: bool) -> dict:
    """Poll until the submission is scored or failed (and, for a Hidden image or script, its
    runs on the other tiers too); a spinner shows queued → running → scoring.

    A poll that cannot reach the server is retried until the deadline (an API restart should not
    end a long wait); if the last poll failed, the exit is 6 (unreachable), otherwise 5 (timeout).
    """
    started = time.monotonic()
    deadline = started + timeout
    seen: list[str] = []
    interval = _POLL_FIRST_S
    unreachable: str | None = None
    with console.status(f"{submission_id}: waiting") if show else nullcontext() as spinner:
        while True:
            try:
                response = client.get(f"/api/v1/submissions/{submission_id}")
                unreachable = None
            except httpx.TransportError as exc:
                unreachable = _reason(exc)
            else:
                s = _ok(response)
                if not seen or seen[-1] != s["status"]:
                    seen.append(s["status"])
                # A Hidden image or script also runs on Public and Dev: wait for the three runs.
                if s["status"] in _TERMINAL and all(r["status"] in _TERMINAL for r in s.get("tier_runs") or []):
                    return s
            if spinner is not None:
                spinner.update(
                    _stage_line(submission_id, seen or ["waiting"], started)
                    + (
                        f"  [yellow]server unreachable ({escape(unreachable)}), retrying[/yellow]"
                        if unreachable
                        else ""
                    )
                )
            if time.monotonic() + interval > deadline:
                break
            time.sleep(interval)
            interval = min(interval * 1.5, _POLL_MAX_S)
    if unreachable:
        fail(
            ExitCode.UNREACHABLE,
            f"cannot reach the server at {client.base_url}: {unreachable} (gave up after {timeout:.0f} s)",
        )
    fail(
        ExitCode.TIMEOUT,
        f"{submission_id} still {seen[-1] if seen else 'unknown'} after {timeout:.0f} s; "
        f"check later with `edx-arena status {submission_id}`",
    )


def _print_submission(s: dict) -> None:
    out.print(
        f"[bold]{s['id']}[/bold]  tier {s['tier']}  {s['kind']}  status [bold]{s['status']}[/bold]"
        + (f"  outcome {s['outcome']}" if s.get("outcome") else ""),
        highlight=False,
        soft_wrap=True,
    )
    if s.get("error_message"):
        out.print(f"  {escape(s['error_message'])}", soft_wrap=True)
    if s.get("runtime_seconds") is not None:
        out.print(
            f"  runtime {s['runtime_seconds']:.1f} s, peak memory {(s.get('peak_memory_bytes') or 0) / 2**20:.0f} MiB, "
            f"exit code {s.get('exit_code')}",
            highlight=False,
            soft_wrap=True,
        )
    if s.get("status") == "failed" and s.get("log_tail"):
        out.print("  log (last lines):")
        for line in s["log_tail"].rstrip().splitlines()[-20:]:
            out.print(f"    {escape(line)}", soft_wrap=True, highlight=False)
    tier_rows = [r for r in s.get("scores", []) if r["scene_id"] == ""]
    if tier_rows:
        t = Table("scene", "score", "95 % interval", "PSNR dB", "SSIM", "consistency")
        for r in [x for x in s["scores"] if x["scene_id"]] + tier_rows:
            ci = (
                f"[{r['ci_low']:.4f}, {r['ci_high']:.4f}]"
                if r.get("ci_low") is not None and r.get("ci_high") is not None
                else ""
            )
            t.add_row(
                r["scene_id"] or "tier",
                f"{r['score']:.4f}",
                ci,
                f"{r['psnr']:.2f}",
                f"{r['ssim']:.4f}",
                f"{r['consistency']:.4f}",
            )
        out.print(t)
    runs = s.get("tier_runs") or []
    if runs:
        # Compact enough for 80 columns; `--json` has every field and the full ids.
        t = Table("tier", "run", "status", "score ± ½ CI", "PSNR", "SSIM", "", title="one artifact, run on every tier")
        for r in runs:
            score = "" if r.get("score") is None else f"{r['score']:.4f}"
            if score and r.get("ci_low") is not None and r.get("ci_high") is not None:
                score += f" ±{(r['ci_high'] - r['ci_low']) / 2:.4f}"
            t.add_row(
                r["tier"] + ("*" if r["id"] == s["id"] else ""),
                r["id"][:8],
                r.get("outcome") if r["status"] == "failed" and r.get("outcome") else r["status"],
                score,
                "" if r.get("psnr") is None else f"{r['psnr']:.2f}",
                "" if r.get("ssim") is None else f"{r['ssim']:.3f}",
                "certified" if r.get("certified") and r.get("score") is not None else "",
            )
        out.print(t)


def _finish(s: dict, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(s))
    else:
        _print_submission(s)
    if s["status"] == "failed":
        raise typer.Exit(int(ExitCode.SUBMISSION_FAILED))


def submit(
    file: Annotated[
        Path | None,
        typer.Argument(
            help="Result HDF5 (public, dev, standard); for --tier hidden a `docker save` archive (.tar), a .py script or a .zip with main.py.",
            exists=True,
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    tier: Annotated[
        str | None, typer.Option(help="public, dev, standard or hidden (implied by --image).", show_default=False)
    ] = None,
    image: Annotated[
        str | None,
        typer.Option(
            help="Hidden tier: an image the server's daemon has, or a link to an allow-listed registry.",
            show_default=False,
        ),
    ] = None,
    method: Annotated[str, typer.Option(help="Method name shown on the leaderboard.")] = "",
    description: Annotated[str, typer.Option(help="One-paragraph description of the method.")] = "",
    source: Annotated[str, typer.Option(help="Citation or URL of the method.")] = "",
    wait: Annotated[
        bool,
        typer.Option(
            "--wait", help="Wait for the final state and print the scores (exit 4 if it failed, 5 on timeout)."
        ),
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait.")] = 1800,
    as_json: AsJson = False,
    quiet: Quiet = False,
    api_url: ApiUrl = "http://127.0.0.1:8000",
    token: Token = None,
) -> None:
    """Submit a result file, a container image or a script; prints the submission id.

    The upload streams from disk with a progress bar. With --wait, a spinner follows the
    submission (queued → running → scoring → scored) and the scores are printed. Nothing is
    written locally. stdout: the id on the first line (then the status and score table with
    --wait), or one JSON object with --json.

    Examples:

        edx-arena submit result.h5 --tier dev --method "my method" --wait

        edx-arena submit solver.tar --tier hidden --method "my method" --wait

        edx-arena submit main.py --tier hidden

        edx-arena submit --image team/solver:1.2 --wait
    """
    meta = {"method": method, "description": description, "source": source}
    if image is not None:
        if file is not None:
            raise typer.BadParameter("give either a FILE or --image, not both")
        if tier not in (None, "hidden"):
            raise typer.BadParameter(f"--image submits to the hidden tier, not {tier!r}")
    elif file is None:
        raise typer.BadParameter("give a FILE to upload, or --image for the hidden tier")
    elif tier is None:
        raise typer.BadParameter("--tier is required with a FILE (public, dev, standard or hidden)")
    show = _show_progress(quiet) and not as_json
    with _client(api_url, token) as client:
        if image is not None:
            created = _ok(_send(client, "POST", "/api/v1/submissions/container", json={"image": image, **meta}))
        elif tier == "hidden":
            script = file.suffix.lower() in _SCRIPT_SUFFIXES
            url = "/api/v1/submissions/script" if script else "/api/v1/submissions/container/archive"
            created = _upload(
                client,
                url,
                file,
                meta,
                content_type="application/octet-stream" if script else "application/x-tar",
                show=show,
            )
        else:
            created = _upload(
                client,
                "/api/v1/submissions",
                file,
                {"tier": tier, **meta},
                content_type="application/x-hdf5",
                show=show,
            )
        if not wait:
            print(json.dumps(created) if as_json else created["id"])
            return
        if not as_json:
            print(created["id"], flush=True)
        _finish(wait_for_score(client, created["id"], timeout=timeout, show=show), as_json=as_json)


def status(
    submission_id: Annotated[str, typer.Argument(help="Submission id (printed by submit).", show_default=False)],
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the final state first (exit 4 if it failed, 5 on timeout).")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait.")] = 1800,
    as_json: AsJson = False,
    quiet: Quiet = False,
    api_url: ApiUrl = "http://127.0.0.1:8000",
    token: Token = None,
) -> None:
    """Show a submission's stage, outcome, diagnostics (runtime, peak memory, exit code, your log) and scores.

    Writes nothing locally; stdout gets the status and score table, or the JSON with --json.
    Without --wait it exits 0 whatever the state; with --wait, 0 only when scored.

    Examples:

        edx-arena status 01JD6Z6RZQ3N4

        edx-arena status 01JD6Z6RZQ3N4 --wait --json
    """
    with _client(api_url, token) as client:
        if wait:
            _finish(
                wait_for_score(client, submission_id, timeout=timeout, show=_show_progress(quiet) and not as_json),
                as_json=as_json,
            )
            return
        s = _ok(_send(client, "GET", f"/api/v1/submissions/{submission_id}"))
    if as_json:
        print(json.dumps(s))
    else:
        _print_submission(s)


def leaderboard(
    tier: Annotated[str, typer.Option(help="public, dev, hidden, standard or overall.")] = "overall",
    page: Annotated[int, typer.Option(help="Page number.", min=1)] = 1,
    certified: Annotated[
        bool,
        typer.Option(
            "--certified",
            help="Certified entries only; overall: methods whose three tier scores are one artifact's server runs.",
        ),
    ] = False,
    as_json: AsJson = False,
    api_url: ApiUrl = "http://127.0.0.1:8000",
) -> None:
    """Print one page of a leaderboard (no token needed). Writes nothing locally.

    An entry is a method (participant and method name). On the overall board a tier filled by
    an uploaded result is marked self-reported; a row is certified only when its three scores
    come from one image or script the server ran on every tier.

    Examples:

        edx-arena leaderboard --tier dev

        edx-arena leaderboard --tier overall --certified

        edx-arena leaderboard --tier overall --json > board.json
    """
    params: dict = {"tier": tier, "page": page}
    if certified:
        params["certified"] = "true"
    with _client(api_url, None) as client:
        board = _ok(_send(client, "GET", "/api/v1/leaderboard", params=params))
    if as_json:
        print(json.dumps(board))
        return
    t = Table(title=f"{tier} leaderboard ({board['count']} entries)")
    for col in ("rank", "team", "method", "score", "PSNR", "SSIM", ""):
        t.add_column(col)
    for e in board["data"]:
        if tier == "overall":
            psnr = " / ".join(f"{e['tiers'][x]['psnr']:.1f}" for x in ("public", "dev", "hidden"))
            ssim = " / ".join(f"{e['tiers'][x]['ssim']:.3f}" for x in ("public", "dev", "hidden"))
        else:
            psnr, ssim = f"{e['psnr']:.2f}", f"{e['ssim']:.4f}"
        rank = "—" if e["rank"] is None else str(e["rank"])
        badge = "baseline" if e.get("baseline") else "certified" if e.get("certified") else ""
        uploaded = [x for x, v in (e.get("tiers") or {}).items() if v.get("self_reported")]
        if uploaded and not e.get("certified"):
            badge = (badge + " " if badge else "") + "self-reported: " + ", ".join(uploaded)
        t.add_row(rank, escape(str(e["team"])), escape(str(e["method"])), f"{e['score']:.4f}", psnr, ssim, badge)
    out.print(t)


def download(
    tier: Annotated[str, typer.Option(help="public, dev or standard.", show_default=False)],
    out_path: Annotated[
        Path,
        typer.Option("--out", help="File to write (replaced only when the download is complete).", show_default=False),
    ],
    quiet: Quiet = False,
    api_url: ApiUrl = "http://127.0.0.1:8000",
) -> None:
    """Download a tier's measurement file (Public includes the truth; Hidden is never downloadable).

    Writes --out (via OUT.part, renamed when complete, so a broken download never leaves a
    half file under the real name), with a byte progress bar.

    Examples:

        edx-arena download --tier public --out public.h5

        edx-arena download --tier dev --out dev.h5 --api-url https://arena.example.org
    """
    tmp = out_path.with_suffix(out_path.suffix + ".part")
    with _client(api_url, None) as client:
        try:
            request = client.build_request("GET", f"/api/v1/tiers/{tier}/measurement")
            response = client.send(request, stream=True)
        except httpx.UnsupportedProtocol:
            fail(ExitCode.USAGE, f"bad --api-url {api_url!r}: it must start with http:// or https://")
        except httpx.TransportError as exc:
            fail(ExitCode.UNREACHABLE, f"cannot reach the server at {api_url}: {_reason(exc)}")
        try:
            if response.status_code >= 400:
                response.read()
                _ok(response)
            total = int(response.headers["Content-Length"]) if "Content-Length" in response.headers else None
            progress = Progress(
                TextColumn(f"downloading {escape(out_path.name)}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=console,
                transient=True,
                disable=not _show_progress(quiet),
            )
            with progress, open(tmp, "wb") as f:
                task = progress.add_task("download", total=total)
                for chunk in response.iter_bytes(UPLOAD_CHUNK_BYTES):
                    f.write(chunk)
                    progress.advance(task, len(chunk))
            tmp.replace(out_path)
        except httpx.TransportError as exc:
            fail(ExitCode.UNREACHABLE, f"the download from {api_url} broke off: {_reason(exc)}")
        finally:
            response.close()
            tmp.unlink(missing_ok=True)
    console.print(f"wrote {out_path}", highlight=False)


def upload_dataset(
    file: Annotated[
        Path,
        typer.Argument(
            help="Full dataset file with the truth (from `dataset build` or `dataset import`).",
            exists=True,
            dir_okay=False,
            show_default=False,
        ),
    ],
    tier: Annotated[
        str, typer.Option(help="public, dev, hidden or standard (must match the file's tier).", show_default=False)
    ],
    with_truth: Annotated[
        bool, typer.Option("--with-truth", help="Standard tier only: participants' download includes the truth.")
    ] = False,
    quiet: Quiet = False,
    api_url: ApiUrl = "http://127.0.0.1:8000",
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar=["EDX_ORGANIZER_TOKEN", "EDX_TOKEN"],
            help="An organizer's token (the server's EDX_ORGANIZER_TOKEN works).",
        ),
    ] = None,
) -> None:
    """Upload a full dataset file to a server over HTTP and make it the tier's active dataset.

    For a tier built on your own machine (secret seed, or your own truth maps): the server
    validates the file, stores it and writes the participant view itself. The upload streams
    with a byte bar. Nothing is written locally; stdout gets the new dataset's JSON (id, content
    hash). Same as POST /api/v1/admin/tiers/{tier}/dataset/upload.

    Examples:

        edx-arena admin upload-dataset hidden.h5 --tier hidden --api-url https://arena.example.org

        edx-arena admin upload-dataset standard.h5 --tier standard --with-truth
    """
    with _client(api_url, token) as client:
        fields = {"with_truth": "true"} if with_truth else {}
        row = _upload(
            client,
            f"/api/v1/admin/tiers/{tier}/dataset/upload",
            file,
            fields,
            content_type="application/x-hdf5",
            show=_show_progress(quiet),
        )
    console.print(
        f"{tier} tier: dataset {row.get('id')} is active (content hash {str(row.get('content_hash'))[:16]}…)",
        highlight=False,
        soft_wrap=True,
    )
    print(json.dumps(row))


def register(app: typer.Typer) -> None:
    for command in (submit, status, leaderboard, download):
        app.command(command.__name__, epilog=EPILOG)(command)
