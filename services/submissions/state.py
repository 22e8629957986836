"""The submission state machine: the one place a submission's status changes.

States (``db.models.Status``) and the moves :data:`TRANSITIONS` allows; any other move raises
:class:`TransitionError`::

    queued ──claim──▶ running ──▶ scoring ──▶ scored
       ▲                 │            │
       └── retry/reap ───┴────────────┴─────▶ failed

    scored, failed ──rescore──▶ queued

Only :func:`claim` (an atomic compare-and-set, so two deliveries of one task can never both
run it) and :func:`update_status` change a submission's status. A running submission holds a
lease its worker renews (:func:`renew_lease`); :func:`reap_expired` finds the ones whose worker
died and requeues them, up to ``max_attempts``, then fails them as ``platform_error``, not
charged. Every attempt is a :class:`~db.models.Run` row.

A platform failure (the database, the disk or the Docker daemon failed, or the sandbox ended in
``platform_error``) is retried by one policy, :class:`RetryPolicy`, wherever it is noticed: in
the task that hit it (:func:`record_platform_failure`) or by the reaper when the worker itself
died. :class:`harness.errors.PlatformError` is the one exception for it; its message is safe to
show the participant.

A queued submission holds a lease too, the broker's: ``lease_expires_at`` is when its message
is presumed lost if no worker has claimed it (:func:`stale_queued` sends it again). The
database, not the broker, is the record of what is still to do.

This module imports only :mod:`db` (with the settings below it) and the error classes, never
the rest of the services: everything above may use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from core.settings import get_settings
from db.models import TERMINAL, Outcome, Run, Status, Submission, utcnow
from harness.errors import PlatformError
from services.errors import ConflictError, NotFoundError, ServiceError

__all__ = [
    "ERROR_CHARS",
    "RETRYING",
    "TRANSITIONS",
    "UNEXPECTED",
    "RetryPolicy",
    "TransitionError",
    "claim",
    "reap_expired",
    "record_platform_failure",
    "renew_lease",
    "rescore",
    "retry_policy",
    "runs_needing_attention",
    "stale_queued",
    "update_status",
]

#: Longest error message kept (and shown to the participant).
ERROR_CHARS = 1024
_ACTIVE = (Status.running, Status.scoring)

#: Every allowed move: ``TRANSITIONS[from]`` is the set of states it may go to. ``running →
#: running`` is the run taking over a claimed submission (the claim already counted the attempt).
TRANSITIONS: Mapping[Status, frozenset[Status]] = MappingProxyType(
    {
        Status.queued: frozenset({Status.running}),
        Status.running: frozenset({Status.running, Status.scoring, Status.scored, Status.failed, Status.queued}),
        Status.scoring: frozenset({Status.scored, Status.failed, Status.queued}),
        # A rescore queues a finished submission again.
        Status.scored: frozenset({Status.queued}),
        Status.failed: frozenset({Status.queued}),
    }
)

UNEXPECTED = "An unexpected error occurred on the platform; this submission was not charged, please submit it again."
RETRYING = "a platform error interrupted this run; it will be retried automatically"
#: Failures of the platform itself (database, disk, Docker daemon): worth another attempt. Any
#: other exception is a bug: retrying it would fail the same way.
TRANSIENT = (OperationalError, OSError, PlatformError)


class TransitionError(RuntimeError):
    """A move the state machine does not allow (a bug in the caller, never the participant's)."""


@dataclass(frozen=True)
class RetryPolicy:
    """When and how soon a platform failure is tried again; once attempts run out it fails as
    ``platform_error`` and is not charged."""

    max_attempts: int
    #: Exponential back-off between attempts (seconds), capped.
    max_backoff_seconds: float = 60.0

    def may_retry(self, submission: Submission) -> bool:
        return submission.attempt < self.max_attempts

    def backoff(self, attempt: int) -> float:
        """Seconds before attempt ``attempt + 1``: 2, 4, 8 … up to the cap."""
        return min(2.0**attempt, self.max_backoff_seconds)


def retry_policy() -> RetryPolicy:
    return RetryPolicy(max_attempts=get_settings().max_attempts)


def claim(session: Session, submission_id: str, *, worker: str) -> Submission | None:
    """Atomically take ``submission_id`` for one attempt, and commit.

    Succeeds for a queued submission, or a running one whose lease expired (its worker died)
    while attempts remain: status running, attempt + 1, a fresh lease and a new Run row.
    Returns ``None`` when another worker holds a live lease, the submission is finished, or
    it does not exist: a duplicate delivery then does nothing.
    """
    settings = get_settings()
    now = utcnow()
    stmt = (
        update(Submission)
        .where(
            Submission.id == submission_id,
            or_(
                Submission.status == Status.queued,
                and_(
                    Submission.status.in_(_ACTIVE),
                    Submission.lease_expires_at < now,
                    Submission.attempt < settings.max_attempts,
                ),
            ),
        )
        .values(
            status=Status.running,
            attempt=Submission.attempt + 1,
            lease_expires_at=now + timedelta(seconds=settings.lease_seconds),
            started_at=func.coalesce(Submission.started_at, now),
        )
        .execution_options(synchronize_session=False)
    )
    if session.execute(stmt).rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        return None
    submission = session.get(Submission, submission_id, populate_existing=True)
    assert submission is not None  # the update just matched it
    for run in submission.runs:  # an earlier attempt's worker died without closing its run
        if run.ended_at is None:
            run.ended_at, run.outcome = now, Outcome.platform_error
    # Run.attempt numbers every run of the submission; Submission.attempt restarts at a rescore.
    number = max((run.attempt for run in submission.runs), default=0) + 1
    submission.runs.append(Run(attempt=number, worker=worker[:200], started_at=now))
    session.commit()
    return submission


def renew_lease(session: Session, submission_id: str, *, attempt: int) -> bool:
    """Extend the lease of a run still in progress; False if the run is no longer ours."""
    stmt = (
        update(Submission)
        .where(Submission.id == submission_id, Submission.attempt == attempt, Submission.status.in_(_ACTIVE))
        .values(lease_expires_at=utcnow() + timedelta(seconds=get_settings().lease_seconds))
        .execution_options(synchronize_session=False)
    )
    renewed = session.execute(stmt).rowcount == 1  # type: ignore[attr-defined]
    session.commit()
    return renewed


def update_status(
    submission: Submission,
    *,
    status: Status,
    outcome: str | None = None,
    error_message: str | None = None,
    charged: bool | None = None,
) -> None:
    """The one place a claimed submission's state changes (the caller commits).

    Raises :class:`TransitionError` for a move :data:`TRANSITIONS` does not allow. Entering
    ``running`` from another state counts an attempt; ``running`` and ``scoring`` renew the
    lease. Leaving them (scored, failed, or queued for a retry) closes the current Run row
    with the outcome and the run diagnostics recorded on the submission.
    """
    previous = Status(submission.status)
    if status not in TRANSITIONS[previous]:
        raise TransitionError(f"submission {submission.id} cannot go from {previous} to {status}")
    now = utcnow()
    if status == Status.running and previous != Status.running:
        submission.attempt += 1
        submission.started_at = submission.started_at or now
    if status in _ACTIVE:
        submission.lease_expires_at = now + timedelta(seconds=get_settings().lease_seconds)
    elif status == Status.queued:  # the broker's lease: resent if still unclaimed then
        submission.lease_expires_at = now + timedelta(seconds=get_settings().queued_stale_seconds)
    else:
        submission.lease_expires_at = None
    if status == Status.scored:  # a retry message from an earlier attempt is no longer true
        submission.error_message = None
    if status in TERMINAL:
        submission.finished_at = now
    elif status == Status.queued:
        submission.finished_at = None
    if outcome is not None:
        submission.outcome = outcome
    if error_message is not None:
        submission.error_message = error_message[:ERROR_CHARS]
    if charged is not None:
        submission.charged = charged
    submission.status = status
    if previous in _ACTIVE and status not in _ACTIVE:
        _close_run(
            submission, now, outcome or (Outcome.succeeded if status == Status.scored else Outcome.platform_error)
        )


def _close_run(submission: Submission, now: datetime, outcome: str) -> None:
    for run in submission.runs:  # claim closes any older open run, so this is the current one
        if run.ended_at is None:
            run.ended_at, run.outcome = now, outcome
            run.exit_code = submission.exit_code
            run.runtime_seconds = submission.runtime_seconds
            run.peak_memory_bytes = submission.peak_memory_bytes


def _retry_or_fail(submission: Submission, *, retry_message: str, fail_message: str) -> bool:
    """The retry policy applied: requeue while attempts remain (True), else fail uncharged."""
    if retry_policy().may_retry(submission):
        update_status(submission, status=Status.queued, error_message=retry_message)
        return True
    update_status(
        submission, status=Status.failed, outcome=Outcome.platform_error, charged=False, error_message=fail_message
    )
    return False


def record_platform_failure(submission: Submission, exc: BaseException) -> bool:
    """Record a platform failure of the running ``submission`` (the caller commits); True when
    it was requeued for another attempt (send it again after :meth:`RetryPolicy.backoff`).

    A :class:`~harness.errors.PlatformError` carries a message for the participant; any other
    transient failure gets a generic one; an exception that is not a platform failure at all (a
    bug) is not retried. Either way the participant is not charged.
    """
    if isinstance(exc, PlatformError):
        return _retry_or_fail(
            submission,
            retry_message=exc.message,
            fail_message=f"{exc.message} (after {submission.attempt} attempts; not charged)",
        )
    if isinstance(exc, TRANSIENT):
        return _retry_or_fail(submission, retry_message=RETRYING, fail_message=UNEXPECTED)
    update_status(
        submission, status=Status.failed, outcome=Outcome.platform_error, error_message=UNEXPECTED, charged=False
    )
    return False


def reap_expired(session: Session, *, now: datetime | None = None) -> list[tuple[str, str]]:
    """Requeue the runs whose lease expired (their worker died); returns ``(id, kind)`` to send again.

    A submission out of attempts fails as ``platform_error`` and is not charged. The caller
    commits, then queues the returned submissions.
    """
    settings = get_settings()
    now = now or utcnow()
    expired = session.scalars(
        select(Submission)
        .where(Submission.status.in_(_ACTIVE), Submission.lease_expires_at < now)
        .with_for_update(skip_locked=True)
    ).all()
    requeue = []
    for submission in expired:
        requeued = _retry_or_fail(
            submission,
            retry_message=f"the worker running attempt {submission.attempt} of {settings.max_attempts} stopped; "
            "the run was requeued automatically",
            fail_message=f"the platform lost this run {submission.attempt} times (its worker stopped); "
            "it was not charged, please submit again",
        )
        if requeued:
            requeue.append((submission.id, submission.kind))
    return requeue


def stale_queued(session: Session, *, now: datetime | None = None) -> list[tuple[str, str]]:
    """Queued submissions no worker claimed within ``queued_stale_seconds``, as ``(id, kind)``,
    their broker lease renewed: the message may be lost (the API stopped between commit and
    send, the broker was down or restarted without persistence). Sending one again is
    harmless: :func:`claim` lets only one delivery run it. The caller commits, then queues."""
    now = now or utcnow()
    stale = timedelta(seconds=get_settings().queued_stale_seconds)
    rows = session.scalars(
        select(Submission)
        .where(
            Submission.status == Status.queued,
            or_(
                Submission.lease_expires_at < now,
                and_(Submission.lease_expires_at.is_(None), Submission.created_at < now - stale),
            ),
        )
        .with_for_update(skip_locked=True)
    ).all()
    for submission in rows:  # one resend per period, whichever API or worker reaps first
        submission.lease_expires_at = now + stale
    return [(s.id, s.kind) for s in rows]


def runs_needing_attention(
    session: Session, *, state: str, older_than: timedelta | None = None, now: datetime | None = None, limit: int = 500
) -> list[Submission]:
    """Submissions an organizer should look at, oldest first.

    ``stuck``: running or scoring with an expired lease (its worker died and no reaper ran
    yet), or queued for longer than ``older_than`` (default ``queued_stale_seconds``).
    ``retried``: needed more than one attempt (``attempt > 1``), whatever their state now.
    """
    now = now or utcnow()
    if state == "stuck":
        cutoff = now - (
            older_than if older_than is not None else timedelta(seconds=get_settings().queued_stale_seconds)
        )
        where = or_(
            and_(Submission.status.in_(_ACTIVE), Submission.lease_expires_at < now),
            and_(Submission.status == Status.queued, Submission.created_at < cutoff),
        )
    elif state == "retried":
        where = Submission.attempt > 1
    else:
        raise ServiceError(f"unknown state {state!r}; expected stuck or retried")
    return list(session.scalars(select(Submission).where(where).order_by(Submission.created_at).limit(limit)))


def rescore(session: Session, *, submission_id: str) -> Submission:
    """Queue a finished submission again (the caller accepts it: commit, then send).

    Scores are append-only: a scoring version that already has rows keeps them; a new
    scoring version adds its own.
    """
    submission = session.get(Submission, submission_id)
    if submission is None:
        raise NotFoundError(f"no submission {submission_id!r}")
    if submission.status not in TERMINAL:
        raise ConflictError(f"submission {submission_id!r} is {submission.status}; rescore it once it has finished")
    # A Hidden artifact's runs on the other tiers are rescored with it (those still running
    # are left to finish).
    for run in (submission, *(c for c in submission.children if c.status in TERMINAL)):
        run.outcome = None
        run.error_message = None
        # A rescore is a new round: it gets max_attempts of its own (Run rows keep counting).
        run.attempt = 0
        update_status(run, status=Status.queued, charged=run.charged)
    return submission
