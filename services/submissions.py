"""Submissions: intake (stream → validate → quota → store → queue) and the state machine.

Only :func:`update_status` changes a submission's status, so every transition is in one place.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import BinaryIO, Callable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import Kind, Participant, Role, Status, Submission, utcnow
from harness.errors import FormatError
from harness.formats import ResultExpectation, read_measurement, validate_result_isolated
from services.datasets import active_dataset, check_tier
from services.errors import NotFoundError, QuotaError, ServiceError, StorageError, TooLargeError
from services.settings import get_settings

CHUNK = 2**20
MAX_TEXT = {"method": 200, "description": 4000, "source": 500}
HDF5_TIERS = ("public", "dev", "standard")


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


def stream_to_disk(source: BinaryIO, *, directory: Path, max_bytes: int) -> tuple[Path, str, int]:
    """Copy ``source`` to a temp file in ``directory`` in 1 MiB chunks with a cap and sha256.

    Memory stays constant whatever the size. Past the cap, or on a full disk, the partial
    file is removed before the error is raised.
    """
    directory.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    fd, name = tempfile.mkstemp(dir=directory, suffix=".upload")
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := source.read(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise TooLargeError(f"the file is over the {max_bytes} byte upload cap")
                digest.update(chunk)
                out.write(chunk)
    except OSError as exc:
        path.unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS):
            raise StorageError("the server could not store the upload (storage full or unwritable); nothing was recorded") from exc
        raise
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path, digest.hexdigest(), size


def check_metadata(*, method: str, description: str, source: str) -> None:
    for name, value in (("method", method), ("description", description), ("source", source)):
        if len(value) > MAX_TEXT[name]:
            raise ServiceError(f"{name} is {len(value)} characters; the limit is {MAX_TEXT[name]}")


def check_quota(session: Session, *, participant: Participant, tier: str, now: datetime | None = None) -> None:
    """Refuse a submission past the participant's daily quota (UTC day); failed-for-platform runs are not charged."""
    limit = get_settings().quota(tier)
    if not limit or participant.role == Role.organizer:
        return
    now = now or utcnow()
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    used = session.scalar(
        select(func.count()).select_from(Submission).where(
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
    """Stream, validate and record a result file; the caller queues it after commit.

    A file that fails validation raises ``FormatError`` and leaves nothing behind: no row, no
    file, no quota charged.
    """
    check_tier(tier)
    if tier not in HDF5_TIERS:
        raise ServiceError(f"HDF5 results are for the {', '.join(HDF5_TIERS)} tiers; the {tier} tier takes a container image")
    check_metadata(method=method, description=description, source=source)
    check_quota(session, participant=participant, tier=tier)
    dataset_row = active_dataset(session, tier)
    settings = get_settings()
    uploads = settings.storage_dir / "uploads"
    path, sha256, _ = stream_to_disk(upload, directory=uploads, max_bytes=settings.max_upload_bytes)
    try:
        expect = ResultExpectation.for_dataset(read_measurement(dataset_row.view_path), max_bytes=settings.max_upload_bytes)
        validate_result_isolated(path, expect)
        submission = Submission(
            participant=participant, dataset=dataset_row, tier=tier, kind=Kind.hdf5,
            method=method, description=description, source=source, file_sha256=sha256,
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


def get_submission(session: Session, *, submission_id: str, viewer: Participant) -> Submission:
    """Owner or organizer only; others get the same 404 as for a missing id, so ids don't leak."""
    submission = session.get(Submission, submission_id)
    if submission is None or (viewer.role != Role.organizer and submission.participant_id != viewer.id):
        raise NotFoundError(f"no submission {submission_id!r}")
    return submission


def update_status(
    submission: Submission,
    *,
    status: Status,
    outcome: str | None = None,
    error_message: str | None = None,
    charged: bool | None = None,
) -> None:
    """The one place a submission's state changes."""
    submission.status = status
    now = utcnow()
    if status == Status.running:
        submission.started_at = submission.started_at or now
        submission.attempt += 1
        submission.lease_expires_at = now + timedelta(seconds=get_settings().lease_seconds)
    if status in (Status.scored, Status.failed):
        submission.finished_at = now
        submission.lease_expires_at = None
    if outcome is not None:
        submission.outcome = outcome
    if error_message is not None:
        submission.error_message = error_message[:1024]
    if charged is not None:
        submission.charged = charged


def queue(submission_id: str, kind: str) -> None:
    """Send the first task of the pipeline (imported lazily: the API must not need a worker)."""
    from services.worker.tasks import run_submission_task, score_submission_task

    task = run_submission_task if kind == Kind.container else score_submission_task
    task.delay(submission_id)


Enqueue = Callable[[str, str], None]
