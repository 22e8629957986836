"""The server's half of a run on a compute host (issue 19): what a compute worker may claim,
fetch and send back, through the worker endpoints (``/api/v1/worker/…``, a worker token).

A compute host holds no database credentials and shares no disk with the server. It claims a
run (:func:`claim_run`: the same atomic claim and lease as a local worker, and the same reuse
of identical work), renews the lease (:func:`renew`), downloads the run's input, which is the
tier's view without truth and never the full dataset file (:func:`input_file`), and the
script's files, runs the server's sandbox, then uploads ``result.h5`` (:func:`store_output`,
streamed to disk with the sandbox's output cap) and the run record (:func:`finish`). The
server validates the output in its isolated validator pool and hands the submission to the
``scoring`` queue; the truth never leaves the server.

Every call names the attempt it belongs to: a compute host whose lease expired (it stalled, or
its run was requeued and claimed by another) is refused (409) and its upload discarded, so a
run is recorded, and scored, once.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
from sqlalchemy.orm import Session

from core.settings import get_settings
from db.models import Kind, Status, Submission
from harness.errors import FormatError, PlatformError
from harness.formats import validate_output, validate_result_isolated
from harness.sandbox import Outcome
from harness.sandbox.runner import RESULT_NAME
from services.datasets import result_expectation, run_input_path
from services.errors import ConflictError, NotFoundError, ServiceError, TooLargeError
from services.submissions.run import LOG_TAIL, hand_off, keep_output, reuse_or_kept
from services.submissions.sandbox import publish_image
from services.submissions.state import claim, record_platform_failure, renew_lease, retry_policy, update_status
from services.worker import dispatch

__all__ = ["claim_run", "finish", "input_file", "renew", "script_file", "store_output"]

log = logging.getLogger(__name__)

_SANDBOX_FIELDS = (
    "sandbox_cpus",
    "sandbox_memory_bytes",
    "sandbox_pids",
    "sandbox_wall_seconds",
    "sandbox_output_bytes",
    "sandbox_log_bytes",
    "sandbox_runtime",
    "sandbox_allow_image_user",
)
_CHUNK = 2**20
#: sha256 of stored files, by (path, size, mtime): a view is hashed once per API process.
_hashes: dict[tuple[str, int, int], str] = {}


def _sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _hashes:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
        _hashes[key] = digest.hexdigest()
    return _hashes[key]


def _current(session: Session, submission_id: str, attempt: int) -> Submission:
    """The submission whose run ``attempt`` is in progress; 409 if the attempt is over."""
    submission = session.get(Submission, submission_id)
    if submission is None or submission.kind not in (Kind.container, Kind.script):
        raise NotFoundError(f"no sandboxed submission {submission_id!r}")
    if submission.status != Status.running or submission.attempt != attempt:
        raise ConflictError(f"attempt {attempt} of {submission_id} is no longer running; drop it")
    return submission


def claim_run(session: Session, submission_id: str, *, worker: str) -> dict[str, Any] | None:
    """Claim ``submission_id``'s run for a compute worker; the job it must run, or None when
    there is nothing to run (a duplicate delivery, a finished run, reused or kept work)."""
    row = session.get(Submission, submission_id)
    if row is None or row.kind not in (Kind.container, Kind.script):  # nothing a compute host runs
        return None
    session.rollback()
    submission = claim(session, submission_id, worker=worker)
    if submission is None:
        return None
    try:
        if reuse_or_kept(session, submission):
            return None
        ref = publish_image(submission) or submission.image_digest or submission.image or ""
        session.commit()
    except Exception as exc:
        # Recorded like a local worker's platform failure: retried after its back-off.
        session.rollback()
        if record_platform_failure(submission, exc):
            session.commit()
            dispatch.send(submission.id, submission.kind, countdown=retry_policy().backoff(submission.attempt))
        else:
            session.commit()
        log.warning("could not prepare the run of %s for a compute worker", submission.id, exc_info=True)
        return None
    settings = get_settings()
    dataset = submission.dataset
    view = run_input_path(dataset)  # never the truth, whatever the tier (a Public child's too)
    expect = result_expectation(dataset, max_bytes=settings.sandbox_output_bytes)
    base = f"/api/v1/worker/runs/{submission.id}"
    job: dict[str, Any] = {
        "submission_id": submission.id,
        "attempt": submission.attempt,
        "lease_seconds": settings.lease_seconds,
        "image": ref,
        "image_id": submission.image_digest,
        "limits": {name: getattr(settings, name) for name in _SANDBOX_FIELDS},
        "expectation": {
            "tier": expect.tier,
            "scene_ids": list(expect.scene_ids),
            "n_elements": expect.n_elements,
            "height": expect.height,
            "width": expect.width,
        },
        "input": {"url": f"{base}/input?attempt={submission.attempt}", "sha256": _sha256(view)},
        "script": None,
    }
    if submission.kind == Kind.script and submission.script_path:
        job["script"] = {
            "url": f"{base}/script?attempt={submission.attempt}",
            "sha256": _sha256(Path(submission.script_path)),
            "name": Path(submission.script_path).name,
        }
    return job


def renew(session: Session, submission_id: str, *, attempt: int) -> None:
    """Extend the lease of attempt ``attempt``; 409 when it is no longer running."""
    if not renew_lease(session, submission_id, attempt=attempt):
        raise ConflictError(f"attempt {attempt} of {submission_id} is no longer running; drop it")


def input_file(session: Session, submission_id: str, *, attempt: int) -> Path:
    """The run's input: the tier's measurements without truth (:func:`run_input_path`, the
    local worker's very input; never the full file, which only scoring reads)."""
    return run_input_path(_current(session, submission_id, attempt).dataset)


def script_file(session: Session, submission_id: str, *, attempt: int) -> Path:
    submission = _current(session, submission_id, attempt)
    if not submission.script_path:
        raise NotFoundError(f"submission {submission_id} is not a script")
    return Path(submission.script_path)


def _incoming(submission_id: str, attempt: int) -> Path:
    return get_settings().storage_dir / "incoming" / f"{submission_id}-{attempt}.h5"


async def store_output(session: Session, submission_id: str, *, attempt: int, body: AsyncIterator[bytes]) -> int:
    """Stream the run's ``result.h5`` to the server's disk, refused past the sandbox's output
    cap (413, the partial file removed). Returns the size."""
    await anyio.to_thread.run_sync(_current, session, submission_id, attempt)
    cap = get_settings().sandbox_output_bytes
    path = _incoming(submission_id, attempt)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = 0
    try:
        with path.open("wb") as out:
            async for chunk in body:
                size += len(chunk)
                if size > cap:
                    raise TooLargeError(f"the output is over the sandbox's {cap} byte output cap")
                out.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return size


def _text(value: object) -> str:
    # PostgreSQL text holds no NUL character; a log may carry any byte the container printed.
    return str(value or "").replace("\x00", "\ufffd")


def finish(session: Session, submission_id: str, *, attempt: int, record: dict[str, Any]) -> str:
    """Record the run ``attempt`` reported (outcome, exit code, runtime, peak memory, log,
    message); a succeeded run's uploaded output is validated in the isolated pool, kept and
    handed to scoring. Returns the submission's status. Commits."""
    submission = _current(session, submission_id, attempt)
    incoming = _incoming(submission_id, attempt)
    try:
        outcome = Outcome(record["outcome"])
    except (KeyError, ValueError):
        raise ServiceError(f"outcome must be one of {', '.join(o.value for o in Outcome)}") from None
    message = _text(record.get("message"))[:1024]
    submission.exit_code = record.get("exit_code")
    submission.runtime_seconds = record.get("runtime_seconds")
    submission.peak_memory_bytes = record.get("peak_memory_bytes")
    submission.log_tail = _text(record.get("log"))[-LOG_TAIL:]
    try:
        if outcome == Outcome.platform_error:
            session.commit()  # the diagnostics stay whatever the retry policy decides
            if record_platform_failure(submission, PlatformError(message or "the compute host failed the run")):
                session.commit()
                dispatch.send(submission.id, submission.kind, countdown=retry_policy().backoff(submission.attempt))
            else:
                session.commit()
            return submission.status
        if outcome == Outcome.succeeded:
            if not incoming.is_file():
                raise ConflictError("a succeeded run must upload its output first (PUT …/output)")
            expect = result_expectation(submission.dataset, max_bytes=get_settings().sandbox_output_bytes)
            try:
                validate_output(incoming, expect, validate=validate_result_isolated)
            except FormatError as exc:
                outcome, message = Outcome.invalid_output, f"/output/{RESULT_NAME} is not a valid result: {exc.message}"
        if outcome != Outcome.succeeded:
            update_status(submission, status=Status.failed, outcome=outcome, error_message=message)
            session.commit()
            return submission.status
        keep_output(submission, incoming)
        session.commit()
        hand_off(session, submission)
        return submission.status
    finally:
        incoming.unlink(missing_ok=True)
