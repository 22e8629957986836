"""Scoring a submission: read the dataset with truth and the result, score, record rows.

Idempotent per (submission, scoring version): a duplicate delivery finds the rows already
there (or hits the unique constraint) and changes nothing.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import Kind, Score, Status, Submission, utcnow
from harness import HARNESS_VERSION
from harness.errors import FormatError
from harness.formats import ResultExpectation, read_measurement, read_result
from harness.scoring import SCORER_VERSION, TierScore, score_tier
from services.settings import get_settings
from services.submissions import update_status

log = logging.getLogger(__name__)


def already_scored(session: Session, submission_id: str, version: str = SCORER_VERSION) -> bool:
    return session.scalar(
        select(Score.id).where(Score.submission_id == submission_id, Score.scoring_version == version, Score.scene_id == "")
    ) is not None


def _rows(submission: Submission, score: TierScore, *, dataset_hash: str, operator_version: str, started: datetime) -> list[Score]:
    common = dict(
        submission_id=submission.id,
        scoring_version=SCORER_VERSION,
        operator_version=operator_version,
        harness_version=HARNESS_VERSION,
        dataset_hash=dataset_hash,
        submission_hash=submission.image_digest if submission.kind == Kind.container else (submission.file_sha256 or ""),
        started_at=started,
    )
    tier_metrics = score.as_dict()
    rows = [
        Score(scene_id="", score=score.score, blind=score.blind, standard=score.standard, psnr=score.psnr,
              ssim=score.ssim, consistency=score.consistency, metrics=tier_metrics, **common)
    ]
    for s in score.scenes:
        scene_score = s.standard if submission.tier == "standard" else s.blind
        rows.append(Score(scene_id=s.scene_id, score=scene_score, blind=s.blind, standard=s.standard, psnr=s.psnr,
                          ssim=s.ssim, consistency=s.consistency, metrics=s.as_dict(), **common))
    return rows


def score_submission(session: Session, submission: Submission, *, result_path: str | None = None) -> None:
    """Score ``submission``'s result file and record its rows; sets scored or failed."""
    if already_scored(session, submission.id):
        update_status(submission, status=Status.scored)
        return
    started = utcnow()
    update_status(submission, status=Status.scoring)
    session.commit()
    dataset = read_measurement(submission.dataset.full_path)
    path = result_path or submission.file_path
    try:
        result = read_result(path, ResultExpectation.for_dataset(dataset, max_bytes=get_settings().sandbox_output_bytes))
    except FormatError as exc:
        update_status(submission, status=Status.failed, outcome="invalid_output", error_message=exc.message)
        return
    score = score_tier(dataset, result)
    session.add_all(_rows(submission, score, dataset_hash=dataset.content_hash,
                          operator_version=dataset.operator_version, started=started))
    update_status(submission, status=Status.scored, outcome=submission.outcome or "succeeded")
    try:
        session.commit()
    except IntegrityError:  # a concurrent duplicate delivery wrote them first
        session.rollback()
        log.info("submission %s already scored by another delivery", submission.id)
