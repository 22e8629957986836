"""Hidden-tier submissions that the server runs: intake, the sandboxed run, then scoring.

Three ways in, one sandbox (design §3, §5):

- an image reference (``{"image": ...}``). The rule: a reference whose first component is a
  registry host (it has a ``.`` or ``:``, or is ``localhost``, e.g.
  ``registry.example:5000/team/solver:1.2``) is a *link*: pulled if the registry is on
  ``EDX_REGISTRY_ALLOWLIST``, refused otherwise. Any other reference (``team/solver:1``,
  ``sha256:…``) names an image the server's daemon already has and is only looked up
  locally, never pulled.
- a ``docker save`` archive upload;
- a Python script (one ``.py``, or a zip with ``main.py``) run as ``python3 /submission/main.py``
  in the reference base image (``EDX_SCRIPT_IMAGE``), its files bound read-only.

A run pins the image by its content-addressed id (a link is also recorded with its manifest
digest, ``registry/path:tag@sha256:…``). Work already done is not redone: an image whose id
was already scored on the same dataset, or the same script file in the same base image, gets
the earlier run's score rows copied (grand-challenge-style caching), still recorded as a
submission of its own.
"""

from __future__ import annotations

import logging
import os
import shutil
from datetime import UTC
from pathlib import Path
from typing import BinaryIO

from docker.errors import DockerException
from requests import RequestException
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import SANDBOXED, Kind, Participant, Score, Status, Submission
from harness.errors import ImageError, PlatformError
from harness.formats import validate_output, validate_result_isolated
from harness.sandbox import (
    Outcome,
    RunLimits,
    RunSpec,
    inspect_image,
    load_image_archive,
    parse_reference,
    pull_image,
    remove_tree,
    run_container,
)
from harness.sandbox.scripts import MOUNT_POINT, check_script, script_command, unpack_script
from harness.scoring import SCORER_VERSION
from services.datasets import active_dataset, prefetch_scoring_dataset, result_expectation
from services.evaluation import score_submission
from services.settings import get_settings
from services.submissions import check_metadata, check_quota, stream_to_disk, update_status

log = logging.getLogger(__name__)
TIER = "hidden"
LOG_TAIL = 64 * 1024


class RetryRun(Exception):
    """A platform failure: the task should be retried; the participant is not charged."""


def _new_submission(
    session: Session,
    *,
    participant: Participant,
    image: str,
    digest: str,
    method: str,
    description: str,
    source: str,
    kind: str = Kind.container,
    file_sha256: str | None = None,
) -> Submission:
    check_metadata(method=method, description=description, source=source)
    check_quota(session, participant=participant, tier=TIER, lock=True)  # serialised with the insert
    dataset = active_dataset(session, TIER)
    submission = Submission(
        participant=participant,
        dataset=dataset,
        tier=TIER,
        kind=kind,
        image=image,
        image_digest=digest,
        method=method,
        description=description,
        source=source,
        file_sha256=file_sha256,
    )
    session.add(submission)
    session.flush()
    return submission


def create_container_submission(
    session: Session, *, participant: Participant, image: str, method: str = "", description: str = "", source: str = ""
) -> Submission:
    """An image link (pulled from an allow-listed registry) or an image the daemon already has.

    See the module docstring for the rule that tells them apart.
    """
    # Cheap refusals first: a pull can take minutes.
    check_metadata(method=method, description=description, source=source)
    check_quota(session, participant=participant, tier=TIER)
    active_dataset(session, TIER)
    settings = get_settings()
    if parse_reference(image).registry:  # an invalid reference is refused here, before the daemon sees it
        info, pinned = pull_image(
            image,
            allowlist=settings.registries,
            max_bytes=settings.max_image_bytes,
            timeout=settings.pull_timeout_seconds,
        )
        return _new_submission(
            session,
            participant=participant,
            image=pinned,
            digest=info.id,
            method=method,
            description=description,
            source=source,
        )
    try:
        info = inspect_image(image)
    except ImageError as exc:
        raise ImageError(
            f"{exc.message}, or link it from an allowed registry (registry.example:5000/team/solver:1.2)"
        ) from None
    if (info.os, info.architecture) != ("linux", "amd64"):
        raise ImageError(f"the image is for {info.os}/{info.architecture}; the server runs linux/amd64 images")
    return _new_submission(
        session,
        participant=participant,
        image=image,
        digest=info.id,
        method=method,
        description=description,
        source=source,
    )


def create_script_submission(
    session: Session,
    *,
    participant: Participant,
    upload: BinaryIO,
    method: str = "",
    description: str = "",
    source: str = "",
) -> Submission:
    """A Python script or a zip with ``main.py``: streamed with a cap, checked, stored, then
    pinned to the base image's id (flushed, not committed; the caller commits, then queues).

    A bad archive raises ``ImageError`` (422) and leaves nothing behind.
    """
    check_metadata(method=method, description=description, source=source)
    check_quota(session, participant=participant, tier=TIER)
    active_dataset(session, TIER)
    settings = get_settings()
    try:
        base = inspect_image(settings.script_image)
    except ImageError:
        raise PlatformError(
            f"the script base image {settings.script_image} is not installed on this server; tell the organizers"
        ) from None
    except (DockerException, RequestException) as exc:
        raise PlatformError(
            f"the container platform is unavailable ({type(exc).__name__}); nothing was recorded, submit again later"
        ) from None
    uploads = settings.storage_dir / "uploads"
    path, sha256, _ = stream_to_disk(upload, directory=uploads, max_bytes=settings.max_script_bytes)
    try:
        kind = check_script(path)
        submission = _new_submission(
            session,
            participant=participant,
            image=settings.script_image,
            digest=base.id,
            method=method,
            description=description,
            source=source,
            kind=Kind.script,
            file_sha256=sha256,
        )
        final = uploads / f"{submission.id}.{kind}"
        os.replace(path, final)
        submission.script_path = str(final)
        return submission
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def create_archive_submission(
    session: Session,
    *,
    participant: Participant,
    upload: BinaryIO,
    method: str = "",
    description: str = "",
    source: str = "",
) -> Submission:
    """A ``docker save`` archive: streamed to disk with a cap, checked, loaded, then pinned."""
    check_quota(session, participant=participant, tier=TIER)
    settings = get_settings()
    path, _, _ = stream_to_disk(upload, directory=settings.storage_dir / "uploads", max_bytes=settings.max_image_bytes)
    try:
        info = load_image_archive(path, max_bytes=settings.max_image_bytes, owner=participant.id)
    finally:
        path.unlink(missing_ok=True)
    name = info.tags[0]  # edx-arena-sub/<participant id>/<short id>:latest, the server's own name
    return _new_submission(
        session,
        participant=participant,
        image=name,
        digest=info.id,
        method=method,
        description=description,
        source=source,
    )


def limits_from_settings() -> RunLimits:
    s = get_settings()
    return RunLimits(
        cpus=s.sandbox_cpus,
        memory_bytes=s.sandbox_memory_bytes,
        pids=s.sandbox_pids,
        wall_seconds=s.sandbox_wall_seconds,
        output_bytes=s.sandbox_output_bytes,
        log_bytes=s.sandbox_log_bytes,
        runtime=s.sandbox_runtime,
        allow_image_user=s.sandbox_allow_image_user,
    )


def _reuse(session: Session, submission: Submission) -> bool:
    """Copy the scores of an earlier run of the same image digest (and, for a script, the same
    script file) on the same dataset."""
    same = [Submission.image_digest == submission.image_digest, Submission.kind == submission.kind]
    if submission.kind == Kind.script:
        same.append(Submission.file_sha256 == submission.file_sha256)
    # Only rows of the current scoring version are worth copying: after a scorer update an
    # older run's rows would keep the new submission off the board.
    current = select(Score.id).where(Score.submission_id == Submission.id, Score.scoring_version == SCORER_VERSION)
    previous = session.scalar(
        select(Submission)
        .where(
            *same,
            Submission.dataset_id == submission.dataset_id,
            Submission.status == Status.scored,
            Submission.id != submission.id,
            current.exists(),
        )
        .order_by(Submission.created_at)
    )
    if previous is None:
        return False
    for row in session.scalars(select(Score).where(Score.submission_id == previous.id)):
        copy = {c.name: getattr(row, c.name) for c in Score.__table__.columns if c.name not in ("id", "submission_id")}
        session.add(Score(submission_id=submission.id, **copy))
    submission.exit_code, submission.runtime_seconds = previous.exit_code, previous.runtime_seconds
    submission.peak_memory_bytes = previous.peak_memory_bytes
    what = "script" if submission.kind == Kind.script else f"image {submission.image_digest[:19]}"
    submission.log_tail = f"identical {what} already ran on this dataset; its result was reused"
    update_status(submission, status=Status.scored, outcome=Outcome.succeeded)
    return True


def run_submission(session: Session, submission: Submission) -> None:
    """Run the image on the Hidden measurements (no truth), record the run, then score it."""
    update_status(submission, status=Status.running)
    session.commit()
    if _reuse(session, submission):
        return
    settings = get_settings()
    if submission.file_path and Path(submission.file_path).is_file():
        # A rescore (or a retry after scoring failed): score the output this run already wrote;
        # running the image again could give another answer and costs the whole run.
        score_submission(session, submission, result_path=submission.file_path)
        return
    dataset_row = submission.dataset
    expect = result_expectation(dataset_row, max_bytes=settings.sandbox_output_bytes)
    prefetch_scoring_dataset(dataset_row)  # decompress the truth while the container runs
    work_dir = settings.storage_dir / "runs" / f"{submission.id}-{submission.attempt}"
    remove_tree(work_dir)  # a participant's tree: shutil.rmtree recurses (RecursionError at ~1,000 levels)
    work_dir.mkdir(parents=True)
    try:
        spec = RunSpec(
            run_id=f"{submission.id}-{submission.attempt}",
            image=submission.image_digest or submission.image,
            input_path=Path(dataset_row.view_path),
            work_dir=work_dir,
            limits=limits_from_settings(),
            labels={"edx-arena.submission": submission.id, **instance_label()},
            # Refusals in a fixed vocabulary; checked in a memory-limited child, like an upload
            # (libhdf5 inflates whatever a chunk holds).
            validate_output=lambda p: validate_output(p, expect, validate=validate_result_isolated),
        )
        if submission.kind == Kind.script:
            try:
                files = unpack_script(submission.script_path, work_dir / "submission")
            except ImageError as exc:
                update_status(
                    submission, status=Status.failed, outcome=Outcome.image_invalid, error_message=exc.message
                )
                return
            spec.command = script_command()
            spec.read_only_mounts = {str(files): MOUNT_POINT}
            # A writable HOME for libraries that cache there; the root filesystem is read-only.
            spec.environment = {"HOME": "/tmp", "PYTHONDONTWRITEBYTECODE": "1", "MPLCONFIGDIR": "/tmp"}
        result = run_container(spec)
        submission.exit_code = result.exit_code
        submission.runtime_seconds = result.runtime_seconds
        submission.peak_memory_bytes = result.peak_memory_bytes
        submission.log_tail = result.log[-LOG_TAIL:]
        if result.outcome == Outcome.platform_error:
            if submission.attempt < settings.max_attempts:
                update_status(submission, status=Status.queued, outcome=None, error_message=result.message)
                session.commit()
                raise RetryRun(result.message)
            update_status(
                submission,
                status=Status.failed,
                outcome=result.outcome,
                charged=False,
                error_message=f"{result.message} (after {submission.attempt} attempts; not charged)",
            )
            return
        if result.outcome != Outcome.succeeded:
            update_status(submission, status=Status.failed, outcome=result.outcome, error_message=result.message)
            return
        submission.outcome = Outcome.succeeded
        # Keep the output (server side only): rescoring after a scorer update scores this very
        # file, and the byte-exact result stays part of the submission's provenance.
        kept = settings.storage_dir / "results" / f"{submission.id}.h5"
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(result.output_path, kept)
        submission.file_path = str(kept)
        session.commit()
        score_submission(session, submission, result_path=str(kept))
    finally:
        remove_tree(work_dir)


def instance_label() -> dict[str, str]:
    """Identifies this deployment (its database) on a Docker daemon other servers may share."""
    import hashlib

    return {"edx-arena.instance": hashlib.sha256(get_settings().database_url.encode()).hexdigest()[:16]}


def remove_orphan_containers(session: Session) -> list[str]:
    """Remove sandbox containers no live run owns (a worker died mid-run); called at worker start.

    A run is live while its submission is running under an unexpired lease, so another worker's
    container is kept.
    """
    from datetime import datetime

    from harness.sandbox import remove_leftovers

    now = datetime.now(UTC)
    live = {
        f"{s.id}-{s.attempt}"
        for s in session.scalars(
            select(Submission).where(Submission.status == Status.running, Submission.kind.in_(SANDBOXED))
        )
        if s.lease_expires_at is not None
        and (s.lease_expires_at if s.lease_expires_at.tzinfo else s.lease_expires_at.replace(tzinfo=UTC)) > now
    }
    return remove_leftovers(keep_run_ids=live, labels=instance_label())
