"""Leaderboards (design §7).

Ranked by score, descending; equal scores share a rank (competition ranking 1, 1, 3). Only
scored submissions against the tier's active dataset, with a score row of the current
scoring version, appear. One entry per participant per tier: the best scored submission
(ties: the earlier) or, with ``leaderboard_policy=latest``, the latest. The overall board
lists only participants with an entry on all of Public, Dev and Hidden, each tier's score and
PSNR / SSIM side by side. A Hidden entry from an image the server ran itself carries the
Certified badge.

The choice of entry and the ranking run in SQL (window functions, on SQLite and PostgreSQL).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from db.models import Dataset, Kind, Participant, Score, Status, Submission
from harness.scoring import SCORER_VERSION, overall_score
from harness.tiers import BLIND_TIERS, TIERS
from services.errors import ServiceError
from services.settings import get_settings

__all__ = ["BOARDS", "MAX_PER_PAGE", "Entry", "leaderboard"]

BOARDS = TIERS + ("overall",)
MAX_PER_PAGE = 500


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
    #: Overall board only: ``{tier: {"score", "psnr", "ssim", "submission_id"}}``.
    tiers: dict[str, dict] = field(default_factory=dict)


def _chosen(tier: str) -> Select:
    """Each participant's one entry on ``tier``, with its competition rank (not yet ordered)."""
    if get_settings().leaderboard_policy == "latest":
        pick_order = (Submission.created_at.desc(), Submission.id)
    else:
        pick_order = (Score.score.desc(), Submission.created_at, Submission.id)
    candidates = (
        select(
            Score.score, Score.psnr, Score.ssim,
            Submission.id.label("submission_id"), Submission.method, Submission.source, Submission.kind,
            Submission.image_digest, Submission.created_at, Participant.name, Participant.team,
            func.row_number().over(partition_by=Submission.participant_id, order_by=pick_order).label("pick"),
        )
        .join(Submission, Score.submission_id == Submission.id)
        .join(Participant, Submission.participant_id == Participant.id)
        .join(Dataset, Submission.dataset_id == Dataset.id)
        .where(
            Score.scene_id == "",
            Score.scoring_version == SCORER_VERSION,
            Submission.tier == tier,
            Submission.status == Status.scored,
            Dataset.active.is_(True),
        )
        .subquery()
    )
    return select(
        candidates,
        func.rank().over(order_by=candidates.c.score.desc()).label("rank"),
        func.count().over().label("total"),  # the board's size, from the same scan
    ).where(candidates.c.pick == 1)


def _entry(tier: str, row) -> Entry:
    return Entry(
        rank=row.rank, participant=row.name, team=row.team, method=row.method, source=row.source,
        score=row.score, psnr=row.psnr, ssim=row.ssim,
        certified=tier == "hidden" and row.kind == Kind.container and bool(row.image_digest),
        submission_id=row.submission_id, submitted_at=row.created_at,
    )


def _tier_board(session: Session, tier: str, *, offset: int | None = None, limit: int | None = None) -> tuple[list[Entry], int]:
    ranked = _chosen(tier).subquery()
    stmt = select(ranked).order_by(ranked.c.rank, ranked.c.created_at, ranked.c.name).offset(offset).limit(limit)
    rows = session.execute(stmt).all()
    if rows:
        total = rows[0].total
    else:  # an empty board, or a page past its end
        total = session.scalar(select(func.count()).select_from(ranked)) if offset else 0
    return [_entry(tier, row) for row in rows], total


def _overall(session: Session) -> list[Entry]:
    per_tier = {t: {e.participant: e for e in _tier_board(session, t)[0]} for t in BLIND_TIERS}
    entries = []
    for name, public in per_tier["public"].items():
        if not all(name in per_tier[t] for t in BLIND_TIERS):
            continue
        mine = {t: per_tier[t][name] for t in BLIND_TIERS}
        tiers = {t: {"score": e.score, "psnr": e.psnr, "ssim": e.ssim, "submission_id": e.submission_id} for t, e in mine.items()}
        hidden = mine["hidden"]
        entries.append(Entry(
            rank=0, participant=name, team=public.team, method=hidden.method or public.method,
            source=hidden.source or public.source, score=overall_score({t: e.score for t, e in mine.items()}),
            psnr=None, ssim=None, certified=hidden.certified, submission_id=None,
            submitted_at=max(e.submitted_at for e in mine.values()), tiers=tiers,
        ))
    entries.sort(key=lambda e: (-e.score, e.submitted_at, e.participant))
    for i, e in enumerate(entries):
        e.rank = entries[i - 1].rank if i and e.score == entries[i - 1].score else i + 1
    return entries


def leaderboard(session: Session, *, board: str, page: int = 1, per_page: int = 50) -> tuple[list[Entry], int]:
    """One page of ``board`` (a tier or ``overall``) and the board's total number of entries."""
    if board not in BOARDS:
        raise ServiceError(f"unknown leaderboard {board!r}; boards are {', '.join(BOARDS)}")
    if page < 1 or not 1 <= per_page <= MAX_PER_PAGE:
        raise ServiceError(f"page must be ≥ 1 and per_page between 1 and {MAX_PER_PAGE}")
    offset = (page - 1) * per_page
    if board == "overall":
        entries = _overall(session)
        return entries[offset : offset + per_page], len(entries)
    return _tier_board(session, board, offset=offset, limit=per_page)
