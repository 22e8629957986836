"""services/cli/server.py: the organizer's commands on the server's own database: a participant
and its working token, seeding a tier, rescoring (--outdated after a scorer update), rebuilding
the boards' entries after writes past the ORM.
"""

from __future__ import annotations

import pytest
from arena_testing import add_participant, add_scored, download_and_solve
from sqlalchemy import select, update
from typer.testing import CliRunner
from worker_testing import wait_finished

from db.models import Dataset, Score
from db.session import new_session
from harness.scoring import SCORER_VERSION
from services.auth import authenticate
from services.cli.main import app

runner = CliRunner()


def test_create_participant_prints_a_working_token(backend):
    r = runner.invoke(app, ["admin", "create-participant", "zoe", "--team", "Team Z"])
    assert r.exit_code == 0, r.output
    token = r.stdout.strip().splitlines()[-1]
    with new_session() as s:
        who = authenticate(s, token)
        assert (who.name, who.team, who.role) == ("zoe", "Team Z", "participant")
    again = runner.invoke(app, ["admin", "create-participant", "zoe"])
    assert again.exit_code == 1 and "a participant named 'zoe' already exists" in again.output


def test_seed_tier(backend):
    r = runner.invoke(app, ["admin", "seed-tier", "--tier", "dev", "--seed", "7", "--size", "small"])
    assert r.exit_code == 0, r.output
    assert "dev tier seeded" in r.output
    with new_session() as s:
        row = s.scalar(select(Dataset).where(Dataset.active.is_(True)))
        assert (row.tier, row.seed, row.preset) == ("dev", 7, "small")
    bad = runner.invoke(app, ["admin", "seed-tier", "--tier", "gold", "--seed", "7", "--size", "small"])
    assert bad.exit_code == 1 and "unknown tier 'gold'" in bad.output


@pytest.mark.slow
def test_rescore_outdated_after_a_scorer_update(api, tmp_path):
    alice = add_participant(api, "alice")
    result = download_and_solve(api, "public", tmp_path)
    ids = {}
    for key in ("old", "current"):
        r = api.post(
            "/api/v1/submissions", data={"tier": "public"}, files={"file": ("r.h5", result.read_bytes())}, headers=alice
        )
        assert r.status_code == 202, r.text
        ids[key] = r.json()["id"]
    wait_finished(api, alice, ids)
    # As if "old" had been scored by an earlier scorer version.
    with new_session() as s:
        s.execute(update(Score).where(Score.submission_id == ids["old"]).values(scoring_version="edx-score-v0"))
        s.commit()

    r = runner.invoke(app, ["admin", "rescore", "--outdated"])
    assert r.exit_code == 0, r.output
    assert r.stdout.split() == [ids["old"]]  # the up-to-date one is left alone
    states = wait_finished(api, alice, ids)
    assert states["old"]["status"] == "scored"
    with new_session() as s:
        versions = s.scalars(select(Score.scoring_version).where(Score.submission_id == ids["old"])).all()
    assert versions.count(SCORER_VERSION) == 4 and versions.count("edx-score-v0") == 4  # append-only

    again = runner.invoke(app, ["admin", "rescore", "--outdated"])
    assert again.exit_code == 0 and again.stdout.split() == []


def test_rescore_refuses_nothing_named_and_unknown_ids(client):
    r = runner.invoke(app, ["admin", "rescore"])
    assert r.exit_code == 2 and "--outdated" in r.output
    r = runner.invoke(app, ["admin", "rescore", "no-such-id"])
    assert r.exit_code == 1 and "no submission 'no-such-id'" in r.output


def test_rebuild_boards_after_a_write_past_the_orm(backend):
    """SQL past the ORM fires no flush hook (here a DELETE that empties the entries, as a hand
    fix or an old process might): the board misses the submission until an organizer rebuilds
    the entries."""
    from datetime import UTC, datetime

    from sqlalchemy import delete

    from db.board_entries import ensure_current
    from db.migrate import upgrade_to_head
    from db.models import BoardEntry, Participant
    from services.leaderboard import leaderboard

    upgrade_to_head()
    now = datetime(2026, 11, 1, tzinfo=UTC)
    with new_session() as s:
        d = Dataset(
            tier="dev", content_hash="h" * 64, operator_version="v", preset="small", full_path="-", view_path="-"
        )
        who = Participant(name="ann", team="A")
        s.add_all([d, who])
        s.commit()
        ensure_current(s)  # the table exists and records the rule
        sid = add_scored(s, d, who, 0.7, created_at=now, started_at=now, method="M").id
        s.commit()
        s.execute(delete(BoardEntry))
        s.commit()
        assert leaderboard(s, board="dev") == ([], 0)
    r = runner.invoke(app, ["admin", "rebuild-boards"])
    assert r.exit_code == 0, r.output
    assert r.stdout.strip().splitlines()[-1] == "1"  # the 'all' view; an upload is not Certified
    with new_session() as s:
        entries, total = leaderboard(s, board="dev")
        assert total == 1 and entries[0].submission_id == sid and entries[0].score == 0.7
