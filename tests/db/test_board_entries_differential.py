"""Differential check: every board (tier, overall; all and certified; best and latest) read
through board_entries equals the board of the implementation before it (7301e62's
services/leaderboard.py, applying the rule at each read), after random changes."""

from __future__ import annotations

import importlib.util
import random
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from database_testing import reset_caches
from sqlalchemy import select, update
from test_board_entries import T0, _dataset, _score_row

from db.migrate import upgrade_to_head
from db.models import Dataset, Participant, Submission
from db.session import new_session
from services.leaderboard import BOARDS, leaderboard

_spec = importlib.util.spec_from_file_location("_old_leaderboard", Path(__file__).with_name("_old_leaderboard.py"))
old = importlib.util.module_from_spec(_spec)
sys.modules["_old_leaderboard"] = old
_spec.loader.exec_module(old)
TIERS = ("public", "dev", "hidden")


def _boards(fn, s):
    out = {}
    for board in BOARDS:
        for cert in (False, True):
            entries, count = fn(s, board=board, per_page=200, certified_only=cert)
            out[(board, cert)] = (
                count,
                [
                    (
                        e.rank,
                        e.participant,
                        e.method,
                        e.score,
                        e.submission_id,
                        e.certified,
                        e.baseline,
                        e.tie_group,
                        sorted((e.tiers or {}).items())
                        and [(t, v.get("submission_id"), v.get("score")) for t, v in sorted(e.tiers.items())],
                    )
                    for e in entries
                ],
            )
    return out


@pytest.mark.parametrize("policy", ["best", "latest"])
@pytest.mark.parametrize("seed", [1, 2])
def test_boards_equal_the_old_implementation(db_url, seed, policy, monkeypatch):
    monkeypatch.setenv("EDX_LEADERBOARD_POLICY", policy)
    reset_caches()
    upgrade_to_head()
    rng = random.Random(seed)
    with new_session() as s:
        s.add_all(_dataset(t) for t in TIERS)
        people = [Participant(name=f"p{i}", team="T") for i in range(3)]
        s.add_all(people)
        s.commit()
        pids = [p.id for p in people]
    ids: list[str] = []
    seen = {}
    for step in range(50):
        op = rng.choice(["score", "score", "score", "artifact", "rescore", "baseline", "trust", "switch"])
        with new_session() as s:
            if op in ("score", "artifact") or not ids:
                pid = rng.choice(pids)
                method = rng.choice(["A", "B"])
                digest = "sha256:x" if op == "artifact" else rng.choice([None, "sha256:x"])
                parent = None
                for tier in ("hidden", "public", "dev") if op == "artifact" else (rng.choice(TIERS),):
                    dataset = s.scalar(select(Dataset).where(Dataset.tier == tier, Dataset.active.is_(True)))
                    sub = Submission(
                        participant_id=pid,
                        dataset=dataset,
                        tier=tier,
                        kind="container" if op == "artifact" else rng.choice(["hdf5", "container"]),
                        image_digest=digest,
                        method=method,
                        status="scored",
                        parent_id=parent,
                        created_at=T0 + timedelta(minutes=step, seconds=len(ids)),
                    )
                    s.add(sub)
                    s.flush()
                    s.add(_score_row(sub, rng.choice([0.5, 0.6, 0.7, 0.8])))
                    ids.append(sub.id)
                    if op == "artifact" and parent is None:
                        parent = sub.id
            else:
                sub = s.get(Submission, rng.choice(ids))
                if op == "rescore":
                    sub.status = "queued" if sub.status == "scored" else "scored"
                elif op == "baseline":
                    sub.baseline = not sub.baseline
                elif op == "trust":
                    sub.trust = rng.choice([None, "granted", "revoked"])
                elif op == "switch" and rng.random() < 0.3:
                    tier = rng.choice(TIERS)
                    s.execute(update(Dataset).where(Dataset.tier == tier).values(active=False))
                    s.add(_dataset(tier))
            s.commit()
        if step % 10 == 9:
            with new_session() as s:
                boards = _boards(leaderboard, s)
                assert boards == _boards(old.leaderboard, s), f"step {step}"
                for key, (count, _) in boards.items():
                    seen[key] = max(seen.get(key, 0), count)
    assert seen[("overall", False)] and seen[("overall", True)] and seen[("dev", True)]
