"""``GET /metrics``: the numbers come from the database (any API process tells the truth about
the whole deployment), upload bytes from the process that stored them."""

from __future__ import annotations

import pytest
from arena_testing import ORG, add_participant, download_and_solve
from database_testing import reset_caches
from prometheus_client.parser import text_string_to_metric_families
from worker_testing import wait_finished


def scrape(client) -> dict[tuple[str, tuple], float]:
    r = client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_queue_depth_and_upload_bytes(seeded, tmp_path):
    client = seeded
    before = scrape(client)
    assert value(before, "edx_arena_database_up") == 1
    assert value(before, "edx_arena_queue_depth", tier="hidden", status="queued") == 0  # every tier listed
    assert ("edx_arena_queue_depth", (("status", "running"), ("tier", "hidden"))) in before
    alice = add_participant(client, "alice")
    result = download_and_solve(client, "public", tmp_path)
    payload = result.read_bytes()
    for _ in range(2):  # no worker runs: both stay queued
        r = client.post(
            "/api/v1/submissions", data={"tier": "public"}, files={"file": ("r.h5", payload)}, headers=alice
        )
        assert r.status_code == 202, r.text
    refused = client.post(
        "/api/v1/submissions", data={"tier": "public"}, files={"file": ("r.h5", b"junk")}, headers=alice
    )
    assert refused.status_code == 422

    after = scrape(client)
    assert value(after, "edx_arena_queue_depth", tier="public", status="queued") == 2
    assert value(after, "edx_arena_queue_depth", tier="dev", status="queued") == 0
    assert value(after, "edx_arena_submissions", tier="public", status="queued", outcome="") == 2
    assert value(after, "edx_arena_oldest_queued_seconds") > 0
    # Every byte streamed to disk counts, the refused file's 4 included (it was read and stored before checking).
    grown = value(after, "edx_arena_upload_bytes_total") - value(before, "edx_arena_upload_bytes_total")
    assert grown == 2 * len(payload) + len(b"junk")


def test_a_database_outage_is_reported_not_raised(backend, monkeypatch):
    from services.metrics import render

    # Nothing listens on port 1: the scrape still answers, with database_up 0.
    monkeypatch.setenv("EDX_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")
    reset_caches()
    families = {f.name: f for f in text_string_to_metric_families(render().decode())}
    assert families["edx_arena_database_up"].samples[0].value == 0
    assert "edx_arena_queue_depth" not in families and "edx_arena_upload_bytes" in families


@pytest.mark.docker
@pytest.mark.slow
def test_runs_by_outcome_and_durations_after_real_work(api, tmp_path):
    alice = add_participant(api, "alice", images=("edx-arena/runner:latest", "edx-arena-test/busybox:latest"))
    result = download_and_solve(api, "public", tmp_path)
    ids = {
        "hdf5": api.post(
            "/api/v1/submissions", data={"tier": "public"}, files={"file": ("r.h5", result.read_bytes())}, headers=alice
        ).json()["id"]
    }
    for key, image in (("runner", "edx-arena/runner:latest"), ("empty", "edx-arena-test/busybox:latest")):
        r = api.post("/api/v1/submissions/container", json={"image": image}, headers=alice)
        assert r.status_code == 202, r.text
        ids[key] = r.json()["id"]
    # Each image also runs on Public and Dev (issue 18): wait for those runs too.
    for key in ("runner", "empty"):
        for run in api.get(f"/api/v1/submissions/{ids[key]}", headers=alice).json()["tier_runs"]:
            ids.setdefault(f"{key}-{run['tier']}", run["id"])
    states = wait_finished(api, alice, ids)
    assert [states[k]["outcome"] for k in ("hdf5", "runner", "empty")] == ["succeeded", "succeeded", "missing_output"]

    m = scrape(api)
    assert value(m, "edx_arena_runs_total", outcome="succeeded") == 4  # the upload and the runner's three
    assert value(m, "edx_arena_runs_total", outcome="missing_output") == 3
    assert value(m, "edx_arena_queue_depth", tier="hidden", status="queued") == 0
    assert value(m, "edx_arena_submissions", tier="hidden", status="failed", outcome="missing_output") == 1
    assert value(m, "edx_arena_run_duration_seconds_count", kind="hdf5") == 1
    assert value(m, "edx_arena_run_duration_seconds_count", kind="container") == 6
    assert 0 < value(m, "edx_arena_run_duration_seconds_sum", kind="container") < 600
    # Buckets are cumulative and end at the count.
    buckets = sorted(
        (float(dict(labels)["le"]), v)
        for (name, labels), v in m.items()
        if name == "edx_arena_run_duration_seconds_bucket" and dict(labels)["kind"] == "container"
    )
    assert [v for _, v in buckets] == sorted(v for _, v in buckets) and buckets[-1] == (float("inf"), 6)
    # The organizer's exact figure: the owner of a Hidden run sees it rounded up to whole seconds.
    runner_seconds = api.get(f"/api/v1/submissions/{ids['runner']}", headers=ORG).json()["runtime_seconds"]
    assert value(m, "edx_arena_container_seconds_count") == 6
    assert value(m, "edx_arena_container_seconds_sum") >= runner_seconds > 0
