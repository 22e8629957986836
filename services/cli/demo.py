"""``edx-arena demo``: the whole challenge end to end on the embedded default.

Starts the API and a worker as child processes (SQLite file, filesystem broker, the machine's
Docker daemon, all under ``--data-dir``), seeds the three tiers as the organizer, creates a
participant, submits the reference solver's image to the Hidden tier (the server runs it on
Public, Dev and Hidden), waits for the three scored runs and prints them and the overall
leaderboard: one Certified method row. Everything goes through the public REST API, exactly as
an organizer and a participant would use it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.table import Table

from services.cli.client import fail
from services.cli.exit_codes import ExitCode

console = Console(stderr=True, soft_wrap=True)  # ids and paths stay on one line, whatever the width
out = Console()

_TERMINAL = {"scored", "failed"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _processes(env: dict[str, str], port: int, log_dir: Path) -> Iterator[None]:
    exe = [sys.executable, "-m", "services.cli.main"]
    procs = []
    try:
        for name, args in (
            ("api", ["serve", "--host", "127.0.0.1", "--port", str(port)]),
            ("worker", ["worker"]),
        ):
            log = open(log_dir / f"{name}.log", "wb")
            procs.append((name, subprocess.Popen(exe + args, env=env, stdout=log, stderr=subprocess.STDOUT)))
            console.print(f"started {name} (pid {procs[-1][1].pid}, log {log_dir / f'{name}.log'})")
        yield
    finally:
        for _, proc in procs:
            proc.terminate()
        for _, proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _check(response: httpx.Response) -> dict:
    if response.status_code >= 400:
        fail(
            ExitCode.SERVER_ERROR if response.status_code >= 500 else ExitCode.FAILURE,
            f"{response.request.method} {response.request.url.path} → {response.status_code}: {response.text[:500]}",
        )
    return response.json()


def _wait_healthy(client: httpx.Client, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if client.get("/api/v1/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    fail(ExitCode.UNREACHABLE, f"the API did not become healthy within {timeout:.0f} s; see its log (api.log)")


def _wait_scored(client: httpx.Client, ids: dict[str, str], token: str, timeout: float) -> dict[str, dict]:
    headers = {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + timeout
    last: dict[str, str] = {}
    while time.monotonic() < deadline:
        states = {
            label: _check(client.get(f"/api/v1/submissions/{sid}", headers=headers)) for label, sid in ids.items()
        }
        for label, s in states.items():
            if last.get(label) != s["status"]:
                console.print(f"  {label}: {s['status']}" + (f" ({s.get('outcome')})" if s.get("outcome") else ""))
                last[label] = s["status"]
        if all(s["status"] in _TERMINAL for s in states.values()):
            return states
        time.sleep(0.5)
    fail(
        ExitCode.TIMEOUT, f"submissions not finished after {timeout:.0f} s: {last}; see the logs (api.log, worker.log)"
    )


def demo(
    data_dir: Annotated[
        Path, typer.Option(help="Where the demo keeps its database, broker and files (wiped first).")
    ] = Path("var/demo"),
    size: Annotated[str, typer.Option(help="Grid preset of the tiers: default or small.")] = "default",
    image: Annotated[str, typer.Option(help="Reference solver image for the Hidden tier.")] = "edx-arena/runner:latest",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for all scores.")] = 900,
) -> None:
    """Run the whole challenge end to end on the embedded default and print the leaderboard.

    Starts the API and a worker, seeds the three tiers as the organizer, creates a participant,
    submits the runner image to the Hidden tier over HTTP (the server runs it on Public, Dev
    and Hidden), waits for the three runs and prints them and the overall board: one Certified
    method row. Writes everything (database, broker,
    datasets, logs in DATA_DIR/log) under --data-dir, which it wipes first. Exits 1 if a
    submission failed.

    Examples:

        edx-arena demo

        edx-arena demo --size small --data-dir /tmp/arena-demo
    """

    if data_dir.exists():
        shutil.rmtree(data_dir)
    (data_dir / "log").mkdir(parents=True)
    organizer_token = secrets.token_urlsafe(24)
    port = _free_port()
    env = {
        **os.environ,
        "EDX_DATA_DIR": str(data_dir.resolve()),
        "EDX_ORGANIZER_TOKEN": organizer_token,
        "EDX_ENVIRONMENT": "development",
    }
    for key in ("EDX_DATABASE_URL", "EDX_BROKER_URL", "EDX_STORAGE_DIR"):
        env.pop(key, None)  # the embedded default: SQLite + filesystem broker under data_dir
    base_url = f"http://127.0.0.1:{port}"
    with _processes(env, port, data_dir / "log"), httpx.Client(base_url=base_url, timeout=300) as client:
        _wait_healthy(client)
        admin = {"Authorization": f"Bearer {organizer_token}"}
        for tier in ("public", "dev", "hidden"):
            console.print(f"seeding the {tier} tier ({size})")
            _check(
                client.post(
                    f"/api/v1/admin/tiers/{tier}/dataset",
                    json={"seed": secrets.randbits(62), "preset": size},
                    headers=admin,
                )
            )
        participant = _check(
            client.post("/api/v1/admin/participants", json={"name": "demo-team", "team": "Demo Team"}, headers=admin)
        )
        token = participant["token"]
        me = {"Authorization": f"Bearer {token}"}
        # A participant may submit only their own images: the organizer hands the reference one over.
        _check(
            client.post(f"/api/v1/admin/participants/{participant['id']}/images", json={"image": image}, headers=admin)
        )
        sub = _check(
            client.post(
                "/api/v1/submissions/container",
                json={"image": image, "method": "reference NNLS (container)", "source": "Dockerfile.runner"},
                headers=me,
            )
        )
        console.print(f"submitted image {image} to the hidden tier: {sub['id']}")
        # The server runs it on every blind tier: one submission, three runs, one quota slot.
        runs = _check(client.get(f"/api/v1/submissions/{sub['id']}", headers=me))["tier_runs"]
        ids = {run["tier"]: run["id"] for run in runs}
        console.print("the server runs it on " + ", ".join(ids) + "; waiting for the worker")
        states = _wait_scored(client, ids, token, timeout)
        failed = {k: v for k, v in states.items() if v["status"] != "scored"}
        board = _check(client.get("/api/v1/leaderboard", params={"tier": "overall"}))
    runs_table = Table(title="one image, three runs")
    for col in ("tier", "run", "status", "score", "PSNR dB", "SSIM", "badge"):
        runs_table.add_column(col)
    for tier, s in states.items():
        row = next((x for x in s.get("scores", []) if x["scene_id"] == ""), None)
        runs_table.add_row(
            tier,
            s["id"][:8],
            s["status"],
            f"{row['score']:.3f}" if row else "—",
            f"{row['psnr']:.2f}" if row else "—",
            f"{row['ssim']:.3f}" if row else "—",
            "certified" if row and s.get("image_digest") else "",
        )
    out.print(runs_table)
    table = Table(title="EDX Arena · overall leaderboard")
    for col in ("rank", "team", "method", "overall", "public", "dev", "hidden", "badge"):
        table.add_column(col)
    for e in board["data"]:
        tiers = e.get("tiers", {})
        table.add_row(
            str(e["rank"]),
            str(e.get("team") or e.get("participant")),
            str(e.get("method") or ""),
            f"{e['score']:.3f}",
            *(f"{tiers[t]['score']:.3f}" if tiers.get(t) else "—" for t in ("public", "dev", "hidden")),
            "Certified" if e.get("certified") else "self-reported",
        )
    out.print(table)
    if failed:
        for label, s in failed.items():
            console.print(f"[red]{label} failed[/red]: {s.get('outcome')}: {s.get('error_message')}")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
