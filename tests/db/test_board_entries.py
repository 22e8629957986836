"""db/board_entries.py on SQLite and PostgreSQL: the table the boards read equals the pick rule
applied afresh to every submission, after any sequence of the changes the server makes
(scoring, rescoring, baseline and trust marks, a dataset switch, an older scorer's rows), each
committed through an ordinary ORM session; a new rule rebuilds it; on PostgreSQL two
transactions scoring one method at once end with the better submission as its entry."""

from __future__ import annotations

import random
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from database_testing import drop_backend, make_backend, reset_caches
from sqlalchemy import select, update

from db import board_entries
from db.board_entries import VIEWS, candidates, ensure_current
from db.migrate import upgrade_to_head
from db.models import BoardEntry, BoardRule, Dataset, Participant, Score, Submission
from db.session import new_session
from harness.scoring import SCORER_VERSION

T0 = datetime(2026, 11, 1, tzinfo=UTC)
TIERS = ("public", "dev", "hidden")


def _dataset(tier: str) -> Dataset:
    return Dataset(tier=tier, content_hash="h" * 64, operator_version="v", preset="small", full_path="-", view_path="-")


def _score_row(sub: Submission, score: float, version: str = SCORER_VERSION) -> Score:
    if sub.id is None:
        sub.id = str(uuid.uuid4())
    return Score(
        submission_id=sub.id,
        scene_id="",
        scoring_version=version,
        operator_version="v",
        harness_version="h",
        dataset_hash="d" * 64,
        submission_hash="s" * 64,
        score=score,
        blind=score,
        standard=score,
        psnr=30.0,
        ssim=score,
        consistency=score,
        metrics={},
        started_at=T0,
        ended_at=T0,
    )


def _table(session) -> set[tuple]:
    return set(
        session.execute(
            select(
                BoardEntry.view,
                BoardEntry.tier,
                BoardEntry.participant_id,
                BoardEntry.method_key,
                BoardEntry.baseline,
                BoardEntry.submission_id,
                BoardEntry.score,
                BoardEntry.trust,
            )
        ).all()
    )


def _afresh(session) -> set[tuple]:
    """The rule applied to every submission now, without the table."""
    out = set()
    for view in VIEWS:
        c = candidates(certified_only=view == "certified").subquery()
        for r in session.execute(select(c).where(c.c.pick == 1)):
            out.add((view, r.tier, r.participant_id, r.method_key, r.baseline, r.submission_id, r.score, r.trust))
    return out


@pytest.mark.parametrize(("seed", "bulk"), [(1, False), (2, False), (3, True)])
def test_the_table_follows_every_change_through_the_orm(db_url, seed, bulk, monkeypatch):
    if bulk:  # every change takes the path of a rescore of thousands: its tiers rebuilt
        monkeypatch.setattr(board_entries, "_REFRESH_MAX", 0)
    upgrade_to_head()
    rng = random.Random(seed)
    with new_session() as s:
        s.add_all(_dataset(t) for t in TIERS)
        people = [Participant(name=f"p{i}", team="T") for i in range(3)]
        s.add_all(people)
        s.commit()
        pids = [p.id for p in people]
    ids: list[str] = []
    seen = set()
    for step in range(60):
        op = rng.choice(
            ["score", "score", "score", "queued", "finish", "rescore", "baseline", "trust", "old", "switch"]
        )
        with new_session() as s:
            if op in ("score", "queued") or not ids:
                tier = rng.choice(TIERS)
                dataset = s.scalar(select(Dataset).where(Dataset.tier == tier, Dataset.active.is_(True)))
                sub = Submission(
                    participant_id=rng.choice(pids),
                    dataset=dataset,
                    tier=tier,
                    kind=rng.choice(["hdf5", "container", "script"]),
                    image_digest=rng.choice([None, "sha256:x"]),
                    method=rng.choice(["A", " a ", "B"]),  # "A" and " a " are one method
                    status="scored" if op == "score" else "queued",
                    created_at=T0 + timedelta(minutes=step),
                )
                s.add(sub)
                s.flush()  # no relationship orders the two inserts: the submission first
                if op == "score":
                    s.add(_score_row(sub, rng.choice([0.5, 0.6, 0.7])))  # ties happen
                ids.append(sub.id)
            else:
                sub = s.get(Submission, rng.choice(ids))
                versions = set(s.scalars(select(Score.scoring_version).where(Score.submission_id == sub.id)))
                if op == "finish" and sub.status != "scored":
                    if SCORER_VERSION not in versions:  # a rescore under the same scorer keeps its rows
                        s.add(_score_row(sub, rng.choice([0.55, 0.65])))
                    sub.status = "scored"
                elif op == "rescore":
                    sub.status = "queued"
                elif op == "baseline":
                    sub.baseline = not sub.baseline
                elif op == "trust":
                    sub.trust = rng.choice([None, "granted", "revoked"])
                elif op == "old" and "edx-score-v0" not in versions:
                    s.add(_score_row(sub, 0.99, version="edx-score-v0"))  # another scoring version's row: no entry
                elif op == "switch":
                    tier = rng.choice(TIERS)
                    s.execute(update(Dataset).where(Dataset.tier == tier).values(active=False))
                    s.add(_dataset(tier))
            s.commit()
            seen.add(op)
            assert _table(s) == _afresh(s), f"step {step}: {op}"
    assert {"score", "rescore", "baseline", "trust", "switch"} <= seen
    with new_session() as s:
        assert _table(s)  # the run left entries to compare


def test_a_new_rule_rebuilds_the_table_before_a_read(db_url, monkeypatch):
    upgrade_to_head()
    with new_session() as s:
        d = _dataset("dev")
        who = Participant(name="ann", team="A")
        early = Submission(participant=who, dataset=d, tier="dev", method="M", status="scored", created_at=T0)
        late = Submission(
            participant=who, dataset=d, tier="dev", method="M", status="scored", created_at=T0 + timedelta(hours=1)
        )
        s.add_all([early, late])
        s.flush()
        s.add_all([_score_row(early, 0.9), _score_row(late, 0.4)])
        s.commit()
        assert s.scalar(select(BoardRule.policy)) is None  # a new table: no rule yet
        ensure_current(s)
        assert s.scalars(select(BoardEntry.submission_id).where(BoardEntry.view == "all")).all() == [early.id]
        assert s.scalar(select(BoardRule.policy)) == "best"
    monkeypatch.setenv("EDX_LEADERBOARD_POLICY", "latest")
    reset_caches()
    with new_session() as s:
        ensure_current(s)
        assert s.scalars(select(BoardEntry.submission_id).where(BoardEntry.view == "all")).all() == [late.id]
        assert tuple(s.execute(select(BoardRule.scoring_version, BoardRule.policy)).one()) == (SCORER_VERSION, "latest")


@pytest.fixture
def postgres(tmp_path, monkeypatch):
    """PostgreSQL only: SQLite serialises writers itself, the method's lock is PostgreSQL's."""
    _, name = make_backend("postgres", tmp_path, monkeypatch)
    yield
    drop_backend(name)


@pytest.mark.postgres
def test_two_transactions_scoring_one_method_serialise(postgres):
    """Without the method's lock, the later transaction would pick from a snapshot without the
    other's score, or collide with the row the other inserted."""
    upgrade_to_head()
    with new_session() as s:
        d = _dataset("dev")
        who = Participant(name="ann", team="A")
        s.add_all([d, who])
        s.commit()
        did, pid = d.id, who.id

    def scored(session, score: float) -> Submission:
        sub = Submission(participant_id=pid, dataset_id=did, tier="dev", method="M", status="scored", created_at=T0)
        session.add(sub)
        session.flush()
        session.add(_score_row(sub, score))
        session.flush()
        return sub

    first = new_session()
    low = scored(first, 0.5)  # holds the method's lock until it commits
    done = threading.Event()
    result = {}

    def second() -> None:
        with new_session() as s:
            result["high"] = scored(s, 0.8).id
            s.commit()
        done.set()

    t = threading.Thread(target=second)
    t.start()
    time.sleep(0.5)
    waited = not done.is_set()
    first.commit()
    first.close()
    t.join(10)
    assert waited and done.is_set()
    with new_session() as s:
        entries = s.execute(select(BoardEntry.view, BoardEntry.submission_id)).all()
        assert [e.submission_id for e in entries if e.view == "all"] == [result["high"]] != [low.id]
        assert _table(s) == _afresh(s)
