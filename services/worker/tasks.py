"""Celery tasks: thin, idempotent by submission id; the work lives in ``services/``.

Each task takes a submission id and works inside :func:`claimed`: it
:func:`~services.submissions.claim` s the submission (a duplicate delivery, or one for a
finished submission, does nothing), holds the lease with a heartbeat while it works, and
records a platform failure. Tasks are acknowledged late: a worker killed mid-run leaves the
message to be redelivered (Redis) or, failing that, an expired lease that
:func:`reap_and_requeue` (at worker and API start, and every half lease in each worker) turns
back into a queued submission, its leftover container removed. The same reaper sends again
the queued submissions no worker claimed in ``queued_stale_seconds`` (a lost message).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from celery.exceptions import Retry
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from core.settings import get_settings
from db.models import SANDBOXED, Outcome, Status, Submission
from db.session import new_session
from harness.errors import PlatformError
from services.evaluation import score_submission
from services.submissions import claim, queue, reap_expired, renew_lease, stale_queued, update_status
from services.worker.celery_app import app

__all__ = ["claimed", "reap_and_requeue", "run_submission_task", "score_submission_task", "start_reaper"]

log = logging.getLogger(__name__)
_UNEXPECTED = "An unexpected error occurred on the platform; this submission was not charged, please submit it again."
_RETRYING = "a platform error interrupted this run; it will be retried automatically"
#: Failures of the platform itself (database, disk, Docker daemon): worth another attempt.
_TRANSIENT = (OperationalError, OSError, PlatformError)


def _worker_name(task) -> str:
    return f"{task.request.hostname or socket.gethostname()}:{os.getpid()}"


@contextmanager
def _heartbeat(submission_id: str, attempt: int) -> Iterator[None]:
    """Renew the lease every third of its length while the body runs (own session, own thread)."""
    stop = threading.Event()
    period = max(get_settings().lease_seconds / 3, 0.5)

    def beat() -> None:
        while not stop.wait(period):
            try:
                with new_session() as session:
                    if not renew_lease(session, submission_id, attempt=attempt):
                        return
            except Exception:  # a database hiccup: the next beat tries again
                log.warning("could not renew the lease of %s", submission_id, exc_info=True)

    thread = threading.Thread(target=beat, name=f"lease-{submission_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _platform_failure(task, session, submission: Submission, submission_id: str, exc: BaseException) -> None:
    """Retry a transient platform failure while attempts remain; otherwise fail, uncharged.

    ``submission_id`` is passed apart: after a failed commit the row's attributes are expired,
    and reloading them needs the database that may be the thing that failed."""
    try:
        session.rollback()
        if isinstance(exc, _TRANSIENT) and submission.attempt < get_settings().max_attempts:
            update_status(submission, status=Status.queued, error_message=_RETRYING)
            session.commit()
            raise task.retry(countdown=min(2**submission.attempt, 60), exc=exc)
        update_status(
            submission, status=Status.failed, outcome=Outcome.platform_error, error_message=_UNEXPECTED, charged=False
        )
        session.commit()
    except OperationalError:
        # The database itself is down: nothing can be recorded now. The lease runs out and the
        # reaper requeues the run once the database is back.
        log.warning("could not record the failure of %s; its lease will expire and it is reaped", submission_id)


@contextmanager
def claimed(task, submission_id: str) -> Iterator[tuple[Session, Submission | None]]:
    """The preamble every task shares: claim, heartbeat, platform failures.

    Yields ``(session, submission)``; ``submission`` is ``None`` when there is nothing to do
    (a duplicate delivery, a finished or unknown submission): the body then returns. An
    exception from the body is a platform failure (retried while attempts remain, else
    ``platform_error``, uncharged); a Celery ``Retry`` raised by the body passes through.
    """
    with new_session() as session:
        try:
            submission = claim(session, submission_id, worker=_worker_name(task))
        except OperationalError as exc:
            # Database down before anything started: keep the work in the broker.
            log.warning("could not claim %s (database unavailable); retrying the task", submission_id)
            raise task.retry(countdown=min(get_settings().lease_seconds, 30), exc=exc) from exc
        if submission is None:
            log.info("submission %s is finished, unknown or held by another worker; nothing to do", submission_id)
            yield session, None
            return
        with _heartbeat(submission.id, submission.attempt):
            try:
                yield session, submission
            except Retry:
                raise
            except Exception as exc:
                log.exception("submission %s failed on the platform side", submission_id)
                _platform_failure(task, session, submission, submission_id, exc)


@app.task(name="score_submission", bind=True, max_retries=None)
def score_submission_task(self, submission_id: str) -> None:
    """Score a stored HDF5 result (Public, Dev, Standard)."""
    with claimed(self, submission_id) as (session, submission):
        if submission is not None:
            score_submission(session, submission)


# Hidden-tier container submissions (issue 5): the sandboxed run, then the same scoring.
@app.task(name="run_submission", bind=True, max_retries=None)
def run_submission_task(self, submission_id: str) -> None:
    """Run a container submission in the sandbox on the Hidden tier, then score its output."""
    from services.containers import RetryRun, run_submission

    with claimed(self, submission_id) as (session, submission):
        if submission is None:
            return
        try:
            run_submission(session, submission)
            session.commit()
        except RetryRun:
            # run_submission requeued it (platform failure, attempts left): back off.
            raise self.retry(countdown=min(2**submission.attempt, 60)) from None


def reap_and_requeue(*, include_stale_queued: bool = True) -> list[str]:
    """Requeue runs whose worker died (expired lease), removing the containers they left,
    and send again queued submissions no worker claimed in ``queued_stale_seconds`` (their
    message may be lost). Returns the ids sent."""
    with new_session() as session:
        todo = reap_expired(session)
        session.commit()
        if include_stale_queued:
            todo += stale_queued(session)
            session.commit()
    todo = dict(todo)
    if any(kind in SANDBOXED for kind in todo.values()):
        remove_orphans()  # before the rerun: a dead run's container still holds CPU and memory
    for submission_id, kind in todo.items():
        queue(submission_id, kind)
    if todo:
        log.warning("requeued %d submission(s): %s", len(todo), ", ".join(todo))
    return list(todo)


def remove_orphans() -> list[str]:
    """Remove containers left by dead runs; a worker without Docker access just logs it."""
    from services.containers import remove_orphan_containers

    try:
        with new_session() as session:
            removed = remove_orphan_containers(session)
    except Exception as exc:  # docker unreachable: HDF5 scoring still works
        log.warning("could not check for leftover sandbox containers: %s", exc)
        return []
    if removed:
        log.warning("removed %d leftover sandbox container(s): %s", len(removed), ", ".join(removed))
    return removed


def start_reaper() -> threading.Thread:
    """A daemon thread in each worker that reaps expired leases and resends stale queued
    submissions, every half lease."""
    period = max(min(get_settings().lease_seconds, get_settings().queued_stale_seconds) / 2, 1.0)

    def loop() -> None:
        while True:
            try:
                reap_and_requeue()
            except Exception:
                log.warning("reaping expired leases failed; trying again in %.0f s", period, exc_info=True)
            time.sleep(period)

    thread = threading.Thread(target=loop, name="lease-reaper", daemon=True)
    thread.start()
    return thread
