"""A cheap fingerprint of what the leaderboards are computed from, so a cached page can tell it
is out of date without recomputing the board.

Boards change when a score row is written (a submission scored or rescored) and when a tier's
active dataset changes. Score rows are append-only and keyed by an increasing id, and datasets
are few, so ``(max score id, active dataset ids)`` changes whenever a board may: two index
lookups, whatever the number of submissions. Organizer edits (baseline, trust) do not show in
it; the process that makes one drops its pages (:func:`services.api.page_cache.mark_stale`) and
other processes follow within ``leaderboard_cache_seconds``.
"""

from __future__ import annotations

from sqlalchemy import func, select

from db.models import Dataset, Score
from db.session import new_session

__all__ = ["board_generation"]


def board_generation() -> tuple[int, tuple[int, ...]]:
    """``(highest score row id, ids of the active datasets)``: equal values mean no new score
    and no dataset switch since."""
    with new_session() as session:
        top = session.scalar(select(func.max(Score.id))) or 0
        active = tuple(session.scalars(select(Dataset.id).where(Dataset.active).order_by(Dataset.id)))
    return top, active
