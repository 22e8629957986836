"""services/submissions/run.py: the sandboxed run of an image or a script, against the real
daemon: every sandbox limit is a setting that reaches the run, scripts run in the base image
and are scored, identical work is reused, a rescore scores the kept output without running
again, and a script's output is held to the sandbox cap.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from arena_testing import ORG, add_participant
from database_testing import reset_caches
from sqlalchemy import func, select
from worker_testing import wait_finished

from core.settings import get_settings
from db.models import Score, Submission
from db.session import new_session
from harness.sandbox import RunLimits
from harness.scoring import SCORER_VERSION
from services.submissions.run import limits_from_settings, run_submission
from services.submissions.state import claim


@pytest.fixture
def settings_env(monkeypatch):
    def apply(**env):
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        return limits_from_settings()

    monkeypatch.setenv("EDX_ENVIRONMENT", "development")
    yield apply
    get_settings.cache_clear()


RUNNER = "edx-arena/runner:latest"


def _run(submission_id: str) -> None:
    with new_session() as s:
        run_submission(s, claim(s, submission_id, worker="test"))
        s.commit()


@pytest.fixture
def boards(seeded):
    r = seeded.post("/api/v1/admin/tiers/hidden/dataset", json={"seed": 21, "preset": "small"}, headers=ORG)
    assert r.status_code == 201, r.text
    return seeded


SOLVER = (Path(__file__).parents[2] / "harness" / "sandbox" / "script_solver.py").read_bytes()


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


@pytest.fixture
def hidden(client):
    r = client.post("/api/v1/admin/tiers/hidden/dataset", json={"seed": 5, "preset": "small"}, headers=ORG)
    assert r.status_code == 201, r.text
    return client


def test_defaults_are_the_design_defaults(settings_env):
    limits = settings_env()
    assert limits == RunLimits(
        cpus=1.0,
        memory_bytes=2 * 2**30,
        pids=256,
        wall_seconds=1800,
        output_bytes=512 * 2**20,
        log_bytes=2**20,
        runtime=None,
        allow_image_user=False,
    )
    assert limits.network_disabled and limits.read_only_root and limits.user == "65534:65534"


def test_every_limit_is_a_setting(settings_env):
    limits = settings_env(
        EDX_SANDBOX_CPUS="2",
        EDX_SANDBOX_MEMORY_BYTES=str(2**30),
        EDX_SANDBOX_PIDS="64",
        EDX_SANDBOX_WALL_SECONDS="60",
        EDX_SANDBOX_OUTPUT_BYTES=str(2**20),
        EDX_SANDBOX_LOG_BYTES="4096",
        EDX_SANDBOX_RUNTIME="runsc",
        EDX_SANDBOX_ALLOW_IMAGE_USER="true",
    )
    assert (limits.cpus, limits.memory_bytes, limits.pids, limits.wall_seconds) == (2.0, 2**30, 64, 60)
    assert (limits.output_bytes, limits.log_bytes, limits.runtime, limits.allow_image_user) == (
        2**20,
        4096,
        "runsc",
        True,
    )


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_rescore_scores_the_kept_output_without_running_again(boards):
    alice = add_participant(boards, "alice", images=(RUNNER,))
    sid = boards.post("/api/v1/submissions/container", json={"image": RUNNER, "method": "nnls"}, headers=alice).json()[
        "id"
    ]
    _run(sid)
    with new_session() as s:
        sub = s.get(Submission, sid)
        kept = Path(sub.file_path)
        assert sub.status == "scored" and kept.is_file() and kept.parent.name == "results"
        first_runtime = sub.runtime_seconds
        # A scorer update: the current version's rows are gone (as if they were never written).
        s.query(Score).filter(Score.submission_id == sid).update({Score.scoring_version: "edx-score-v0"})
        s.commit()
    r = boards.post(f"/api/v1/admin/submissions/{sid}/rescore", headers=ORG)
    assert r.status_code in (200, 202), r.text

    _run(sid)
    with new_session() as s:
        sub = s.get(Submission, sid)
        versions = dict(
            s.execute(
                select(Score.scoring_version, func.count())
                .where(Score.submission_id == sid)
                .group_by(Score.scoring_version)
            ).all()
        )
        assert sub.status == "scored" and sub.runtime_seconds == first_runtime  # not run again
    assert versions == {"edx-score-v0": 4, SCORER_VERSION: 4}  # old rows kept, new ones added


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_digest_cache_ignores_rows_of_an_older_scorer(boards, monkeypatch):
    monkeypatch.setenv("EDX_QUOTA_HIDDEN", "3")  # one participant's three runs (the cache is per participant)
    reset_caches()
    alice = add_participant(boards, "alice", images=(RUNNER,))
    first = boards.post("/api/v1/submissions/container", json={"image": RUNNER}, headers=alice).json()["id"]
    _run(first)
    with new_session() as s:
        s.query(Score).filter(Score.submission_id == first).update({Score.scoring_version: "edx-score-v0"})
        s.commit()
    second = boards.post("/api/v1/submissions/container", json={"image": RUNNER}, headers=alice).json()["id"]
    _run(second)
    with new_session() as s:
        sub = s.get(Submission, second)
        rows = s.scalars(select(Score).where(Score.submission_id == second)).all()
    assert sub.status == "scored" and "reused" not in (sub.log_tail or "")  # it really ran
    assert {r.scoring_version for r in rows} == {SCORER_VERSION}

    third = boards.post("/api/v1/submissions/container", json={"image": RUNNER}, headers=alice).json()["id"]
    _run(third)
    with new_session() as s:
        assert "reused" in s.get(Submission, third).log_tail  # current rows exist now: served from the cache


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
    # One entry per method: the two scripts are two methods; the failed one is not on the board.
    assert {e["method"]: e["submission_id"] for e in board["data"]} == {
        "nominal lstsq": ids["py"],
        "zipped lstsq": ids["zip"],
    }
    assert all(e["certified"] is True and e["rank"] is not None for e in board["data"])

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


@pytest.mark.docker
def test_a_script_output_is_held_to_the_sandbox_cap_not_the_upload_cap(hidden, monkeypatch):
    # A script's result comes out of the sandbox (EDX_SANDBOX_OUTPUT_BYTES), like an image's; the
    # far smaller cap on participants' uploads must not fail it at scoring.
    from services.submissions.run import run_submission
    from services.submissions.state import claim

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


@pytest.mark.docker
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_rescore_of_a_hidden_image_rescores_its_runs_on_every_tier(boards):
    alice = add_participant(boards, "alice", images=(RUNNER,))
    sid = boards.post("/api/v1/submissions/container", json={"image": RUNNER, "method": "nnls"}, headers=alice).json()[
        "id"
    ]
    with new_session() as s:
        runs = [sid, *(c.id for c in s.get(Submission, sid).children)]
        assert sorted(s.get(Submission, r).tier for r in runs) == ["dev", "hidden", "public"]
    for run_id in runs:
        _run(run_id)
    with new_session() as s:
        first = {r: s.get(Submission, r).runtime_seconds for r in runs}
        assert all(s.get(Submission, r).status == "scored" for r in runs)
        s.query(Score).filter(Score.submission_id.in_(runs)).update({Score.scoring_version: "edx-score-v0"})
        s.commit()
    r = boards.post(f"/api/v1/admin/submissions/{sid}/rescore", headers=ORG)
    assert r.status_code == 202, r.text
    with new_session() as s:
        assert all(s.get(Submission, r).status == "queued" for r in runs)  # the children were requeued with it
    for run_id in runs:
        _run(run_id)
    with new_session() as s:
        for run_id in runs:
            sub = s.get(Submission, run_id)
            versions = set(s.scalars(select(Score.scoring_version).where(Score.submission_id == run_id)))
            assert sub.status == "scored" and sub.runtime_seconds == first[run_id]  # the kept output, not a new run
            assert versions == {"edx-score-v0", SCORER_VERSION}
    # The organizer's `admin rescore --outdated` lists the artifact's three runs once each.
    from typer.testing import CliRunner

    from services.cli.main import app

    with new_session() as s:
        s.query(Score).filter(Score.submission_id.in_(runs), Score.scoring_version == SCORER_VERSION).update(
            {Score.scoring_version: "edx-score-v1"}
        )
        s.commit()
    r = CliRunner().invoke(app, ["admin", "rescore", "--outdated"])
    assert r.exit_code == 0, r.output
    assert sorted(r.stdout.split()) == sorted(runs)
    with new_session() as s:
        assert all(s.get(Submission, r).status == "queued" for r in runs)
