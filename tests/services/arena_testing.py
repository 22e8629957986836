"""Helpers for the services tests: the organizer's credentials, participants, solved results
and scored rows written straight to the database (the database itself:
``tests/database_testing.py``).

A module with its own name (not ``conftest``) so test modules can import it whatever other
``conftest.py`` files pytest has loaded."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import EllipsisType

import httpx
from database_testing import ORGANIZER_TOKEN

ORG = {"Authorization": f"Bearer {ORGANIZER_TOKEN}"}


def sign_in(client, token: str, next_url: str = "/"):
    """Sign a test client in as a browser does: the form (its CSRF field and cookie), then the post."""
    import re

    form = client.get("/login", params={"next": next_url})
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    return client.post("/login", data={"token": token, "next": next_url, "csrf": csrf}, follow_redirects=False)


def add_participant(client, name: str, images: tuple[str, ...] = ()) -> dict[str, str]:
    """A participant's auth headers; ``images`` (local names) are handed to them by the
    organizer first: a participant may submit only their own images (issue 16.2)."""
    r = client.post("/api/v1/admin/participants", json={"name": name}, headers=ORG)
    assert r.status_code == 201, r.text
    for image in images:
        grant_image(client, r.json()["id"], image)
    return {"Authorization": f"Bearer {r.json()['token']}"}


def grant_image(client, participant_id: int, image: str) -> dict:
    """The organizer hands a local image to a participant (``POST /admin/participants/{id}/images``)."""
    r = client.post(f"/api/v1/admin/participants/{participant_id}/images", json={"image": image}, headers=ORG)
    assert r.status_code == 201, r.text
    return r.json()


def download_and_solve(client, tier: str, tmp_path: Path, solver: str = "nnls") -> Path:
    from harness.formats import read_measurement, write_result
    from harness.solvers import solve_dataset

    r = client.get(f"/api/v1/tiers/{tier}/measurement")
    assert r.status_code == 200, r.text
    measurement = tmp_path / f"{tier}.h5"
    measurement.write_bytes(r.content)
    result = tmp_path / f"{tier}-result-{solver}.h5"
    write_result(solve_dataset(read_measurement(measurement).without_truth(), solver=solver), result)
    return result


def add_scored(
    session,
    dataset,
    who,
    score: float,
    *,
    created_at,
    started_at,
    method: str,
    kind: str = "hdf5",
    status: str = "scored",
    version: str | None = None,
    description: str = "",
    source: str = "",
    baseline: bool = False,
    trust: str | None = None,
    image_digest: str | EllipsisType | None = ...,
    psnr: float | None = None,
    ci: tuple = (None, None),
    tile_stats: dict | None = None,
):
    """A submission on ``dataset`` with, when ``status == "scored"``, its tier score row (written
    straight to the database, as services.submissions.scoring would): the boards' tests need many entries
    with chosen scores, not real scoring. A server-run kind gets a digest unless ``image_digest`` is given (None included)."""
    from db.models import Score, Submission
    from harness.scoring import SCORER_VERSION

    if image_digest is ...:
        image_digest = None if kind == "hdf5" else "sha256:x"
    sub = Submission(
        participant=who,
        dataset=dataset,
        tier=dataset.tier,
        kind=kind,
        status=status,
        method=method,
        description=description,
        source=source,
        created_at=created_at,
        baseline=baseline,
        trust=trust,
        image_digest=image_digest,
    )
    session.add(sub)
    session.flush()
    if status == "scored":
        session.add(
            Score(
                submission_id=sub.id,
                scene_id="",
                scoring_version=version or SCORER_VERSION,
                operator_version="v",
                harness_version="0",
                dataset_hash="h",
                submission_hash="s",
                score=score,
                blind=score,
                standard=score,
                psnr=20 + score if psnr is None else psnr,
                ssim=score,
                consistency=score,
                metrics={},
                started_at=started_at,
                ci_low=ci[0],
                ci_high=ci[1],
                tile_stats=tile_stats,
            )
        )
    return sub


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_api(log_path: Path, *, env: dict[str, str] | None = None) -> Iterator[str]:
    """The API as production runs it (``edx-arena serve``: uvicorn with the server's logging
    setup) on a loopback port, with this process's ``EDX_*`` environment plus ``env``; yields
    its base URL once ``/api/v1/health`` answers, and stops it (SIGTERM) afterwards."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "services.cli.main", "serve", "--port", str(port)],
            env={**os.environ, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{base}/api/v1/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert server.poll() is None, log_path.read_text(errors="replace")
                assert time.monotonic() < deadline, "the API did not answer within 60 s"
                time.sleep(0.2)
            yield base
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
