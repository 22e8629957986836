"""``edx-arena admin rescore``: after a scorer update, every submission without rows of the
current scorer version is queued once and scored again by the real worker; older rows stay."""

from __future__ import annotations

import pytest
from arena_testing import add_participant, download_and_solve
from sqlalchemy import select, update
from typer.testing import CliRunner
from worker_testing import wait_finished

from db.models import Score
from db.session import new_session
from harness.scoring import SCORER_VERSION
from services.cli.main import app

runner = CliRunner()


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
