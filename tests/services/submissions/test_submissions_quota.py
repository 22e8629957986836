"""services/submissions/quota.py: the daily quota counts the UTC day's charged submissions;
uncharged runs and organizers do not count.
"""

from __future__ import annotations

from datetime import UTC, timedelta

import pytest
from database_testing import reset_caches
from sqlalchemy import select, update

from db.migrate import upgrade_to_head
from db.models import Dataset, Participant, Role, Submission
from db.session import new_session
from services.errors import QuotaError
from services.submissions.quota import check_quota


@pytest.fixture
def sid(backend):
    upgrade_to_head()
    with new_session() as s:
        ds = Dataset(
            tier="dev", content_hash="h" * 64, operator_version="v", preset="small", full_path="-", view_path="-"
        )
        sub = Submission(participant=Participant(name="ann"), dataset=ds, tier="dev")
        s.add(sub)
        s.commit()
        return sub.id


def test_quota_counts_the_utc_day_and_skips_uncharged_and_organizers(sid, monkeypatch):
    monkeypatch.setenv("EDX_QUOTA_DEV", "1")
    reset_caches()
    with new_session() as s:
        ann = s.scalar(select(Participant).where(Participant.name == "ann"))
        created = s.get(Submission, sid).created_at.replace(tzinfo=UTC)
        with pytest.raises(QuotaError, match=r"next slot opens at \d{4}-\d\d-\d\d 00:00 UTC"):
            check_quota(s, participant=ann, tier="dev")
        check_quota(s, participant=ann, tier="dev", now=created + timedelta(days=1))  # a new UTC day
        check_quota(s, participant=ann, tier="public")  # unlimited
        s.execute(update(Submission).values(charged=False))
        check_quota(s, participant=ann, tier="dev")
        s.execute(update(Submission).values(charged=True))
        ann.role = Role.organizer
        check_quota(s, participant=ann, tier="dev")
