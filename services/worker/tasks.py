"""Celery tasks: thin, idempotent by submission id; the work lives in :mod:`services.submissions`.

Each task takes a submission id and works inside :func:`claimed`: it
:func:`~services.submissions.state.claim` s the submission (a duplicate delivery, or one for a
finished submission, does nothing), holds the lease with a heartbeat while it works, and hands
a failure to the one retry policy (:func:`~services.submissions.state.record_platform_failure`).
Tasks are acknowledged late: a worker killed mid-run leaves the message to be redelivered
(Redis) or, failing that, an expired lease that the reaper
(:mod:`services.submissions.recovery`, at worker and API start and every half lease in each
worker) turns back into a queued submission, its leftover container removed.

A worker's role (``EDX_WORKER_ROLE``, ``edx-arena worker --role``) decides what a run task does:
``all`` and ``scoring`` workers have the database and the storage and run it here, handing the
output to the ``scoring`` queue; a ``compute`` worker has neither and runs it through the API
(:mod:`services.worker.compute`). Scoring runs only where the storage is.

Nothing imports this module: work is sent by task name (:mod:`services.worker.dispatch`), and
Celery loads it in the worker (``include`` in :mod:`services.worker.celery_app`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import requests
from celery.exceptions import Retry
from celery.signals import worker_init, worker_process_init, worker_ready
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from core.settings import get_settings
from db.migrate import upgrade_to_head
from db.models import Submission
from db.session import get_engine, new_session
from services.submissions.compute import remove_compute_leftovers, run_remote
from services.submissions.recovery import reap_and_requeue, remove_orphans, start_reaper
from services.submissions.run import run_submission
from services.submissions.scoring import score_submission
from services.submissions.state import claim, record_platform_failure, renew_lease, retry_policy
from services.worker.celery_app import app
from services.worker.dispatch import RUN_TASK, SCORE_TASK

__all__ = ["claimed", "run_submission_task", "score_submission_task"]

log = logging.getLogger(__name__)


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


def _platform_failure(task, session: Session, submission: Submission, submission_id: str, exc: Exception) -> None:
    """Hand ``exc`` to the retry policy; a retry is sent again after its back-off.

    ``submission_id`` is passed apart: after a failed commit the row's attributes are expired,
    and reloading them needs the database that may be the thing that failed."""
    try:
        session.rollback()
        requeued = record_platform_failure(submission, exc)
        session.commit()
    except OperationalError:
        # The database itself is down: nothing can be recorded now. The lease runs out and the
        # reaper requeues the run once the database is back.
        log.warning("could not record the failure of %s; its lease will expire and it is reaped", submission_id)
        return
    if requeued:
        raise task.retry(countdown=retry_policy().backoff(submission.attempt), exc=exc)


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


@app.task(name=SCORE_TASK, bind=True, max_retries=None)
def score_submission_task(self, submission_id: str) -> None:
    """Score a stored HDF5 result (Public, Dev, Standard)."""
    with claimed(self, submission_id) as (session, submission):
        if submission is not None:
            score_submission(session, submission)


def _compute() -> bool:
    return get_settings().worker_role == "compute"


@app.task(name=RUN_TASK, bind=True, max_retries=None)
def run_submission_task(self, submission_id: str) -> None:
    """Run a submission the server runs (image, link, script) in the sandbox and score it; on
    a compute host, run it through the API, whose output then goes to the scoring queue."""
    if _compute():
        try:
            run_remote(submission_id, host=_worker_name(self))
        except requests.RequestException as exc:
            # The API is unreachable or refused: the lease (if claimed) runs out and the reaper
            # requeues the run; until then, this message is tried again.
            log.warning("the API did not answer for %s (%s); retrying", submission_id, type(exc).__name__)
            raise self.retry(countdown=min(get_settings().lease_seconds, 30), exc=exc) from exc
        return
    with claimed(self, submission_id) as (session, submission):
        if submission is not None:
            # This worker has the server's storage: it scores in the same attempt (one Run row,
            # one lease). Sending the output to the scoring queue would make scoring a claim of
            # its own, taking an attempt from the run's retry budget and a Run row that repeats
            # the container's figures. Only a compute host's output takes that hop (remote.py).
            run_submission(session, submission, score_inline=True)


@worker_init.connect
def _migrate(**_kwargs) -> None:
    if not _compute():  # a compute worker has no database
        upgrade_to_head()


@worker_process_init.connect
def _fresh_connections(**_kwargs) -> None:
    # A forked pool process must not share the parent's database connections.
    if get_engine.cache_info().currsize:
        get_engine().dispose(close=False)


@worker_ready.connect
def _reap(**_kwargs) -> None:
    if _compute():  # the server's workers reap; a compute worker only clears its own daemon
        remove_compute_leftovers()
        return
    # Runs a dead worker left behind are requeued as soon as a worker is back, then every
    # half lease while it runs.
    remove_orphans()
    reap_and_requeue()
    start_reaper()
