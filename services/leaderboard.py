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

from sqlalchemy import Select, case, func, literal, select
from sqlalchemy.orm import Session

from db.models import Dataset, Kind, Participant, Score, Status, Submission, Trust
from harness.scoring import SCORER_VERSION, overall_score
from harness.tiers import BLIND_TIERS, TIERS
from services.errors import ServiceError
from services.settings import get_settings

__all__ = ["BOARDS", "MAX_PER_PAGE", "Entry", "leaderboard"]

BOARDS = TIERS + ("overall",)
MAX_PER_PAGE = 500


@dataclass
class Entry:
    #: None for a reference baseline: shown at its score, outside the ranking.
    rank: int | None
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
    #: 95 % bootstrap interval of ``score`` (issue 10); None when the row has none.
    ci_low: float | None = None
    ci_high: float | None = None
    #: Adjacent entries the paired bootstrap cannot separate share a tie group (None: not tied).
    tie_group: int | None = None
    #: An organizer-marked reference baseline: shown, but not competing (issue 9).
    baseline: bool = False
    description: str = ""


def _picked(*tiers: str) -> Select:
    """Each participant's one scored entry on each of ``tiers`` (unranked)."""
    if get_settings().leaderboard_policy == "latest":
        pick_order = (Submission.created_at.desc(), Submission.id)
    else:
        pick_order = (Score.score.desc(), Submission.created_at, Submission.id)
    candidates = (
        select(
            Score.score, Score.psnr, Score.ssim,
            Submission.id.label("submission_id"), Submission.method, Submission.source, Submission.kind,
            Submission.image_digest, Submission.created_at, Submission.tier, Submission.participant_id,
            Submission.baseline, Submission.trust, Submission.description,
            Participant.name, Participant.team,
            # A participant's entries compete as one; each baseline method of theirs is its own entry.
            func.row_number().over(partition_by=(Submission.participant_id, Submission.tier, _baseline_key()), order_by=pick_order).label("pick"),
        )
        .join(Submission, Score.submission_id == Submission.id)
        .join(Participant, Submission.participant_id == Participant.id)
        .join(Dataset, Submission.dataset_id == Dataset.id)
        .where(
            Score.scene_id == "",
            Score.scoring_version == SCORER_VERSION,
            Submission.tier.in_(tiers),
            Submission.status == Status.scored,
            Dataset.active.is_(True),
        )
        .subquery()
    )
    return select(candidates).where(candidates.c.pick == 1)


def _baseline_key():
    """'' for a competing entry, the method name for a reference baseline."""
    return case((Submission.baseline.is_(True), literal("b:") + Submission.method), else_=literal(""))


def _certified(tier: str, kind: str, image_digest: str | None, trust: str | None = None) -> bool:
    """Automatic: a Hidden score from a run the server made itself (an image, or a script in the
    pinned base image) with its digest recorded. An organizer's trust mark overrides it."""
    if trust == Trust.granted:
        return True
    if trust == Trust.revoked:
        return False
    return tier == "hidden" and kind in (Kind.container, Kind.script) and bool(image_digest)


def _tier_board(session: Session, tier: str, *, offset: int, limit: int) -> tuple[list[Entry], int]:
    picked = _picked(tier).subquery()
    ranked = select(
        picked,
        # Baselines are ranked apart (then shown unranked), so they never displace a participant.
        func.rank().over(partition_by=picked.c.baseline, order_by=picked.c.score.desc()).label("rank"),
        func.count().over().label("total"),  # the board's size, from the same scan
    ).subquery()
    stmt = select(ranked).order_by(ranked.c.score.desc(), ranked.c.baseline, ranked.c.created_at, ranked.c.name).offset(offset).limit(limit)
    rows = session.execute(stmt).all()
    if rows:
        total = rows[0].total
    else:  # an empty board, or a page past its end
        total = session.scalar(select(func.count()).select_from(ranked)) if offset else 0
    entries = [
        Entry(
            rank=None if row.baseline else row.rank, participant=row.name, team=row.team, method=row.method, source=row.source,
            score=row.score, psnr=row.psnr, ssim=row.ssim, certified=_certified(tier, row.kind, row.image_digest, row.trust),
            submission_id=row.submission_id, submitted_at=row.created_at, baseline=bool(row.baseline),
            description=row.description,
        )
        for row in rows
    ]
    return entries, total


def _overall(session: Session, *, offset: int, limit: int) -> tuple[list[Entry], int]:
    """Participants with an entry on every blind tier, by :func:`harness.scoring.overall_score`.

    One scan picks every participant's entry on the three tiers; only the requested page
    becomes objects.
    """
    by_participant: dict[tuple, dict] = {}
    for row in session.execute(_picked(*BLIND_TIERS)):
        key = (row.participant_id, row.method if row.baseline else None)  # a baseline: the same method on every tier
        by_participant.setdefault(key, {})[row.tier] = row
    complete = []
    for mine in by_participant.values():
        if len(mine) == len(BLIND_TIERS):
            score = overall_score({t: mine[t].score for t in BLIND_TIERS})
            latest = max(mine[t].created_at for t in BLIND_TIERS)
            baseline = all(bool(mine[t].baseline) for t in BLIND_TIERS)
            complete.append((score, baseline, latest, mine["public"].name, mine))
    complete.sort(key=lambda x: (-x[0], x[1], x[2], x[3]))
    entries = []
    rank = ranked = 0
    previous = None
    for i, (score, baseline, latest, name, mine) in enumerate(complete[: offset + limit]):
        if not baseline:  # baselines are shown unranked and do not count towards ranks
            ranked += 1
            rank = rank if previous is not None and score == previous else ranked
            previous = score
        if i < offset:
            continue
        public, hidden = mine["public"], mine["hidden"]
        tiers = {t: {"score": mine[t].score, "psnr": mine[t].psnr, "ssim": mine[t].ssim, "submission_id": mine[t].submission_id}
                 for t in BLIND_TIERS}
        entries.append(Entry(
            participant=name, team=public.team, method=hidden.method or public.method,
            source=hidden.source or public.source, score=score, psnr=None, ssim=None,
            certified=_certified("hidden", hidden.kind, hidden.image_digest, hidden.trust), submission_id=None,
            submitted_at=latest, tiers=tiers, rank=None if baseline else rank, baseline=baseline,
            description=hidden.description or public.description,
        ))
    return entries, len(complete)


def leaderboard(session: Session, *, board: str, page: int = 1, per_page: int = 50) -> tuple[list[Entry], int]:
    """One page of ``board`` (a tier or ``overall``) and the board's total number of entries."""
    if board not in BOARDS:
        raise ServiceError(f"unknown leaderboard {board!r}; boards are {', '.join(BOARDS)}")
    if page < 1 or not 1 <= per_page <= MAX_PER_PAGE:
        raise ServiceError(f"page must be ≥ 1 and per_page between 1 and {MAX_PER_PAGE}")
    offset = (page - 1) * per_page
    if board == "overall":
        return _overall(session, offset=offset, limit=per_page)
    return _tier_board(session, board, offset=offset, limit=per_page)
