"""The sandboxed run of a submission the server runs (an image, a link or a script; design §5):
reuse an identical earlier run, or run it on the tier's measurements (never the truth, even on
Public: :func:`services.datasets.run_input_path`), record the run,
keep its output, then score it.

The run and its scoring are two steps: the run keeps its output and hands the submission to the
``scoring`` queue (:func:`hand_off`), because scoring reads the truth and so runs only where the
server's storage is, while the run may happen on a compute host (:mod:`services.submissions.remote`).

A run pins the image by its content-addressed id (a link is also recorded with its manifest
digest, ``registry/path:tag@sha256:…``). Work already done is not redone: an image whose id
the same participant already had scored on the same dataset, or the same script file in the
same base image, gets the earlier run's score rows copied (grand-challenge-style caching), still
recorded as a submission of its own; another participant's identical image runs afresh. A rescore scores the output the run kept and never runs the image again.

A sandbox that ends in ``platform_error`` raises :class:`harness.errors.PlatformError` after
the run's diagnostics are recorded: the task's one retry policy
(:func:`services.submissions.state.record_platform_failure`) decides what happens next. Every
other outcome is the participant's and is recorded as it is.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.settings import get_settings
from db.models import Kind, Score, Status, Submission, utcnow
from harness.errors import ImageError, PlatformError
from harness.sandbox import Outcome, RunLimits, RunSpec, remove_leftovers, remove_tree, run_container
from harness.sandbox.scripts import unpack_script
from harness.scoring import SCORER_VERSION
from harness.tiers import SANDBOXED_KINDS
from services.datasets import prefetch_scoring_dataset, result_expectation, run_input_path
from services.submissions.sandbox import run_limits, run_spec
from services.submissions.scoring import score_submission
from services.submissions.state import update_status
from services.worker import dispatch

__all__ = [
    "LOG_TAIL",
    "hand_off",
    "instance_label",
    "keep_output",
    "limits_from_settings",
    "remove_orphan_containers",
    "reuse_or_kept",
    "run_submission",
]

log = logging.getLogger(__name__)
#: The end of a run's log kept on the submission (what owners and organizers may read of it).
LOG_TAIL = 64 * 1024


def limits_from_settings() -> RunLimits:
    """The limits this server's runs get (:func:`services.submissions.sandbox.run_limits`)."""
    return run_limits(get_settings())


def instance_label() -> dict[str, str]:
    """Identifies this deployment (its database) on a Docker daemon other servers may share."""
    return {"edx-arena.instance": hashlib.sha256(get_settings().database_url.encode()).hexdigest()[:16]}


def _reuse(session: Session, submission: Submission) -> bool:
    """Copy the scores of the same participant's earlier run of the same image digest (and, for
    a script, the same script file) on the same dataset. Never another participant's: theirs is
    run again, and intake has flagged it for organizers (``duplicate_of``; issue 16.2)."""
    same = [
        Submission.image_digest == submission.image_digest,
        Submission.kind == submission.kind,
        Submission.participant_id == submission.participant_id,
    ]
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
    what = "script" if submission.kind == Kind.script else f"image {(submission.image_digest or '')[:19]}"
    submission.log_tail = f"identical {what} already ran on this dataset; its result was reused"
    update_status(submission, status=Status.scored, outcome=Outcome.succeeded)
    return True


def _spec(submission: Submission, work_dir: Path) -> RunSpec | None:
    """The sandbox run of ``submission``; None when a script's files cannot be unpacked (then
    the submission has failed as ``image_invalid``)."""
    settings = get_settings()
    dataset_row = submission.dataset
    files = None
    if submission.kind == Kind.script:
        try:
            files = unpack_script(submission.script_path, work_dir / "submission")
        except ImageError as exc:
            update_status(submission, status=Status.failed, outcome=Outcome.image_invalid, error_message=exc.message)
            return None
    return run_spec(
        run_id=f"{submission.id}-{submission.attempt}",
        image=submission.image_digest or submission.image or "",
        input_path=run_input_path(dataset_row),
        work_dir=work_dir,
        expect=result_expectation(dataset_row, max_bytes=settings.sandbox_output_bytes),
        settings=settings,
        labels={"edx-arena.submission": submission.id, **instance_label()},
        script_files=files,
    )


def hand_off(session: Session, submission: Submission, *, score_inline: bool = False) -> None:
    """The run's output is kept: queue the submission for scoring (the ``scoring`` queue);
    commits. ``score_inline`` scores it here instead (an in-process caller with the storage)."""
    if score_inline:
        score_submission(session, submission, result_path=submission.file_path)
        return
    # The scoring task claims it like any queued submission: the run's Run row closes as
    # succeeded, and scoring gets a row of its own.
    update_status(submission, status=Status.queued, outcome=Outcome.succeeded)
    session.commit()
    dispatch.send_scoring(submission.id)


def reuse_or_kept(session: Session, submission: Submission, *, score_inline: bool = False) -> bool:
    """Take over the claimed ``submission`` (status running); True when nothing is left to run:
    an identical earlier run's scores were copied, or this run's output is already kept (a
    rescore, or a retry after scoring failed: it goes to scoring; running the image again could
    give another answer and costs the whole run). Commits."""
    update_status(submission, status=Status.running)
    session.commit()
    if _reuse(session, submission):
        session.commit()
        return True
    if submission.file_path and Path(submission.file_path).is_file():
        hand_off(session, submission, score_inline=score_inline)
        return True
    return False


def keep_output(submission: Submission, output: Path) -> Path:
    """Keep a valid run output (server side only): rescoring after a scorer update scores this
    very file, and the byte-exact result stays part of the submission's provenance."""
    kept = get_settings().storage_dir / "results" / f"{submission.id}.h5"
    kept.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(output), kept)
    submission.file_path = str(kept)
    submission.outcome = Outcome.succeeded
    return kept


def run_submission(session: Session, submission: Submission, *, score_inline: bool = True) -> None:
    """Run the claimed ``submission`` on its tier's measurements (no truth), record the run,
    then score it (``score_inline``) or hand it to the scoring queue; commits. Raises
    :class:`PlatformError` when the platform failed the run."""
    if reuse_or_kept(session, submission, score_inline=score_inline):
        return
    settings = get_settings()
    if score_inline:
        prefetch_scoring_dataset(submission.dataset)  # decompress the truth while the container runs
    work_dir = settings.storage_dir / "runs" / f"{submission.id}-{submission.attempt}"
    remove_tree(work_dir)  # a participant's tree: shutil.rmtree recurses (RecursionError at ~1,000 levels)
    work_dir.mkdir(parents=True)
    try:
        spec = _spec(submission, work_dir)
        if spec is None:
            session.commit()
            return
        result = run_container(spec)
        submission.exit_code = result.exit_code
        submission.runtime_seconds = result.runtime_seconds
        submission.peak_memory_bytes = result.peak_memory_bytes
        submission.log_tail = result.log[-LOG_TAIL:]
        if result.outcome == Outcome.platform_error:
            session.commit()  # the diagnostics stay whatever the retry policy decides
            raise PlatformError(result.message)
        if result.outcome != Outcome.succeeded:
            update_status(submission, status=Status.failed, outcome=result.outcome, error_message=result.message)
            session.commit()
            return
        assert result.output_path is not None  # a succeeded run wrote a valid result
        keep_output(submission, result.output_path)
        session.commit()
        hand_off(session, submission, score_inline=score_inline)
    finally:
        remove_tree(work_dir)


def remove_orphan_containers(session: Session) -> list[str]:
    """Remove sandbox containers no live run owns (a worker died mid-run); called at worker start.

    A run is live while its submission is running under an unexpired lease, so another worker's
    container is kept.
    """
    now = utcnow()
    live = {
        f"{s.id}-{s.attempt}"
        for s in session.scalars(
            select(Submission).where(Submission.status == Status.running, Submission.kind.in_(SANDBOXED_KINDS))
        )
        if s.lease_expires_at is not None and _aware(s.lease_expires_at) > now
    }
    return remove_leftovers(keep_run_ids=live, labels=instance_label())


def _aware(ts: datetime) -> datetime:
    # SQLite returns naive datetimes; every stored time is UTC.
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)
