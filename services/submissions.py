"""Submissions: intake (stream → validate → quota → store) and the state machine.

States (``db.models.Status``)::

    queued ──claim──▶ running ──▶ scoring ──▶ scored
       ▲                 │            │
       └── retry/reap ───┴────────────┴─────▶ failed

Only :func:`claim` (an atomic compare-and-set, so two deliveries of one task can never both
run it) and :func:`update_status` change a submission's status. A running submission holds a
lease its worker renews (:func:`renew_lease`); :func:`reap_expired` finds the ones whose worker
died and requeues them, up to ``max_attempts``, then fails them as ``platform_error``, not
charged. Every attempt is a :class:`~db.models.Run` row.

A queued submission holds a lease too, the broker's: ``lease_expires_at`` is when its message
is presumed lost if no worker has claimed it (:func:`stale_queued` sends it again). The
database, not the broker, is the record of what is still to do.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from db.models import SANDBOXED, TERMINAL, Kind, Outcome, Participant, Role, Run, Status, Submission, utcnow
from harness.formats import validate_result_isolated
from services.datasets import active_dataset, check_tier, result_expectation
from services.errors import ConflictError, NotFoundError, QuotaError, ServiceError, StorageError, TooLargeError
from services.metrics import record_upload
from services.settings import get_settings

__all__ = [
    "CHUNK_BYTES",
    "ERROR_CHARS",
    "HDF5_TIERS",
    "MAX_TEXT",
    "check_metadata",
    "check_quota",
    "claim",
    "create_hdf5_submission",
    "discard_upload",
    "get_submission",
    "lock_participant",
    "queue",
    "reap_expired",
    "renew_lease",
    "rescore",
    "runs_needing_attention",
    "stale_queued",
    "stream_to_disk",
    "update_status",
]

log = logging.getLogger(__name__)

CHUNK_BYTES = 2**20
HDF5_TIERS = ("public", "dev", "standard")
#: Longest error message kept (and shown to the participant).
ERROR_CHARS = 1024
#: Longest method name, description and source (the API's schema states the same limits).
MAX_TEXT = {"method": 200, "description": 4000, "source": 500}
_ACTIVE = (Status.running, Status.scoring)


def _aware(ts: datetime) -> datetime:
    # SQLite returns naive datetimes; every stored time is UTC.
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def stream_to_disk(source: BinaryIO, *, directory: Path, max_bytes: int) -> tuple[Path, str, int]:
    """Copy ``source`` to a new temp file in ``directory`` in 1 MiB chunks, with a cap and a sha256.

    Memory stays constant whatever the size. Past the cap, or when the disk is full or
    unwritable, the partial file is removed before the error (413 / 507) is raised.

    Returns
    -------
    (path, sha256 hex digest, size in bytes)
    """
    digest = hashlib.sha256()
    size = 0
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=directory, suffix=".upload")
    except OSError as exc:
        raise _storage_error(exc) from exc
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := source.read(CHUNK_BYTES):
                size += len(chunk)
                if size > max_bytes:
                    raise TooLargeError(f"the file is over the {max_bytes} byte upload cap")
                digest.update(chunk)
                out.write(chunk)
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise _storage_error(exc) from exc
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    record_upload(size)
    return path, digest.hexdigest(), size


def _storage_error(exc: OSError) -> Exception:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EPERM):
        return StorageError("the server could not store the upload (storage full or unwritable); nothing was recorded")
    return exc


def check_metadata(*, method: str, description: str, source: str) -> None:
    for name, value in (("method", method), ("description", description), ("source", source)):
        if len(value) > MAX_TEXT[name]:
            raise ServiceError(f"{name} is {len(value)} characters; the limit is {MAX_TEXT[name]}")
        if "\x00" in value:  # PostgreSQL cannot store it
            raise ServiceError(f"{name} contains a NUL character")


def lock_participant(session: Session, participant: Participant) -> None:
    """Serialise this participant's submissions until the transaction ends.

    PostgreSQL: ``SELECT … FOR UPDATE`` on the participant row (other participants are not
    held up). SQLite has no row locks: a no-op write takes the database write lock, as
    ``BEGIN IMMEDIATE`` would, so hold it only around the final check and insert.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(Participant.id).where(Participant.id == participant.id).with_for_update())
    else:
        session.execute(
            update(Participant)
            .where(Participant.id == participant.id)
            .values(id=Participant.id)
            .execution_options(synchronize_session=False)
        )


def check_quota(
    session: Session, *, participant: Participant, tier: str, now: datetime | None = None, lock: bool = False
) -> None:
    """Refuse a submission past the participant's daily quota on ``tier`` (UTC day).

    Counts the day's charged submissions; a run that failed for a platform reason is
    uncharged, so it gives its slot back. Organizers have no quota.

    ``lock=True`` (right before the insert; the caller commits soon after) takes
    :func:`lock_participant` first, so two simultaneous uploads cannot both take the last
    slot. Without it the check is a cheap early refusal only.
    """
    limit = get_settings().quota(tier)
    if not limit or participant.role == Role.organizer:
        return
    if lock:
        lock_participant(session, participant)
    now = now or utcnow()
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    used = session.scalar(
        select(func.count())
        .select_from(Submission)
        .where(
            Submission.participant_id == participant.id,
            Submission.tier == tier,
            Submission.charged.is_(True),
            Submission.created_at >= day,
        )
    )
    if used >= limit:
        reopens = day + timedelta(days=1)
        raise QuotaError(
            f"daily quota reached: {used} of {limit} {tier} submissions today; "
            f"the next slot opens at {reopens:%Y-%m-%d %H:%M} UTC"
        )


def create_hdf5_submission(
    session: Session,
    *,
    participant: Participant,
    tier: str,
    upload: BinaryIO,
    method: str = "",
    description: str = "",
    source: str = "",
) -> Submission:
    """Stream, validate and record a result file (flushed, not committed); the caller commits
    and then queues it.

    A file that fails validation raises ``FormatError`` (422) and leaves nothing behind: no
    row, no file, no quota charged.
    """
    check_tier(tier)
    if tier not in HDF5_TIERS:
        raise ServiceError(
            f"HDF5 results are for the {', '.join(HDF5_TIERS)} tiers; the {tier} tier takes a container image"
        )
    check_metadata(method=method, description=description, source=source)
    check_quota(session, participant=participant, tier=tier)
    dataset_row = active_dataset(session, tier)
    settings = get_settings()
    uploads = settings.storage_dir / "uploads"
    path, sha256, _ = stream_to_disk(upload, directory=uploads, max_bytes=settings.max_upload_bytes)
    try:
        # In a child process: libhdf5 parsing a hostile file must not take the API down.
        validate_result_isolated(path, result_expectation(dataset_row, max_bytes=settings.max_upload_bytes))
        # Checked again under the participant's lock: another upload may have taken the last
        # slot while this one streamed.
        check_quota(session, participant=participant, tier=tier, lock=True)
        submission = Submission(
            participant=participant,
            dataset=dataset_row,
            tier=tier,
            kind=Kind.hdf5,
            method=method,
            description=description,
            source=source,
            file_sha256=sha256,
        )
        session.add(submission)
        session.flush()
        final = uploads / f"{submission.id}.h5"
        os.replace(path, final)
        submission.file_path = str(final)
        return submission
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def discard_upload(submission: Submission) -> None:
    """Remove a submission's stored file when its row could not be committed."""
    if submission.file_path:
        Path(submission.file_path).unlink(missing_ok=True)


def get_submission(session: Session, *, submission_id: str, viewer: Participant) -> Submission:
    """Owner or organizer only; others get the same 404 as for a missing id, so ids don't leak."""
    submission = session.get(Submission, submission_id)
    if submission is None or (viewer.role != Role.organizer and submission.participant_id != viewer.id):
        raise NotFoundError(f"no submission {submission_id!r}")
    return submission


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
    if session.execute(stmt).rowcount != 1:
        session.rollback()
        return None
    submission = session.get(Submission, submission_id, populate_existing=True)
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
    renewed = session.execute(stmt).rowcount == 1
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

    Entering ``running`` from another state counts an attempt; ``running`` and ``scoring``
    renew the lease. Leaving them (scored, failed, or queued for a retry) closes the current
    Run row with the outcome and the run diagnostics recorded on the submission.
    """
    previous = submission.status
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
        if submission.attempt >= settings.max_attempts:
            update_status(
                submission,
                status=Status.failed,
                outcome=Outcome.platform_error,
                charged=False,
                error_message=f"the platform lost this run {submission.attempt} times (its worker stopped); "
                "it was not charged, please submit again",
            )
        else:
            update_status(
                submission,
                status=Status.queued,
                error_message=f"the worker running attempt {submission.attempt} of {settings.max_attempts} stopped; "
                "the run was requeued automatically",
            )
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
    """Queue a finished submission again (the caller commits, then queues it).

    Scores are append-only: a scoring version that already has rows keeps them; a new
    scoring version adds its own.
    """
    submission = session.get(Submission, submission_id)
    if submission is None:
        raise NotFoundError(f"no submission {submission_id!r}")
    if submission.status not in TERMINAL:
        raise ConflictError(f"submission {submission_id!r} is {submission.status}; rescore it once it has finished")
    submission.outcome = None
    submission.error_message = None
    # A rescore is a new round: it gets max_attempts of its own (Run rows keep counting).
    submission.attempt = 0
    update_status(submission, status=Status.queued, charged=submission.charged)
    return submission


def queue(submission_id: str, kind: str) -> bool:
    """Send the submission's task, after its row is committed; False if the broker refused.

    The row stays queued either way: a submission whose message was lost is sent again by
    the reaper (at API and worker start, then periodically in each worker; ``stale_queued``).
    """
    from services.worker.tasks import run_submission_task, score_submission_task

    task = run_submission_task if kind in SANDBOXED else score_submission_task
    try:
        task.apply_async(
            (submission_id,), retry=True, retry_policy={"max_retries": 5, "interval_start": 0.2, "interval_step": 0.5}
        )
    except Exception:
        log.exception(
            "could not send submission %s to the broker; it stays queued and is resent at the next start", submission_id
        )
        return False
    return True
