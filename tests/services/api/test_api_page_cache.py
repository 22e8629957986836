"""services/api/page_cache.py: a board is served from the cache for the configured time, then
recomputed (time moved by an injected clock, not slept).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from arena_testing import add_scored
from database_testing import ORGANIZER_TOKEN, reset_caches

from core.clock import ManualClock, use_clock
from db.models import Dataset, Participant
from db.session import new_session
from harness.scoring import SCORER_VERSION
from harness.uncertainty import encode_draws, percentile_interval
from services.api import page_cache

ORG = {"Authorization": f"Bearer {ORGANIZER_TOKEN}"}

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
        method=f"{who.name}-{score}",
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


def _until(condition, *, seconds: float = 10.0):
    """Poll ``condition`` (a background refresh runs on the client's event loop thread)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError("the background refresh did not happen")


def _dev_count(client) -> int:
    return client.get("/api/v1/leaderboard", params={"tier": "dev"}).json()["count"]


def _add_eve(score: float = 0.9) -> None:
    with new_session() as s:
        datasets = {d.tier: d for d in s.query(Dataset)}
        _scored(s, datasets, Participant(name="eve", team="EVE"), "dev", score, minutes=20)
        s.commit()


def test_a_stale_page_is_served_at_once_and_refreshed_in_the_background(world, client, monkeypatch):
    monkeypatch.setenv("EDX_LEADERBOARD_CACHE_SECONDS", "0.5")
    monkeypatch.setattr(page_cache, "_COST_FACTOR", 0.0)  # the refresh spacing is tested below
    reset_caches()
    with use_clock(ManualClock()) as clock:
        before = _dev_count(client)
        _add_eve()
        clock.advance(0.49)
        assert _dev_count(client) == before  # within the TTL
        clock.advance(0.02)
        assert _dev_count(client) == before  # expired: still answered from the stored page ...
        _until(lambda: _dev_count(client) == before + 1)  # ... while one refresh runs behind it
    body = client.get("/api/v1/leaderboard", params={"tier": "dev"}).json()
    assert body["data"][0]["participant"] == "eve"


def test_a_new_score_refreshes_the_page_long_before_the_ttl(world, client, monkeypatch):
    monkeypatch.setenv("EDX_LEADERBOARD_CACHE_SECONDS", "3600")
    monkeypatch.setattr(page_cache, "_COST_FACTOR", 0.0)
    reset_caches()
    with use_clock(ManualClock()) as clock:
        before = _dev_count(client)
        clock.advance(page_cache._GENERATION_EVERY)
        assert _dev_count(client) == before
        _until(lambda: page_cache._generation["value"] is not None and not page_cache._generation["checking"])
        assert _dev_count(client) == before  # nothing changed: no refresh
        assert not page_cache._refreshing
        _add_eve()
        clock.advance(page_cache._GENERATION_EVERY)
        assert _dev_count(client) == before  # the check that sees the new score runs after this answer
        _until(lambda: _dev_count(client) == before + 1)


def test_an_organizer_mark_refreshes_this_process_pages(world, client, monkeypatch):
    monkeypatch.setenv("EDX_LEADERBOARD_CACHE_SECONDS", "3600")
    monkeypatch.setattr(page_cache, "_COST_FACTOR", 0.0)
    reset_caches()
    with use_clock(ManualClock()):
        first = client.get("/api/v1/leaderboard", params={"tier": "dev"}).json()["data"]
        top = first[0]["submission_id"]
        r = client.put(f"/api/v1/admin/submissions/{top}/baseline", json={"baseline": True}, headers=ORG)
        assert r.status_code == 200, r.text
        client.get("/api/v1/leaderboard", params={"tier": "dev"})
        _until(
            lambda: (
                next(
                    e
                    for e in client.get("/api/v1/leaderboard", params={"tier": "dev"}).json()["data"]
                    if e["submission_id"] == top
                )["rank"]
                is None
            )
        )


def _asgi_get(app, path: str = "/api/v1/leaderboard", query: bytes = b"tier=dev"):
    """One GET through ``app``; returns (status, body)."""
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    async def go():
        scope = {"type": "http", "method": "GET", "path": path, "query_string": query, "headers": []}
        await app(scope, receive, send)
        return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])

    return go()


def test_readers_never_wait_for_a_refresh_and_only_one_runs(backend, monkeypatch):
    """The route is made slow and counted: while one refresh is held open, every reader gets
    the stored bytes without waiting, and no second refresh starts."""
    monkeypatch.setenv("EDX_LEADERBOARD_CACHE_SECONDS", "1")
    reset_caches()
    monkeypatch.setattr(page_cache, "board_generation", lambda: (0, ()))
    calls = []

    async def run():
        release = asyncio.Event()

        async def route(scope, receive, send):
            calls.append(len(calls))
            if len(calls) > 1:
                await release.wait()  # the refresh: held until the readers below have been answered
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": f"v{len(calls)}".encode()})

        app = page_cache.PageCacheMiddleware(route)
        with use_clock(ManualClock()) as clock:
            assert await _asgi_get(app) == (200, b"v1")
            clock.advance(1.0)
            for _ in range(20):  # each answered from the store at once (a wait would hang here)
                assert await asyncio.wait_for(_asgi_get(app), 1.0) == (200, b"v1")
            for _ in range(200):
                if len(calls) == 2:
                    break
                await asyncio.sleep(0.01)
            for _ in range(5):  # the refresh is held open: still the stored bytes, no second refresh
                assert await asyncio.wait_for(_asgi_get(app), 1.0) == (200, b"v1")
            assert len(calls) == 2  # the first computation and one refresh, still running
            release.set()
            for _ in range(100):
                await asyncio.sleep(0.01)
                if not page_cache._refreshing:
                    break
            assert await _asgi_get(app) == (200, b"v2")

    asyncio.run(run())
    page_cache.clear()


def test_refreshes_of_a_slow_page_are_spaced_by_its_cost(backend, monkeypatch):
    """A page whose computation took c seconds is not refreshed again before 4c, however
    often the boards change: recomputation takes at most a quarter of the process."""
    monkeypatch.setenv("EDX_LEADERBOARD_CACHE_SECONDS", "0.1")
    reset_caches()
    monkeypatch.setattr(page_cache, "board_generation", lambda: (0, ()))
    calls = []

    async def run():
        async def route(scope, receive, send):
            calls.append(1)
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"x"})

        app = page_cache.PageCacheMiddleware(route)
        with use_clock(ManualClock()) as clock:
            await _asgi_get(app)
            (page,) = page_cache._store.values()
            page.cost = 1.0  # as if the computation had taken a second
            clock.advance(3.9)
            await _asgi_get(app)
            await asyncio.sleep(0.05)
            assert len(calls) == 1  # TTL long past, but 3.9 s < 4 × 1 s
            clock.advance(0.2)
            await _asgi_get(app)
            for _ in range(100):
                await asyncio.sleep(0.01)
                if len(calls) == 2 and not page_cache._refreshing:
                    break
            assert len(calls) == 2

    asyncio.run(run())
    page_cache.clear()
