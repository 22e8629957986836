"""Leaderboards (design §7).

Ranked by score, descending; equal scores share a rank (competition ranking 1, 1, 3). Only
scored submissions appear. One entry per participant per tier: the best scored submission
(ties: the earlier) or, with ``leaderboard_policy=latest``, the latest. The overall board lists
only participants with an entry on all of Public, Dev and Hidden. A Hidden entry from an image
the server ran itself carries the Certified badge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Kind, Participant, Score, Status, Submission
from harness.scoring import SCORER_VERSION, overall_score
from harness.tiers import BLIND_TIERS, TIERS
from services.errors import ServiceError
from services.settings import get_settings

BOARDS = TIERS + ("overall",)


@dataclass
class Entry:
    rank: int
    participant: str
    team: str
    method: str
    source: str
    score: float
    psnr: float | None
    ssim: float | None
    certified: bool
    submission_id: str | None
    submitted_at: datetime | None
    tiers: dict[str, dict] = field(default_factory=dict)


def _tier_entries(session: Session, tier: str) -> list[Entry]:
    rows = session.execute(
        select(Score, Submission, Participant)
        .join(Submission, Score.submission_id == Submission.id)
        .join(Participant, Submission.participant_id == Participant.id)
        .where(
            Score.scene_id == "",
            Score.scoring_version == SCORER_VERSION,
            Submission.tier == tier,
            Submission.status == Status.scored,
        )
    ).all()
    latest = get_settings().leaderboard_policy == "latest"
    chosen: dict[int, tuple[Score, Submission, Participant]] = {}
    for score, sub, who in rows:
        current = chosen.get(who.id)
        if current is None:
            chosen[who.id] = (score, sub, who)
            continue
        c_score, c_sub, _ = current
        if latest:
            better = sub.created_at > c_sub.created_at
        else:
            better = score.score > c_score.score or (score.score == c_score.score and sub.created_at < c_sub.created_at)
        if better:
            chosen[who.id] = (score, sub, who)
    entries = [
        Entry(
            rank=0, participant=who.name, team=who.team, method=sub.method, source=sub.source,
            score=score.score, psnr=score.psnr, ssim=score.ssim,
            certified=tier == "hidden" and sub.kind == Kind.container and bool(sub.image_digest),
            submission_id=sub.id, submitted_at=sub.created_at,
        )
        for score, sub, who in chosen.values()
    ]
    return entries


def _rank(entries: list[Entry]) -> list[Entry]:
    entries.sort(key=lambda e: (-e.score, e.submitted_at or datetime.min, e.participant))
    for i, e in enumerate(entries):
        e.rank = entries[i - 1].rank if i and e.score == entries[i - 1].score else i + 1
    return entries


def _overall(session: Session) -> list[Entry]:
    per_tier = {t: {e.participant: e for e in _tier_entries(session, t)} for t in BLIND_TIERS}
    entries = []
    for name, public in per_tier["public"].items():
        if not all(name in per_tier[t] for t in BLIND_TIERS):
            continue
        tiers = {t: {"score": per_tier[t][name].score, "psnr": per_tier[t][name].psnr, "ssim": per_tier[t][name].ssim,
                     "submission_id": per_tier[t][name].submission_id} for t in BLIND_TIERS}
        score = overall_score({t: tiers[t]["score"] for t in BLIND_TIERS})
        hidden = per_tier["hidden"][name]
        entries.append(Entry(
            rank=0, participant=name, team=public.team, method=hidden.method or public.method,
            source=hidden.source or public.source, score=score, psnr=None, ssim=None,
            certified=hidden.certified, submission_id=None,
            submitted_at=max(per_tier[t][name].submitted_at for t in BLIND_TIERS), tiers=tiers,
        ))
    return entries


def leaderboard(session: Session, *, board: str, page: int = 1, per_page: int = 50) -> tuple[list[Entry], int]:
    """One page of a board and the total number of entries."""
    if board not in BOARDS:
        raise ServiceError(f"unknown leaderboard {board!r}; boards are {', '.join(BOARDS)}")
    if page < 1 or not 1 <= per_page <= 500:
        raise ServiceError("page must be ≥ 1 and per_page between 1 and 500")
    entries = _rank(_overall(session) if board == "overall" else _tier_entries(session, board))
    start = (page - 1) * per_page
    return entries[start : start + per_page], len(entries)
