"""Scoring a stored result (an upload, or a sandboxed run's kept output): read the dataset with
truth and the result, score, record the rows, and set the submission scored.

Each row also carries its 95 % bootstrap interval (``ci_low``, ``ci_high``) and, in
``tile_stats`` (JSON), what later comparisons need without rescoring:

- a scene row: ``{"kind": "scene", "seed", **TileStats.as_json()}``, the per-tile sums its
  interval was resampled from, and the seed of its resamples;
- the tier row: ``{"kind": "tier", "resample_key", "n_resamples", "confidence",
  "tile_size", "draws"}``, ``draws`` being the B bootstrap replicates of the tier score
  (:func:`harness.uncertainty.encode_draws`, base64 little-endian float64). Rows with the
  same ``resample_key`` were resampled identically, so their draws are paired (the
  leaderboard's ties and the overall interval use them).

Idempotent per (submission, scoring version): the rows of a version are written once (a
unique constraint backs it up against a concurrent duplicate), and a later scoring version
adds its own rows beside them: rescoring never overwrites.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.settings import get_settings
from db.models import Kind, Outcome, Score, Status, Submission, utcnow
from harness import HARNESS_VERSION
from harness.errors import FormatError
from harness.formats import output_error_message, read_result
from harness.scoring import SCORER_VERSION, TierScore, score_tier
from harness.tiers import SANDBOXED_KINDS
from harness.uncertainty import TILE_SIZE, encode_draws, resample_seed
from services.access import rules_of
from services.datasets import result_expectation, scoring_dataset
from services.submissions.state import update_status

__all__ = ["already_scored", "score_submission", "tier_tile_stats"]

log = logging.getLogger(__name__)


def already_scored(session: Session, submission_id: str, *, version: str = SCORER_VERSION) -> bool:
    return (
        session.scalar(
            select(Score.id).where(
                Score.submission_id == submission_id, Score.scoring_version == version, Score.scene_id == ""
            )
        )
        is not None
    )


def tier_tile_stats(score: TierScore) -> dict | None:
    """The tier row's ``tile_stats``: the paired score draws and how they were resampled."""
    draws = score.score_draws
    if draws is None:
        return None
    return {
        "kind": "tier",
        "resample_key": score.resample_key,
        "n_resamples": score.n_resamples,
        "confidence": score.confidence,
        "tile_size": TILE_SIZE,
        "draws": encode_draws(draws),
    }


def _submission_hash(submission: Submission) -> str:
    """What the scores are of: an image's digest, or the uploaded file's (or script's) sha256."""
    return (submission.image_digest if submission.kind == Kind.container else submission.file_sha256) or ""


def _rows(
    submission: Submission, score: TierScore, *, dataset_hash: str, operator_version: str, started: datetime
) -> list[Score]:
    """One tier row (``scene_id == ""``) and one row per scene, each with its provenance and
    interval."""
    ended = utcnow()
    common = dict(
        submission_id=submission.id,
        scoring_version=SCORER_VERSION,
        operator_version=operator_version,
        harness_version=HARNESS_VERSION,
        dataset_hash=dataset_hash,
        submission_hash=_submission_hash(submission),
        started_at=started,
        ended_at=ended,
    )
    rows = [
        Score(
            scene_id="",
            score=score.score,
            blind=score.blind,
            standard=score.standard,
            psnr=score.psnr,
            ssim=score.ssim,
            consistency=score.consistency,
            metrics=score.as_dict(),
            ci_low=score.ci_low,
            ci_high=score.ci_high,
            tile_stats=tier_tile_stats(score),
            **common,
        )
    ]
    term = rules_of(submission.tier).score  # the tier's score: "blind" or "standard"
    for s in score.scenes:
        scene_score = getattr(s, term)
        stats = (
            None
            if s.tile_stats is None
            else {"kind": "scene", "seed": resample_seed(dataset_hash, s.scene_id), **s.tile_stats.as_json()}
        )
        rows.append(
            Score(
                scene_id=s.scene_id,
                score=scene_score,
                blind=s.blind,
                standard=s.standard,
                psnr=s.psnr,
                ssim=s.ssim,
                consistency=s.consistency,
                metrics=s.as_dict(),
                ci_low=s.ci_low,
                ci_high=s.ci_high,
                tile_stats=stats,
                **common,
            )
        )
    return rows


def score_submission(session: Session, submission: Submission, *, result_path: str | None = None) -> None:
    """Score ``submission``'s result (its uploaded file, or a container's ``result_path``),
    record the rows and set it scored (or failed ``invalid_output``); commits."""
    if already_scored(session, submission.id):
        if submission.status != Status.scored:  # a delivery that claimed it after the rows were written
            update_status(submission, status=Status.scored, outcome=submission.outcome or Outcome.succeeded)
            session.commit()
        return
    started = utcnow()
    update_status(submission, status=Status.scoring)
    session.commit()
    settings = get_settings()
    dataset_row = submission.dataset
    # A sandboxed run's output was already held to the sandbox cap; an upload to the upload cap.
    cap = settings.sandbox_output_bytes if submission.kind in SANDBOXED_KINDS else settings.max_upload_bytes
    expect = result_expectation(dataset_row, max_bytes=cap)
    try:
        result = read_result(result_path or submission.file_path, expect)
    except FormatError as exc:
        message = exc.message
        if submission.kind in SANDBOXED_KINDS:  # written after reading hidden data: no word from the file
            message = f"/output/result.h5 is not a valid result: {output_error_message(exc, expect)}"
        update_status(submission, status=Status.failed, outcome=Outcome.invalid_output, error_message=message)
        session.commit()
        return
    dataset = scoring_dataset(dataset_row)
    score = score_tier(dataset, result)
    session.add_all(
        _rows(
            submission,
            score,
            dataset_hash=dataset.content_hash,
            operator_version=dataset.operator_version,
            started=started,
        )
    )
    update_status(submission, status=Status.scored, outcome=submission.outcome or Outcome.succeeded)
    try:
        session.commit()
    except IntegrityError:
        # A duplicate delivery (after a lease expired mid-scoring) wrote this version's rows
        # first; it also sets the status, so there is nothing left to do.
        session.rollback()
        log.info("submission %s was already scored by another delivery", submission.id)
