"""services/api/routes/leaderboard.py: parameters are validated, and a board page is the
service's board as JSON.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from arena_testing import add_scored

from db.models import Dataset, Participant
from db.session import new_session
from harness.scoring import SCORER_VERSION
from harness.uncertainty import encode_draws, percentile_interval


def _error(r, status: int, code: str, message: str | None = None) -> None:
    assert r.status_code == status, r.text
    body = r.json()["error"]
    assert body["code"] == code
    if message is not None:
        assert body["message"] == message


T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _world(session):
    datasets = {
        t: Dataset(tier=t, content_hash="h" * 64, operator_version="v", preset="small", full_path="-", view_path="-")
        for t in ("public", "dev", "hidden")
    }
    session.add_all(datasets.values())
    session.flush()
    return datasets


def _scored(
    session,
    datasets,
    who: Participant,
    tier: str,
    score: float,
    *,
    minutes: int,
    status="scored",
    kind="hdf5",
    version=SCORER_VERSION,
    draws: np.ndarray | None = None,
    baseline: bool = False,
):
    # As services.submissions.scoring records them: the interval in columns, the paired draws in tile_stats.
    ci = (None, None) if draws is None else percentile_interval(draws)
    stats = (
        None
        if draws is None
        else {
            "kind": "tier",
            "resample_key": f"key-{tier}",
            "n_resamples": len(draws),
            "confidence": 0.95,
            "tile_size": 16,
            "draws": encode_draws(draws),
        }
    )
    return add_scored(
        session,
        datasets[tier],
        who,
        score,
        created_at=T0 + timedelta(minutes=minutes),
        started_at=T0,
        method="M",  # one method per participant: their best is the entry
        kind=kind,
        status=status,
        version=version,
        baseline=baseline,
        image_digest="sha256:x" if kind == "container" else None,
        ci=ci,
        tile_stats=stats,
    )


@pytest.fixture
def world(client):
    with new_session() as s:
        datasets = _world(s)
        people = {n: Participant(name=n, team=n.upper()) for n in ("ann", "ben", "cy", "dee")}
        s.add_all(people.values())
        s.flush()
        _scored(s, datasets, people["ann"], "dev", 0.70, minutes=1)
        _scored(s, datasets, people["ann"], "dev", 0.80, minutes=2)  # best of ann
        _scored(s, datasets, people["ann"], "dev", 0.60, minutes=3)  # latest of ann
        _scored(s, datasets, people["ben"], "dev", 0.80, minutes=4)  # ties ann
        _scored(s, datasets, people["cy"], "dev", 0.50, minutes=5)
        _scored(s, datasets, people["dee"], "dev", 0.99, minutes=6, status="failed")  # never ranked
        _scored(s, datasets, people["dee"], "dev", 0.95, minutes=7, status="running")
        _scored(s, datasets, people["cy"], "dev", 0.97, minutes=8, version="edx-score-v0")  # old scorer: ignored
        for tier, score in (("public", 0.83), ("hidden", 0.723)):
            _scored(
                s, datasets, people["ann"], tier, score, minutes=9, kind="container" if tier == "hidden" else "hdf5"
            )
        _scored(s, datasets, people["ben"], "public", 0.9, minutes=10)  # ben lacks hidden: not on overall
        s.commit()


def test_leaderboard_validation(client):
    _error(
        client.get("/api/v1/leaderboard", params={"tier": "gold"}),
        422,
        "invalid_request",
        "tier: Input should be 'public', 'dev', 'hidden', 'standard' or 'overall' (got 'gold')",
    )
    _error(client.get("/api/v1/leaderboard", params={"tier": "dev", "page": 0}), 422, "invalid_request")
    assert client.get("/api/v1/leaderboard", params={"tier": "overall"}).json() == {"data": [], "count": 0}


def test_api_view(world, client):
    body = client.get("/api/v1/leaderboard", params={"tier": "dev", "per_page": 2}).json()
    assert body["count"] == 3 and [e["rank"] for e in body["data"]] == [1, 1]
