"""services/submissions/state.py on SQLite and PostgreSQL: claim is a compare-and-set (a
duplicate delivery never runs a submission twice), leases expire into the reaper, every
attempt is a Run row, the transition table refuses illegal moves, rescoring only finished
submissions.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from database_testing import reset_caches
from sqlalchemy import select, update

from db.migrate import upgrade_to_head
from db.models import Dataset, Outcome, Participant, Run, Status, Submission
from db.session import new_session
from harness.errors import PlatformError
from services.errors import ConflictError, NotFoundError
from services.submissions.state import (
    TRANSITIONS,
    UNEXPECTED,
    TransitionError,
    claim,
    reap_expired,
    record_platform_failure,
    renew_lease,
    rescore,
    retry_policy,
    stale_queued,
    update_status,
)


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


def _expire(submission_id: str) -> None:
    with new_session() as s:
        s.execute(
            update(Submission)
            .where(Submission.id == submission_id)
            .values(lease_expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
        s.commit()


def _runs(submission_id: str) -> list[tuple[int, str, str | None]]:
    with new_session() as s:
        return [
            (r.attempt, r.worker, r.outcome)
            for r in s.scalars(select(Run).where(Run.submission_id == submission_id).order_by(Run.attempt))
        ]


def test_claim_once_then_duplicates_do_nothing(sid):
    with new_session() as s:
        first = claim(s, sid, worker="w1")
        assert first.status == Status.running and first.attempt == 1 and first.lease_expires_at is not None
    with new_session() as s:
        assert claim(s, sid, worker="w2") is None  # the lease is live: a duplicate delivery
        assert claim(s, "no-such-id", worker="w2") is None
    assert _runs(sid) == [(1, "w1", None)]


def test_expired_lease_is_claimed_again_and_the_dead_run_closed(sid):
    with new_session() as s:
        claim(s, sid, worker="w1")
    _expire(sid)
    with new_session() as s:
        again = claim(s, sid, worker="w2")
        assert again.attempt == 2
    assert _runs(sid) == [(1, "w1", "platform_error"), (2, "w2", None)]


def test_finished_submissions_are_never_claimed(sid):
    with new_session() as s:
        sub = claim(s, sid, worker="w1")
        update_status(sub, status=Status.scoring)
        update_status(sub, status=Status.scored, outcome=Outcome.succeeded)
        s.commit()
        assert sub.finished_at is not None and sub.lease_expires_at is None
    with new_session() as s:
        assert claim(s, sid, worker="w2") is None
    assert _runs(sid) == [(1, "w1", "succeeded")]


def test_renew_lease_only_for_the_current_attempt(sid):
    with new_session() as s:
        sub = claim(s, sid, worker="w1")
        before = sub.lease_expires_at
    with new_session() as s:
        assert renew_lease(s, sid, attempt=1)
        assert not renew_lease(s, sid, attempt=2)
        assert s.get(Submission, sid).lease_expires_at >= before


def test_run_diagnostics_are_copied_when_a_run_ends(sid):
    with new_session() as s:
        sub = claim(s, sid, worker="w1")
        sub.exit_code, sub.runtime_seconds, sub.peak_memory_bytes = 137, 2.5, 3 * 2**20
        update_status(sub, status=Status.failed, outcome=Outcome.oom_killed, error_message="x" * 5000)
        s.commit()
        assert len(sub.error_message) == 1024
        run = s.scalar(select(Run).where(Run.submission_id == sid))
        assert (run.outcome, run.exit_code, run.runtime_seconds, run.peak_memory_bytes) == (
            "oom_killed",
            137,
            2.5,
            3 * 2**20,
        )


def test_reaper_requeues_then_fails_uncharged_after_max_attempts(sid, monkeypatch):
    monkeypatch.setenv("EDX_MAX_ATTEMPTS", "2")
    reset_caches()
    for attempt in (1, 2):
        with new_session() as s:
            assert claim(s, sid, worker=f"w{attempt}").attempt == attempt
        _expire(sid)
        with new_session() as s:
            todo = reap_expired(s)
            s.commit()
            sub = s.get(Submission, sid)
        if attempt == 1:
            assert todo == [(sid, "hdf5")] and sub.status == Status.queued and sub.charged
        else:
            assert todo == [] and sub.status == Status.failed and sub.outcome == Outcome.platform_error
            assert sub.charged is False
            assert sub.error_message.startswith("the platform lost this run 2 times")
    assert [r[2] for r in _runs(sid)] == ["platform_error", "platform_error"]


def test_stale_queued_lists_old_queued_submissions_only(sid):
    with new_session() as s:
        assert stale_queued(s) == []
        assert stale_queued(s, now=datetime.now(UTC) + timedelta(hours=1)) == [(sid, "hdf5")]


def test_rescore_only_finished_submissions(sid):
    with new_session() as s:
        with pytest.raises(ConflictError, match="rescore it once it has finished"):
            rescore(s, submission_id=sid)  # queued
        with pytest.raises(NotFoundError):
            rescore(s, submission_id="nope")
        sub = claim(s, sid, worker="w1")
        update_status(sub, status=Status.failed, outcome=Outcome.invalid_output, error_message="bad")
        s.commit()
        again = rescore(s, submission_id=sid)
        s.commit()
        assert (again.status, again.outcome, again.error_message, again.finished_at) == ("queued", None, None, None)


def test_the_transition_table_refuses_an_illegal_move(sid):
    with new_session() as s:
        sub = s.get(Submission, sid)
        with pytest.raises(TransitionError, match=f"submission {sid} cannot go from queued to scored"):
            update_status(sub, status=Status.scored)  # never claimed, never run
        assert sub.status == Status.queued and sub.finished_at is None  # nothing changed
        sub = claim(s, sid, worker="w1")
        update_status(sub, status=Status.scoring)
        update_status(sub, status=Status.scored, outcome=Outcome.succeeded)
        s.commit()
        for illegal in (Status.running, Status.scoring, Status.failed, Status.scored):
            with pytest.raises(TransitionError):
                update_status(sub, status=illegal)
        update_status(sub, status=Status.queued)  # a rescore is the only way out of scored
    assert set(TRANSITIONS) == set(Status)  # every state has its row


def test_one_retry_policy_for_every_platform_failure(sid, monkeypatch):
    monkeypatch.setenv("EDX_MAX_ATTEMPTS", "2")
    reset_caches()
    assert [retry_policy().backoff(a) for a in (1, 2, 3, 10)] == [2.0, 4.0, 8.0, 60.0]
    with new_session() as s:
        sub = claim(s, sid, worker="w1")
        assert record_platform_failure(sub, PlatformError("the daemon is gone")) is True
        s.commit()
        assert (sub.status, sub.error_message, sub.charged) == ("queued", "the daemon is gone", True)
        sub = claim(s, sid, worker="w2")
        assert record_platform_failure(sub, PlatformError("the daemon is gone")) is False
        s.commit()
        assert (sub.status, sub.outcome, sub.charged) == ("failed", "platform_error", False)
        assert sub.error_message == "the daemon is gone (after 2 attempts; not charged)"
    with new_session() as s:  # a bug is not retried: it would fail the same way
        sub = rescore(s, submission_id=sid)
        s.commit()
        sub = claim(s, sid, worker="w3")
        assert record_platform_failure(sub, ValueError("a bug")) is False
        assert (sub.status, sub.outcome, sub.error_message) == ("failed", "platform_error", UNEXPECTED)
