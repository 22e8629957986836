"""Participant commands: talk to an EDX Arena server over HTTP.

``--api-url`` (env ``EDX_API_URL``) and ``--token`` (env ``EDX_TOKEN``). Exit codes: 0 ok,
1 the server refused the request (its message is printed), 4 the submission failed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table

console = Console(stderr=True)
out = Console()
EXIT_FAILED = 4

ApiUrl = Annotated[str, typer.Option("--api-url", envvar="EDX_API_URL", help="Server base URL.")]
Token = Annotated[Optional[str], typer.Option("--token", envvar="EDX_TOKEN", help="Your API token.")]


def _client(api_url: str, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=api_url, headers=headers, timeout=httpx.Timeout(30, read=600))


def _ok(response: httpx.Response) -> dict:
    if response.status_code >= 400:
        try:
            err = response.json()["error"]
            console.print(f"[red]error {response.status_code}[/red] ({err['code']}): {err['message']}")
        except (ValueError, KeyError):
            console.print(f"[red]error {response.status_code}[/red]: {response.text[:500]}")
        raise typer.Exit(1)
    return response.json() if response.content else {}


class _ProgressReader:
    """A file wrapper that advances a progress bar as httpx streams it."""

    def __init__(self, f, progress: Progress, task) -> None:
        self.f, self.progress, self.task = f, progress, task

    def read(self, n: int = -1) -> bytes:
        chunk = self.f.read(n)
        self.progress.advance(self.task, len(chunk))
        return chunk


def _wait(client: httpx.Client, submission_id: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    last = None
    with console.status("waiting for the score") as status:
        while time.monotonic() < deadline:
            s = _ok(client.get(f"/api/v1/submissions/{submission_id}"))
            if s["status"] != last:
                last = s["status"]
                status.update(f"{submission_id}: {last}")
            if s["status"] in ("scored", "failed"):
                return s
            time.sleep(1)
    console.print(f"still {last} after {timeout:.0f} s; check later with `edx-arena status {submission_id}`")
    raise typer.Exit(1)


def _print_submission(s: dict) -> None:
    out.print(f"[bold]{s['id']}[/bold]  tier {s['tier']}  {s['kind']}  status [bold]{s['status']}[/bold]"
              + (f"  outcome {s['outcome']}" if s.get("outcome") else ""))
    if s.get("error_message"):
        out.print(f"  {s['error_message']}")
    if s.get("runtime_seconds") is not None:
        out.print(f"  runtime {s['runtime_seconds']:.1f} s, peak memory {(s.get('peak_memory_bytes') or 0) / 2**20:.0f} MiB, exit code {s.get('exit_code')}")
    tier_rows = [r for r in s.get("scores", []) if r["scene_id"] == ""]
    if tier_rows:
        t = Table("scene", "score", "PSNR dB", "SSIM", "consistency")
        for r in [x for x in s["scores"] if x["scene_id"]] + tier_rows:
            t.add_row(r["scene_id"] or "tier", f"{r['score']:.4f}", f"{r['psnr']:.2f}", f"{r['ssim']:.4f}", f"{r['consistency']:.4f}")
        out.print(t)


def submit(
    file: Annotated[Path, typer.Argument(help="Result HDF5 file.", exists=True, dir_okay=False)],
    tier: Annotated[str, typer.Option(help="public, dev or standard.")],
    method: Annotated[str, typer.Option(help="Method name shown on the leaderboard.")] = "",
    source: Annotated[str, typer.Option(help="Citation or URL of the method.")] = "",
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the score and print it.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait.")] = 600,
    api_url: ApiUrl = "http://127.0.0.1:8000",
    token: Token = None,
) -> None:
    """Upload a result file; prints the submission id (and, with --wait, the score)."""
    with _client(api_url, token) as client, open(file, "rb") as f:
        with Progress(BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=console, transient=True) as progress:
            task = progress.add_task("upload", total=file.stat().st_size)
            created = _ok(client.post("/api/v1/submissions", data={"tier": tier, "method": method, "source": source},
                                      files={"file": (file.name, _ProgressReader(f, progress, task), "application/x-hdf5")}))
        print(created["id"])
        if wait:
            s = _wait(client, created["id"], timeout)
            _print_submission(s)
            if s["status"] != "scored":
                raise typer.Exit(EXIT_FAILED)


def status(
    submission_id: Annotated[str, typer.Argument(help="Submission id.")],
    api_url: ApiUrl = "http://127.0.0.1:8000",
    token: Token = None,
) -> None:
    """Show a submission's stage, outcome, diagnostics and scores."""
    with _client(api_url, token) as client:
        _print_submission(_ok(client.get(f"/api/v1/submissions/{submission_id}")))


def leaderboard(
    tier: Annotated[str, typer.Option(help="public, dev, hidden, standard or overall.")] = "overall",
    page: Annotated[int, typer.Option(help="Page number.")] = 1,
    api_url: ApiUrl = "http://127.0.0.1:8000",
) -> None:
    """Print a leaderboard."""
    with _client(api_url, None) as client:
        board = _ok(client.get("/api/v1/leaderboard", params={"tier": tier, "page": page}))
    t = Table(title=f"{tier} leaderboard ({board['count']} entries)")
    for col in ("rank", "team", "method", "score", "PSNR", "SSIM", ""):
        t.add_column(col)
    for e in board["data"]:
        if tier == "overall":
            psnr = " / ".join(f"{e['tiers'][x]['psnr']:.1f}" for x in ("public", "dev", "hidden"))
            ssim = " / ".join(f"{e['tiers'][x]['ssim']:.3f}" for x in ("public", "dev", "hidden"))
        else:
            psnr, ssim = f"{e['psnr']:.2f}", f"{e['ssim']:.4f}"
        t.add_row(str(e["rank"]), e["team"], e["method"], f"{e['score']:.4f}", psnr, ssim, "certified" if e["certified"] else "")
    out.print(t)


def download(
    tier: Annotated[str, typer.Option(help="public or dev.")],
    out_path: Annotated[Path, typer.Option("--out", help="File to write.")],
    api_url: ApiUrl = "http://127.0.0.1:8000",
) -> None:
    """Download a tier's measurement file (Public includes the truth)."""
    with _client(api_url, None) as client, client.stream("GET", f"/api/v1/tiers/{tier}/measurement") as r:
        if r.status_code >= 400:
            r.read()
            _ok(r)
        tmp = out_path.with_suffix(out_path.suffix + ".part")
        with open(tmp, "wb") as f:
            for chunk in r.iter_bytes():
                f.write(chunk)
        tmp.replace(out_path)
    console.print(f"wrote {out_path}")


def register(app: typer.Typer) -> None:
    for command in (submit, status, leaderboard, download):
        app.command(command.__name__)(command)
