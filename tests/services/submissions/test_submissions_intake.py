"""services/submissions/intake.py through the real API: every way in refuses bad input with its
status and exact message, in one order (cheap checks first), and leaves nothing behind.
"""

from __future__ import annotations

import io
import stat
import uuid
import zipfile
from pathlib import Path

import pytest
from arena_testing import ORG, add_participant, download_and_solve
from database_testing import reset_caches
from sqlalchemy import func, select
from worker_testing import error

import docker
from db.models import Participant, Submission
from db.session import new_session
from services.datasets import active_dataset
from services.submissions import intake

SOLVER = (Path(__file__).parents[2] / "harness" / "sandbox" / "script_solver.py").read_bytes()


def _zip(members: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if isinstance(data, tuple):
                data, mode = data
                info.create_system, info.external_attr = 3, mode << 16
            zf.writestr(info, data)
    return buf.getvalue()


def _submit(client, headers, payload: bytes, name="solver.py", **form):
    return client.post("/api/v1/submissions/script", files={"file": (name, payload)}, data=form, headers=headers)


@pytest.fixture
def hidden(client):
    r = client.post("/api/v1/admin/tiers/hidden/dataset", json={"seed": 5, "preset": "small"}, headers=ORG)
    assert r.status_code == 201, r.text
    return client


def _nothing_stored(backend) -> None:
    with new_session() as s:
        assert s.scalar(select(func.count()).select_from(Submission)) == 0
    uploads = backend.data_dir / "storage" / "uploads"
    assert not uploads.exists() or not any(uploads.iterdir())


@pytest.mark.parametrize(
    "payload, message",
    [
        (
            _zip({"main.py": "pass", "../../etc/cron.d/x": "evil"}),
            "the archive entry '../../etc/cron.d/x' has an empty, '.' or '..' path component; names must stay inside the archive",
        ),
        (
            _zip({"main.py": "pass", "/etc/passwd": "evil"}),
            "the archive entry '/etc/passwd' has an absolute path; zip the files with relative names",
        ),
        (
            _zip({"main.py": ("/etc/shadow", stat.S_IFLNK | 0o777)}),
            "the archive entry 'main.py' is a symbolic link; include the file itself",
        ),
        (_zip({"main.py": "pass", "zeros.bin": b"\0" * (8 * 2**20)}), None),
        (
            _zip({"src/main.py": "pass"}),
            "the archive has no main.py at its top level (it holds src); zip the files themselves, not their folder",
        ),
        (
            b"\x7fELF\x02\x01\x01\0\0\0",
            "the upload is neither a zip archive nor a Python source file (it contains NUL bytes)",
        ),
    ],
    ids=["traversal", "absolute", "symlink", "bomb", "no-main", "binary"],
)
def test_bad_archives_are_refused(hidden, backend, payload, message):
    alice = add_participant(hidden, "alice")
    body = error(_submit(hidden, alice, payload, name="s.zip"), 422, "image_invalid", message)
    if message is None:
        assert body["message"].startswith("the archive expands ") and body["message"].endswith(
            "; the limit is 100-fold (a zip bomb?)"
        )
    _nothing_stored(backend)


def test_script_intake_denials(hidden, backend, monkeypatch, client):
    alice = add_participant(hidden, "alice")
    error(_submit(hidden, {}, SOLVER), 401, "unauthorized")
    error(
        _submit(hidden, alice, SOLVER, method="m" * 201),
        422,
        "invalid_request",
        "method: String should have at most 200 characters",
    )
    error(
        _submit(hidden, alice, SOLVER, source="s" * 501),
        422,
        "invalid_request",
        "source: String should have at most 500 characters",
    )
    error(
        hidden.post("/api/v1/submissions/script", data={"method": "x"}, headers=alice),
        422,
        "invalid_request",
        "file: Field required",
    )
    monkeypatch.setenv("EDX_MAX_SCRIPT_BYTES", "1000")
    reset_caches()
    error(_submit(hidden, alice, b"#" * 5000), 413, "file_too_large", "the file is over the 1000 byte upload cap")
    monkeypatch.setenv("EDX_MAX_SCRIPT_BYTES", str(2**20))
    monkeypatch.setenv("EDX_SCRIPT_IMAGE", "edx-arena/not-installed:1")
    reset_caches()
    error(
        _submit(hidden, alice, SOLVER),
        503,
        "platform_error",
        "the script base image edx-arena/not-installed:1 is not installed on this server; tell the organizers",
    )
    _nothing_stored(backend)


def test_script_needs_a_hidden_dataset(client, backend):
    alice = add_participant(client, "alice")
    error(
        _submit(client, alice, SOLVER),
        404,
        "not_found",
        "the hidden tier has no dataset yet; an organizer must seed it",
    )
    _nothing_stored(backend)


def test_valid_script_is_stored_and_queued(hidden, backend):
    alice = add_participant(hidden, "alice")
    r = _submit(hidden, alice, _zip({"main.py": SOLVER}), name="s.zip", method="lstsq", source="doi:10.1000/x")
    assert r.status_code == 202, r.text
    sid = r.json()["id"]
    s = hidden.get(f"/api/v1/submissions/{sid}", headers=alice).json()
    assert (
        s["status"] == "queued" and s["kind"] == "script" and s["tier"] == "hidden" and s["source"] == "doi:10.1000/x"
    )
    assert sorted(p.name for p in (backend.data_dir / "storage" / "uploads").iterdir()) == [f"{sid}.zip"]
    # not scored yet: its provenance is its owner's (and organizers') only
    error(hidden.get(f"/api/v1/submissions/{sid}/provenance"), 404, "not_found", f"no submission {sid!r}")
    assert hidden.get(f"/api/v1/submissions/{sid}/provenance", headers=alice).json()["status"] == "queued"
    assert hidden.get(f"/api/v1/submissions/{sid}/provenance", headers=ORG).status_code == 200


def test_metadata_limits_on_every_intake(seeded, tmp_path):
    alice = add_participant(seeded, "alice")
    result = download_and_solve(seeded, "public", tmp_path)
    r = seeded.post(
        "/api/v1/submissions",
        data={"tier": "public", "description": "d" * 4001},
        files={"file": ("r.h5", result.read_bytes())},
        headers=alice,
    )
    assert (
        r.status_code == 422
        and r.json()["error"]["message"] == "description: String should have at most 4000 characters"
    )
    r = seeded.post("/api/v1/submissions/container", json={"image": "x:1", "source": "s" * 501}, headers=alice)
    assert (
        r.status_code == 422
        and r.json()["error"]["code"] == "invalid_request"
        and r.json()["error"]["message"].startswith("source:")
    )


# ---- Issue 15: every cheap refusal comes first, and a refusal leaves no image on the daemon ----

BUSYBOX = "edx-arena-test/busybox:latest"


def _fresh_archive(name: str) -> tuple[bytes, str]:
    """A ``docker save`` archive of an image the daemon does not hold (busybox with a label of
    its own, saved, then removed): ``(archive bytes, image id)``."""
    dk = docker.from_env()
    dockerfile = f"FROM {BUSYBOX}\nLABEL edx-arena-test.unique={uuid.uuid4().hex}\n"
    tag = f"edx-arena-test/refused-{name}-{uuid.uuid4().hex[:8]}:1"
    image, _ = dk.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True, network_mode="none")
    data = b"".join(image.save(named=True))
    dk.images.remove(image.id, force=True)
    assert not _on_daemon(image.id)
    return data, image.id


def _on_daemon(image_id: str) -> bool:
    try:
        docker.from_env().images.get(image_id)
    except docker.errors.ImageNotFound:
        return False
    return True


def _archive(client, headers, data: bytes, **form):
    return client.post(
        "/api/v1/submissions/container/archive", data=form, files={"file": ("a.tar", data)}, headers=headers
    )


def _take_the_last_slot(name: str) -> None:
    """Another submission of ``name`` takes the day's last Hidden slot (the race a slow load loses)."""
    with new_session() as s:
        who = s.scalar(select(Participant).where(Participant.name == name))
        dataset = active_dataset(s, "hidden")
        s.add(Submission(participant=who, dataset=dataset, tier="hidden", kind="container", image_digest="sha256:x"))
        s.commit()


@pytest.mark.docker
def test_a_refused_archive_leaves_no_image_on_the_daemon(hidden, backend, monkeypatch):
    """A 201-character method name is refused before the daemon loads anything; an upload that
    loses the quota race after its load (checked again under the participant's lock) has its
    image removed again. Before, both left an uncharged image on the daemon."""
    alice = add_participant(hidden, "alice")
    data, image_id = _fresh_archive("method")
    load = intake.load_image_archive
    loads = []
    monkeypatch.setattr(intake, "load_image_archive", lambda path, **kw: loads.append(path) or load(path, **kw))
    error(
        _archive(hidden, alice, data, method="m" * 201),
        422,
        "invalid_request",
        "method: String should have at most 200 characters",
    )
    assert loads == [] and not _on_daemon(image_id)
    _nothing_stored(backend)

    monkeypatch.setenv("EDX_QUOTA_HIDDEN", "1")
    reset_caches()
    data, image_id = _fresh_archive("race")

    def load_then_lose_the_race(path, **kwargs):
        info = load(path, **kwargs)
        assert _on_daemon(info.id)  # really loaded
        _take_the_last_slot("alice")
        return info

    monkeypatch.setattr(intake, "load_image_archive", load_then_lose_the_race)
    body = error(_archive(hidden, alice, data), 429, "quota_exceeded")
    assert body["message"].startswith("daily quota reached: 1 of 1 hidden submissions today")
    assert not _on_daemon(image_id)
    with new_session() as s:  # only the race's winner is recorded
        assert [x.image_digest for x in s.scalars(select(Submission))] == ["sha256:x"]
    assert not [p for p in (backend.data_dir / "storage" / "uploads").iterdir()]  # nor any file
