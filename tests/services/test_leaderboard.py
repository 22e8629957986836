"""services/leaderboard.py on SQLite and PostgreSQL: best (or latest) entry per method, ranks
with ties, the overall board of complete methods, the Certified badge, intervals and tie
groups from the harness's paired bootstrap, the same on every page.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from arena_testing import add_scored
from database_testing import reset_caches
from sqlalchemy import update

from db.models import Dataset, Participant
from db.session import new_session
from harness.scoring import SCORER_VERSION
from harness.uncertainty import encode_draws, percentile_interval
from services.leaderboard import leaderboard

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
    method: str = "M",
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
        method=method,
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


B = 1000


def _noise(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 1.0, B)


@pytest.fixture
def tie_world(client):
    """Six dev entries, best first: p1 alone; p2, p3, p4 within noise of each other (p2 and
    p4 apart, joined through p3); p5 and p6 identical; a baseline inside the p2–p4 group."""
    with new_session() as s:
        datasets = _world(s)
        people = {n: Participant(name=n, team=n.upper()) for n in ("p1", "p2", "p3", "p4", "p5", "p6", "ref")}
        s.add_all(people.values())
        s.flush()
        shared = _noise(0)
        plan = [
            ("p1", 0.90, 0.90 + 0.001 * shared),
            ("p2", 0.80, 0.80 + 0.01 * _noise(1)),
            ("p3", 0.79, 0.79 + 0.01 * _noise(2)),
            ("p4", 0.78, 0.78 + 0.01 * _noise(3)),
            ("p5", 0.60, 0.60 + 0.01 * shared),
            ("p6", 0.60, 0.60 + 0.01 * shared),
        ]
        for minutes, (name, score, draws) in enumerate(plan):
            _scored(s, datasets, people[name], "dev", score, minutes=minutes, draws=draws)
        _scored(s, datasets, people["ref"], "dev", 0.795, minutes=9, draws=0.795 + 0.01 * _noise(1), baseline=True)
        s.commit()
        return {name: draws for name, _, draws in plan}


@pytest.fixture
def overall_world(client):
    """Three complete participants: a and b close on every tier, c far behind."""
    with new_session() as s:
        datasets = _world(s)
        people = {n: Participant(name=n, team=n.upper()) for n in ("a", "b", "c")}
        s.add_all(people.values())
        s.flush()
        tier_draws = {}
        for t_i, tier in enumerate(("public", "dev", "hidden")):
            for p_i, (name, level) in enumerate((("a", 0.80), ("b", 0.799), ("c", 0.5))):
                draws = level + 0.01 * _noise(10 * t_i + p_i)
                tier_draws[name, tier] = draws
                _scored(s, datasets, people[name], tier, level, minutes=p_i, draws=draws)
        s.commit()
        return tier_draws


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
    assert set(entries[0].tiers) == {"public", "dev", "hidden"} and entries[0].tiers["dev"]["psnr"] == pytest.approx(
        20.8
    )
    # Public and Dev were uploaded: self-reported, so the row is not Certified (design §7).
    assert not entries[0].certified
    assert {t: x["self_reported"] for t, x in entries[0].tiers.items()} == {
        "public": True,
        "dev": True,
        "hidden": False,
    }


def test_certified_only_for_server_run_hidden(world):
    with new_session() as s:
        hidden, _ = leaderboard(s, board="hidden")
        public, _ = leaderboard(s, board="public")
    assert hidden[0].certified and not any(e.certified for e in public)


def test_pagination(world):
    with new_session() as s:
        page2, count = leaderboard(s, board="dev", page=2, per_page=2)
    assert count == 3 and [e.participant for e in page2] == ["cy"]


def test_scores_on_a_replaced_dataset_leave_the_board(world, client):
    with new_session() as s:
        s.execute(update(Dataset).where(Dataset.tier == "dev").values(active=False))
        s.commit()
        entries, count = leaderboard(s, board="dev")
    assert (entries, count) == ([], 0)


def test_entries_carry_their_interval_and_tie_group(tie_world):
    with new_session() as s:
        entries, count = leaderboard(s, board="dev")
    assert count == 7
    view = [(e.participant, e.rank, e.tie_group) for e in entries]
    assert view == [
        ("p1", 1, None),
        ("p2", 2, 2),
        ("ref", None, None),
        ("p3", 3, 2),
        ("p4", 4, 2),
        ("p5", 5, 5),
        ("p6", 5, 5),
    ]
    for e in entries:
        if e.participant != "ref":
            assert (e.ci_low, e.ci_high) == percentile_interval(tie_world[e.participant])
            assert e.ci_low < e.score < e.ci_high


def test_tie_groups_are_the_same_on_every_page(tie_world):
    """A group's id is its first entry's position, found before the page if need be."""
    with new_session() as s:
        one_per_page = [leaderboard(s, board="dev", page=p, per_page=1)[0][0] for p in range(1, 8)]
        two_per_page = [e for p in range(1, 5) for e in leaderboard(s, board="dev", page=p, per_page=2)[0]]
    expected = [None, 2, None, 2, 2, 5, 5]
    assert [e.tie_group for e in one_per_page] == expected
    assert [e.tie_group for e in two_per_page] == expected


def test_classic_ranks_only_when_ties_are_off(tie_world, monkeypatch):
    monkeypatch.setenv("EDX_LEADERBOARD_TIES", "false")
    reset_caches()
    with new_session() as s:
        entries, _ = leaderboard(s, board="dev")
    assert all(e.tie_group is None for e in entries)
    assert all(e.ci_low is not None for e in entries)  # intervals are shown either way


def test_rows_without_draws_show_no_interval_and_no_tie(world):
    with new_session() as s:
        entries, _ = leaderboard(s, board="dev")
    assert [(e.participant, e.score, e.ci_low, e.tie_group) for e in entries][:2] == [
        ("ann", 0.80, None, None),
        ("ben", 0.80, None, None),
    ]


def test_overall_interval_combines_the_tier_draws(overall_world, client):
    with new_session() as s:
        entries, count = leaderboard(s, board="overall")
    assert count == 3 and [(e.participant, e.tie_group) for e in entries] == [("a", 1), ("b", 1), ("c", None)]
    for e in entries:
        mean = sum(overall_world[e.participant, t] for t in ("public", "dev", "hidden")) / 3
        assert (e.ci_low, e.ci_high) == pytest.approx(percentile_interval(mean), abs=1e-12)
        assert e.tiers["dev"]["ci_low"] == percentile_interval(overall_world[e.participant, "dev"])[0]
    body = client.get("/api/v1/leaderboard", params={"tier": "overall"}).json()
    first = body["data"][0]
    assert first["tie_group"] == 1 and first["ci_low"] == pytest.approx(entries[0].ci_low)
    assert first["ci_low"] < first["score"] < first["ci_high"]
    with new_session() as s:
        page2, _ = leaderboard(s, board="overall", page=2, per_page=1)
    assert (page2[0].participant, page2[0].tie_group) == ("b", 1)


def test_long_tie_chains_are_named_by_their_first_entry_on_deep_pages(client):
    """40 entries in two dense chains (positions 1–20 and 21–40): a page deep in a chain walks
    back to the chain's first entry, cold (draws read) and warm (verdicts kept) alike."""
    with new_session() as s:
        datasets = _world(s)
        for i in range(40):
            who = Participant(name=f"q{i:02d}", team="")
            s.add(who)
            level = 0.8 - 0.0005 * i - (0.2 if i >= 20 else 0.0)
            _scored(s, datasets, who, "dev", level, minutes=i, draws=level + 0.01 * _noise(100 + i))
        s.commit()
    expected = [1] * 20 + [21] * 20
    with new_session() as s:
        for _ in range(2):
            pages = [e for p in range(6, 0, -1) for e in reversed(leaderboard(s, board="dev", page=p, per_page=7)[0])]
            assert [e.tie_group for e in reversed(pages)] == expected
