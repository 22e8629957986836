"""Celery tasks: thin, idempotent by submission id; the work lives in services/."""

from __future__ import annotations

import logging

from db.models import Status, Submission
from db.session import new_session
from services.evaluation import score_submission
from services.submissions import update_status
from services.worker.celery_app import app

log = logging.getLogger(__name__)
_UNEXPECTED = "An unexpected error occurred on the platform; the run will not count against your quota."


def _load(session, submission_id: str) -> Submission | None:
    submission = session.get(Submission, submission_id)
    if submission is None:
        log.warning("submission %s does not exist; dropping the task", submission_id)
    return submission


@app.task(name="score_submission")
def score_submission_task(submission_id: str) -> None:
    """Score a stored HDF5 result (Public, Dev, Standard)."""
    with new_session() as session:
        submission = _load(session, submission_id)
        if submission is None or submission.status in (Status.scored, Status.failed):
            return
        update_status(submission, status=Status.running)
        session.commit()
        try:
            score_submission(session, submission)
            session.commit()
        except Exception:
            log.exception("scoring submission %s failed", submission_id)
            session.rollback()
            update_status(submission, status=Status.failed, outcome="platform_error", error_message=_UNEXPECTED, charged=False)
            session.commit()


@app.task(name="run_submission", bind=True, max_retries=None)
def run_submission_task(self, submission_id: str) -> None:
    """Run a container submission in the sandbox on the Hidden tier, then score its output."""
    from services.containers import RetryRun, run_submission

    with new_session() as session:
        submission = _load(session, submission_id)
        if submission is None or submission.status in (Status.scored, Status.failed):
            return
        try:
            run_submission(session, submission)
            session.commit()
        except RetryRun:
            # A platform failure (daemon down…): back off and try again; the attempt count bounds it.
            raise self.retry(countdown=min(2 ** submission.attempt, 60))
        except Exception:
            log.exception("running submission %s failed", submission_id)
            session.rollback()
            update_status(submission, status=Status.failed, outcome="platform_error", error_message=_UNEXPECTED, charged=False)
            session.commit()
