"""Method entries and runs on every tier (issue 18), through the real API and a real worker on
the real Docker daemon: one image sent to Hidden runs on Public, Dev and Hidden and makes one
Certified overall row; a Public upload of the truth under the same method name makes the row
self-reported; a participant's methods are rows of their own, capped on the overall board,
each with its own interval and tie mark.
"""

from __future__ import annotations

import pytest
from arena_testing import ORG, add_participant, sign_in
from database_testing import reset_caches
from worker_testing import wait_finished

from harness.tiers import BLIND_TIERS

RUNNER = "edx-arena/runner:latest"

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def _submit_image(api, headers, method: str) -> str:
    r = api.post("/api/v1/submissions/container", json={"image": RUNNER, "method": method}, headers=headers)
    assert r.status_code == 202, r.text
    return r.json()["id"]


def _runs(api, headers, sid: str) -> dict[str, str]:
    """The ids of the artifact's runs by tier, read from the Hidden submission."""
    body = api.get(f"/api/v1/submissions/{sid}", headers=headers).json()
    return {run["tier"]: run["id"] for run in body["tier_runs"]}


def _overall(api, **params) -> list[dict]:
    r = api.get("/api/v1/leaderboard", params={"tier": "overall", **params})
    assert r.status_code == 200, r.text
    return r.json()["data"]


def _truth_result(api, tmp_path):
    """A Public result that is the published truth itself (x_true and the true θ)."""
    from harness.dataset import Result, SceneResult
    from harness.formats import read_measurement, write_result

    measurement = tmp_path / "public.h5"
    measurement.write_bytes(api.get("/api/v1/tiers/public/measurement").content)
    data = read_measurement(measurement)
    path = tmp_path / "truth-result.h5"
    write_result(Result({s.scene_id: SceneResult(x_hat=s.x_true, spec=s.spec_true) for s in data.scenes}), path)
    return path


def test_one_image_runs_on_three_tiers_and_makes_one_certified_row(api):
    alice = add_participant(api, "alice", images=(RUNNER,))
    sid = _submit_image(api, alice, "Reference NNLS")
    ids = _runs(api, alice, sid)
    assert list(ids) == list(BLIND_TIERS) and ids["hidden"] == sid
    states = wait_finished(api, alice, ids, timeout=600)

    for tier, state in states.items():
        assert state["status"] == "scored" and state["outcome"] == "succeeded", state
        assert state["kind"] == "container" and state["image_digest"] == states["hidden"]["image_digest"]
        assert state["method_key"] == "reference nnls"
        # One Hidden submission: the quota counts it once, its runs elsewhere are uncharged.
        assert state["charged"] is (tier == "hidden")
        assert state["parent_id"] == (None if tier == "hidden" else sid)
    # Each submission shows the artifact's three runs together, each scored on its own tier.
    together = states["public"]["tier_runs"]
    assert [r["tier"] for r in together] == list(BLIND_TIERS) and together == states["hidden"]["tier_runs"]
    assert all(r["status"] == "scored" and r["certified"] and 0 < r["score"] < 1 for r in together)
    # Provenance per tier: each run names the dataset it was scored against.
    provenance = api.get(f"/api/v1/submissions/{sid}/provenance").json()
    hashes = {r["tier"]: r["dataset_hash"] for r in provenance["tier_runs"]}
    assert len(set(hashes.values())) == 3
    for tier, run_id in ids.items():
        rows = api.get(f"/api/v1/submissions/{run_id}/provenance").json()["scores"]
        assert {row["dataset_hash"] for row in rows} == {hashes[tier]}

    [row] = _overall(api)
    assert (row["participant"], row["method"], row["certified"], row["rank"]) == ("alice", "Reference NNLS", True, 1)
    assert {t: (x["submission_id"], x["self_reported"]) for t, x in row["tiers"].items()} == {
        t: (ids[t], False) for t in BLIND_TIERS
    }
    assert row["ci_low"] <= row["score"] <= row["ci_high"]
    assert _overall(api, certified="true") == [row]
    # The tier boards show the artifact's runs as Certified entries too.
    for tier in BLIND_TIERS:
        [entry] = api.get("/api/v1/leaderboard", params={"tier": tier}).json()["data"]
        assert entry["submission_id"] == ids[tier] and entry["certified"] is True

    page = api.get("/?board=certified").text
    assert "Reference NNLS" in page and "self-reported" not in page.split("<tbody>")[1].split("</tbody>")[0]
    # The submission page shows the three runs together.
    sign_in(api, alice["Authorization"].split()[1])
    page = api.get(f"/submissions/{ids['public']}").text
    assert 'id="tier-runs"' in page and all(f'data-tier="{t}"' in page for t in BLIND_TIERS)
    assert page.count('<span class="badge certified">Certified</span>') >= 3


def test_a_public_upload_under_the_same_method_name_is_self_reported(api, tmp_path):
    bob = add_participant(api, "bob", images=(RUNNER,))
    sid = _submit_image(api, bob, "My Method")
    ids = _runs(api, bob, sid)
    wait_finished(api, bob, ids, timeout=600)
    # The Public tier hands out the truth: uploading it scores best there, under the same name.
    with open(_truth_result(api, tmp_path), "rb") as f:
        r = api.post(
            "/api/v1/submissions",
            data={"tier": "public", "method": "  my   METHOD "},
            files={"file": ("r.h5", f)},
            headers=bob,
        )
    assert r.status_code == 202, r.text
    upload = r.json()["id"]
    assert wait_finished(api, bob, {"u": upload})["u"]["status"] == "scored"

    [row] = _overall(api)  # one method: the name's normal form is the same
    assert row["tiers"]["public"]["submission_id"] == upload and row["tiers"]["public"]["self_reported"] is True
    assert row["tiers"]["public"]["score"] > row["tiers"]["dev"]["score"]
    assert row["certified"] is False
    assert (row["tiers"]["dev"]["submission_id"], row["tiers"]["hidden"]["submission_id"]) == (ids["dev"], sid)
    # The certified view ranks the method by its artifact's own three runs.
    [certified] = _overall(api, certified="true")
    assert certified["certified"] is True
    assert {t: x["submission_id"] for t, x in certified["tiers"].items()} == ids
    assert certified["score"] < row["score"]
    page = api.get("/?board=overall").text
    assert "self-reported" in page


def test_methods_are_rows_capped_per_participant_with_their_own_ties(api, monkeypatch):
    carol = add_participant(api, "carol", images=(RUNNER,))
    # The same image under four names: four methods (the later runs reuse the first's scores).
    ids = {}
    for method in ("A", "B", "C", "D"):
        for tier, run_id in _runs(api, carol, _submit_image(api, carol, method)).items():
            ids[method, tier] = run_id
    states = wait_finished(api, carol, {f"{m}/{t}": i for (m, t), i in ids.items()}, timeout=900)
    assert all(s["status"] == "scored" for s in states.values()), states

    for tier in BLIND_TIERS:  # every tier board has one entry per method
        board = api.get("/api/v1/leaderboard", params={"tier": tier}).json()["data"]
        assert sorted(e["method"] for e in board) == ["A", "B", "C", "D"]
    rows = _overall(api)
    # The default cap: three methods per participant on the overall board, the earliest of equals kept.
    assert [r["method"] for r in rows] == ["A", "B", "C"]
    assert all(r["certified"] and r["rank"] == 1 for r in rows)
    # Ties and intervals per row: identical runs cannot be separated, so one group.
    assert [r["tie_group"] for r in rows] == [1, 1, 1]
    assert all(r["ci_low"] is not None and r["ci_low"] <= r["score"] <= r["ci_high"] for r in rows)
    assert len({tuple(r["tiers"][t]["submission_id"] for t in BLIND_TIERS) for r in rows}) == 3

    monkeypatch.setenv("EDX_OVERALL_METHODS_PER_PARTICIPANT", "2")
    reset_caches()
    assert [r["method"] for r in _overall(api)] == ["A", "B"]
    assert [r["method"] for r in _overall(api, certified="true")] == ["A", "B"]
    # The organizer's export follows the board.
    export = api.get("/api/v1/leaderboard/export", params={"tier": "overall", "format": "json"}, headers=ORG).json()
    assert export["count"] == 2


def test_the_public_run_never_sees_the_truth(api):
    """The Public download carries the truth; the server's run of a Hidden script on Public
    reads the same view without it (else a script could copy x_true and score 1 there)."""
    from pathlib import Path

    solver = (Path(__file__).parents[1] / "harness" / "sandbox" / "script_solver.py").read_text()
    guard = (
        "import sys, h5py\n"
        "with h5py.File('/input/measurement.h5', 'r') as f:\n"
        "    leaked = [k for s in f['scenes'].values() for k in s if k in ('x_true', 'spec_true')]\n"
        "    leaked += [k for k in f.attrs if 'seed' in k]\n"
        "if leaked:\n"
        "    sys.exit(f'truth in the input: {leaked}')\n"
    )
    dave = add_participant(api, "dave")
    r = api.post(
        "/api/v1/submissions/script",
        files={"file": ("main.py", (guard + solver).encode())},
        data={"method": "guarded lstsq"},
        headers=dave,
    )
    assert r.status_code == 202, r.text
    ids = _runs(api, dave, r.json()["id"])
    states = wait_finished(api, dave, ids, timeout=600)
    assert {t: (s["status"], s["outcome"]) for t, s in states.items()} == {
        t: ("scored", "succeeded") for t in BLIND_TIERS
    }, {t: s.get("log_tail") for t, s in states.items()}
    [row] = _overall(api, certified="true")
    assert row["method"] == "guarded lstsq" and row["certified"] is True
