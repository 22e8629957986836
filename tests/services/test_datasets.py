"""services/datasets.py: the worker's cache of datasets with truth (one load per process, shared
by concurrent callers, a reseeded tier is a new entry) and the Standard track's truth, the
organizer's choice.
"""

from __future__ import annotations

import threading

import h5py
import numpy as np
import pytest
from arena_testing import ORG
from sqlalchemy import select
from worker_testing import error

import services.datasets as datasets
from db.migrate import upgrade_to_head
from db.models import Dataset
from db.session import new_session
from harness.formats import read_measurement
from harness.tiers import SPEC_PARAMETERS
from services.datasets import prefetch_scoring_dataset, scoring_dataset, seed_tier


@pytest.fixture
def counted_reads(monkeypatch):
    """Count the real reads of measurement files the cache makes (the reads still happen)."""
    calls: list[str] = []

    def counting(path):
        calls.append(str(path))
        return read_measurement(path)

    monkeypatch.setattr(datasets, "read_measurement", counting)
    monkeypatch.setattr(datasets, "_scoring_cache", type(datasets._scoring_cache)())
    return calls


def _seed(tier: str, seed: int) -> Dataset:
    upgrade_to_head()
    with new_session() as s:
        row = seed_tier(s, tier=tier, seed=seed, preset="small")
        s.commit()
        s.refresh(row)
        s.expunge(row)
        return row


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_loads_once_and_equals_the_file(backend, counted_reads):
    row = _seed("dev", 11)
    first = scoring_dataset(row)
    assert scoring_dataset(row) is first
    assert counted_reads == [row.full_path]
    direct = read_measurement(row.full_path)
    assert first.content_hash == direct.content_hash == row.content_hash
    for a, b in zip(first.scenes, direct.scenes):
        np.testing.assert_array_equal(a.y, b.y)
        np.testing.assert_array_equal(a.x_true, b.x_true)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_concurrent_callers_share_one_load(backend, counted_reads):
    row = _seed("dev", 12)
    got, barrier = [], threading.Barrier(6)

    def call():
        barrier.wait()
        got.append(scoring_dataset(row))

    threads = [threading.Thread(target=call) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 6 and all(g is got[0] for g in got)
    assert counted_reads == [row.full_path]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_reseeded_tier_is_a_new_entry(backend, counted_reads):
    old = _seed("hidden", 13)
    new = _seed("hidden", 14)
    assert old.content_hash != new.content_hash
    assert scoring_dataset(old).content_hash == old.content_hash
    assert scoring_dataset(new).content_hash == new.content_hash
    with new_session() as s:
        active = s.scalar(select(Dataset).where(Dataset.tier == "hidden", Dataset.active.is_(True)))
        assert scoring_dataset(active) is scoring_dataset(new)
    assert counted_reads == [old.full_path, new.full_path]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_prefetch_warms_the_cache_and_swallows_a_missing_file(backend, counted_reads, tmp_path):
    row = _seed("public", 15)
    prefetch_scoring_dataset(row).join(timeout=60)
    assert counted_reads == [row.full_path]
    assert scoring_dataset(row).content_hash == row.content_hash
    assert counted_reads == [row.full_path]  # served from the prefetch
    gone = Dataset(full_path=str(tmp_path / "missing.h5"), content_hash="0" * 64)
    prefetch_scoring_dataset(gone).join(timeout=60)  # no exception escapes the thread
    with pytest.raises(FileNotFoundError, match="no such file"):
        scoring_dataset(gone)


def test_standard_truth_is_the_organizers_choice(seeded, tmp_path):
    r = seeded.post(
        "/api/v1/admin/tiers/standard/dataset", json={"seed": 7, "preset": "small", "with_truth": True}, headers=ORG
    )
    assert r.status_code == 201, r.text
    path = tmp_path / "s.h5"
    path.write_bytes(seeded.get("/api/v1/tiers/standard/measurement").content)
    with h5py.File(path) as f:
        for scene in f["scenes"].values():
            assert "x_true" in scene
            # scenes at nominal θ: the operator is exactly the published one
            assert all(scene.attrs[f"spec_true/{p}"] == f["spec/nominal"].attrs[p] for p in SPEC_PARAMETERS)
    # reseeding without the flag goes back to the default: no truth
    assert (
        seeded.post(
            "/api/v1/admin/tiers/standard/dataset", json={"seed": 8, "preset": "small"}, headers=ORG
        ).status_code
        == 201
    )
    path.write_bytes(seeded.get("/api/v1/tiers/standard/measurement").content)
    with h5py.File(path) as f:
        assert all("x_true" not in scene for scene in f["scenes"].values())

    message = (
        "with_truth is the organizer's choice on the standard tier only; the public tier always "
        "includes its truth and the dev and hidden tiers never do"
    )
    for tier in ("dev", "hidden", "public"):
        error(
            seeded.post(
                f"/api/v1/admin/tiers/{tier}/dataset",
                json={"seed": 9, "preset": "small", "with_truth": True},
                headers=ORG,
            ),
            400,
            "bad_request",
            message,
        )
    error(
        seeded.post("/api/v1/admin/tiers/gold/dataset", json={"seed": 9}, headers=ORG),
        422,
        "invalid_request",
        "tier: Input should be 'public', 'dev', 'hidden' or 'standard' (got 'gold')",
    )
