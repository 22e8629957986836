"""The true θ of Dev and Hidden never reaches participants (issue 16.1), through the real API and
worker. The attack: submit θ̂ at the bottom of every published range, then θ = low + |θ̂ − θ|.
The participant does not need to know which figure is |θ̂ − θ|: every figure they can read about
the submission (its JSON, its provenance, the boards and exports it is on, its page) is a
candidate. A figure that merely lies close to θ by chance (a per-element SSIM of zero maps, say)
is told apart by the same attack from the top of the ranges (θ = high − |θ̂ − θ|): a figure at
the same place in both answers that gives θ both ways gives θ away. On Public (θ published) the
attack recovers every component; on Dev and Hidden none.
"""

from __future__ import annotations

import csv
import io
import re
import uuid

import numpy as np
import pytest
from arena_testing import ORG, grant_image, sign_in
from test_access_exfiltration import _build
from worker_testing import wait_finished

import docker
from core.settings import get_settings
from db.session import new_session
from harness.dataset import Result, SceneResult
from harness.formats import write_result
from harness.forward import Spec
from harness.tiers import SPEC_PARAMETERS, TIER_RANGES
from services.datasets import active_dataset, result_expectation, scoring_dataset

pytestmark = [pytest.mark.docker, pytest.mark.slow]

#: A figure gives θ_k away when θ_k is within this fraction of the range width of what the
#: attack reads from it (design: issue 16's "done means").
TOLERANCE = 1e-3
#: Which end of the ranges θ̂ sits at, and how θ follows from a figure v there.
ENDS = {"bottom": lambda low, high, v: low + v, "top": lambda low, high, v: high - v}


def _theta_hat(tier: str, end: str) -> Spec:
    return Spec(**{n: TIER_RANGES[tier][n][0 if end == "bottom" else 1] for n in SPEC_PARAMETERS})


def _attack_result(tier: str, end: str, path) -> bytes:
    """Zero maps (the image terms do not depend on θ̂) and θ̂ at one end of every range."""
    with new_session() as s:
        expect = result_expectation(active_dataset(s, tier), max_bytes=get_settings().max_upload_bytes)
    spec = _theta_hat(tier, end)
    write_result(
        Result(
            scenes={sid: SceneResult(x_hat=np.zeros(expect.shape, np.float32), spec=spec) for sid in expect.scene_ids}
        ),
        path,
    )
    return path.read_bytes()


def _truth(tier: str) -> list[Spec]:
    with new_session() as s:
        return [scene.spec_true for scene in scoring_dataset(active_dataset(s, tier)).scenes]


#: Identifiers and times: text whose digits are no figures (and differ between two submissions).
_NOT_FIGURES = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"  # ids
    r"|[0-9a-f]{16,}"  # digests, hashes
    r"|\d{4}-\d\d-\d\d[T ][\d:.]+(?:Z|[+-]\d\d:?\d\d)?(?: UTC)?"  # times
    r"|edx-arena-test/[\w.:/-]+"  # the image's name
)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def _figures(value, path: str = "") -> dict[str, float]:
    """Every number in a JSON value by its path (numbers inside strings included)."""
    if isinstance(value, bool) or value is None:
        return {}
    if isinstance(value, int | float):
        return {path: float(value)}
    if isinstance(value, str):
        text = _NOT_FIGURES.sub(" ", value)
        return {f"{path}#{i}": float(m) for i, m in enumerate(_NUMBER.findall(text))}
    items = value.items() if isinstance(value, dict) else enumerate(value)
    return {k: v for key, item in items for k, v in _figures(item, f"{path}/{key}").items()}


def _everything_seen(api, token: str, sid: str, tier: str) -> dict[str, float]:
    """Every figure anyone, its owner first, can read about submission ``sid``, by where it is."""
    me = {"Authorization": f"Bearer {token}"}
    answers = {
        "submission": api.get(f"/api/v1/submissions/{sid}", headers=me).json(),
        "provenance": api.get(f"/api/v1/submissions/{sid}/provenance", headers=me).json(),
        "provenance, anonymous": api.get(f"/api/v1/submissions/{sid}/provenance").json(),
    }
    for board in (tier, "overall"):
        answers[f"board {board}"] = api.get("/api/v1/leaderboard", params={"tier": board}).json()
        answers[f"json {board}"] = api.get(
            "/api/v1/leaderboard/export", params={"tier": board, "format": "json"}
        ).json()
        exported = api.get("/api/v1/leaderboard/export", params={"tier": board, "format": "csv"}).text
        answers[f"csv {board}"] = list(csv.DictReader(io.StringIO(exported)))
    r = sign_in(api, token, f"/submissions/{sid}")
    assert r.status_code == 303, r.text
    page = api.get(f"/submissions/{sid}")
    api.cookies.clear()
    assert page.status_code == 200, page.text
    answers["page"] = re.sub(r"<[^>]+>", " ", page.text)  # the page's text, not its markup
    return _figures(answers)


def _given_away(tier: str, seen: dict[str, dict[str, float]]) -> set[tuple[int, str]]:
    """The (scene, parameter) pairs whose true θ one place in the answers gives away from both
    ends of the ranges."""
    found = set()
    for i, truth in enumerate(_truth(tier)):
        for name in SPEC_PARAMETERS:
            low, high = TIER_RANGES[tier][name]
            theta, tol = float(getattr(truth, name)), TOLERANCE * (high - low)
            places = set(seen["bottom"]) & set(seen["top"])
            if any(all(abs(ENDS[e](low, high, seen[e][p]) - theta) <= tol for e in ENDS) for p in places):
                found.add((i, name))
    return found


@pytest.mark.parametrize("stack", ["embedded"], indirect=True)
def test_theta_at_the_range_ends_gives_the_truth_away_only_on_public(api, tmp_path):
    r = api.post("/api/v1/admin/participants", json={"name": "mallory"}, headers=ORG)
    token, mallory_id = r.json()["token"], r.json()["id"]
    mallory = {"Authorization": f"Bearer {token}"}
    ids, tags = {}, []
    for end in ENDS:
        for tier in ("public", "dev"):
            data = _attack_result(tier, end, tmp_path / f"{tier}-{end}.h5")
            r = api.post(
                "/api/v1/submissions",
                data={"tier": tier, "method": f"oracle {end}"},
                files={"file": ("r.h5", data)},
                headers=mallory,
            )
            assert r.status_code == 202, r.text
            ids[tier, end] = r.json()["id"]
        data = _attack_result("hidden", end, tmp_path / f"hidden-{end}.h5")
        tag = _build(
            f"edx-arena-test/disclose-oracle-{uuid.uuid4().hex[:8]}:1",
            {"result.h5": data},
            "cp /payload/result.h5 /output/result.h5",
        )
        tags.append(tag)
        grant_image(api, mallory_id, tag)  # a participant runs only their own images (issue 16.2)
        r = api.post("/api/v1/submissions/container", json={"image": tag, "method": f"oracle {end}"}, headers=mallory)
        assert r.status_code == 202, r.text
        ids["hidden", end] = r.json()["id"]
    try:
        states = wait_finished(api, mallory, {f"{t} {e}": i for (t, e), i in ids.items()}, timeout=300)
    finally:
        for tag in tags:
            docker.from_env().images.remove(tag, force=True)
    assert all(s["status"] == "scored" for s in states.values()), states

    seen = {t: {e: _everything_seen(api, token, ids[t, e], t) for e in ENDS} for t in ("public", "dev", "hidden")}
    # Public: θ is published, and |θ̂ − θ| gives every component back (the attack is real).
    assert len(_given_away("public", seen["public"])) == 3 * len(SPEC_PARAMETERS)
    assert any("/spec_error/" in p for p in seen["public"]["bottom"])
    # Dev and Hidden: nothing anyone can read gives a component away, nor names the figure.
    for tier in ("dev", "hidden"):
        assert _given_away(tier, seen[tier]) == set(), tier
        assert not any("spec_error" in p for e in ENDS for p in seen[tier][e]), tier
    # Organizers keep the figure as scored: on Dev it is θ − low.
    organizer = api.get(f"/api/v1/submissions/{ids['dev', 'bottom']}", headers=ORG).json()
    rows = {row["scene_id"]: row["metrics"] for row in organizer["scores"] if row["scene_id"]}
    for (scene_id, metrics), truth in zip(sorted(rows.items()), _truth("dev"), strict=True):
        for name in SPEC_PARAMETERS:
            low, high = TIER_RANGES["dev"][name]
            assert abs(low + metrics["spec_error"][name] - getattr(truth, name)) <= TOLERANCE * (high - low), scene_id
