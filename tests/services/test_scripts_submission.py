"""Python script submissions through the real API and worker: a script (and a zip) runs in the
reference base image and is scored on the Hidden board with its method metadata; a script
importing something the image lacks fails as ``nonzero_exit`` with its traceback in the
owner's log; a bad archive is refused at intake and leaves nothing behind."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import pytest
from arena_testing import ORG, add_participant, reset_caches
from sqlalchemy import func, select
from worker_testing import error, wait_finished

from db.models import Submission
from db.session import new_session

SOLVER = (Path(__file__).parents[1] / "harness" / "sandbox" / "script_solver.py").read_bytes()
HTML = "<script>alert('x')</script> & <b>bold</b>"


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


@pytest.mark.docker
@pytest.mark.slow
def test_scripts_are_run_in_the_base_image_and_scored(api):
    import docker

    alice = add_participant(api, "alice")
    ids = {}
    r = _submit(api, alice, SOLVER, method="nominal lstsq", description=HTML, source="https://example.org/lstsq")
    assert r.status_code == 202, r.text
    ids["py"] = r.json()["id"]
    lib = "def run():\n" + "".join("    " + line + "\n" for line in SOLVER.decode().splitlines())
    r = _submit(
        api,
        alice,
        _zip({"main.py": "from lib.solve import run\nrun()\n", "lib/__init__.py": "", "lib/solve.py": lib}),
        name="solver.zip",
        method="zipped lstsq",
    )
    assert r.status_code == 202, r.text
    ids["zip"] = r.json()["id"]
    r = _submit(api, alice, b"import numpy\nimport torch  # not in the base image\n", method="needs torch")
    ids["missing"] = r.json()["id"]
    states = wait_finished(api, alice, ids)

    base_id = docker.from_env().images.get("edx-arena/base:bookworm").id
    for key in ("py", "zip"):
        s = states[key]
        assert s["status"] == "scored" and s["outcome"] == "succeeded", s
        assert s["kind"] == "script" and s["image_digest"] == base_id and len(s["file_sha256"]) == 64
        tier_row = next(x for x in s["scores"] if x["scene_id"] == "")
        assert 0 < tier_row["score"] < 1 and len(s["scores"]) == 4
    py = states["py"]
    assert py["description"] == HTML and py["source"] == "https://example.org/lstsq"  # stored as-is

    missing = states["missing"]
    assert missing["status"] == "failed" and missing["outcome"] == "nonzero_exit" and missing["exit_code"] == 1
    # The message never quotes the log; the owner's filtered log shows the error that ended the run.
    assert missing["error_message"] == "the container exited with code 1; the log shows the error"
    assert missing["log_tail"].splitlines()[-1] == "ModuleNotFoundError: No module named 'torch'"
    assert missing["log_tail"].splitlines()[-2].startswith('File "/submission/main.py", line 2')
    organizer_view = api.get(f"/api/v1/submissions/{ids['missing']}", headers=ORG).json()
    assert "ModuleNotFoundError: No module named 'torch'" in organizer_view["log_tail"]

    board = api.get("/api/v1/leaderboard", params={"tier": "hidden"}).json()
    assert board["count"] == 1  # one entry per participant: the better of the two scripts
    entry = board["data"][0]
    best = max(("py", "zip"), key=lambda k: next(x["score"] for x in states[k]["scores"] if x["scene_id"] == ""))
    assert entry["submission_id"] == ids[best] and entry["certified"] is True and entry["rank"] == 1
    assert entry["method"] == states[best]["method"]

    prov = api.get(f"/api/v1/submissions/{ids['py']}/provenance").json()  # anonymous: it is scored
    assert prov["kind"] == "script" and prov["image"] == "edx-arena/base:bookworm" and prov["image_digest"] == base_id
    assert prov["file_sha256"] == py["file_sha256"] and prov["description"] == HTML
    assert prov["scores"][0]["submission_hash"] == py["file_sha256"]
    assert prov["runs"][0]["outcome"] == "succeeded" and prov["runs"][0]["exit_code"] == 0
    assert "log_tail" not in prov


@pytest.mark.docker
@pytest.mark.slow
def test_identical_script_reuses_the_earlier_run(api):
    alice = add_participant(api, "alice")
    first = _submit(api, alice, SOLVER, method="a").json()["id"]
    wait_finished(api, alice, {"a": first})
    again = _submit(api, alice, SOLVER, method="a again").json()["id"]
    s = wait_finished(api, alice, {"b": again})["b"]
    assert s["status"] == "scored" and s["outcome"] == "succeeded"
    with new_session() as session:
        assert (
            session.get(Submission, again).log_tail
            == "identical script already ran on this dataset; its result was reused"
        )


# ---- intake: refused before anything is stored ------------------------------------------------


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


@pytest.mark.docker
def test_a_script_output_is_held_to_the_sandbox_cap_not_the_upload_cap(hidden, monkeypatch):
    # A script's result comes out of the sandbox (EDX_SANDBOX_OUTPUT_BYTES), like an image's; the
    # far smaller cap on participants' uploads must not fail it at scoring.
    from services.containers import run_submission
    from services.submissions import claim

    alice = add_participant(hidden, "alice")
    sid = _submit(hidden, alice, SOLVER, method="lstsq").json()["id"]
    monkeypatch.setenv("EDX_MAX_UPLOAD_BYTES", "1024")
    reset_caches()
    with new_session() as s:
        run_submission(s, claim(s, sid, worker="test"))
        s.commit()
        sub = s.get(Submission, sid)
        assert (sub.status, sub.outcome) == ("scored", "succeeded"), sub.error_message
        assert Path(sub.file_path).stat().st_size > 1024
