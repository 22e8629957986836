"""Daily quotas per participant per tier (design §7), and the lock that serialises one
participant's submissions around the final check and the insert."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from core.settings import get_settings
from db.models import Participant, Role, Submission, utcnow
from services.errors import QuotaError

__all__ = ["check_quota", "lock_participant"]


def lock_participant(session: Session, participant: Participant) -> None:
    """Serialise this participant's submissions until the transaction ends.

    PostgreSQL: ``SELECT … FOR UPDATE`` on the participant row (other participants are not
    held up). SQLite has no row locks: a no-op write takes the database write lock, as
    ``BEGIN IMMEDIATE`` would, so hold it only around the final check and insert.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(Participant.id).where(Participant.id == participant.id).with_for_update())
    else:
        session.execute(
            update(Participant)
            .where(Participant.id == participant.id)
            .values(id=Participant.id)
            .execution_options(synchronize_session=False)
        )


def check_quota(
    session: Session, *, participant: Participant, tier: str, now: datetime | None = None, lock: bool = False
) -> None:
    """Refuse a submission past the participant's daily quota on ``tier`` (UTC day).

    Counts the day's charged submissions; a run that failed for a platform reason is
    uncharged, so it gives its slot back. Organizers have no quota.

    ``lock=True`` (right before the insert; the caller commits soon after) takes
    :func:`lock_participant` first, so two simultaneous uploads cannot both take the last
    slot. Without it the check is a cheap early refusal only.
    """
    limit = get_settings().quota(tier)
    if not limit or participant.role == Role.organizer:
        return
    if lock:
        lock_participant(session, participant)
    now = now or utcnow()
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    used = session.scalar(
        select(func.count())
        .select_from(Submission)
        .where(
            Submission.participant_id == participant.id,
            Submission.tier == tier,
            Submission.charged.is_(True),
            Submission.created_at >= day,
        )
    )
    if (used or 0) >= limit:
        reopens = day + timedelta(days=1)
        raise QuotaError(
            f"daily quota reached: {used} of {limit} {tier} submissions today; "
            f"the next slot opens at {reopens:%Y-%m-%d %H:%M} UTC"
        )
