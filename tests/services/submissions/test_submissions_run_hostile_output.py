"""What a Hidden-tier run leaves in /output is the participant's doing, and the worker must survive
it: a deflate bomb in result.h5 is refused by the isolated validator (not inflated in the worker),
and a 5,000-deep tree is charged as output_too_large with its run folder removed. Real API, real
Docker (scripts run in the reference base image); the worker's run function is called in-process."""

from __future__ import annotations

import resource

import pytest
from arena_testing import ORG, add_participant
from database_testing import reset_caches

from db.models import Submission
from db.session import new_session
from harness.sandbox import remove_tree
from services.submissions.run import run_submission
from services.submissions.state import claim

pytestmark = [pytest.mark.docker, pytest.mark.parametrize("backend", ["sqlite"], indirect=True)]

#: A valid result whose first scene's one chunk is replaced by 600 MiB of zeros deflated to about
#: 0.6 MiB: the declared shape is right, only inflating the chunk shows what it holds.
BOMB = b"""
import zlib
import h5py
import numpy as np

with h5py.File("/input/measurement.h5", "r") as f, h5py.File("/output/result.h5", "w") as out:
    out.attrs["format"] = "edx-arena-result"
    out.attrs["format_version"] = 1
    n = len(f["elements"])
    for scene_id, scene in f["scenes"].items():
        h, w, _ = scene["y"].shape
        group = out.create_group(f"scenes/{scene_id}")
        group.create_dataset("x_hat", data=np.full((n, h, w), 0.1, np.float32), chunks=(n, h, w), compression="gzip")
        spec = group.create_group("spec")
        for name in ("absorption_correction_error", "detector_solid_angle", "peak_overlap", "bremsstrahlung_background"):
            spec.attrs[name] = 0.0
    deflate, zeros, bomb = zlib.compressobj(9), bytes(2**20), []
    for _ in range(600):
        bomb.append(deflate.compress(zeros))
    bomb.append(deflate.flush())
    out[f"scenes/{next(iter(f['scenes']))}/x_hat"].id.write_direct_chunk((0, 0, 0), b"".join(bomb))
print("wrote a bomb")
"""

#: 5,120 nested directories under /output (through directory descriptors: no path could name the
#: bottom), then files until something stops it.
DEEP = b"""
import os

fd = os.open("/output", os.O_RDONLY | os.O_DIRECTORY)
for _ in range(5120):
    os.mkdir("d", dir_fd=fd)
    child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
    os.close(fd)
    fd = child
i = 0
while True:
    with open(f"/output/f{i}", "w") as f:
        f.write("x")
    i += 1
"""


@pytest.fixture
def hidden(seeded, backend):
    r = seeded.post("/api/v1/admin/tiers/hidden/dataset", json={"seed": 23, "preset": "small"}, headers=ORG)
    assert r.status_code == 201, r.text
    yield seeded
    remove_tree(backend.data_dir / "storage" / "runs")  # whatever a failed check left: pytest's rmtree recurses


def _run_script(client, code: bytes) -> Submission:
    alice = add_participant(client, "alice")
    r = client.post("/api/v1/submissions/script", files={"file": ("main.py", code)}, headers=alice)
    assert r.status_code == 202, r.text
    sid = r.json()["id"]
    with new_session() as s:
        run_submission(s, claim(s, sid, worker="test"))
        s.commit()
    with new_session() as s:
        sub = s.get(Submission, sid)
        s.expunge(sub)
        return sub


def test_a_deflate_bomb_result_is_refused_outside_the_worker(hidden):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    sub = _run_script(hidden, BOMB)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    assert (sub.status, sub.outcome, sub.charged) == ("failed", "invalid_output", True), sub.error_message
    assert sub.error_message.startswith("/output/result.h5 is not a valid result: "), sub.error_message
    assert "could not be read" in sub.error_message
    # The worker process itself never inflated the chunk (in-process validation peaked at ~690 MiB).
    assert grown < 200 * 2**20, grown


def test_a_deep_tree_is_charged_and_its_run_folder_removed(hidden, backend, monkeypatch):
    # Were the caps disabled again, the script would write files for the whole wall time.
    monkeypatch.setenv("EDX_SANDBOX_WALL_SECONDS", "60")
    reset_caches()
    sub = _run_script(hidden, DEEP)
    assert (sub.status, sub.outcome, sub.charged) == ("failed", "output_too_large", True), sub.error_message
    assert sub.error_message == "/output nests directories more than 32 levels deep (the cap); the run was stopped"
    runs = backend.data_dir / "storage" / "runs"
    assert not runs.exists() or list(runs.iterdir()) == []
