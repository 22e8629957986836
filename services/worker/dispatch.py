"""Sending work to the workers, by task name (``app.send_task``): the domain modules that queue a
submission import this and the Celery app, never the task module, so nothing below the worker
depends on it (and no import cycle runs through it).

A submission is sent only after its row is committed; the row, not the message, is the record
of what is still to do: a message that is lost is sent again by the reaper
(:func:`services.submissions.recovery.reap_and_requeue`), and a duplicate does nothing
(:func:`services.submissions.state.claim`).
"""

from __future__ import annotations

import logging

from harness.tiers import SANDBOXED_KINDS
from services.worker.celery_app import QUEUE_OF, RUN_TASK, SCORE_TASK, app

__all__ = ["RUN_TASK", "SCORE_TASK", "send", "send_scoring", "task_for"]

log = logging.getLogger(__name__)

#: kombu's retries while the broker does not answer (seconds): about 6 s in all.
_PUBLISH_RETRY = {"max_retries": 5, "interval_start": 0.2, "interval_step": 0.5}


def task_for(kind: str) -> str:
    return RUN_TASK if kind in SANDBOXED_KINDS else SCORE_TASK


def send(submission_id: str, kind: str, *, countdown: float | None = None) -> bool:
    """Send the submission's task; False if the broker refused (the row stays queued and the
    reaper sends it again)."""
    return _send(task_for(kind), submission_id, countdown=countdown)


def send_scoring(submission_id: str) -> bool:
    """Send a sandboxed run's kept output to scoring (the ``scoring`` queue, where the truth is)."""
    return _send(SCORE_TASK, submission_id)


def _send(task: str, submission_id: str, *, countdown: float | None = None) -> bool:
    try:
        app.send_task(
            task,
            args=(submission_id,),
            queue=QUEUE_OF[task],
            countdown=countdown,
            retry=True,
            retry_policy=_PUBLISH_RETRY,
        )
    except Exception:
        log.exception(
            "could not send submission %s to the broker; it stays queued and is resent at the next start", submission_id
        )
        return False
    return True
