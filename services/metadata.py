"""Method metadata around a submission (design §7): organizer marks and public provenance.

- A **reference baseline** (``submissions.baseline``) is shown on its boards at its score but
  unranked: it competes for nothing and never moves a participant's rank.
- The **trust** mark (``submissions.trust``) overrides the automatic Certified rule:
  ``granted`` certifies an entry (e.g. a result an organizer reproduced), ``revoked`` removes
  the badge (e.g. a run found to have read something it should not), ``None`` restores the rule.
- **Provenance** is public for a scored submission (what a leaderboard entry links to): the
  method, the exact file hash or image digest, the dataset hash and every scoring row's
  versions. The run log and hidden data are never part of it. An unscored submission's
  provenance is for its owner and organizers only (others get the same 404 as a missing id).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Participant, Role, Score, Status, Submission, Trust
from services.errors import NotFoundError
from services.leaderboard import _certified

__all__ = ["certified", "provenance_of", "set_baseline", "set_trust"]


def certified(submission: Submission) -> bool:
    return _certified(submission.tier, submission.kind, submission.image_digest, submission.trust)


def _get(session: Session, submission_id: str) -> Submission:
    submission = session.get(Submission, submission_id)
    if submission is None:
        raise NotFoundError(f"no submission {submission_id!r}")
    return submission


def set_baseline(session: Session, *, submission_id: str, baseline: bool) -> Submission:
    """Mark or unmark a reference baseline (the caller commits)."""
    submission = _get(session, submission_id)
    submission.baseline = baseline
    return submission


def set_trust(session: Session, *, submission_id: str, trust: str | None) -> Submission:
    """Grant or revoke the trust badge, or (``None``) go back to the automatic rule."""
    submission = _get(session, submission_id)
    submission.trust = None if trust is None else Trust(trust)
    return submission


def provenance_of(
    session: Session, *, submission_id: str, viewer: Participant | None
) -> tuple[Submission, list[Score]]:
    """The submission and its tier score rows (every scoring version), if ``viewer`` may see them."""
    submission = session.get(Submission, submission_id)
    mine = viewer is not None and (
        viewer.role == Role.organizer or (submission is not None and submission.participant_id == viewer.id)
    )
    if submission is None or (submission.status != Status.scored and not mine):
        raise NotFoundError(f"no submission {submission_id!r}")
    rows = session.scalars(
        select(Score).where(Score.submission_id == submission.id, Score.scene_id == "").order_by(Score.id)
    ).all()
    return submission, list(rows)
