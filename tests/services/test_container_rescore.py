"""A Hidden-tier run keeps its output: rescoring scores that very file without running the image
again, and the digest cache copies only rows of the current scoring version. Real Docker and the
real API; the worker's run function is called in-process."""

from __future__ import annotations

from pathlib import Path

import pytest
from arena_testing import ORG, add_participant
from sqlalchemy import func, select

from db.models import Score, Submission
from db.session import new_session
from harness.scoring import SCORER_VERSION
from services.submissions.run import run_submission
from services.submissions.state import claim

RUNNER = "edx-arena/runner:latest"


def _run(submission_id: str) -> None:
    with new_session() as s:
        run_submission(s, claim(s, submission_id, worker="test"))
        s.commit()


@pytest.fixture
def hidden(seeded):
    r = seeded.post("/api/v1/admin/tiers/hidden/dataset", json={"seed": 21, "preset": "small"}, headers=ORG)
    assert r.status_code == 201, r.text
    return seeded


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_rescore_scores_the_kept_output_without_running_again(hidden):
    alice = add_participant(hidden, "alice")
    sid = hidden.post("/api/v1/submissions/container", json={"image": RUNNER, "method": "nnls"}, headers=alice).json()[
        "id"
    ]
    _run(sid)
    with new_session() as s:
        sub = s.get(Submission, sid)
        kept = Path(sub.file_path)
        assert sub.status == "scored" and kept.is_file() and kept.parent.name == "results"
        first_runtime = sub.runtime_seconds
        # A scorer update: the current version's rows are gone (as if they were never written).
        s.query(Score).filter(Score.submission_id == sid).update({Score.scoring_version: "edx-score-v0"})
        s.commit()
    r = hidden.post(f"/api/v1/admin/submissions/{sid}/rescore", headers=ORG)
    assert r.status_code in (200, 202), r.text

    _run(sid)
    with new_session() as s:
        sub = s.get(Submission, sid)
        versions = dict(
            s.execute(
                select(Score.scoring_version, func.count())
                .where(Score.submission_id == sid)
                .group_by(Score.scoring_version)
            ).all()
        )
        assert sub.status == "scored" and sub.runtime_seconds == first_runtime  # not run again
    assert versions == {"edx-score-v0": 4, SCORER_VERSION: 4}  # old rows kept, new ones added


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_digest_cache_ignores_rows_of_an_older_scorer(hidden):
    alice = add_participant(hidden, "alice")
    first = hidden.post("/api/v1/submissions/container", json={"image": RUNNER}, headers=alice).json()["id"]
    _run(first)
    with new_session() as s:
        s.query(Score).filter(Score.submission_id == first).update({Score.scoring_version: "edx-score-v0"})
        s.commit()
    second = hidden.post("/api/v1/submissions/container", json={"image": RUNNER}, headers=ORG).json()["id"]
    _run(second)
    with new_session() as s:
        sub = s.get(Submission, second)
        rows = s.scalars(select(Score).where(Score.submission_id == second)).all()
    assert sub.status == "scored" and "reused" not in (sub.log_tail or "")  # it really ran
    assert {r.scoring_version for r in rows} == {SCORER_VERSION}

    third = hidden.post("/api/v1/submissions/container", json={"image": RUNNER}, headers=ORG).json()["id"]
    _run(third)
    with new_session() as s:
        assert "reused" in s.get(Submission, third).log_tail  # current rows exist now: served from the cache
