"""Leaderboard rules (design §7) on rows written straight to the database."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from arena_testing import reset_caches

from sqlalchemy import update

from db.models import Dataset, Participant, Score, Submission
from db.session import new_session
from harness.scoring import SCORER_VERSION
from services.leaderboard import leaderboard

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


def _world(session):
    datasets = {t: Dataset(tier=t, content_hash="h" * 64, operator_version="v", preset="small", full_path="-", view_path="-") for t in ("public", "dev", "hidden")}
    session.add_all(datasets.values())
    session.flush()
    return datasets


def _scored(session, datasets, who: Participant, tier: str, score: float, *, minutes: int, status="scored", kind="hdf5", version=SCORER_VERSION):
    sub = Submission(participant=who, dataset=datasets[tier], tier=tier, kind=kind, status=status, method=f"{who.name}-{score}",
                     created_at=T0 + timedelta(minutes=minutes), image_digest="sha256:x" if kind == "container" else None)
    session.add(sub)
    session.flush()
    if status == "scored":
        session.add(Score(submission_id=sub.id, scene_id="", scoring_version=version, operator_version="v", harness_version="0",
                          dataset_hash="h", submission_hash="s", score=score, blind=score, standard=score, psnr=20 + score,
                          ssim=score, consistency=score, metrics={}, started_at=T0))
    return sub


@pytest.fixture
def world(client):
    with new_session() as s:
        datasets = _world(s)
        people = {n: Participant(name=n, team=n.upper()) for n in ("ann", "ben", "cy", "dee")}
        s.add_all(people.values())
        s.flush()
        _scored(s, datasets, people["ann"], "dev", 0.70, minutes=1)
        _scored(s, datasets, people["ann"], "dev", 0.80, minutes=2)   # best of ann
        _scored(s, datasets, people["ann"], "dev", 0.60, minutes=3)   # latest of ann
        _scored(s, datasets, people["ben"], "dev", 0.80, minutes=4)   # ties ann
        _scored(s, datasets, people["cy"], "dev", 0.50, minutes=5)
        _scored(s, datasets, people["dee"], "dev", 0.99, minutes=6, status="failed")  # never ranked
        _scored(s, datasets, people["dee"], "dev", 0.95, minutes=7, status="running")
        _scored(s, datasets, people["cy"], "dev", 0.97, minutes=8, version="edx-score-v0")  # old scorer: ignored
        for tier, score in (("public", 0.83), ("hidden", 0.723)):
            _scored(s, datasets, people["ann"], tier, score, minutes=9, kind="container" if tier == "hidden" else "hdf5")
        _scored(s, datasets, people["ben"], "public", 0.9, minutes=10)  # ben lacks hidden: not on overall
        s.commit()


def test_best_per_participant_ties_share_rank(world):
    with new_session() as s:
        entries, count = leaderboard(s, board="dev")
    assert count == 3
    assert [(e.rank, e.participant, e.score) for e in entries] == [(1, "ann", 0.80), (1, "ben", 0.80), (3, "cy", 0.50)]
    assert all(e.participant != "dee" for e in entries)


def test_latest_policy(world, monkeypatch):
    monkeypatch.setenv("EDX_LEADERBOARD_POLICY", "latest")
    reset_caches()
    with new_session() as s:
        entries, _ = leaderboard(s, board="dev")
    assert [(e.rank, e.participant, e.score) for e in entries] == [(1, "ben", 0.80), (2, "ann", 0.60), (3, "cy", 0.50)]


def test_overall_needs_all_three_tiers(world):
    with new_session() as s:
        entries, count = leaderboard(s, board="overall")
    assert count == 1 and entries[0].participant == "ann"
    assert round(entries[0].score, 3) == round((0.83 + 0.80 + 0.723) / 3, 3)
    assert set(entries[0].tiers) == {"public", "dev", "hidden"} and entries[0].tiers["dev"]["psnr"] == pytest.approx(20.8)
    assert entries[0].certified


def test_certified_only_for_server_run_hidden(world):
    with new_session() as s:
        hidden, _ = leaderboard(s, board="hidden")
        public, _ = leaderboard(s, board="public")
    assert hidden[0].certified and not any(e.certified for e in public)


def test_pagination(world):
    with new_session() as s:
        page2, count = leaderboard(s, board="dev", page=2, per_page=2)
    assert count == 3 and [e.participant for e in page2] == ["cy"]


def test_api_view(world, client):
    body = client.get("/api/v1/leaderboard", params={"tier": "dev", "per_page": 2}).json()
    assert body["count"] == 3 and [e["rank"] for e in body["data"]] == [1, 1]


def test_pages_are_cached_for_the_configured_time(world, client, monkeypatch):
    import time

    monkeypatch.setenv("EDX_LEADERBOARD_CACHE_SECONDS", "0.5")
    reset_caches()
    assert client.get("/api/v1/leaderboard", params={"tier": "dev"}).json()["count"] == 3
    with new_session() as s:
        datasets = {d.tier: d for d in s.query(Dataset)}
        _scored(s, datasets, Participant(name="eve", team="EVE"), "dev", 0.9, minutes=20)
        s.commit()
    assert client.get("/api/v1/leaderboard", params={"tier": "dev"}).json()["count"] == 3  # within the TTL
    time.sleep(0.6)
    body = client.get("/api/v1/leaderboard", params={"tier": "dev"}).json()
    assert body["count"] == 4 and body["data"][0]["participant"] == "eve"


def test_scores_on_a_replaced_dataset_leave_the_board(world, client):
    with new_session() as s:
        s.execute(update(Dataset).where(Dataset.tier == "dev").values(active=False))
        s.commit()
        entries, count = leaderboard(s, board="dev")
    assert (entries, count) == ([], 0)
