"""``edx-arena run`` and ``edx-arena init`` (services/cli/local.py), against the real daemon: the
starter project builds offline and scores on a Public file; a hostile image ends with the very
outcome, message and exit code the server's run path gives it; the container never sees the
truth; an archive is loaded as the server loads an upload. ``run`` is the installed command in a
new process, with no server setting in its environment (a participant has none).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from arena_testing import ORG, add_participant
from database_testing import reset_caches
from typer.testing import CliRunner

import docker
from db.models import Submission
from db.session import new_session
from harness.formats import ResultExpectation, read_measurement, read_result, write_measurement
from harness.sandbox import Outcome, RunSpec, remove_tree, run_container
from harness.scenes import build_tier
from harness.scoring import score_tier
from services.cli.main import app
from services.submissions.run import run_submission
from services.submissions.state import claim

pytestmark = pytest.mark.docker

BUSYBOX = "edx-arena-test/busybox:latest"
BASE = "edx-arena/base:bookworm"
runner = CliRunner()

#: Small limits, set through the settings both sides read (EDX_SANDBOX_*).
LIMITS = {
    "EDX_SANDBOX_MEMORY_BYTES": str(64 * 2**20),
    "EDX_SANDBOX_WALL_SECONDS": "4",
    "EDX_SANDBOX_OUTPUT_BYTES": str(8 * 2**20),
    "EDX_SANDBOX_PIDS": "64",
}

#: Looks at everything /input holds: every file, every HDF5 object and attribute name. Exits 42
#: when anything of the truth is there, 0 when nothing is (and writes no result).
PROBE = r"""
import os, sys
import h5py

names = []
for entry in sorted(os.listdir("/input")):
    names.append("/input/" + entry)
with h5py.File("/input/measurement.h5", "r") as f:
    def visit(name, obj):
        names.append(name)
        names.extend(f"{name}@{a}" for a in obj.attrs)
    names.extend(f"/@{a}" for a in f.attrs)
    f.visititems(visit)
truth = [n for n in names if "x_true" in n or "spec_true" in n or n.endswith("@seed")]
for n in truth:
    print("TRUTH", n)
print(f"PROBE saw {len(names)} names in {sorted(os.listdir('/input'))}")
sys.exit(42 if truth else 0)
"""


@pytest.fixture(scope="module")
def daemon():
    client = docker.from_env(timeout=120)
    client.ping()
    for ref in (BUSYBOX, BASE):
        client.images.get(ref)  # built by scripts/build-images.sh; missing is a failure, not a skip
    return client


@pytest.fixture(scope="module")
def public_files(tmp_path_factory):
    """A small Public tier: the participants' download (with truth) and the Dev-like view."""
    folder = tmp_path_factory.mktemp("public")
    dataset = build_tier("public", seed=7, preset="small")
    public, dev_like = folder / "public.h5", folder / "no-truth.h5"
    write_measurement(dataset.participant_view(with_truth=True), public, include_truth=True)
    write_measurement(dataset.participant_view(with_truth=False), dev_like, include_truth=False)
    return public, dev_like


def _build(client, tag: str, files: dict[str, str]) -> str:
    """Build ``files`` (a Dockerfile among them) as ``tag``, offline; the daemon caches it."""
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    client.images.build(fileobj=context, custom_context=True, tag=tag, network_mode="none", rm=True)
    return tag


def _hostile(client, name: str, command: str) -> str:
    # The hostile-test image (scratch + busybox, ENTRYPOINT sh -c) with its command baked in:
    # `run` and the server both run an image's own command.
    return _build(
        client, f"edx-arena-test/local-{name}:1", {"Dockerfile": f"FROM {BUSYBOX}\nCMD {json.dumps([command])}\n"}
    )


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """The command in a new process, with none of the server's settings: only the sandbox's."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EDX_")} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", *args],
        env=clean,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _run_json(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict]:
    p = _cli("run", *args, "--json", env=env)
    assert p.stdout.count("\n") == 1, (p.returncode, p.stdout, p.stderr)  # one JSON object, nothing else
    return p.returncode, json.loads(p.stdout)


def test_init_builds_offline_and_scores_on_a_public_file(daemon, public_files, tmp_path):
    public, _ = public_files
    project = tmp_path / "My Solver"
    r = runner.invoke(app, ["init", str(project)])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in project.iterdir()) == [".dockerignore", "Dockerfile", "README.md", "main.py"]
    readme = (project / "README.md").read_text()
    for command in ("docker build -t my-solver .", "edx-arena run my-solver --dataset public.h5", "edx-arena submit"):
        assert command in readme
    assert "import harness" not in (project / "main.py").read_text()  # not in a participant's image
    assert "YOUR METHOD GOES HERE" in (project / "main.py").read_text()

    tag = "edx-arena-test/local-starter:1"
    # The CLI's own build, offline: the Dockerfile's default base is the reference base image.
    build = subprocess.run(
        ["docker", "build", "--network", "none", "-q", "-t", tag, str(project)], capture_output=True, text=True
    )
    assert build.returncode == 0, build.stderr
    kept = tmp_path / "kept.h5"
    code, report = _run_json(tag, "--dataset", str(public), "--out", str(kept))
    assert (code, report["outcome"], report["exit_code"]) == (0, "succeeded", 0), report
    assert report["message"] == "the container finished and wrote a valid result"
    assert report["image"]["kind"] == "image" and report["image"]["id"] == daemon.images.get(tag).id
    assert report["dataset"]["tier"] == "public" and report["dataset"]["has_truth"] is True
    assert "wrote /output/result.h5" in report["log"]  # the whole log, unfiltered
    assert report["runtime_seconds"] > 0 and report["peak_memory_bytes"] > 0
    assert report["limits"]["memory_bytes"] == 2 * 2**30 and report["limits"]["wall_seconds"] == 1800  # server defaults
    # Scored with the server's scorer on the very file the container wrote.
    dataset = read_measurement(public)
    expected = score_tier(dataset, read_result(kept, ResultExpectation.for_dataset(dataset, max_bytes=2**30)))
    scores = report["scores"]
    assert scores["tier"] == "public" and scores["score"] == expected.score and 0 < scores["score"] < 1
    assert [s["scene_id"] for s in scores["scenes"]] == dataset.scene_ids
    assert scores["ci_low"] <= scores["score"] <= scores["ci_high"]


def test_init_refuses_a_folder_that_is_not_empty(tmp_path):
    project = tmp_path / "p"
    project.mkdir()
    (project / "notes.txt").write_text("mine")
    r = runner.invoke(app, ["init", str(project)])
    assert r.exit_code == 1 and "not empty" in r.output and "--force" in r.output
    assert sorted(p.name for p in project.iterdir()) == ["notes.txt"]
    # With --force the starter's files are written beside the others; a link standing where one
    # of them goes is replaced, never written through.
    outside = tmp_path / "outside.py"
    outside.write_text("keep me")
    (project / "main.py").symlink_to(outside)
    r = runner.invoke(app, ["init", str(project), "--force"])
    assert r.exit_code == 0, r.output
    assert (project / "notes.txt").read_text() == "mine" and outside.read_text() == "keep me"
    assert not (project / "main.py").is_symlink() and "reconstruct" in (project / "main.py").read_text()


@pytest.mark.parametrize(
    "name,command,outcome",
    [
        ("timeout", "sleep 100000", Outcome.timeout),
        ("oom", "tail /dev/zero", Outcome.oom_killed),
        ("missing", "echo no result", Outcome.missing_output),
        ("invalid", "echo not-hdf5 > /output/result.h5", Outcome.invalid_output),
        ("nonzero", "echo boom >&2; exit 3", Outcome.nonzero_exit),
        # It stays: the watcher, not the writer's exit, ends it, so the message is always the same.
        ("too-large", "dd if=/dev/zero of=/output/big bs=1M count=100; sleep 30", Outcome.output_too_large),
    ],
)
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_hostile_image_ends_as_the_server_ends_it(name, command, outcome, daemon, public_files, seeded, monkeypatch):
    public, _ = public_files
    tag = _hostile(daemon, name, command)
    # The server's run path: an upload of the same image to the Hidden tier, run by the worker's
    # own function under the same settings.
    for key, value in LIMITS.items():
        monkeypatch.setenv(key, value)
    reset_caches()
    r = seeded.post("/api/v1/admin/tiers/hidden/dataset", json={"seed": 31, "preset": "small"}, headers=ORG)
    assert r.status_code == 201, r.text
    alice = add_participant(seeded, "alice")
    archive = b"".join(daemon.images.get(tag).save(named=False))
    r = seeded.post(
        "/api/v1/submissions/container/archive",
        files={"file": ("image.tar", archive, "application/x-tar")},
        headers=alice,
    )
    assert r.status_code == 202, r.text
    with new_session() as s:
        run_submission(s, claim(s, r.json()["id"], worker="test"))
        s.commit()
        server = s.get(Submission, r.json()["id"])
        assert server.status == "failed", server.error_message
        served = (str(server.outcome), server.error_message, server.exit_code)

    code, local = _run_json(tag, "--dataset", str(public), env=LIMITS)
    assert code == 4  # as `submit --wait` for a failed run
    assert (local["outcome"], local["message"], local["exit_code"]) == served
    assert local["outcome"] == outcome


def test_the_container_never_sees_the_truth(daemon, public_files, tmp_path):
    public, _ = public_files
    assert read_measurement(public).has_truth
    # The probe finds the truth when it is there: run on the Public file itself, bypassing `run`.
    tag = _build(
        daemon,
        "edx-arena-test/local-probe:1",
        {
            "Dockerfile": f'FROM {BASE}\nCOPY probe.py /probe.py\nENTRYPOINT ["python3", "/probe.py"]\n',
            "probe.py": PROBE,
        },
    )
    work = tmp_path / "work"
    try:
        control = run_container(RunSpec(run_id="local-probe-control", image=tag, input_path=public, work_dir=work))
    finally:
        remove_tree(work)
    assert control.exit_code == 42, control
    assert "TRUTH scenes/public-s0/x_true" in control.log and "@spec_true/peak_overlap" in control.log

    # Through `run`, as an image and as a script: /input holds the measurement alone, without truth.
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    for target in (tag, str(script)):
        code, report = _run_json(target, "--dataset", str(public))
        assert report["exit_code"] == 0 and "TRUTH" not in report["log"], report["log"]
        assert "in ['measurement.h5']" in report["log"] and "scenes/public-s0/y" not in report["log"]
        assert report["outcome"] == "missing_output" and code == 4  # the probe writes no result
        assert report["image"]["kind"] == ("script" if target.endswith(".py") else "image")


def test_an_archive_is_loaded_as_the_server_loads_an_upload(daemon, public_files, tmp_path):
    public, _ = public_files
    tag = _hostile(daemon, "missing", "echo no result")
    archive = tmp_path / "solver.tar"
    with open(archive, "wb") as f:
        for chunk in daemon.images.get(tag).save(named=True):  # its own tag inside: ignored
            f.write(chunk)
    tags_before = {t: i.id for i in daemon.images.list() for t in i.tags}
    code, report = _run_json(str(archive), "--dataset", str(public))
    image_id = daemon.images.get(tag).id
    assert (code, report["outcome"]) == (4, "missing_output")
    assert report["image"] == {
        "kind": "archive",
        "name": f"edx-arena-sub/local/{image_id.removeprefix('sha256:')[:12]}:latest",
        "id": image_id,
    }
    after = {t: i.id for i in daemon.images.list() for t in i.tags}
    assert {t: i for t, i in after.items() if t in tags_before} == tags_before  # no name moved


def test_a_file_without_truth_runs_and_is_not_scored(daemon, public_files):
    _, no_truth = public_files
    tag = _build(
        daemon,
        "edx-arena-test/local-lstsq:1",
        {
            "Dockerfile": f'FROM {BASE}\nCOPY main.py /main.py\nENTRYPOINT ["python3", "/main.py"]\n',
            "main.py": (Path(__file__).parents[2] / "harness" / "sandbox" / "script_solver.py").read_text(),
        },
    )
    r = runner.invoke(app, ["run", tag, "--dataset", str(no_truth)])
    assert r.exit_code == 0, r.output
    assert "succeeded" in r.output and "not scored" in r.output and "wrote /output/result.h5" in r.output


def test_refusals_name_the_problem(daemon, public_files, tmp_path):
    public, _ = public_files
    p = _cli("run", "edx-arena-test/no-such-image:1", "--dataset", str(public))
    assert p.returncode == 3 and "no image 'edx-arena-test/no-such-image:1'" in p.stderr, p.stderr
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    p = _cli("run", BUSYBOX, "--dataset", str(bad))
    assert p.returncode == 3 and str(bad) in p.stderr, p.stderr
    p = _cli("run", BUSYBOX, "--dataset", str(public), env={"EDX_SANDBOX_CPUS": "two"})
    assert p.returncode == 2 and "EDX_SANDBOX_CPUS" in p.stderr, p.stderr
    empty = tmp_path / "main.py"
    empty.write_text("")
    p = _cli("run", str(empty), "--dataset", str(public))
    assert p.returncode == 3 and "the script is empty" in p.stderr and "Traceback" not in p.stderr, p.stderr
