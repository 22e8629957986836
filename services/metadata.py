"""Method metadata around a submission (design §7): organizer marks and public provenance.

- A **reference baseline** (``submissions.baseline``) is shown on its boards at its score but
  unranked: it competes for nothing and never moves a participant's rank.
- The **trust** mark (``submissions.trust``) overrides the automatic Certified rule:
  ``granted`` certifies an entry (e.g. a result an organizer reproduced), ``revoked`` removes
  the badge (e.g. a run found to have read something it should not), ``None`` restores the rule.
- **Certified** (:func:`certified` for one score, :func:`certified_row` for an overall method
  row; the one place the rule is written): a score from a run the server made itself (an image,
  or a script in the pinned base image) with the image digest recorded, unless an organizer's
  trust mark says otherwise. A method row is Certified only when its three tier scores are the
  server's runs of **one** artifact (a Hidden submission and its runs on Public and Dev); a tier
  filled by an uploaded result is self-reported (the Public tier hands out the truth, so an
  upload there proves nothing).
- **Provenance** is public for a scored submission (what a leaderboard entry links to): the
  method, the exact file hash or image digest, the dataset hash and every scoring row's
  versions. The run log and hidden data are never part of it. An unscored submission's
  provenance is for its owner and organizers only (others get the same 404 as a missing id).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Participant, Score, Submission, Trust
from harness.scoring import SCORER_VERSION
from harness.tiers import BLIND_TIERS, SANDBOXED_KINDS
from services.access import rules_of, visible_provenance
from services.errors import NotFoundError

__all__ = [
    "artifact_of",
    "artifact_runs",
    "certified",
    "certified_row",
    "current_tier_row",
    "is_certified",
    "provenance_of",
    "set_baseline",
    "set_trust",
]


def certified(*, tier: str, kind: str, image_digest: str | None, trust: str | None = None) -> bool:
    """Automatic: a score from a run the server made itself (an image, or a script in the pinned
    base image) on a tier whose submissions it runs, with its digest recorded. An organizer's
    trust mark overrides it either way."""
    if trust == Trust.granted:
        return True
    if trust == Trust.revoked:
        return False
    # Only the server runs images and scripts (on Public and Dev too, as a Hidden artifact's
    # runs there): the kind is the proof, whatever the tier.
    rules_of(tier)
    return kind in SANDBOXED_KINDS and bool(image_digest)


def artifact_of(row: Any) -> str:
    """The artifact a score is of: the Hidden submission whose runs (itself and its children on
    the other tiers) share one image or script. ``row`` has ``submission_id`` and ``parent_id``."""
    return row.parent_id or row.submission_id


def certified_row(rows: Iterable[Any]) -> bool:
    """Whether an overall method row made of these tier entries is Certified: every entry
    certified (:func:`certified`) and all of them one artifact's runs. An organizer's grant on
    every entry certifies the row whatever made it; a revoke on any removes the badge. Each
    row has ``tier``, ``kind``, ``image_digest``, ``trust``, ``submission_id``, ``parent_id``."""
    rows = list(rows)
    if any(r.trust == Trust.revoked for r in rows):
        return False
    if rows and all(r.trust == Trust.granted for r in rows):
        return True
    each = all(certified(tier=r.tier, kind=r.kind, image_digest=r.image_digest, trust=r.trust) for r in rows)
    return bool(rows) and each and len({artifact_of(r) for r in rows}) == 1


def is_certified(submission: Submission) -> bool:
    """:func:`certified` for a submission row."""
    return certified(
        tier=submission.tier, kind=submission.kind, image_digest=submission.image_digest, trust=submission.trust
    )


def artifact_runs(submission: Submission) -> list[Submission]:
    """The runs of ``submission``'s artifact on every blind tier: the Hidden submission and its
    children, in board order of tiers; ``[]`` for a submission that is no artifact's run."""
    root = submission.parent or submission
    if not root.children:
        return []
    order = {t: i for i, t in enumerate(BLIND_TIERS)}
    return sorted([root, *root.children], key=lambda s: (order.get(s.tier, len(order)), s.created_at))


def current_tier_row(session: Session, submission_id: str) -> Score | None:
    """The tier score row of the current scoring version (None: not scored with it)."""
    return session.scalar(
        select(Score).where(
            Score.submission_id == submission_id, Score.scene_id == "", Score.scoring_version == SCORER_VERSION
        )
    )


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
    submission = visible_provenance(session, submission_id=submission_id, viewer=viewer)
    rows = session.scalars(
        select(Score).where(Score.submission_id == submission.id, Score.scene_id == "").order_by(Score.id)
    ).all()
    return submission, list(rows)
