"""A compute worker: runs sandboxes on its host's Docker daemon and nothing else (issue 19).

It takes run messages from the ``runs`` queue like any worker, but it has no database
credentials and no shared disk: everything goes through the API with its worker token
(:mod:`services.api.routes.worker`). It claims the run (a lease it renews while the container
runs), downloads the input (the tier's view without truth, cached here by sha256), pulls the
image from the server's registry by digest (verified, cached, bounded), runs the server's own
sandbox (:func:`services.submissions.sandbox.run_spec` with the limits the server sent, and
:func:`harness.sandbox.run_container`), then uploads ``result.h5`` and the run record. The
server validates the output again and scores it; the truth never reaches this host.

A worker that dies mid-run stops renewing its lease: the server's reaper requeues the run, and
a compute worker started later claims it (a stale upload of the dead attempt is refused).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from core.settings import SandboxSettings, get_settings
from harness.errors import ImageError, PlatformError
from harness.formats import ResultExpectation
from harness.sandbox import Outcome, RunResult, remove_leftovers, remove_tree, run_container
from harness.sandbox.distribution import ImageCache
from harness.sandbox.scripts import unpack_script
from services.submissions.sandbox import run_spec

__all__ = ["ComputeClient", "compute_label", "remove_compute_leftovers", "run_remote"]

log = logging.getLogger(__name__)
_CHUNK = 2**20
_TIMEOUT = (10, 300)


def compute_label() -> dict[str, str]:
    """Marks this compute worker's containers (its data dir), so a restart removes only its own."""
    data_dir = str(get_settings().data_dir)
    return {"edx-arena.compute": hashlib.sha256(data_dir.encode()).hexdigest()[:16]}


def remove_compute_leftovers() -> list[str]:
    """At start: remove the sandbox containers a previous run of this worker left (killed mid-run)."""
    try:
        return remove_leftovers(labels=compute_label())
    except Exception as exc:
        log.warning("could not check for leftover sandbox containers: %s", exc)
        return []


class ComputeClient:
    """The worker endpoints of the API, with the worker token."""

    def __init__(self, api_url: str, token: str) -> None:
        self.base = api_url.rstrip("/")
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token}"

    def _url(self, path: str) -> str:
        return self.base + path

    def claim(self, submission_id: str, *, host: str) -> dict[str, Any] | None:
        r = self.http.post(
            self._url(f"/api/v1/worker/runs/{submission_id}/claim"), json={"host": host}, timeout=_TIMEOUT
        )
        if r.status_code == 204:
            return None
        r.raise_for_status()
        return r.json()

    def heartbeat(self, submission_id: str, attempt: int) -> bool:
        r = self.http.post(
            self._url(f"/api/v1/worker/runs/{submission_id}/heartbeat"), params={"attempt": attempt}, timeout=(10, 30)
        )
        if r.status_code == 409:
            return False
        r.raise_for_status()
        return True

    def download(self, path: str, dest: Path, *, sha256: str) -> Path:
        """Stream ``path`` to ``dest`` (atomically), checking its sha256."""
        digest = hashlib.sha256()
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".part")
        try:
            with self.http.get(self._url(path), stream=True, timeout=_TIMEOUT) as r, os.fdopen(fd, "wb") as out:
                r.raise_for_status()
                for chunk in r.iter_content(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != sha256:
                raise PlatformError("the run's input arrived damaged (sha256 mismatch); the run is retried")
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return dest

    def upload_output(self, submission_id: str, attempt: int, path: Path) -> None:
        with path.open("rb") as f:  # a file object is streamed, never read whole
            r = self.http.put(
                self._url(f"/api/v1/worker/runs/{submission_id}/output"),
                params={"attempt": attempt},
                data=f,
                headers={"Content-Type": "application/octet-stream"},
                timeout=_TIMEOUT,
            )
        r.raise_for_status()

    def finish(self, submission_id: str, attempt: int, record: dict[str, Any]) -> str:
        r = self.http.post(
            self._url(f"/api/v1/worker/runs/{submission_id}/finish"),
            params={"attempt": attempt},
            json=record,
            timeout=_TIMEOUT,
        )
        r.raise_for_status()
        return r.json()["status"]


@contextmanager
def _heartbeat(client: ComputeClient, submission_id: str, attempt: int, period: float) -> Iterator[threading.Event]:
    """Renew the lease every ``period`` seconds; the event is set once the server says the
    attempt is over."""
    stop, lost = threading.Event(), threading.Event()

    def beat() -> None:
        while not stop.wait(period):
            try:
                if not client.heartbeat(submission_id, attempt):
                    lost.set()
                    return
            except requests.RequestException:  # the API hiccuped: the next beat tries again
                log.warning("could not renew the lease of %s", submission_id, exc_info=True)

    thread = threading.Thread(target=beat, name=f"lease-{submission_id}", daemon=True)
    thread.start()
    try:
        yield lost
    finally:
        stop.set()
        thread.join()


def _cached_input(client: ComputeClient, job: dict[str, Any], data_dir: Path, keep: int) -> Path:
    """The input by content hash: downloaded once, the least recently used dropped past ``keep``."""
    sha256 = job["input"]["sha256"]
    folder = data_dir / "inputs"
    path = folder / f"{sha256}.h5"
    if not path.is_file():
        client.download(job["input"]["url"], path, sha256=sha256)
    path.chmod(0o644)  # the sandbox user reads it through a read-only bind mount
    os.utime(path)
    cached = sorted(folder.glob("*.h5"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in cached[keep:]:
        old.unlink(missing_ok=True)
    return path


def _record(result: RunResult) -> dict[str, Any]:
    return {
        "outcome": str(result.outcome),
        "exit_code": result.exit_code,
        "runtime_seconds": result.runtime_seconds,
        "peak_memory_bytes": result.peak_memory_bytes,
        "log": result.log,
        "message": result.message,
    }


def _run(client: ComputeClient, job: dict[str, Any], work_dir: Path) -> tuple[dict[str, Any], Path | None]:
    """Run the job's sandbox; the run record and the output to upload (None unless succeeded)."""
    settings = get_settings()
    submission_id, attempt = job["submission_id"], job["attempt"]
    input_path = _cached_input(client, job, settings.data_dir, settings.input_cache_size)
    image = job["image"]
    if "@sha256:" in image and job.get("image_id"):
        cache = ImageCache(settings.data_dir / "images.json", size=settings.image_cache_size)
        image = cache.use(image, image_id=job["image_id"])
    files = None
    if job.get("script"):
        script = job["script"]
        suffix = Path(script["name"]).suffix or ".py"
        local = client.download(script["url"], work_dir / f"script{suffix}", sha256=script["sha256"])
        try:
            files = unpack_script(local, work_dir / "submission")
        except ImageError as exc:
            return {"outcome": str(Outcome.image_invalid), "message": exc.message}, None
    limits = SandboxSettings(**job["limits"])
    expect = ResultExpectation.from_mapping({**job["expectation"], "max_bytes": limits.sandbox_output_bytes})
    spec = run_spec(
        run_id=f"{submission_id}-{attempt}",
        image=image,
        input_path=input_path,
        work_dir=work_dir,
        expect=expect,
        settings=limits,
        labels={"edx-arena.submission": submission_id, **compute_label()},
        script_files=files,
    )
    result = run_container(spec)
    output = result.output_path if result.outcome == Outcome.succeeded else None
    return _record(result), output


def run_remote(submission_id: str, *, host: str) -> str | None:
    """Claim, run and report ``submission_id``'s run through the API; the status the server
    recorded, or None when there was nothing to run. An API that cannot be reached raises
    (the task retries it; the lease, not this worker, is the record)."""
    settings = get_settings()
    client = ComputeClient(settings.api_url, settings.worker_token)
    job = client.claim(submission_id, host=host)
    if job is None:
        log.info("submission %s has nothing to run; done", submission_id)
        return None
    attempt = job["attempt"]
    work_dir = settings.data_dir / "runs" / f"{submission_id}-{attempt}"
    remove_tree(work_dir)
    work_dir.mkdir(parents=True)
    try:
        with _heartbeat(client, submission_id, attempt, max(job["lease_seconds"] / 3, 0.5)) as lost:
            try:
                record, output = _run(client, job, work_dir)
            except (PlatformError, ImageError) as exc:
                record, output = {"outcome": str(Outcome.platform_error), "message": exc.message}, None
            except (OSError, requests.RequestException) as exc:
                log.exception("the run of %s failed on this compute host", submission_id)
                message = f"the compute host failed the run ({type(exc).__name__}); it is retried"
                record, output = {"outcome": str(Outcome.platform_error), "message": message}, None
            if lost.is_set():
                log.warning("the lease of %s attempt %d was lost; its result is dropped", submission_id, attempt)
                return None
            if output is not None:
                client.upload_output(submission_id, attempt, output)
            return client.finish(submission_id, attempt, record)
    finally:
        remove_tree(work_dir)
