"""Attacks on db/board_entries.py: ways the table the boards read can differ from the pick rule
applied afresh (or a board read fail), on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from database_testing import reset_caches
from sqlalchemy import select
from test_board_entries import T0, _afresh, _dataset, _score_row, _table, postgres  # noqa: F401

from db import board_entries
from db.migrate import upgrade_to_head
from db.models import BoardEntry, BoardRule, Participant, Submission
from db.session import new_session
from services.leaderboard import leaderboard


def _method(session, *, score: float, created: int, method: str = "M", version: str | None = None) -> Submission:
    who = session.scalar(select(Participant))
    from db.models import Dataset

    d = session.scalar(select(Dataset).where(Dataset.tier == "dev", Dataset.active.is_(True)))
    sub = Submission(
        participant=who, dataset=d, tier="dev", method=method, status="scored", created_at=T0 + timedelta(hours=created)
    )
    session.add(sub)
    session.flush()
    session.add(_score_row(sub, score) if version is None else _score_row(sub, score, version=version))
    return sub


def _setup() -> str:
    upgrade_to_head()
    with new_session() as s:
        s.add_all([_dataset("dev"), Participant(name="ann", team="A")])
        s.flush()
        best = _method(s, score=0.9, created=0)
        s.commit()
        leaderboard(s, board="dev")  # the reader builds the table under its rule
        return best.id


def test_a_writer_under_an_older_scoring_version_leaves_an_entry_the_reader_cannot_show(db_url, monkeypatch):
    """Rolling deploy: the web process runs the new scorer and has rebuilt the table; a worker
    still on the old scorer scores a submission of the same method. Its flush refreshes the
    method under *its* rule (rows of the old version), though board_rules names the new one:
    the method's entry becomes a submission without a current score row (the board read fails
    on it), and no reader rebuilds, since the recorded rule matches theirs."""
    best = _setup()
    with monkeypatch.context() as m:
        m.setattr(board_entries, "SCORER_VERSION", "edx-score-v0")  # the old worker's scorer
        with new_session() as s:
            _method(s, score=0.5, created=1, version="edx-score-v0")
            s.commit()
    with new_session() as s:
        entries, _ = leaderboard(s, board="dev")  # KeyError in _details: no current score row
        assert [e.submission_id for e in entries] == [best]
        assert _table(s) == _afresh(s)


def test_a_writer_with_another_policy_rewrites_entries_under_its_own_rule(db_url, monkeypatch):
    """A worker configured with EDX_LEADERBOARD_POLICY=latest (the web with the default, best)
    refreshes a method by 'latest': the board then shows the method's latest submission,
    not its best, and stays so (board_rules still says best)."""
    best = _setup()
    monkeypatch.setenv("EDX_LEADERBOARD_POLICY", "latest")
    reset_caches()
    with new_session() as s:
        _method(s, score=0.4, created=1)
        s.commit()
    monkeypatch.delenv("EDX_LEADERBOARD_POLICY")
    reset_caches()
    with new_session() as s:
        entries, _ = leaderboard(s, board="dev")
        assert [e.submission_id for e in entries] == [best]
        assert _table(s) == _afresh(s)


def test_a_method_changed_on_an_expired_submission_moves_its_entry(db_url):
    """(Holds.) After a commit the session's objects are expired; setting ``method`` then
    records no old value until the flush loads the row, which it does before the UPDATE: the
    hook still sees the old method and refreshes both."""
    _setup()
    with new_session() as s:
        sub = s.scalar(select(Submission))
        s.commit()  # expires sub
        sub.method = "Other"
        s.commit()
        assert _table(s) == _afresh(s)
        assert s.scalar(select(BoardEntry.method_key).where(BoardEntry.view == "all")) == "other"


def test_a_read_in_a_session_that_wrote_waits_on_itself_when_the_rule_is_new(db_url):
    """ensure_current rebuilds in a second session and waits for the table's exclusive lock;
    a caller whose own transaction flushed a board change holds the shared one, so the read
    waits on its own transaction for ever (PostgreSQL sees no cycle: the holder is idle). On
    SQLite the same read fails after busy_timeout (30 s) with 'database is locked'."""
    upgrade_to_head()
    with new_session() as s:
        s.add_all([_dataset("dev"), Participant(name="ann", team="A")])
        s.commit()
    outer = new_session()
    _method(outer, score=0.9, created=0)
    outer.flush()  # the hook holds the table's shared lock in outer's transaction
    assert outer.scalar(select(BoardRule.policy)) is None  # a new table: the read will rebuild
    pg = outer.connection().dialect.name == "postgresql"
    pid = outer.connection().exec_driver_sql("select pg_backend_pid()").scalar() if pg else None
    done = threading.Event()

    def read() -> None:
        try:
            leaderboard(outer, board="dev")
        except Exception:
            pass
        done.set()

    t = threading.Thread(target=read, daemon=True)
    t.start()
    finished = done.wait(8)
    if not finished and not pg:
        t.join(40)  # SQLite's busy_timeout ends it
    if not finished and pg:  # free the reader: end outer's transaction from outside
        with new_session() as s:
            s.connection().exec_driver_sql(f"select pg_terminate_backend({pid})")
        t.join(10)
    outer.invalidate()
    assert finished, "the read waited on its own session's lock"


@pytest.mark.parametrize("rebuilds", [1, 2])
def test_a_rebuild_under_another_rule_between_the_check_and_the_read(db_url, monkeypatch, rebuilds):
    """A reader on another rule (a web replica mid-deploy) rebuilds the whole table between a
    read's check and its queries: the read's details (its own scoring version's rows) miss the
    entries. The read checks again and reads again; if the other reader keeps rebuilding, it
    answers 503 (try again), never a wrong board or a KeyError."""
    import services.leaderboard as lb
    from services.errors import UnavailableError

    upgrade_to_head()
    with new_session() as s:
        s.add_all([_dataset("dev"), Participant(name="ann", team="A")])
        s.flush()
        _method(s, score=0.9, created=0)
        _method(s, score=0.5, created=1, version="edx-score-v0")
        s.commit()
    real = lb.ensure_current
    left = [rebuilds]

    def checked_then_other_replica_rebuilds(session) -> None:
        real(session)
        if left[0]:
            left[0] -= 1
            with monkeypatch.context() as m, new_session() as other:
                m.setattr(board_entries, "SCORER_VERSION", "edx-score-v0")
                board_entries.ensure_current(other)

    monkeypatch.setattr(lb, "ensure_current", checked_then_other_replica_rebuilds)
    with new_session() as s:
        if rebuilds == 1:
            entries, _ = leaderboard(s, board="dev")
            assert [e.score for e in entries] == [0.9]
        else:
            with pytest.raises(UnavailableError):
                leaderboard(s, board="dev")


def test_deleting_a_submission_that_is_an_entry(db_url):
    """(Holds.) Its score rows must go first (scores reference it); their flush already drops
    its entry, so board_entries' foreign key never stops the submission's DELETE."""
    from db.models import Score

    _setup()
    with new_session() as s:
        sub = s.scalar(select(Submission))
        for row in s.scalars(select(Score).where(Score.submission_id == sub.id)):
            s.delete(row)
        s.flush()  # scores first (no relationship orders the two deletes)
        s.delete(sub)
        s.commit()
        assert _table(s) == _afresh(s) == set()


def test_a_submission_moved_to_another_participant_through_the_relationship(db_url):
    """(Check.) ``sub.participant = other`` sets participant_id only during the flush, by the
    relationship's sync: the hook must still see the old and the new method."""
    _setup()
    with new_session() as s:
        other = Participant(name="bob", team="B")
        s.add(other)
        s.commit()
        sub = s.scalar(select(Submission))
        sub.participant = other
        s.commit()
        assert _table(s) == _afresh(s)
        assert {e.participant_id for e in s.scalars(select(BoardEntry))} == {other.id}


def test_a_read_sees_its_own_sessions_pending_change(db_url):
    """Boards were read with ``session.execute`` (autoflush); the entries are now read through
    ``session.connection()``, which does not flush: a change still pending in the reader's
    session (here a rescore) is missing from the board it reads, though a plain query in
    the same session sees it."""
    _setup()
    with new_session() as s:
        sub = s.scalar(select(Submission))
        sub.status = "queued"  # pending, not flushed
        entries, count = leaderboard(s, board="dev")
        assert (entries, count) == ([], 0)
        leaderboard(s, board="overall")
        assert _table(s) == _afresh(s)


@pytest.mark.postgres
def test_a_reader_rebuilding_while_a_scorer_writes(postgres, monkeypatch):
    """(Check.) A reader on a new rule waits for the scorer's transaction (it holds the table's
    shared lock) and rebuilds with its row; a scorer flushing during a rebuild waits for it."""
    best = _setup()
    scorer = new_session()
    late = _method(scorer, score=0.95, created=1)
    scorer.flush()  # shared table lock + the method's lock, not committed
    monkeypatch.setenv("EDX_LEADERBOARD_POLICY", "latest")  # the reader's rule is new
    reset_caches()
    result = {}

    def read() -> None:
        with new_session() as s:
            result["ids"] = [e.submission_id for e in leaderboard(s, board="dev")[0]]

    t = threading.Thread(target=read)
    t.start()
    t.join(1.0)
    assert t.is_alive()  # waiting for the scorer
    scorer.commit()
    t.join(10)
    assert result["ids"] == [late.id] != [best]
    with new_session() as s:
        assert _table(s) == _afresh(s)
    scorer.close()


def test_a_stale_session_fails_a_submission_another_delivery_scored(db_url):
    """The hook judges "was it scored?" from the session's copy of the row, not the
    database's. Sessions keep their objects across commits (expire_on_commit=False): a worker
    whose lease expired mid-scoring still holds its submission as ``scoring`` while a second
    delivery scored it; when the first then fails it (an invalid output of its own attempt),
    the row goes scored -> failed in the database, but the hook sees scoring -> failed and
    leaves the entry: the board shows a failed submission."""
    from services.submissions.state import update_status

    upgrade_to_head()
    with new_session() as s:
        s.add_all([_dataset("dev"), Participant(name="ann", team="A")])
        s.flush()
        sub = _method(s, score=0.9, created=0)
        sub.status = "scoring"
        s.commit()
        sid = sub.id
    first = new_session()
    stale = first.get(Submission, sid)  # the first delivery's copy: scoring
    with new_session() as second:  # the second delivery scores it
        second.get(Submission, sid).status = "scored"
        second.commit()
        assert _table(second) != set()
    update_status(stale, status="failed", outcome="invalid_output", error_message="bad")
    first.commit()
    first.close()
    with new_session() as s:
        assert s.get(Submission, sid).status == "failed"
        assert _table(s) == _afresh(s) == set()
