"""Exactly-once scoring and the state machine's edges, on SQLite and PostgreSQL, with real
concurrency (threads on their own sessions, released together by a barrier)."""

from __future__ import annotations

import io
import threading
from datetime import timedelta

import pytest
from arena_testing import ORG, add_participant

from db.models import Outcome, Status, Submission, utcnow
from db.session import new_session
from services.errors import QuotaError


def _together(n: int, fn) -> list:
    """Run ``fn(i)`` in ``n`` threads released at the same instant; results (or exceptions)."""
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def body(i: int) -> None:
        barrier.wait(timeout=30)
        try:
            results[i] = fn(i)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    return results


def _submit(client, headers, payload: bytes) -> str:
    r = client.post(
        "/api/v1/submissions",
        data={"tier": "dev", "method": "nnls"},
        files={"file": ("r.h5", payload)},
        headers=headers,
    )
    assert r.status_code == 202, r.text
    return r.json()["id"]


def test_same_task_delivered_concurrently_scores_once(client, dev_result):
    """Six deliveries of one score task at the same instant: one claim, one run, one set of rows."""
    from reliability_testing import db_counts

    from services.worker.tasks import score_submission_task

    alice = add_participant(client, "alice")
    sid = _submit(client, alice, dev_result)
    _together(6, lambda _i: score_submission_task.apply(args=(sid,)).get(disable_sync_subtasks=False))
    state = client.get(f"/api/v1/submissions/{sid}", headers=alice).json()
    assert state["status"] == "scored" and state["attempt"] == 1 and state["error_message"] is None
    assert db_counts(sid) == (4, 1)  # 3 scenes + the tier row, written once; one Run
    # A late duplicate after the fact does nothing either.
    score_submission_task.apply(args=(sid,))
    assert db_counts(sid) == (4, 1)


def test_concurrent_claims_one_winner(client, dev_result):
    """The claim is the only door to running a submission (HDF5 or container): of 8 workers
    asking at once, exactly one gets it, so a container can never start twice concurrently."""
    from services.submissions.state import claim

    alice = add_participant(client, "alice")
    sid = _submit(client, alice, dev_result)

    def take(i: int):
        with new_session() as s:
            won = claim(s, sid, worker=f"w{i}")
            return None if won is None else won.attempt

    results = _together(8, take)
    assert [r for r in results if r is not None] == [1], results
    assert not any(isinstance(r, Exception) for r in results), results


def test_simultaneous_uploads_cannot_both_take_the_last_slot(client, dev_result, monkeypatch):
    """Quota 2, one used: four uploads at once get exactly one more slot."""
    from core.settings import get_settings
    from services.submissions.intake import create_submission

    monkeypatch.setenv("EDX_QUOTA_DEV", "2")
    get_settings.cache_clear()
    alice = add_participant(client, "alice")
    _submit(client, alice, dev_result)

    def upload(_i: int):
        from db.models import Participant

        with new_session() as s:
            me = s.query(Participant).filter_by(name="alice").one()
            pending = create_submission(s, participant=me, kind="hdf5", tier="dev", upload=io.BytesIO(dev_result))
            s.commit()
            return pending.submission.id

    results = _together(4, upload)
    created = [r for r in results if isinstance(r, str)]
    refused = [r for r in results if isinstance(r, QuotaError)]
    assert len(created) == 1 and len(refused) == 3, results
    assert "daily quota reached: 2 of 2 dev submissions today" in refused[0].message
    with new_session() as s:
        assert s.query(Submission).count() == 2
    # A refused upload leaves no file behind: only the two accepted ones are stored.
    uploads = get_settings().storage_dir / "uploads"
    assert sorted(p.name for p in uploads.iterdir()) == sorted(f"{i}.h5" for i in [*created, _first_id(client)])


def _first_id(client) -> str:
    with new_session() as s:
        return s.query(Submission).order_by(Submission.created_at).first().id


def test_reaper_retries_then_fails_uncharged_and_rescore_starts_a_new_round(client, dev_result):
    from services.submissions.state import claim, reap_expired, rescore

    alice = add_participant(client, "alice")
    sid = _submit(client, alice, dev_result)
    for attempt in (1, 2, 3):
        with new_session() as s:
            assert claim(s, sid, worker=f"w{attempt}").attempt == attempt
            s.get(Submission, sid).lease_expires_at = utcnow() - timedelta(seconds=1)  # its worker died
            s.commit()
            requeued = reap_expired(s)
            s.commit()
            assert requeued == ([] if attempt == 3 else [(sid, "hdf5")])
        state = client.get(f"/api/v1/submissions/{sid}", headers=alice).json()
        if attempt < 3:
            assert state["status"] == "queued" and state["attempt"] == attempt
            assert (
                state["error_message"]
                == f"the worker running attempt {attempt} of 3 stopped; the run was requeued automatically"
            )
    assert state["status"] == "failed" and state["outcome"] == Outcome.platform_error and state["charged"] is False
    assert "lost this run 3 times" in state["error_message"] and "not charged" in state["error_message"]

    with new_session() as s:
        rescore(s, submission_id=sid)
        s.commit()
        again = claim(s, sid, worker="w4")
        assert again.attempt == 1  # a new round: max_attempts again
        assert [r.attempt for r in again.runs] == [1, 2, 3, 4]  # every run kept, numbered in order


def test_stale_queued_resent_once_per_period(client, dev_result):
    """A queued submission whose message was lost is found by the periodic reaper, and the
    next reaper pass (in another worker, say) does not send it again within the period."""
    from services.submissions.state import stale_queued

    alice = add_participant(client, "alice")
    sid = _submit(client, alice, dev_result)
    with new_session() as s:
        assert stale_queued(s) == []  # fresh: its message is presumably on its way
        later = utcnow() + timedelta(seconds=5)
        assert stale_queued(s, now=later) == [(sid, "hdf5")]
        s.commit()
        assert stale_queued(s, now=later + timedelta(seconds=1)) == []
        assert stale_queued(s, now=later + timedelta(seconds=4)) == [(sid, "hdf5")]


def test_admin_lists_stuck_and_retried_runs(client, dev_result):
    from services.submissions.state import claim, reap_expired

    alice = add_participant(client, "alice")
    old, running, fine = (_submit(client, alice, dev_result) for _ in range(3))
    with new_session() as s:
        s.get(Submission, old).created_at = utcnow() - timedelta(minutes=30)  # queued for half an hour
        claim(s, running, worker="dead")
        s.get(Submission, running).lease_expires_at = utcnow() - timedelta(seconds=5)  # its worker died
        claim(s, fine, worker="alive")
        s.commit()

    r = client.get("/api/v1/admin/runs", params={"state": "stuck", "older_than_minutes": 10}, headers=ORG)
    assert r.status_code == 200, r.text
    assert {x["id"]: x["status"] for x in r.json()["data"]} == {old: "queued", running: "running"}

    with new_session() as s:
        reap_expired(s)
        s.commit()
        claim(s, running, worker="second")
    r = client.get("/api/v1/admin/runs", params={"state": "retried"}, headers=ORG)
    assert [(x["id"], x["attempt"]) for x in r.json()["data"]] == [(running, 2)]

    assert client.get("/api/v1/admin/runs", params={"state": "stuck"}, headers=alice).status_code == 403
    bad = client.get("/api/v1/admin/runs", params={"state": "lost"}, headers=ORG)
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"


@pytest.mark.parametrize("status", [Status.scored, Status.failed])
def test_finished_submission_task_is_a_no_op(client, dev_result, status):
    from reliability_testing import db_counts

    from services.worker.tasks import run_submission_task, score_submission_task

    alice = add_participant(client, "alice")
    sid = _submit(client, alice, dev_result)
    with new_session() as s:
        s.get(Submission, sid).status = status
        s.commit()
    score_submission_task.apply(args=(sid,))
    run_submission_task.apply(args=(sid,))
    assert db_counts(sid) == (0, 0)


def test_api_start_reaps_expired_runs_and_resends_lost_messages(client, dev_result):
    """The API's start-up reaper (not only the workers'): a run whose worker died is requeued
    and a queued submission whose message was lost is sent again."""
    from fastapi.testclient import TestClient

    from core.settings import get_settings
    from services.main import app
    from services.submissions.state import claim

    alice = add_participant(client, "alice")
    dead, lost = _submit(client, alice, dev_result), _submit(client, alice, dev_result)
    with new_session() as s:
        claim(s, dead, worker="gone")
        s.get(Submission, dead).lease_expires_at = utcnow() - timedelta(seconds=1)
        s.get(Submission, lost).created_at = utcnow() - timedelta(minutes=10)
        s.commit()
    queue_dir = get_settings().broker_dir / "queue"
    before = len(list(queue_dir.iterdir()))
    with TestClient(app) as again:  # a restarted API
        state = again.get(f"/api/v1/submissions/{dead}", headers=alice).json()
    assert state["status"] == "queued" and state["attempt"] == 1
    assert "stopped; the run was requeued automatically" in state["error_message"]
    assert len(list(queue_dir.iterdir())) == before + 2  # both sent to the (embedded) broker again
