"""A Hidden-tier image that prints the measurement it reads: its owner never sees the dump (only
the error excerpt of harness.sandbox.disclosure), the organizer sees the whole capped log. Real
Docker, the real API, the worker's run function in-process."""

from __future__ import annotations

import io

import pytest
from arena_testing import ORG, add_participant

import docker
from db.session import new_session
from services.containers import run_submission
from services.submissions import claim

LEAKY = "edx-arena-test/leaky:latest"
DOCKERFILE = b"""FROM edx-arena-test/busybox:latest
CMD ["od -v -An -tu1 -w32 -N 2048 /input/measurement.h5; echo 'solver crashed: no convergence'; exit 3"]
"""


@pytest.fixture(scope="module")
def leaky_image():
    client = docker.from_env()
    client.images.build(fileobj=io.BytesIO(DOCKERFILE), tag=LEAKY, rm=True)
    return LEAKY


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_owner_never_sees_the_measurement_dump(seeded, leaky_image):
    r = seeded.post("/api/v1/admin/tiers/hidden/dataset", json={"seed": 7, "preset": "small"}, headers=ORG)
    assert r.status_code == 201, r.text
    alice = add_participant(seeded, "alice")
    r = seeded.post("/api/v1/submissions/container", json={"image": leaky_image, "method": "leaky"}, headers=alice)
    assert r.status_code == 202, r.text
    sid = r.json()["id"]
    with new_session() as s:
        run_submission(s, claim(s, sid, worker="test"))
        s.commit()

    full = seeded.get(f"/api/v1/submissions/{sid}", headers=ORG).json()
    mine = seeded.get(f"/api/v1/submissions/{sid}", headers=alice).json()
    assert full["outcome"] == mine["outcome"] == "nonzero_exit" and mine["exit_code"] == 3
    dump = [line for line in full["log_tail"].splitlines() if len(line.split()) == 32]
    assert len(dump) == 2048 // 32  # the organizer sees every line the container printed
    assert not any(line in mine["log_tail"] for line in dump)
    shown = mine["log_tail"].splitlines()
    assert shown[0].startswith("[Hidden-tier log: its owner sees only the error") and len(shown) == 2
    assert shown[-1] == "solver crashed: no convergence"  # the owner still learns why it failed
