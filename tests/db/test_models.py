"""Constraints the database itself enforces, on SQLite and PostgreSQL: a score is written
once per (submission, scoring version, scene), one dataset is active per tier, one run per
attempt; outcomes are the sandbox's."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from db.migrate import upgrade_to_head
from db.models import Dataset, Outcome, Participant, Run, Score, Submission
from db.session import new_session

T0 = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture
def submission(db_url):
    upgrade_to_head()
    with new_session() as s:
        who = Participant(name="ann")
        ds = Dataset(
            tier="dev",
            content_hash="h" * 64,
            operator_version="edx-forward-v1",
            preset="small",
            full_path="-",
            view_path="-",
        )
        sub = Submission(participant=who, dataset=ds, tier="dev")
        s.add(sub)
        s.commit()
        return sub.id


def _score(submission_id: str, *, version: str = "edx-score-v1", scene: str = "") -> Score:
    return Score(
        submission_id=submission_id,
        scene_id=scene,
        scoring_version=version,
        operator_version="edx-forward-v1",
        harness_version="0.1.0",
        dataset_hash="h" * 64,
        submission_hash="s" * 64,
        score=0.5,
        blind=0.5,
        standard=0.5,
        psnr=20.0,
        ssim=0.5,
        consistency=0.5,
        metrics={"k": [1, 2]},
        started_at=T0,
    )


def test_a_score_is_written_once_per_version_and_scene(submission):
    with new_session() as s:
        s.add_all([_score(submission), _score(submission, scene="dev-s0")])
        s.commit()
        s.add(_score(submission))
        with pytest.raises(IntegrityError):
            s.commit()
        s.rollback()
        # A new scoring version appends beside the old rows; nothing is overwritten.
        s.add(_score(submission, version="edx-score-v2"))
        s.commit()
        versions = s.scalars(select(Score.scoring_version).where(Score.scene_id == "").order_by(Score.id)).all()
        assert versions == ["edx-score-v1", "edx-score-v2"]
        assert s.scalar(select(Score.metrics).where(Score.scene_id == "dev-s0")) == {"k": [1, 2]}


def test_one_active_dataset_per_tier(submission):
    with new_session() as s:
        s.add(
            Dataset(
                tier="dev",
                content_hash="x" * 64,
                operator_version="v",
                preset="small",
                full_path="-",
                view_path="-",
                active=True,
            )
        )
        with pytest.raises(IntegrityError):
            s.commit()
        s.rollback()
        s.add_all(
            [
                Dataset(
                    tier="dev",
                    content_hash="y" * 64,
                    operator_version="v",
                    preset="small",
                    full_path="-",
                    view_path="-",
                    active=False,
                ),
                Dataset(
                    tier="public",
                    content_hash="z" * 64,
                    operator_version="v",
                    preset="small",
                    full_path="-",
                    view_path="-",
                    active=True,
                ),
            ]
        )
        s.commit()
        assert s.scalar(select(func.count()).select_from(Dataset).where(Dataset.active.is_(True))) == 2


def test_one_run_per_attempt(submission):
    with new_session() as s:
        s.add(Run(submission_id=submission, attempt=1, worker="w1"))
        s.commit()
        s.add(Run(submission_id=submission, attempt=1, worker="w2"))
        with pytest.raises(IntegrityError):
            s.commit()


def test_timestamps_round_trip_in_utc(submission):
    with new_session() as s:
        created = s.get(Submission, submission).created_at
    # SQLite hands back naive datetimes, PostgreSQL aware ones: both are UTC.
    created = created if created.tzinfo else created.replace(tzinfo=UTC)
    assert abs((created - datetime.now(UTC)).total_seconds()) < 60


def test_outcomes_are_the_sandbox_outcomes():
    from harness.sandbox import Outcome as SandboxOutcome

    assert {o.value for o in Outcome} == {o.value for o in SandboxOutcome}
